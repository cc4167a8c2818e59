//! kubectl's pod filter chain for a drain (`k8s.io/kubectl/pkg/drain/filters.go`): which of
//! the node's pods are evicted, which are skipped (DaemonSet-managed, mirror), and which make
//! the drain fatal (emptyDir without `delete_emptydir_data`, unmanaged without `force`).
//! Fatal verdicts are all collected before the drain touches anything.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Node, Pod},
};
use kube::{api::ListParams, Api, ResourceExt};

use super::{pod_ref, Params};
use crate::{
    actions::{cordon_node::get_node, ActionContext, ActionError},
    cluster::controller_ref,
};

/// kubectl's page size when listing the node's pods (`--chunk-size`).
const LIST_CHUNK: u32 = 500;

/// The annotation that marks a mirror pod (a static pod's API copy; the kubelet owns it).
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

// kubectl's filter messages (`k8s.io/kubectl/pkg/drain/filters.go`), kept word for word so
// that operators recognize them; each flag maps to the parameter of the same name.
const DAEMONSET_FATAL: &str = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
const DAEMONSET_WARNING: &str = "ignoring DaemonSet-managed Pods";
const LOCAL_STORAGE_FATAL: &str =
    "Pods with local storage (use --delete-emptydir-data to override)";
const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
const UNMANAGED_FATAL: &str = "Pods declare no controller (use --force to override)";
const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";
const MIRROR_SKIP: &str = "mirror pod (managed by the kubelet)";

/// kubectl's `PodDeleteStatus`: what one filter says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Okay,
    Skip(String),
    Warning { delete: bool, message: String },
    Error(String),
}

impl Verdict {
    fn delete(&self) -> bool {
        match self {
            Verdict::Okay => true,
            Verdict::Warning { delete, .. } => *delete,
            Verdict::Skip(_) | Verdict::Error(_) => false,
        }
    }
}

/// The DaemonSet controlling a pod, as the DaemonSet filter found it.
#[derive(Debug, Clone)]
enum DaemonSetLookup {
    Found,
    NotFound(String),
    Failed(String),
}

/// What the filters decided for one pod.
#[derive(Debug, Clone)]
struct Decision {
    pod: Pod,
    /// The last verdict of the chain (kubectl's status).
    verdict: Verdict,
    /// Every warning met on the way (kubectl keeps only the last; we keep all).
    warnings: Vec<String>,
}

/// A pod that has run to completion (Succeeded or Failed): nothing is lost when it goes.
fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// kubectl's `skipDeletedFilter`. It skips pods deleted more than
/// `--skip-wait-for-delete-timeout` seconds ago; kubectl's default (0) skips nothing, and this
/// action keeps that default: a terminating pod is still waited for.
fn skip_deleted_filter(_pod: &Pod) -> Verdict {
    Verdict::Okay
}

/// kubectl's `daemonSetFilter`.
fn daemonset_filter(pod: &Pod, p: &Params, lookup: Option<&DaemonSetLookup>) -> Verdict {
    let Some(owner) = controller_ref(&pod.metadata).filter(|o| o.kind == "DaemonSet") else {
        return Verdict::Okay;
    };
    if is_finished(pod) {
        return Verdict::Okay;
    }
    match lookup {
        Some(DaemonSetLookup::Found) => {}
        Some(DaemonSetLookup::NotFound(e)) if p.force => {
            return Verdict::Warning {
                delete: true,
                message: e.clone(),
            }
        }
        Some(DaemonSetLookup::NotFound(e)) | Some(DaemonSetLookup::Failed(e)) => {
            return Verdict::Error(e.clone())
        }
        None => {
            return Verdict::Error(format!(
                "daemonsets.apps {:?} was not looked up",
                owner.name
            ))
        }
    }
    if !p.ignore_daemonsets {
        return Verdict::Error(DAEMONSET_FATAL.into());
    }
    Verdict::Warning {
        delete: false,
        message: DAEMONSET_WARNING.into(),
    }
}

/// kubectl's `mirrorPodFilter`.
fn mirror_pod_filter(pod: &Pod) -> Verdict {
    if pod.annotations().contains_key(MIRROR_POD_ANNOTATION) {
        Verdict::Skip(MIRROR_SKIP.into())
    } else {
        Verdict::Okay
    }
}

/// kubectl's `localStorageFilter`: emptyDir volumes.
fn local_storage_filter(pod: &Pod, p: &Params) -> Verdict {
    let has_empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some()));
    if !has_empty_dir || is_finished(pod) {
        return Verdict::Okay;
    }
    if !p.delete_emptydir_data {
        return Verdict::Error(LOCAL_STORAGE_FATAL.into());
    }
    Verdict::Warning {
        delete: true,
        message: LOCAL_STORAGE_WARNING.into(),
    }
}

