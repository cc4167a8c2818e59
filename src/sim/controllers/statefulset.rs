//! The statefulset controller: pods `<name>-0..n-1` created in order (each waits for the
//! previous to be Ready under `OrderedReady`), removed from the highest ordinal, PVCs from
//! `volumeClaimTemplates`, revisions as ControllerRevisions, and `RollingUpdate` (highest
//! ordinal first, down to `partition`) or `OnDelete` updates.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::replicaset::pod_from_template;
use super::{
    by_controller, emit_event, is_terminating, kubelet, owner_ref, template_hash, PodsByOwner,
};
use crate::sim::api::{self, DeleteOpts};
use crate::sim::resources::by_plural;
use crate::sim::store::{at, int_at, set_at, str_at, State};

const REV_LABEL: &str = "controller-revision-hash";
const COMPONENT: &str = "statefulset-controller";

pub fn run(st: &mut State, pods: &mut PodsByOwner) {
    let sets = st.list("statefulsets", None);
    if sets.is_empty() {
        return;
    }
    let mut revisions = by_controller(st, "controllerrevisions");
    for s in sets {
        if is_terminating(&s) {
            continue;
        }
        let uid = str_at(&s, "/metadata/uid").to_string();
        let owned = pods.remove(&uid).unwrap_or_default();
        let revs = revisions.remove(&uid).unwrap_or_default();
        reconcile(st, &s, owned, revs);
    }
}

/// Makes sure a ControllerRevision for the current template exists; returns its name.
pub fn ensure_revision(st: &mut State, owner: &Value, revs: &[Arc<Value>]) -> String {
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let hash = template_hash(&template);
    let name = format!("{}-{hash}", str_at(owner, "/metadata/name"));
    if revs.iter().any(|r| str_at(r, "/metadata/name") == name) {
        return name;
    }
    let Some(def) = by_plural("controllerrevisions") else {
        return name;
    };
    let next = revs
        .iter()
        .map(|r| int_at(r, "/revision", 0))
        .max()
        .unwrap_or(0)
        + 1;
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    set_at(&mut labels, &format!("/{REV_LABEL}"), json!(hash));
    let cr = json!({
        "metadata": {
            "name": name,
            "namespace": str_at(owner, "/metadata/namespace"),
            "labels": labels,
            "ownerReferences": [owner_ref(owner)],
        },
        "data": {"spec": {"template": template, "$patch": "replace"}},
        "revision": next,
    });
    let ns = str_at(owner, "/metadata/namespace").to_string();
    let _ = api::create(st, def, Some(&ns), cr, false);
    name
}

