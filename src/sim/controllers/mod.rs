//! The simulated control plane: controllers that turn desired state into pods and status,
//! run in one loop on a clock that [`SimConfig::speed`](super::SimConfig) speeds up.
//!
//! Every tick takes the state lock once and runs each controller in order (deployment,
//! replicaset, statefulset, daemonset, scheduler, kubelet, then the slower ones: disruption
//! budgets, PVCs, HPAs, garbage collection). Controllers write through the same store as
//! clients, so watchers see their changes; they skip writes that change nothing.

pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod gc;
pub mod job;
pub mod kubelet;
pub mod pvc;
pub mod replicaset;
pub mod scheduler;
pub mod snapshot;
pub mod statefulset;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::resources::by_plural;
use super::server::Sim;
use super::store::{at, int_at, now_str, set_at, str_at, State};

/// Controller tick at demo pace; divided by `speed`.
const BASE_TICK: Duration = Duration::from_millis(200);
/// Floor of the tick however fast the simulation runs, to leave CPU for clients.
const MIN_TICK: Duration = Duration::from_millis(5);
/// The slow controllers (budgets, PVCs, HPAs, GC) run every this many ticks.
const SLOW_EVERY: u64 = 3;
/// Garbage collection and namespace cleanup run every this many ticks.
const GC_EVERY: u64 = 10;
/// Controllers sleep at least this many times their last tick's cost.
const IDLE_FACTOR: u32 = 3;
/// Events kept cluster-wide; older ones are deleted (the real server expires them after 1h).
const MAX_EVENTS: usize = 2_000;

/// Controllers' private bookkeeping, kept under the state lock.
#[derive(Default)]
pub struct Runtime {
    /// Pod uid → when the kubelet first saw it bound to its node.
    pub pod_seen: HashMap<String, Instant>,
    /// Pod uid → when the kubelet saw its deletion start.
    pub pod_term: HashMap<String, Instant>,
    /// Pod uid → next simulated crash of a crash-looping container.
    pub next_restart: HashMap<String, Instant>,
    /// Deployment uid → last time its rollout made progress.
    pub progress: HashMap<String, Instant>,
    /// Pod uids already reported as unschedulable (one FailedScheduling event each).
    pub unschedulable: HashSet<String>,
    /// PVC uid → when a resize (or binding) started.
    pub pvc_timer: HashMap<String, Instant>,
    /// Job uid → when the job controller saw a Job with `ttlSecondsAfterFinished` finished.
    pub job_finished: HashMap<String, Instant>,
    /// Event de-duplication key → (namespace, event name).
    pub events: HashMap<String, (String, String)>,
    pub event_order: VecDeque<(String, String, String)>,
    pub event_seq: u64,
    pub ticks: u64,
    /// Wall time the last controller tick held the state lock.
    pub last_tick_cost: Duration,
}

/// Simulated seconds elapsed since `since` at `speed`.
pub fn sim_elapsed(since: Instant, speed: f64) -> f64 {
    since.elapsed().as_secs_f64() * speed
}

/// Pods grouped by their controller's uid, computed once per tick.
pub type PodsByOwner = HashMap<String, Vec<Arc<Value>>>;