/// kubectl's `unreplicatedFilter`.
fn unreplicated_filter(pod: &Pod, p: &Params) -> Verdict {
    if is_finished(pod) || controller_ref(&pod.metadata).is_some() {
        return Verdict::Okay;
    }
    if p.force {
        return Verdict::Warning {
            delete: true,
            message: UNMANAGED_WARNING.into(),
        };
    }
    Verdict::Error(UNMANAGED_FATAL.into())
}

/// Runs kubectl's filters in kubectl's order, stopping at the first that keeps the pod.
fn decide(pod: &Pod, p: &Params, lookup: Option<&DaemonSetLookup>) -> Decision {
    let filters: [&dyn Fn() -> Verdict; 5] = [
        &|| skip_deleted_filter(pod),
        &|| daemonset_filter(pod, p, lookup),
        &|| mirror_pod_filter(pod),
        &|| local_storage_filter(pod, p),
        &|| unreplicated_filter(pod, p),
    ];
    let mut verdict = Verdict::Okay;
    let mut warnings = Vec::new();
    for filter in filters {
        verdict = filter();
        if let Verdict::Warning { message, .. } = &verdict {
            warnings.push(message.clone());
        }
        if !verdict.delete() {
            break;
        }
    }
    Decision {
        pod: pod.clone(),
        verdict,
        warnings,
    }
}

/// `message: ns/a, ns/b` per distinct message, sorted, as kubectl groups pods by message.
fn group_by_message<'a>(items: impl Iterator<Item = (&'a str, String)>) -> Vec<String> {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (message, pod) in items {
        groups.entry(message).or_default().push(pod);
    }
    groups
        .into_iter()
        .map(|(message, pods)| format!("{message}: {}", pods.join(", ")))
        .collect()
}

/// The filter outcome for a node (kubectl's `PodDeleteList`).
pub(super) struct Filtered {
    /// The node as it was read before its pods were listed.
    pub(super) node: Node,
    /// The pods to evict, sorted by `namespace/name`.
    pub(super) evict: Vec<Pod>,
    /// `(namespace/name, reason)` of each pod left on the node.
    pub(super) skipped: Vec<(String, String)>,
    /// kubectl's warning line, grouped by message.
    pub(super) warnings: Vec<String>,
}