fn ordinal(set_name: &str, pod: &Value) -> Option<i64> {
    str_at(pod, "/metadata/name")
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn reconcile(st: &mut State, s: &Value, owned: Vec<Arc<Value>>, revs: Vec<Arc<Value>>) {
    let (Some(pods_def), Some(pvc_def), Some(def)) = (
        by_plural("pods"),
        by_plural("persistentvolumeclaims"),
        by_plural("statefulsets"),
    ) else {
        return;
    };
    let name = str_at(s, "/metadata/name").to_string();
    let ns = str_at(s, "/metadata/namespace").to_string();
    let replicas = int_at(s, "/spec/replicas", 1).max(0);
    let ordered = str_at(s, "/spec/podManagementPolicy") != "Parallel";
    let update_rev = ensure_revision(st, s, &revs);
    let current_rev = match str_at(s, "/status/currentRevision") {
        "" => update_rev.clone(),
        r => r.to_string(),
    };
    let pods: BTreeMap<i64, Arc<Value>> = owned
        .into_iter()
        .filter_map(|p| ordinal(&name, &p).map(|o| (o, p)))
        .collect();

    // Create missing pods in order.
    for i in 0..replicas {
        match pods.get(&i) {
            Some(p) => {
                if ordered && (is_terminating(p) || !kubelet::is_ready(p)) {
                    break;
                }
            }
            None => {
                let pod_name = format!("{name}-{i}");
                let mut pod = pod_from_template(
                    s,
                    &pod_name,
                    &[
                        (REV_LABEL, &update_rev),
                        ("statefulset.kubernetes.io/pod-name", &pod_name),
                        ("apps.kubernetes.io/pod-index", &i.to_string()),
                    ],
                );
                set_at(&mut pod, "/spec/hostname", json!(pod_name));
                let svc = str_at(s, "/spec/serviceName");
                if !svc.is_empty() {
                    set_at(&mut pod, "/spec/subdomain", json!(svc));
                }
                let claims = s
                    .pointer("/spec/volumeClaimTemplates")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut volumes: Vec<Value> = pod
                    .pointer("/spec/volumes")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for c in claims {
                    let tname = str_at(&c, "/metadata/name").to_string();
                    let claim = format!("{tname}-{pod_name}");
                    if st.get("persistentvolumeclaims", &ns, &claim).is_none() {
                        let mut pvc = json!({
                            "metadata": {"name": claim, "namespace": ns,
                                "labels": at(s, "/spec/selector/matchLabels").cloned().unwrap_or(json!({}))},
                            "spec": c.get("spec").cloned().unwrap_or(json!({})),
                        });
                        if let Some(m) = pvc.pointer_mut("/spec").and_then(Value::as_object_mut) {
                            m.remove("volumeName");
                        }
                        match api::create(st, pvc_def, Some(&ns), pvc, false) {
                            Ok(_) => emit_event(st, s, "Normal", "SuccessfulCreate", &format!("create Claim {claim} Pod {pod_name} in StatefulSet {name} success"), COMPONENT),
                            Err(e) => emit_event(st, s, "Warning", "FailedCreate", &format!("create Claim {claim} for Pod {pod_name} in StatefulSet {name} failed error: {}", e.message), COMPONENT),
                        }
                    }
                    volumes.retain(|v| str_at(v, "/name") != tname);
                    volumes.push(
                        json!({"name": tname, "persistentVolumeClaim": {"claimName": claim}}),
                    );
                }
                if !volumes.is_empty() {
                    set_at(&mut pod, "/spec/volumes", json!(volumes));
                }
                match api::create(st, pods_def, Some(&ns), pod, false) {
                    Ok(_) => emit_event(
                        st,
                        s,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("create Pod {pod_name} in StatefulSet {name} successful"),
                        COMPONENT,
                    ),
                    Err(e) => emit_event(
                        st,
                        s,
                        "Warning",
                        "FailedCreate",
                        &format!(
                            "create Pod {pod_name} in StatefulSet {name} failed error: {}",
                            e.message
                        ),
                        COMPONENT,
                    ),
                }
                if ordered {
                    break;
                }
            }
        }
    }

    let all_ready = (0..replicas).all(|i| {
        pods.get(&i)
            .is_some_and(|p| !is_terminating(p) && kubelet::is_ready(p))
    });
    // Scale down from the highest ordinal, one at a time when ordered.
    let extra: Vec<(i64, Arc<Value>)> = pods
        .iter()
        .rev()
        .filter(|(o, _)| **o >= replicas)
        .map(|(o, p)| (*o, p.clone()))
        .collect();
    if !extra.is_empty() {
        if extra.iter().any(|(_, p)| is_terminating(p)) && ordered {
            // wait for the previous one to go
        } else if all_ready || !ordered {
            for (_, p) in extra.iter().take(if ordered { 1 } else { extra.len() }) {
                if is_terminating(p) {
                    continue;
                }
                let pname = str_at(p, "/metadata/name").to_string();
                if api::delete(st, pods_def, &ns, &pname, &DeleteOpts::default(), false).is_ok() {
                    emit_event(
                        st,
                        s,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("delete Pod {pname} in StatefulSet {name} successful"),
                        COMPONENT,
                    );
                }
            }
        }
    } else if str_at(s, "/spec/updateStrategy/type") != "OnDelete" && all_ready {
        // Rolling update: replace the highest outdated pod at or above the partition.
        let partition = int_at(s, "/spec/updateStrategy/rollingUpdate/partition", 0);
        let outdated = (partition..replicas)
            .rev()
            .filter_map(|i| pods.get(&i))
            .find(|p| str_at(p, &format!("/metadata/labels/{REV_LABEL}")) != update_rev);
        if let Some(p) = outdated {
            let pname = str_at(p, "/metadata/name").to_string();
            if api::delete(st, pods_def, &ns, &pname, &DeleteOpts::default(), false).is_ok() {
                emit_event(
                    st,
                    s,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("delete Pod {pname} in StatefulSet {name} successful"),
                    COMPONENT,
                );
            }
        }
    }

    // Status.
    let active: Vec<&Arc<Value>> = pods.values().filter(|p| !is_terminating(p)).collect();
    let ready = active.iter().filter(|p| kubelet::is_ready(p)).count() as i64;
    let rev_of = |p: &Value| str_at(p, &format!("/metadata/labels/{REV_LABEL}")).to_string();
    let updated = active.iter().filter(|p| rev_of(p) == update_rev).count() as i64;
    let mut current_rev = current_rev;
    if updated == replicas && ready == replicas && active.len() as i64 == replicas {
        current_rev = update_rev.clone();
    }
    let current = active.iter().filter(|p| rev_of(p) == current_rev).count() as i64;
    let mut new = s.clone();
    set_at(
        &mut new,
        "/status/observedGeneration",
        json!(int_at(s, "/metadata/generation", 1)),
    );
    set_at(&mut new, "/status/replicas", json!(active.len()));
    set_at(&mut new, "/status/readyReplicas", json!(ready));
    set_at(&mut new, "/status/availableReplicas", json!(ready));
    set_at(&mut new, "/status/currentReplicas", json!(current));
    set_at(&mut new, "/status/updatedReplicas", json!(updated));
    set_at(&mut new, "/status/currentRevision", json!(current_rev));
    set_at(&mut new, "/status/updateRevision", json!(update_rev));
    set_at(&mut new, "/status/collisionCount", json!(0));
    st.replace(def, new);
}
