//! The replicaset controller: keeps `spec.replicas` active pods (named `<rs>-<5 random>`,
//! owned by the ReplicaSet) and reports replicas/ready/available.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{emit_event, is_active_pod, is_terminating, kubelet, owner_ref, PodsByOwner};
use crate::sim::api::{self, random_suffix, DeleteOpts};
use crate::sim::resources::by_plural;
use crate::sim::store::{at, int_at, set_at, str_at, State};

/// Pods one ReplicaSet creates per tick (the real controller's slow-start burst is 500).
const CREATE_BURST: usize = 500;
const COMPONENT: &str = "replicaset-controller";

pub fn run(st: &mut State, pods: &mut PodsByOwner) {
    let sets = st.list("replicasets", None);
    if sets.is_empty() {
        return;
    }
    for rs in sets {
        if is_terminating(&rs) {
            continue;
        }
        let owned = pods
            .remove(str_at(&rs, "/metadata/uid"))
            .unwrap_or_default();
        reconcile(st, &rs, owned);
    }
}

/// Creates a pod from a controller's template.
pub fn pod_from_template(owner: &Value, name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let tmpl = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let mut pod = json!({
        "metadata": {
            "name": name,
            "namespace": str_at(owner, "/metadata/namespace"),
            "labels": at(&tmpl, "/metadata/labels").cloned().unwrap_or(json!({})),
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": tmpl.get("spec").cloned().unwrap_or(json!({})),
    });
    if let Some(a) = at(&tmpl, "/metadata/annotations") {
        set_at(&mut pod, "/metadata/annotations", a.clone());
    }
    for (k, v) in extra_labels {
        set_at(
            &mut pod,
            &format!("/metadata/labels/{}", k.replace('/', "~1")),
            json!(v),
        );
    }
    pod
}

/// Ready for at least `min_ready` simulated seconds.
pub fn is_available(p: &Value, min_ready: i64, speed: f64) -> bool {
    if !kubelet::is_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = super::condition(p, "Ready")
        .map(|c| str_at(c, "/lastTransitionTime"))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match since {
        Some(t) => {
            let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds()
                as f64
                / 1000.0;
            secs * speed >= min_ready as f64
        }
        None => false,
    }
}

/// Deletion preference: unscheduled, then pending, then not ready, then the newest.
fn victim_rank(p: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    (
        u8::from(!str_at(p, "/spec/nodeName").is_empty()),
        u8::from(str_at(p, "/status/phase") != "Pending"),
        u8::from(kubelet::is_ready(p)),
        std::cmp::Reverse(str_at(p, "/metadata/creationTimestamp").to_string()),
    )
}

fn reconcile(st: &mut State, rs: &Value, owned: Vec<Arc<Value>>) {
    let (Some(pods_def), Some(rs_def)) = (by_plural("pods"), by_plural("replicasets")) else {
        return;
    };
    let ns = str_at(rs, "/metadata/namespace").to_string();
    let name = str_at(rs, "/metadata/name").to_string();
    let desired = int_at(rs, "/spec/replicas", 1).max(0) as usize;
    let mut active: Vec<Arc<Value>> = owned.into_iter().filter(|p| is_active_pod(p)).collect();
    if active.len() < desired {
        let n = (desired - active.len()).min(CREATE_BURST);
        for _ in 0..n {
            let pod_name = format!("{name}-{}", random_suffix(5));
            let mut pod = pod_from_template(rs, &pod_name, &[]);
            set_at(
                &mut pod,
                "/metadata/generateName",
                json!(format!("{name}-")),
            );
            match api::create(st, pods_def, Some(&ns), pod, false) {
                Ok(p) => {
                    emit_event(
                        st,
                        rs,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {pod_name}"),
                        COMPONENT,
                    );
                    active.push(Arc::new(p));
                }
                Err(e) => {
                    emit_event(
                        st,
                        rs,
                        "Warning",
                        "FailedCreate",
                        &format!("Error creating: {}", e.message),
                        COMPONENT,
                    );
                    break;
                }
            }
        }
    } else if active.len() > desired {
        active.sort_by_key(|p| victim_rank(p));
        let extra = active.len() - desired;
        let victims: Vec<Arc<Value>> = active.drain(..extra).collect();
        for v in victims {
            let pname = str_at(&v, "/metadata/name").to_string();
            if api::delete(st, pods_def, &ns, &pname, &DeleteOpts::default(), false).is_ok() {
                emit_event(
                    st,
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pname}"),
                    COMPONENT,
                );
            }
        }
    }
    let min_ready = int_at(rs, "/spec/minReadySeconds", 0);
    let ready = active.iter().filter(|p| kubelet::is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| is_available(p, min_ready, st.speed))
        .count();
    let mut new = rs.clone();
    set_at(&mut new, "/status/replicas", json!(active.len()));
    set_at(
        &mut new,
        "/status/fullyLabeledReplicas",
        json!(active.len()),
    );
    set_at(&mut new, "/status/readyReplicas", json!(ready));
    set_at(&mut new, "/status/availableReplicas", json!(available));
    set_at(
        &mut new,
        "/status/observedGeneration",
        json!(int_at(rs, "/metadata/generation", 1)),
    );
    st.replace(rs_def, new);
}