/// Lists the node's pods (all namespaces, `spec.nodeName`, in pages like kubectl) and runs
/// the filters.
///
/// # Errors
/// [`ActionError::Precondition`] when a filter is fatal for any pod, with kubectl's
/// `cannot delete …` lines; API errors.
pub(super) async fn filter_node(ctx: &ActionContext, p: &Params) -> Result<Filtered, ActionError> {
    let node = get_node(ctx).await?;
    let name = &ctx.target.name;
    let pods_api: Api<Pod> = Api::all(ctx.client.clone());
    let mut pods = Vec::new();
    let mut list_params = ListParams::default()
        .fields(&format!("spec.nodeName={name}"))
        .limit(LIST_CHUNK);
    loop {
        let page = pods_api.list(&list_params).await?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => list_params = list_params.continue_token(&token),
            None => break,
        }
    }
    pods.sort_by_key(pod_ref);
    let mut lookups: BTreeMap<(String, String), DaemonSetLookup> = BTreeMap::new();
    for pod in &pods {
        let Some(owner) = controller_ref(&pod.metadata).filter(|o| o.kind == "DaemonSet") else {
            continue;
        };
        let key = (pod.namespace().unwrap_or_default(), owner.name.clone());
        if lookups.contains_key(&key) {
            continue;
        }
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &key.0);
        let lookup = match api.get(&key.1).await {
            Ok(_) => DaemonSetLookup::Found,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                DaemonSetLookup::NotFound(format!("daemonsets.apps {:?} not found", key.1))
            }
            Err(e) => DaemonSetLookup::Failed(e.to_string()),
        };
        lookups.insert(key, lookup);
    }
    let decisions: Vec<Decision> = pods
        .iter()
        .map(|pod| {
            let key = controller_ref(&pod.metadata)
                .map(|o| (pod.namespace().unwrap_or_default(), o.name.clone()));
            decide(pod, p, key.and_then(|k| lookups.get(&k)))
        })
        .collect();
    let errors = group_by_message(decisions.iter().filter_map(|d| match &d.verdict {
        Verdict::Error(message) => Some((message.as_str(), pod_ref(&d.pod))),
        _ => None,
    }));
    if !errors.is_empty() {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("cannot delete {e}"))
            .collect();
        return Err(ActionError::Precondition(format!(
            "unable to drain node {name:?}: {}; nothing was cordoned or evicted",
            lines.join("; ")
        )));
    }
    let warnings = group_by_message(
        decisions
            .iter()
            .flat_map(|d| d.warnings.iter().map(|w| (w.as_str(), pod_ref(&d.pod)))),
    );
    let mut evict = Vec::new();
    let mut skipped = Vec::new();
    for d in decisions {
        match d.verdict {
            v if v.delete() => evict.push(d.pod),
            Verdict::Skip(reason)
            | Verdict::Warning {
                message: reason, ..
            } => skipped.push((pod_ref(&d.pod), reason)),
            // Errors returned above; Okay always deletes.
            Verdict::Okay | Verdict::Error(_) => {}
        }
    }
    Ok(Filtered {
        node,
        evict,
        skipped,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn mk_params() -> Params {
        Params {
            grace_period_seconds: None,
            timeout_seconds: 300,
            ignore_daemonsets: true,
            delete_emptydir_data: false,
            force: false,
            eviction_retry_seconds: 5,
        }
    }

    fn mk_pod(owner: Option<&str>, extra: Value) -> Pod {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running"},
        });
        if let Some(kind) = owner {
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u", "controller": true
            }]);
        }
        json_patch::merge(&mut pod, &extra);
        serde_json::from_value(pod).unwrap()
    }

    #[test]
    fn a_replicaset_pod_is_evicted() {
        let d = decide(&mk_pod(Some("ReplicaSet"), json!({})), &mk_params(), None);
        assert_eq!(d.verdict, Verdict::Okay);
    }

    #[test]
    fn daemonset_pods_are_skipped_with_a_warning_or_fatal() {
        let pod = mk_pod(Some("DaemonSet"), json!({}));
        let found = DaemonSetLookup::Found;
        let d = decide(&pod, &mk_params(), Some(&found));
        assert_eq!(
            d.verdict,
            Verdict::Warning {
                delete: false,
                message: DAEMONSET_WARNING.into()
            }
        );
        let strict = Params {
            ignore_daemonsets: false,
            ..mk_params()
        };
        assert_eq!(
            decide(&pod, &strict, Some(&found)).verdict,
            Verdict::Error(DAEMONSET_FATAL.into())
        );
        // An orphan (its DaemonSet is gone) goes only with force.
        let gone = DaemonSetLookup::NotFound("daemonsets.apps \"owner\" not found".into());
        assert!(matches!(
            decide(&pod, &mk_params(), Some(&gone)).verdict,
            Verdict::Error(_)
        ));
        let forced = Params {
            force: true,
            ..mk_params()
        };
        assert!(decide(&pod, &forced, Some(&gone)).verdict.delete());
    }

    #[test]
    fn mirror_pods_are_skipped() {
        let pod = mk_pod(
            None,
            json!({"metadata": {"annotations": {MIRROR_POD_ANNOTATION: "x"}}}),
        );
        assert!(matches!(
            decide(&pod, &mk_params(), None).verdict,
            Verdict::Skip(_)
        ));
    }

    #[test]
    fn empty_dir_and_unmanaged_pods_are_fatal_unless_allowed() {
        let empty_dir = json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}});
        let pod = mk_pod(Some("ReplicaSet"), empty_dir.clone());
        assert_eq!(
            decide(&pod, &mk_params(), None).verdict,
            Verdict::Error(LOCAL_STORAGE_FATAL.into())
        );
        let allowed = Params {
            delete_emptydir_data: true,
            ..mk_params()
        };
        let d = decide(&pod, &allowed, None);
        assert!(d.verdict.delete());
        assert_eq!(d.warnings, vec![LOCAL_STORAGE_WARNING.to_string()]);
        let lonely = mk_pod(None, json!({}));
        assert_eq!(
            decide(&lonely, &mk_params(), None).verdict,
            Verdict::Error(UNMANAGED_FATAL.into())
        );
        let forced = Params {
            force: true,
            ..mk_params()
        };
        assert!(decide(&lonely, &forced, None).verdict.delete());
    }

    #[test]
    fn finished_pods_can_always_go() {
        let done = json!({"status": {"phase": "Succeeded"},
            "spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}});
        assert!(decide(&mk_pod(None, done.clone()), &mk_params(), None)
            .verdict
            .delete());
        assert!(decide(&mk_pod(Some("DaemonSet"), done), &mk_params(), None)
            .verdict
            .delete());
    }

    #[test]
    fn messages_group_pods_like_kubectl() {
        let lines = group_by_message(
            [
                ("b", "ns/2".to_string()),
                ("a", "ns/1".to_string()),
                ("b", "ns/3".to_string()),
            ]
            .into_iter(),
        );
        assert_eq!(lines, vec!["a: ns/1", "b: ns/2, ns/3"]);
    }
}
