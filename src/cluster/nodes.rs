//! Node helpers shared by the node actions: which nodes can still take new pods, kubectl's
//! cordon patch and the guard that undoes it when a drain stops early, the
//! PodDisruptionBudgets that guard a pod, and the Eviction API call a drain makes for each pod.

use std::{collections::BTreeMap, sync::OnceLock};

use k8s_openapi::{
    api::{
        core::v1::{Node, Pod},
        policy::v1::{Eviction, PodDisruptionBudget},
    },
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, LabelSelector, ObjectMeta, Preconditions},
};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api, ResourceExt,
};
use serde_json::{json, Value};

/// Whether `node` accepts new pods: not cordoned, Ready, and not being deleted.
///
/// Taints are not considered: a tainted node still takes the pods that tolerate the taint.
pub fn is_schedulable(node: &Node) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    !cordoned && ready && node.metadata.deletion_timestamp.is_none()
}

/// Whether `node` is cordoned (`spec.unschedulable`).
pub fn is_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// Names of the schedulable nodes (see [`is_schedulable`]), sorted. Transient errors of the
/// list are retried ([`super::with_retries`]), logged rather than reported: the callers (the
/// policy's facts, the last-node check) have no execution to report to.
///
/// # Errors
/// The API error of the node list, once transient ones are retried.
pub async fn schedulable_nodes(api: &Api<Node>) -> Result<Vec<String>, kube::Error> {
    let all = ListParams::default();
    let mut names: Vec<String> = super::with_retries(
        "list nodes",
        |message| tracing::info!("{message}"),
        || api.list(&all),
    )
    .await?
    .items
    .iter()
    .filter(|n| is_schedulable(n))
    .filter_map(|n| n.metadata.name.clone())
    .collect();
    names.sort();
    Ok(names)
}

/// Serializes "is this the last schedulable node?" checks with the cordon that follows them
/// within this process, so that two executions on two different nodes (which hold different
/// target locks) cannot both pass the check and together cordon every node.
pub async fn scheduling_change_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}

/// kubectl's cordon/uncordon patch: a strategic merge patch of `spec.unschedulable`, `true` to
/// cordon and `null` (the field is omitted when false) to uncordon.
pub fn cordon_patch(unschedulable: bool) -> Patch<Value> {
    let value = if unschedulable {
        json!(true)
    } else {
        Value::Null
    };
    Patch::Strategic(json!({ "spec": { "unschedulable": value } }))
}

/// Sets `spec.unschedulable` of node `name` the way `kubectl cordon`/`uncordon` does. The
/// merge patch sets one field to one value, so a transient failure is retried as is
/// ([`super::with_retries`]; logged).
///
/// # Errors
/// The API error of the patch, once transient ones are retried.
pub async fn set_unschedulable(
    api: &Api<Node>,
    name: &str,
    unschedulable: bool,
    dry_run: bool,
) -> Result<Node, kube::Error> {
    let params = if dry_run {
        PatchParams::default().dry_run()
    } else {
        PatchParams::default()
    };
    let what = if unschedulable { "cordon" } else { "uncordon" };
    let patch = cordon_patch(unschedulable);
    super::with_retries(
        &format!("{what} node {name}"),
        |message| tracing::info!("{message}"),
        || api.patch(name, &params, &patch),
    )
    .await
}

/// Puts a node back in scheduling if it is dropped while armed: a drain arms it once it has
/// cordoned a node that was schedulable, so that a drain future dropped half-way (cancelled,
/// or the engine's own timeout) does not leave the node cordoned. The uncordon runs as a task
/// of the current runtime, since `drop` cannot wait.
pub struct UncordonOnDrop {
    api: Api<Node>,
    node: String,
    armed: bool,
}

impl UncordonOnDrop {
    /// A disarmed guard for node `node`.
    pub fn new(api: Api<Node>, node: &str) -> Self {
        UncordonOnDrop {
            api,
            node: node.to_string(),
            armed: false,
        }
    }

    /// From now on, dropping the guard uncordons the node.
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// Disarms the guard; returns whether it was armed, i.e. whether the caller is now the one
    /// to give the node back.
    pub fn disarm(&mut self) -> bool {
        std::mem::replace(&mut self.armed, false)
    }
}

impl Drop for UncordonOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (api, node) = (self.api.clone(), self.node.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match set_unschedulable(&api, &node, false, false).await {
                    Ok(_) => tracing::warn!(%node, "drain stopped early: node uncordoned again"),
                    Err(e) => {
                        tracing::error!(%node, error = %e, "drain stopped early: uncordon failed")
                    }
                }
            });
        }
    }
}

