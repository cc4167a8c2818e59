//! Node helpers shared by the node actions: which nodes can still take new pods, kubectl's
//! cordon patch, and the PodDisruptionBudgets that guard a pod.

use std::{collections::BTreeMap, sync::OnceLock};

use k8s_openapi::{
    api::{core::v1::Node, core::v1::Pod, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
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

/// Names of the schedulable nodes (see [`is_schedulable`]), sorted.
///
/// # Errors
/// The API error of the node list.
pub async fn schedulable_nodes(api: &Api<Node>) -> Result<Vec<String>, kube::Error> {
    let mut names: Vec<String> = api
        .list(&ListParams::default())
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

/// Sets `spec.unschedulable` of node `name` the way `kubectl cordon`/`uncordon` does.
///
/// # Errors
/// The API error of the patch.
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
    api.patch(name, &params, &cordon_patch(unschedulable)).await
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
