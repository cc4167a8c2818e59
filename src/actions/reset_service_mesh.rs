//! `reset_service_mesh`: mesh failures (Istio, Linkerd). Restarts the mesh's control plane,
//! the certificate authority first (`linkerd-identity`; Istio's `istiod` is both), each
//! followed to the end; then, when `restart_workloads_in` names a namespace, every meshed
//! workload there (its pod template or the namespace asks for the sidecar), so each proxy
//! comes back with a certificate issued by the restarted control plane. The target is the
//! control plane's namespace (`istio-system`, `linkerd`). Undone by restoring every template.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Namespace;
use serde::Deserialize;
use serde_json::Value;

use super::{
    restart_set::{self, Member},
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk,
};
use crate::cluster::WorkloadKind;

const MESHES: &[&str] = &["auto", "istio", "linkerd"];
/// Linkerd's control plane, the identity service (its certificate authority) first.
const LINKERD: &[&str] = &[
    "linkerd-identity",
    "linkerd-destination",
    "linkerd-proxy-injector",
];

#[derive(Debug, Deserialize)]
struct Params {
    mesh: String,
    #[serde(default)]
    restart_workloads_in: Option<String>,
    wait_for_rollout: bool,
}

/// What `reset_service_mesh` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // restart_workloads_in: the namespace is read (does it ask for the sidecar?).
    Access::new("", &["namespaces"], &["get"]),
    // The control plane and the meshed workloads are listed, read, restarted (the plan as a dry
    // run, the rollback restores the templates) and followed with a watch.
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get", "list", "watch", "patch"],
    ),
];

pub struct ResetServiceMesh {
    spec: ActionSpec,
}

impl ResetServiceMesh {
    pub fn new() -> Self {
        ResetServiceMesh {
            spec: ActionSpec {
                name: "reset_service_mesh",
                description: "Restart a service mesh's control plane (Istio's istiod, Linkerd's identity, destination \
                              and injector), then optionally the meshed workloads of one namespace so their proxies \
                              get new certificates; one at a time, each followed. The target is the control plane's \
                              namespace. Undone by restoring every template.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["Namespace"],
                params: vec![
                    ParamSpec::new("mesh", ParamType::String, "Which mesh; auto = the one found.")
                        .one_of(MESHES)
                        .default("auto"),
                    ParamSpec::new(
                        "restart_workloads_in",
                        ParamType::String,
                        "A namespace whose meshed Deployments, StatefulSets and DaemonSets are restarted after \
                         the control plane (new proxy certificates).",
                    ),
                    ParamSpec::new(
                        "wait_for_rollout",
                        ParamType::Boolean,
                        "Follow each restart to the end before the next.",
                    )
                    .default(true),
                ],
            },
        }
    }

    /// The control plane: Istio's istiod Deployments, or Linkerd's, CA first.
    async fn control_plane(ctx: &ActionContext, mesh: &str) -> Result<Vec<Member>, ActionError> {
        let namespace = ctx.target.name.clone();
        let deployments = restart_set::list(ctx, WorkloadKind::Deployment, &namespace).await?;
        let member = |name: &str| Member {
            kind: WorkloadKind::Deployment,
            namespace: namespace.clone(),
            name: name.to_string(),
        };
        let istio: Vec<Member> = deployments
            .iter()
            .filter(|(name, object)| {
                name.starts_with("istiod")
                    || object
                        .pointer("/metadata/labels/app")
                        .and_then(Value::as_str)
                        == Some("istiod")
            })
            .map(|(name, _)| member(name))
            .collect();
        let linkerd: Vec<Member> = LINKERD
            .iter()
            .filter(|n| deployments.iter().any(|(name, _)| name == *n))
            .map(|n| member(n))
            .collect();
        let found = match mesh {
            "istio" => istio,
            "linkerd" => linkerd,
            _ if !istio.is_empty() => istio,
            _ => linkerd,
        };
        if found.is_empty() {
            return Err(ActionError::Precondition(format!(
                "no {} control plane in {namespace} (istiod, or {})",
                if mesh == "auto" { "service mesh" } else { mesh },
                LINKERD.join(", ")
            )));
        }
        Ok(found)
    }

    /// The meshed workloads of `namespace`: all of them when the namespace asks for the
    /// sidecar, else those whose pod template does.
    async fn meshed(ctx: &ActionContext, namespace: &str) -> Result<Vec<Member>, ActionError> {
        let namespaces: kube::Api<Namespace> = kube::Api::all(ctx.client.clone());
        let what = format!("namespace {namespace}");
        let ns = ctx
            .retry(&format!("read {what}"), || namespaces.get(namespace))
            .await
            .map_err(|e| ActionError::from_kube(e, &what))
            .map_err(|e| match e {
                ActionError::NotFound(_) => ActionError::invalid(
                    "restart_workloads_in",
                    format!("no namespace {namespace:?}"),
                ),
                other => other,
            })?;
        let ns = serde_json::to_value(&ns).unwrap_or(Value::Null);
        let whole = asks_for_sidecar(&ns["metadata"]);
        let mut members = Vec::new();
        for kind in [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
        ] {
            for (name, object) in restart_set::list(ctx, kind, namespace).await? {
                if whole || asks_for_sidecar(&object["spec"]["template"]["metadata"]) {
                    members.push(Member {
                        kind,
                        namespace: namespace.to_string(),
                        name,
                    });
                }
            }
        }
        Ok(members)
    }

    async fn members(ctx: &ActionContext, p: &Params) -> Result<Vec<Member>, ActionError> {
        let mut members = Self::control_plane(ctx, &p.mesh).await?;
        if let Some(namespace) = p
            .restart_workloads_in
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            members.extend(Self::meshed(ctx, namespace).await?);
        }
        Ok(members)
    }
}

/// Whether metadata (a namespace's or a pod template's) asks for the mesh's sidecar.
fn asks_for_sidecar(metadata: &Value) -> bool {
    let label = |k: &str| metadata["labels"][k].as_str();
    let annotation = |k: &str| metadata["annotations"][k].as_str();
    label("istio-injection") == Some("enabled")
        || label("sidecar.istio.io/inject") == Some("true")
        || annotation("sidecar.istio.io/inject") == Some("true")
        || label("istio.io/rev").is_some()
        || annotation("linkerd.io/inject") == Some("enabled")
}

#[async_trait]
impl Remediation for ResetServiceMesh {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        restart_set::restore(ctx, data).await
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let members = Self::members(ctx, &p).await?;
        restart_set::plan_all(
            ctx,
            &members,
            &format!("reset the mesh in {}", ctx.target.name),
        )
        .await
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let members = Self::members(ctx, &p).await?;
        let done = format!("mesh reset in {}", ctx.target.name);
        restart_set::run_all(ctx, &members, p.wait_for_rollout, &done).await
    }
}

#[cfg(test)]
mod tests {
    use super::asks_for_sidecar;
    use serde_json::json;

    #[test]
    fn the_injection_marks_of_both_meshes_are_recognised() {
        assert!(asks_for_sidecar(
            &json!({"labels": {"istio-injection": "enabled"}})
        ));
        assert!(asks_for_sidecar(
            &json!({"annotations": {"sidecar.istio.io/inject": "true"}})
        ));
        assert!(asks_for_sidecar(
            &json!({"annotations": {"linkerd.io/inject": "enabled"}})
        ));
        assert!(!asks_for_sidecar(&json!({"labels": {"app": "web"}})));
        assert!(!asks_for_sidecar(
            &json!({"annotations": {"linkerd.io/inject": "disabled"}})
        ));
    }
}