/// Whether a label selector selects an object with `labels`, by the API's rules: every
/// `matchLabels` pair and every `matchExpressions` requirement must hold; an empty selector
/// selects everything. An unknown operator selects nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let actual = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => actual.is_some_and(|a| values.contains(a)),
            "NotIn" => actual.is_none_or(|a| !values.contains(a)),
            "Exists" => actual.is_some(),
            "DoesNotExist" => actual.is_none(),
            _ => false,
        }
    });
    pairs && expressions
}

/// The budgets among `pdbs` that guard `pod`: same namespace and a selector that selects it.
/// As in policy/v1, a budget without a selector selects no pod and an empty one selects all.
pub fn pdbs_selecting<'a>(
    pdbs: &'a [PodDisruptionBudget],
    pod: &Pod,
) -> Vec<&'a PodDisruptionBudget> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    pdbs.iter()
        .filter(|b| b.metadata.namespace == pod.metadata.namespace)
        .filter(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| selector_matches(sel, labels))
        })
        .collect()
}

/// Posts a policy/v1 Eviction for `pod`, exactly as kubectl does, with `grace` as the
/// termination grace period (`None`: the pod's own) and the pod's UID as a precondition, so
/// that a namesake created since is never evicted in its place.
///
/// Not `kube::Api::evict`: kube 5.0 serializes the body's delete options as `delete_options`,
/// which the API server ignores, so a grace period (and the UID precondition) would be lost.
///
/// # Errors
/// The API error of the eviction: 429 while a PodDisruptionBudget forbids it, 404 when the pod
/// is gone, 409 when the UID precondition fails (the pod was replaced).
pub async fn evict(
    client: &kube::Client,
    pod: &Pod,
    grace: Option<i64>,
) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        delete_options: Some(DeleteOptions {
            grace_period_seconds: grace,
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        }),
    };
    let body = serde_json::to_vec(&eviction).map_err(kube::Error::SerdeError)?;
    let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    client.request::<Value>(request).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn mk_selector(v: Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selectors_follow_the_api_rules() {
        let labels = mk_labels(&[("app", "web"), ("tier", "front")]);
        assert!(selector_matches(&mk_selector(json!({})), &labels));
        assert!(selector_matches(
            &mk_selector(json!({"matchLabels": {"app": "web"}})),
            &labels
        ));
        assert!(!selector_matches(
            &mk_selector(json!({"matchLabels": {"app": "api"}})),
            &labels
        ));
        let expr = |op: &str, values: Value| {
            mk_selector(
                json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}),
            )
        };
        assert!(selector_matches(
            &expr("In", json!(["front", "back"])),
            &labels
        ));
        assert!(!selector_matches(&expr("NotIn", json!(["front"])), &labels));
        assert!(selector_matches(&expr("Exists", json!([])), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", json!([])), &labels));
        assert!(!selector_matches(&expr("Gt", json!(["1"])), &labels));
    }

    #[test]
    fn a_budget_guards_pods_of_its_namespace_that_its_selector_selects() {
        let pdb = |ns: &str, selector: Value| -> PodDisruptionBudget {
            serde_json::from_value(json!({
                "metadata": {"name": "b", "namespace": ns},
                "spec": {"selector": selector, "maxUnavailable": 1},
            }))
            .unwrap()
        };
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "prod", "labels": {"app": "web"}},
        }))
        .unwrap();
        let pdbs = vec![
            pdb("prod", json!({"matchLabels": {"app": "web"}})),
            pdb("other", json!({"matchLabels": {"app": "web"}})),
            pdb("prod", json!({"matchLabels": {"app": "api"}})),
            pdb("prod", json!({})),
        ];
        assert_eq!(pdbs_selecting(&pdbs, &pod).len(), 2);
        let no_selector: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "prod"}, "spec": {}
        }))
        .unwrap();
        assert!(pdbs_selecting(&[no_selector], &pod).is_empty());
    }

    #[test]
    fn only_ready_uncordoned_nodes_are_schedulable() {
        let node = |unschedulable: bool, ready: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": "n"},
                "spec": {"unschedulable": unschedulable},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap()
        };
        assert!(is_schedulable(&node(false, "True")));
        assert!(!is_schedulable(&node(true, "True")));
        assert!(!is_schedulable(&node(false, "False")));
        assert!(is_cordoned(&node(true, "True")));
    }
}
