//! The daemonset controller: one pod per eligible node (daemon pods tolerate cordoned
//! nodes, as the real ones do), rolling updates within `maxUnavailable`, and status.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::replicaset::pod_from_template;
use super::scheduler::{unfit_reason, UNSCHEDULABLE_TAINT};
use super::statefulset::ensure_revision;
use super::{
    by_controller, emit_event, int_or_percent, is_active_pod, is_terminating, kubelet, PodsByOwner,
};
use crate::sim::api::{self, random_suffix, DeleteOpts};
use crate::sim::resources::by_plural;
use crate::sim::store::{at, int_at, set_at, str_at, State};

const REV_LABEL: &str = "controller-revision-hash";
const COMPONENT: &str = "daemonset-controller";

pub fn run(st: &mut State, pods: &mut PodsByOwner) {
    let sets = st.list("daemonsets", None);
    if sets.is_empty() {
        return;
    }
    let mut revisions = by_controller(st, "controllerrevisions");
    let nodes = st.list("nodes", None);
    for ds in sets {
        if is_terminating(&ds) {
            continue;
        }
        let uid = str_at(&ds, "/metadata/uid").to_string();
        let owned = pods.remove(&uid).unwrap_or_default();
        let revs = revisions.remove(&uid).unwrap_or_default();
        reconcile(st, &ds, owned, revs, &nodes);
    }
}

/// The tolerations the daemonset controller adds to every daemon pod.
fn daemon_tolerations(spec: &mut Value) {
    let mut ts: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        (UNSCHEDULABLE_TAINT, "NoSchedule"),
    ] {
        if !ts.iter().any(|t| str_at(t, "/key") == key) {
            ts.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    set_at(spec, "/tolerations", json!(ts));
}

fn reconcile(
    st: &mut State,
    ds: &Value,
    owned: Vec<Arc<Value>>,
    revs: Vec<Arc<Value>>,
    nodes: &[Arc<Value>],
) {
    let (Some(pods_def), Some(def)) = (by_plural("pods"), by_plural("daemonsets")) else {
        return;
    };
    let name = str_at(ds, "/metadata/name").to_string();
    let ns = str_at(ds, "/metadata/namespace").to_string();
    let rev = ensure_revision(st, ds, &revs);
    let hash = rev.rsplit('-').next().unwrap_or("").to_string();
    let mut spec = ds
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(json!({}));
    daemon_tolerations(&mut spec);
    let eligible: Vec<String> = nodes
        .iter()
        .filter(|n| unfit_reason(n, &spec).is_none())
        .map(|n| str_at(n, "/metadata/name").to_string())
        .collect();
    let mut by_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for p in owned.iter().filter(|p| is_active_pod(p)) {
        by_node
            .entry(str_at(p, "/spec/nodeName").to_string())
            .or_default()
            .push(p.clone());
    }
    for node in &eligible {
        if by_node.contains_key(node) {
            continue;
        }
        let pod_name = format!("{name}-{}", random_suffix(5));
        let mut pod = pod_from_template(
            ds,
            &pod_name,
            &[
                (REV_LABEL, &hash),
                (
                    "pod-template-generation",
                    &int_at(ds, "/metadata/generation", 1).to_string(),
                ),
            ],
        );
        set_at(
            &mut pod,
            "/metadata/generateName",
            json!(format!("{name}-")),
        );
        let mut pspec = spec.clone();
        set_at(&mut pspec, "/nodeName", json!(node));
        pod["spec"] = pspec;
        match api::create(st, pods_def, Some(&ns), pod, false) {
            Ok(_) => emit_event(
                st,
                ds,
                "Normal",
                "SuccessfulCreate",
                &format!("Created pod: {pod_name}"),
                COMPONENT,
            ),
            Err(e) => emit_event(
                st,
                ds,
                "Warning",
                "FailedCreate",
                &format!("Error creating: {}", e.message),
                COMPONENT,
            ),
        }
    }
    // Pods on nodes that are gone or no longer eligible.
    for (node, ps) in &by_node {
        if !eligible.contains(node) {
            for p in ps {
                let pname = str_at(p, "/metadata/name").to_string();
                let _ = api::delete(st, pods_def, &ns, &pname, &DeleteOpts::default(), false);
            }
        }
    }
    // Rolling update.
    let desired = eligible.len() as i64;
    if str_at(ds, "/spec/updateStrategy/type") != "OnDelete" {
        let max_unavail = int_or_percent(
            at(ds, "/spec/updateStrategy/rollingUpdate/maxUnavailable"),
            desired,
            true,
            1,
        )
        .max(1);
        let unavailable = eligible
            .iter()
            .filter(|n| {
                !by_node
                    .get(*n)
                    .is_some_and(|ps| ps.iter().any(|p| kubelet::is_ready(p)))
            })
            .count() as i64;
        let mut budget = max_unavail - unavailable;
        for node in &eligible {
            if budget <= 0 {
                break;
            }
            let Some(ps) = by_node.get(node) else {
                continue;
            };
            for p in ps {
                if str_at(p, &format!("/metadata/labels/{REV_LABEL}")) != hash {
                    let pname = str_at(p, "/metadata/name").to_string();
                    if api::delete(st, pods_def, &ns, &pname, &DeleteOpts::default(), false).is_ok()
                    {
                        emit_event(
                            st,
                            ds,
                            "Normal",
                            "SuccessfulDelete",
                            &format!("Deleted pod: {pname}"),
                            COMPONENT,
                        );
                        budget -= 1;
                    }
                }
            }
        }
    }
    let scheduled = eligible.iter().filter(|n| by_node.contains_key(*n)).count() as i64;
    let ready = eligible
        .iter()
        .filter(|n| {
            by_node
                .get(*n)
                .is_some_and(|ps| ps.iter().any(|p| kubelet::is_ready(p)))
        })
        .count() as i64;
    let updated = eligible
        .iter()
        .filter(|n| {
            by_node.get(*n).is_some_and(|ps| {
                ps.iter()
                    .any(|p| str_at(p, &format!("/metadata/labels/{REV_LABEL}")) == hash)
            })
        })
        .count() as i64;
    let mut new = ds.clone();
    set_at(
        &mut new,
        "/status/observedGeneration",
        json!(int_at(ds, "/metadata/generation", 1)),
    );
    set_at(&mut new, "/status/desiredNumberScheduled", json!(desired));
    set_at(&mut new, "/status/currentNumberScheduled", json!(scheduled));
    set_at(&mut new, "/status/numberReady", json!(ready));
    set_at(&mut new, "/status/numberAvailable", json!(ready));
    set_at(
        &mut new,
        "/status/numberUnavailable",
        json!((desired - ready).max(0)),
    );
    set_at(&mut new, "/status/updatedNumberScheduled", json!(updated));
    set_at(&mut new, "/status/numberMisscheduled", json!(0));
    if desired - ready <= 0 {
        if let Some(s) = new.get_mut("status").and_then(Value::as_object_mut) {
            s.remove("numberUnavailable");
        }
    }
    st.replace(def, new);
}
