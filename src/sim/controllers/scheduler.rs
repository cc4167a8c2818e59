//! The scheduler: binds each unscheduled pod to the Ready, schedulable node whose taints it
//! tolerates and whose labels match its nodeSelector, preferring the node with fewest pods.
//! When nothing fits the pod stays Pending with `PodScheduled=False` and one
//! `FailedScheduling` event.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{condition, emit_event, is_active_pod, is_terminating, set_condition};
use crate::sim::resources::by_plural;
use crate::sim::store::{at, str_at, State};

const COMPONENT: &str = "default-scheduler";
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Whether the pod tolerates a taint (`key`, `value`, `effect`).
pub fn tolerates(pod_spec: &Value, key: &str, value: &str, effect: &str) -> bool {
    pod_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                let tkey = str_at(t, "/key");
                let op = str_at(t, "/operator");
                let teffect = str_at(t, "/effect");
                let key_ok = if op == "Exists" {
                    tkey.is_empty() || tkey == key
                } else {
                    tkey == key && str_at(t, "/value") == value
                };
                key_ok && (teffect.is_empty() || teffect == effect)
            })
        })
}

pub fn node_ready(node: &Value) -> bool {
    condition(node, "Ready").is_some_and(|c| str_at(c, "/status") == "True")
}

/// Why `node` cannot take a pod with `spec`, or `None` when it can.
pub fn unfit_reason(node: &Value, spec: &Value) -> Option<&'static str> {
    if is_terminating(node) || !node_ready(node) {
        return Some("node(s) were not ready");
    }
    if at(node, "/spec/unschedulable") == Some(&json!(true))
        && !tolerates(spec, UNSCHEDULABLE_TAINT, "", "NoSchedule")
    {
        return Some("node(s) were unschedulable");
    }
    if let Some(taints) = at(node, "/spec/taints").and_then(Value::as_array) {
        for t in taints {
            let effect = str_at(t, "/effect");
            if (effect == "NoSchedule" || effect == "NoExecute")
                && !tolerates(spec, str_at(t, "/key"), str_at(t, "/value"), effect)
            {
                return Some("node(s) had untolerated taint(s)");
            }
        }
    }
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        let labels = at(node, "/metadata/labels").and_then(Value::as_object);
        let ok = sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !ok {
            return Some("node(s) didn't match Pod's node affinity/selector");
        }
    }
    if !matches_required_affinity(node, spec) {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    None
}

/// `requiredDuringSchedulingIgnoredDuringExecution`: some node-selector term whose every
/// expression (`In`, `NotIn`, `Exists`, `DoesNotExist`) holds for the node's labels; no
/// terms, no constraint.
fn matches_required_affinity(node: &Value, spec: &Value) -> bool {
    let Some(terms) = at(
        spec,
        "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    )
    .and_then(Value::as_array)
    .filter(|t| !t.is_empty()) else {
        return true;
    };
    let labels = at(node, "/metadata/labels").and_then(Value::as_object);
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    terms.iter().any(|term| {
        at(term, "/matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(|expressions| {
                expressions.iter().all(|e| {
                    let values: Vec<&str> = at(e, "/values")
                        .and_then(Value::as_array)
                        .map(|v| v.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let value = label(str_at(e, "/key"));
                    match str_at(e, "/operator") {
                        "In" => value.is_some_and(|v| values.contains(&v)),
                        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                        "Exists" => value.is_some(),
                        "DoesNotExist" => value.is_none(),
                        _ => false,
                    }
                })
            })
    })
}

pub fn run(st: &mut State) {
    let Some(pods_def) = by_plural("pods") else {
        return;
    };
    let pending: Vec<_> = st
        .list("pods", None)
        .into_iter()
        .filter(|p| str_at(p, "/spec/nodeName").is_empty() && is_active_pod(p))
        .collect();
    if pending.is_empty() {
        return;
    }
    let nodes = st.list("nodes", None);
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in st.list("pods", None) {
        let n = str_at(&p, "/spec/nodeName");
        if !n.is_empty() && is_active_pod(&p) {
            *load.entry(n.to_string()).or_default() += 1;
        }
    }
    for pod in pending {
        let spec = pod.get("spec").cloned().unwrap_or(json!({}));
        let mut reasons: HashMap<&'static str, usize> = HashMap::new();
        let mut best: Option<(usize, String)> = None;
        for n in &nodes {
            let nname = str_at(n, "/metadata/name").to_string();
            match unfit_reason(n, &spec) {
                Some(r) => *reasons.entry(r).or_default() += 1,
                None => {
                    let l = load.get(&nname).copied().unwrap_or(0);
                    if best.as_ref().is_none_or(|(bl, bn)| (l, &nname) < (*bl, bn)) {
                        best = Some((l, nname));
                    }
                }
            }
        }
        let uid = str_at(&pod, "/metadata/uid").to_string();
        let mut new = (*pod).clone();
        match best {
            Some((_, node)) => {
                *load.entry(node.clone()).or_default() += 1;
                new["spec"]["nodeName"] = json!(node);
                set_condition(&mut new, "PodScheduled", "True", "", "", false);
                if let Some(c) = new
                    .pointer_mut("/status/conditions")
                    .and_then(Value::as_array_mut)
                {
                    for c in c
                        .iter_mut()
                        .filter(|c| str_at(c, "/type") == "PodScheduled")
                    {
                        if let Some(m) = c.as_object_mut() {
                            m.remove("reason");
                            m.remove("message");
                        }
                    }
                }
                st.rt.unschedulable.remove(&uid);
                let out = st.replace(pods_def, new);
                let msg = format!(
                    "Successfully assigned {}/{} to {node}",
                    str_at(&out, "/metadata/namespace"),
                    str_at(&out, "/metadata/name")
                );
                emit_event(st, &out, "Normal", "Scheduled", &msg, COMPONENT);
            }
            None => {
                if st.rt.unschedulable.contains(&uid) {
                    continue;
                }
                let mut parts: Vec<String> =
                    reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
                parts.sort();
                let total = nodes.len();
                let msg = if parts.is_empty() {
                    "0/0 nodes are available: no nodes available to schedule pods.".to_string()
                } else {
                    format!(
                        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
                        parts.join(", ")
                    )
                };
                set_condition(
                    &mut new,
                    "PodScheduled",
                    "False",
                    "Unschedulable",
                    &msg,
                    false,
                );
                st.rt.unschedulable.insert(uid);
                let out = st.replace(pods_def, new);
                emit_event(st, &out, "Warning", "FailedScheduling", &msg, COMPONENT);
            }
        }
    }
}