/// Runs the controllers until shutdown. Each controller takes the state lock on its own
/// (API requests get in between), and the pause between ticks is the scaled tick or
/// [`IDLE_FACTOR`] times the last tick's cost, whichever is longer, so the controllers never
/// hold the lock more than a fraction of the time however large the cluster.
pub async fn run(sim: Arc<Sim>) {
    let speed = sim.lock().speed;
    let tick = BASE_TICK.div_f64(speed.max(0.001)).max(MIN_TICK);
    loop {
        let mut cost = Duration::ZERO;
        let mut phase = |f: &mut dyn FnMut(&mut State)| {
            let mut st = sim.lock();
            let started = Instant::now();
            f(&mut st);
            cost += started.elapsed();
        };
        let mut pods = PodsByOwner::new();
        let mut slow = false;
        let mut collect = false;
        phase(&mut |st| {
            st.rt.ticks += 1;
            slow = st.rt.ticks.is_multiple_of(SLOW_EVERY);
            collect = st.rt.ticks.is_multiple_of(GC_EVERY);
            deployment::run(st);
            pods = by_controller(st, "pods");
        });
        tokio::task::yield_now().await;
        phase(&mut |st| replicaset::run(st, &mut pods));
        tokio::task::yield_now().await;
        phase(&mut |st| {
            statefulset::run(st, &mut pods);
            daemonset::run(st, &mut pods);
            job::run(st, &mut pods);
        });
        tokio::task::yield_now().await;
        phase(&mut |st| scheduler::run(st));
        tokio::task::yield_now().await;
        phase(&mut |st| kubelet::run(st));
        if slow {
            tokio::task::yield_now().await;
            phase(&mut |st| {
                disruption::run(st);
                pvc::run(st);
                snapshot::run(st);
                hpa(st);
            });
        }
        if collect {
            tokio::task::yield_now().await;
            phase(&mut |st| gc::run(st));
        }
        sim.lock().rt.last_tick_cost = cost;
        let pause = tick.max(cost * IDLE_FACTOR);
        tokio::select! {
            _ = sim.shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One pass of every controller.
pub fn tick_once(st: &mut State) {
    st.rt.ticks += 1;
    deployment::run(st);
    let mut pods = by_controller(st, "pods");
    replicaset::run(st, &mut pods);
    statefulset::run(st, &mut pods);
    daemonset::run(st, &mut pods);
    job::run(st, &mut pods);
    scheduler::run(st);
    kubelet::run(st);
    if st.rt.ticks.is_multiple_of(SLOW_EVERY) {
        disruption::run(st);
        pvc::run(st);
        snapshot::run(st);
        hpa(st);
    }
    if st.rt.ticks.is_multiple_of(GC_EVERY) {
        gc::run(st);
    }
}

/// An owner reference to `owner` (marked as the managing controller).
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": str_at(owner, "/apiVersion"),
        "kind": str_at(owner, "/kind"),
        "name": str_at(owner, "/metadata/name"),
        "uid": str_at(owner, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The uid of the object's managing controller, if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    at(obj, "/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller") == Some(&json!(true)))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

/// The kind of the object's managing controller, if any.
pub fn controller_kind(obj: &Value) -> Option<&str> {
    at(obj, "/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller") == Some(&json!(true)))
        .and_then(|r| r.get("kind"))
        .and_then(Value::as_str)
}

/// Objects of `plural` grouped by their controller's uid.
pub fn by_controller(st: &State, plural: &str) -> HashMap<String, Vec<Arc<Value>>> {
    let mut m: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for o in st.list(plural, None) {
        if let Some(uid) = controller_uid(&o) {
            m.entry(uid.to_string()).or_default().push(o.clone());
        }
    }
    m
}

pub fn is_terminating(o: &Value) -> bool {
    at(o, "/metadata/deletionTimestamp").is_some()
}

/// A pod that counts towards its controller: not terminating, not finished.
pub fn is_active_pod(p: &Value) -> bool {
    let phase = str_at(p, "/status/phase");
    !is_terminating(p) && phase != "Succeeded" && phase != "Failed"
}

/// The pod-template hash, encoded like the real controller's (`5d59d67564`-style).
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let digest = Sha256::digest(template.to_string().as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Resolves an int-or-percent against `total` (`round_up` as the real helpers do).
pub fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool, default: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) => {
            if let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
                let x = p * total as f64 / 100.0;
                if round_up {
                    x.ceil() as i64
                } else {
                    x.floor() as i64
                }
            } else {
                s.parse().unwrap_or(default)
            }
        }
        _ => default,
    }
}

/// Records a `v1 Event` about `involved`, folding repeats into `count` like the real
/// event recorder.
pub fn emit_event(
    st: &mut State,
    involved: &Value,
    etype: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Some(def) = by_plural("events") else {
        return;
    };
    let ns = match str_at(involved, "/metadata/namespace") {
        "" => "default".to_string(),
        n => n.to_string(),
    };
    let uid = str_at(involved, "/metadata/uid");
    let key = format!("{uid}|{reason}|{message}");
    let now = now_str();
    if let Some((ens, ename)) = st.rt.events.get(&key).cloned() {
        if let Some(ev) = st.get("events", &ens, &ename).cloned() {
            let mut ev = (*ev).clone();
            let count = int_at(&ev, "/count", 1) + 1;
            set_at(&mut ev, "/count", json!(count));
            set_at(&mut ev, "/lastTimestamp", json!(now));
            st.replace(def, ev);
            return;
        }
    }
    st.rt.event_seq += 1;
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    let name = format!(
        "{}.{:016x}",
        str_at(involved, "/metadata/name"),
        nanos.wrapping_add(st.rt.event_seq)
    );
    let mut ev = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "kind": str_at(involved, "/kind"),
            "namespace": str_at(involved, "/metadata/namespace"),
            "name": str_at(involved, "/metadata/name"),
            "uid": uid,
            "apiVersion": str_at(involved, "/apiVersion"),
            "resourceVersion": str_at(involved, "/metadata/resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": etype,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": "",
    });
    if let Some(host) = at(involved, "/spec/nodeName").and_then(Value::as_str) {
        if component == "kubelet" {
            set_at(&mut ev, "/source/host", json!(host));
        }
    }
    State::prepare_new(def, &mut ev);
    st.insert(def, ev);
    st.rt.events.insert(key.clone(), (ns.clone(), name.clone()));
    st.rt.event_order.push_back((key, ns, name));
    while st.rt.event_order.len() > MAX_EVENTS {
        if let Some((k, ns, name)) = st.rt.event_order.pop_front() {
            st.rt.events.remove(&k);
            st.remove(def, &ns, &name);
        }
    }
}

