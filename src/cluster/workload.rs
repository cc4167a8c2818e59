//! Workloads with a pod template (Deployment, StatefulSet, DaemonSet) handled alike: finding
//! the one that owns a pod, patching its template, following its rollout with the matching
//! kubectl status viewer.

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use kube::{
    api::{ApiResource, DynamicObject},
    Api,
};

use super::{
    daemonset_rollout_status, deployment_rollout_status, follow_rollout,
    statefulset_rollout_status, RolloutError, RolloutStatus,
};

/// A kind of workload whose pods come from a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            "DaemonSet" => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// The workload's API, untyped, for the operations every kind shares.
    pub fn api(self, client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
        let resource = match self {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        };
        Api::namespaced_with(client.clone(), namespace, &resource)
    }

    /// Follows the rollout with kubectl's status viewer for this kind.
    ///
    /// # Errors
    /// See [`follow_rollout`].
    pub async fn follow(
        self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        on_change: impl FnMut(&RolloutStatus) + Send,
    ) -> Result<RolloutStatus, RolloutError> {
        match self {
            WorkloadKind::Deployment => {
                let api = Api::<Deployment>::namespaced(client.clone(), namespace);
                follow_rollout(&api, name, deployment_rollout_status, on_change).await
            }
            WorkloadKind::StatefulSet => {
                let api = Api::<StatefulSet>::namespaced(client.clone(), namespace);
                follow_rollout(&api, name, statefulset_rollout_status, on_change).await
            }
            WorkloadKind::DaemonSet => {
                let api = Api::<DaemonSet>::namespaced(client.clone(), namespace);
                follow_rollout(&api, name, daemonset_rollout_status, on_change).await
            }
        }
    }
}

/// The workload that owns `pod` through controller references (a Deployment through its
/// ReplicaSet), if any.
///
/// # Errors
/// API errors other than a missing ReplicaSet.
pub async fn owning_workload(
    client: &kube::Client,
    pod: &Pod,
) -> Result<Option<(WorkloadKind, String)>, kube::Error> {
    let Some(owner) = controller_ref(&pod.metadata) else {
        return Ok(None);
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    Ok(match owner.kind.as_str() {
        "StatefulSet" => Some((WorkloadKind::StatefulSet, owner.name.clone())),
        "DaemonSet" => Some((WorkloadKind::DaemonSet, owner.name.clone())),
        "ReplicaSet" => {
            let rs = match Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
                .get(&owner.name)
                .await
            {
                Ok(rs) => rs,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(e),
            };
            controller_ref(&rs.metadata)
                .filter(|o| o.kind == "Deployment")
                .map(|o| (WorkloadKind::Deployment, o.name.clone()))
        }
        _ => None,
    })
}

/// The owner reference marked `controller: true` (apimachinery's `GetControllerOf`): the
/// object that manages this one. The API server accepts at most one per object.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// A label selector as the `labelSelector` query string (`a=b,c in (d,e)`).
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default().join(",");
        parts.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            _ => format!("!{}", expr.key),
        });
    }
    parts.join(",")
}
