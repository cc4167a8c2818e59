//! The job controller: runs `parallelism` pods at a time until `completions` succeeded, or
//! fails the Job once more than `backoffLimit` pods failed. Pods run to completion in the
//! kubelet (a `:crashloop` image fails instead). A finished Job with
//! `ttlSecondsAfterFinished` is deleted that many simulated seconds later, its pods with it
//! (background propagation, as the TTL-after-finished controller does).

use serde_json::{json, Value};

use super::replicaset::pod_from_template;
use super::{emit_event, is_terminating, set_condition, PodsByOwner};
use crate::sim::api::{self, random_suffix};
use crate::sim::resources::by_plural;
use crate::sim::store::{int_at, now_str, set_at, str_at, State};

const COMPONENT: &str = "job-controller";

pub fn run(st: &mut State, pods: &mut PodsByOwner) {
    let jobs = st.list("jobs", None);
    let uids: std::collections::HashSet<String> = jobs
        .iter()
        .map(|j| str_at(j, "/metadata/uid").to_string())
        .collect();
    // Timers of Jobs deleted by someone else go with them.
    st.rt.job_finished.retain(|uid, _| uids.contains(uid));
    for job in jobs {
        if is_terminating(&job) {
            continue;
        }
        let owned = pods
            .remove(str_at(&job, "/metadata/uid"))
            .unwrap_or_default();
        reconcile(st, &job, &owned);
        expire(st, &job);
    }
}

/// Deletes a finished Job whose `ttlSecondsAfterFinished` has passed since it finished.
fn expire(st: &mut State, job: &Value) {
    let Some(ttl) = job
        .pointer("/spec/ttlSecondsAfterFinished")
        .and_then(Value::as_f64)
    else {
        return;
    };
    // The Job as the reconcile just wrote it.
    let name = str_at(job, "/metadata/name").to_string();
    let ns = str_at(job, "/metadata/namespace").to_string();
    let Some(current) = st.get("jobs", &ns, &name).cloned() else {
        return;
    };
    if !finished(&current) {
        return;
    }
    let uid = str_at(&current, "/metadata/uid").to_string();
    let now = std::time::Instant::now();
    let since = *st.rt.job_finished.entry(uid.clone()).or_insert(now);
    if super::sim_elapsed(since, st.speed) < ttl {
        return;
    }
    st.rt.job_finished.remove(&uid);
    let Some(def) = by_plural("jobs") else {
        return;
    };
    let opts = api::DeleteOpts {
        grace_seconds: None,
        propagation: Some("Background".into()),
        precondition_uid: Some(uid),
        precondition_rv: None,
        dry_run: false,
    };
    let _ = api::delete(st, def, &ns, &name, &opts, false);
}

fn finished(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                matches!(str_at(c, "/type"), "Complete" | "Failed")
                    && str_at(c, "/status") == "True"
            })
        })
}

fn reconcile(st: &mut State, job: &Value, owned: &[std::sync::Arc<Value>]) {
    let (Some(pods_def), Some(def)) = (by_plural("pods"), by_plural("jobs")) else {
        return;
    };
    let name = str_at(job, "/metadata/name").to_string();
    let ns = str_at(job, "/metadata/namespace").to_string();
    let completions = int_at(job, "/spec/completions", 1).max(0);
    let parallelism = int_at(job, "/spec/parallelism", 1).max(0);
    let backoff_limit = int_at(job, "/spec/backoffLimit", 6);
    let phase = |p: &Value| str_at(p, "/status/phase").to_string();
    let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let mut active = owned
        .iter()
        .filter(|p| !is_terminating(p) && !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
        .count() as i64;
    let done = finished(job);
    let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
    if !done && !suspended && failed <= backoff_limit {
        let want = parallelism.min(completions - succeeded).max(0);
        let missing = (want - active).max(0);
        for _ in 0..missing {
            let pod_name = format!("{name}-{}", random_suffix(5));
            let uid = str_at(job, "/metadata/uid").to_string();
            let mut pod = pod_from_template(
                job,
                &pod_name,
                &[
                    ("batch.kubernetes.io/job-name", &name),
                    ("job-name", &name),
                    ("batch.kubernetes.io/controller-uid", &uid),
                ],
            );
            set_at(
                &mut pod,
                "/metadata/generateName",
                json!(format!("{name}-")),
            );
            if api::create(st, pods_def, Some(&ns), pod, false).is_ok() {
                emit_event(
                    st,
                    job,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {pod_name}"),
                    COMPONENT,
                );
                active += 1;
            }
        }
    }
    let mut new = job.clone();
    if str_at(job, "/status/startTime").is_empty() {
        set_at(&mut new, "/status/startTime", json!(now_str()));
    }
    set_at(&mut new, "/status/active", json!(active));
    set_at(&mut new, "/status/succeeded", json!(succeeded));
    set_at(&mut new, "/status/failed", json!(failed));
    set_at(
        &mut new,
        "/status/ready",
        json!(owned.iter().filter(|p| super::kubelet::is_ready(p)).count()),
    );
    if !done && succeeded >= completions {
        set_condition(
            &mut new,
            "SuccessCriteriaMet",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            false,
        );
        set_condition(
            &mut new,
            "Complete",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            false,
        );
        set_at(&mut new, "/status/completionTime", json!(now_str()));
        set_at(&mut new, "/status/active", json!(0));
        emit_event(st, job, "Normal", "Completed", "Job completed", COMPONENT);
    } else if !done && failed > backoff_limit {
        set_condition(
            &mut new,
            "FailureTarget",
            "True",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            false,
        );
        set_condition(
            &mut new,
            "Failed",
            "True",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            false,
        );
        emit_event(
            st,
            job,
            "Warning",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            COMPONENT,
        );
    }
    st.replace(def, new);
}