/// Sets a condition in `obj.status.conditions`, keeping `lastTransitionTime` when the
/// status does not change; `update_time` also stamps `lastUpdateTime` (deployment style).
pub fn set_condition(
    obj: &mut Value,
    ctype: &str,
    status: &str,
    reason: &str,
    message: &str,
    update_time: bool,
) {
    let now = now_str();
    let mut conds: Vec<Value> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pos = conds.iter().position(|c| str_at(c, "/type") == ctype);
    let mut c = pos
        .map(|p| conds[p].clone())
        .unwrap_or_else(|| json!({"type": ctype}));
    if str_at(&c, "/status") != status || c.get("lastTransitionTime").is_none() {
        c["lastTransitionTime"] = json!(now);
    }
    if update_time {
        c["lastUpdateTime"] = json!(now);
    }
    c["status"] = json!(status);
    c["reason"] = json!(reason);
    c["message"] = json!(message);
    match pos {
        Some(p) => conds[p] = c,
        None => conds.push(c),
    }
    set_at(obj, "/status/conditions", json!(conds));
}

pub fn condition<'a>(obj: &'a Value, ctype: &str) -> Option<&'a Value> {
    at(obj, "/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| str_at(c, "/type") == ctype)
}

/// HPAs: reports the target's replicas and the desired count clamped to min/max; the
/// simulation has no metrics, so it never scales.
fn hpa(st: &mut State) {
    let Some(def) = by_plural("horizontalpodautoscalers") else {
        return;
    };
    for h in st.list("horizontalpodautoscalers", None) {
        let ns = str_at(&h, "/metadata/namespace");
        let kind = str_at(&h, "/spec/scaleTargetRef/kind");
        let name = str_at(&h, "/spec/scaleTargetRef/name");
        let plural = match kind {
            "Deployment" => "deployments",
            "StatefulSet" => "statefulsets",
            "ReplicaSet" => "replicasets",
            _ => continue,
        };
        let Some(target) = st.get(plural, ns, name).cloned() else {
            continue;
        };
        let current = int_at(&target, "/status/replicas", 0);
        let min = int_at(&h, "/spec/minReplicas", 1);
        let max = int_at(&h, "/spec/maxReplicas", 1).max(min);
        let desired = int_at(&target, "/spec/replicas", 0).clamp(min, max);
        let mut new = (*h).clone();
        set_at(&mut new, "/status/currentReplicas", json!(current));
        set_at(&mut new, "/status/desiredReplicas", json!(desired));
        set_at(&mut new, "/status/currentMetrics", json!([]));
        set_at(
            &mut new,
            "/status/observedGeneration",
            json!(int_at(&h, "/metadata/generation", 1)),
        );
        if condition(&new, "AbleToScale").is_none() {
            set_condition(
                &mut new,
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size",
                false,
            );
            set_condition(&mut new, "ScalingActive", "False", "FailedGetResourceMetric", "the HPA was unable to compute the replica count: no metrics in the simulated cluster", false);
        }
        st.replace(def, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_like_the_deployment_controller() {
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, true, 0), 1);
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, false, 0), 0);
        assert_eq!(int_or_percent(Some(&json!("50%")), 5, true, 0), 3);
        assert_eq!(int_or_percent(Some(&json!(2)), 5, true, 0), 2);
        assert_eq!(int_or_percent(None, 5, true, 7), 7);
    }

    #[test]
    fn template_hashes_are_stable_and_distinct() {
        let a = template_hash(&json!({"spec": {"containers": [{"image": "a"}]}}));
        let b = template_hash(&json!({"spec": {"containers": [{"image": "b"}]}}));
        assert_eq!(
            a,
            template_hash(&json!({"spec": {"containers": [{"image": "a"}]}}))
        );
        assert_ne!(a, b);
        assert!(a.len() >= 6);
    }
}
