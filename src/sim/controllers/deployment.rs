//! The deployment controller: one ReplicaSet per pod-template hash, rolling updates within
//! maxSurge/maxUnavailable (or Recreate), revisions, history cleanup, status and the
//! Progressing/Available conditions including `ProgressDeadlineExceeded`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::{
    by_controller, condition, emit_event, int_or_percent, is_terminating, owner_ref, set_condition,
    sim_elapsed, template_hash,
};
use crate::sim::api;
use crate::sim::resources::by_plural;
use crate::sim::store::{at, int_at, set_at, str_at, State};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_PTR: &str = "/metadata/annotations/deployment.kubernetes.io~1revision";
const DESIRED_PTR: &str = "/metadata/annotations/deployment.kubernetes.io~1desired-replicas";
const MAX_PTR: &str = "/metadata/annotations/deployment.kubernetes.io~1max-replicas";
const HASH_LABEL: &str = "pod-template-hash";
const COMPONENT: &str = "deployment-controller";

fn revision(o: &Value) -> i64 {
    str_at(o, REVISION_PTR).parse().unwrap_or(0)
}

fn replicas(o: &Value) -> i64 {
    int_at(o, "/spec/replicas", 0)
}

/// Surge and unavailability budgets for `desired` replicas, as the real controller
/// resolves them (surge rounds up, unavailable down; both zero means one unavailable).
pub fn rolling_budget(d: &Value, desired: i64) -> (i64, i64) {
    let surge = int_or_percent(
        at(d, "/spec/strategy/rollingUpdate/maxSurge"),
        desired,
        true,
        1,
    );
    let mut unavail = int_or_percent(
        at(d, "/spec/strategy/rollingUpdate/maxUnavailable"),
        desired,
        false,
        0,
    );
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    (surge, unavail.min(desired))
}

/// New-ReplicaSet size for a rolling update step: grow into the surge room.
pub fn new_rs_target(desired: i64, surge: i64, new_current: i64, all_current: i64) -> i64 {
    if new_current >= desired {
        return desired;
    }
    let max_total = desired + surge;
    if all_current >= max_total {
        return new_current;
    }
    new_current + (max_total - all_current).min(desired - new_current)
}

/// Spreads `allowed` pods over ReplicaSets of `sizes` in proportion (inactive ones stay at
/// 0); the rounding leftover goes to the largest, as the real controller's proportional
/// scaling.
pub fn proportional(sizes: &[i64], allowed: i64) -> Vec<i64> {
    let total: i64 = sizes.iter().sum();
    if total <= 0 {
        return sizes.to_vec();
    }
    let mut out: Vec<i64> = sizes.iter().map(|s| s * allowed / total).collect();
    let leftover = allowed - out.iter().sum::<i64>();
    if let Some((i, _)) = sizes
        .iter()
        .enumerate()
        .max_by_key(|(i, s)| (**s, std::cmp::Reverse(*i)))
    {
        out[i] = (out[i] + leftover).max(0);
    }
    out
}

/// How many old pods may go now: total - minAvailable - new RS's unavailable pods.
pub fn max_scale_down(desired: i64, unavail: i64, all_current: i64, new_unavailable: i64) -> i64 {
    all_current - (desired - unavail) - new_unavailable
}

pub fn run(st: &mut State) {
    let deps = st.list("deployments", None);
    if deps.is_empty() {
        return;
    }
    let mut owned = by_controller(st, "replicasets");
    for d in deps {
        if is_terminating(&d) {
            continue;
        }
        let rss = owned
            .remove(str_at(&d, "/metadata/uid"))
            .unwrap_or_default();
        reconcile(st, &d, rss);
    }
}

fn scale_rs(st: &mut State, d: &Value, rs: &Value, to: i64, max_total: i64) -> Value {
    let Some(def) = by_plural("replicasets") else {
        return rs.clone();
    };
    let from = replicas(rs);
    let mut new = rs.clone();
    set_at(&mut new, "/spec/replicas", json!(to));
    set_at(&mut new, DESIRED_PTR, json!(replicas(d).to_string()));
    set_at(&mut new, MAX_PTR, json!(max_total.to_string()));
    if from != to {
        let g = int_at(rs, "/metadata/generation", 1);
        set_at(&mut new, "/metadata/generation", json!(g + 1));
    }
    let out = (*st.replace(def, new)).clone();
    if from != to {
        let dir = if to > from { "up" } else { "down" };
        emit_event(
            st,
            d,
            "Normal",
            "ScalingReplicaSet",
            &format!(
                "Scaled {dir} replica set {} from {from} to {to}",
                str_at(rs, "/metadata/name")
            ),
            COMPONENT,
        );
    }
    out
}

fn reconcile(st: &mut State, d: &Value, mut rss: Vec<Arc<Value>>) {
    let Some(rs_def) = by_plural("replicasets") else {
        return;
    };
    let uid = str_at(d, "/metadata/uid").to_string();
    let ns = str_at(d, "/metadata/namespace").to_string();
    let name = str_at(d, "/metadata/name").to_string();
    let desired = replicas(d);
    let paused = at(d, "/spec/paused") == Some(&json!(true));
    let recreate = str_at(d, "/spec/strategy/type") == "Recreate";
    let template = at(d, "/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let (surge, unavail) = if recreate {
        (0, desired)
    } else {
        rolling_budget(d, desired)
    };
    rss.sort_by_key(|r| revision(r));
    let max_rev = rss.iter().map(|r| revision(r)).max().unwrap_or(0);
    let mut new_rs: Option<Value> = rss
        .iter()
        .find(|r| str_at(r, &format!("/metadata/labels/{HASH_LABEL}")) == hash)
        .map(|r| (**r).clone());
    let mut olds: Vec<Value> = rss
        .iter()
        .filter(|r| str_at(r, &format!("/metadata/labels/{HASH_LABEL}")) != hash)
        .map(|r| (**r).clone())
        .collect();
    let mut progressed = false;
    let mut created_new = false;

    if new_rs.is_none() && !paused {
        let all: i64 = olds.iter().map(replicas).sum();
        let old_pods: i64 = olds.iter().map(|r| int_at(r, "/status/replicas", 0)).sum();
        let initial = if recreate {
            if all > 0 || old_pods > 0 {
                0
            } else {
                desired
            }
        } else {
            new_rs_target(desired, surge, 0, all)
        };
        let mut tmpl = template.clone();
        set_at(
            &mut tmpl,
            &format!("/metadata/labels/{HASH_LABEL}"),
            json!(hash),
        );
        let mut selector = at(d, "/spec/selector").cloned().unwrap_or(json!({}));
        set_at(
            &mut selector,
            &format!("/matchLabels/{HASH_LABEL}"),
            json!(hash),
        );
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        set_at(&mut labels, &format!("/{HASH_LABEL}"), json!(hash));
        let rs_name = format!("{name}-{hash}");
        let rs = json!({
            "metadata": {
                "name": rs_name,
                "namespace": ns,
                "labels": labels,
                "annotations": {
                    REVISION: (max_rev + 1).to_string(),
                    "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                    "deployment.kubernetes.io/max-replicas": (desired + surge).to_string(),
                },
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {
                "replicas": initial,
                "minReadySeconds": int_at(d, "/spec/minReadySeconds", 0),
                "selector": selector,
                "template": tmpl,
            }
        });
        match api::create(st, rs_def, Some(&ns), rs, false) {
            Ok(created) => {
                emit_event(
                    st,
                    d,
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {rs_name} from 0 to {initial}"),
                    COMPONENT,
                );
                new_rs = Some(created);
                created_new = true;
                progressed = true;
            }
            Err(e) => tracing::debug!(error = %e, "creating replicaset"),
        }
    }

    // Rollback to an older template: its ReplicaSet becomes the newest revision again.
    if let Some(n) = new_rs.as_mut() {
        if revision(n) < max_rev {
            let mut bumped = n.clone();
            set_at(&mut bumped, REVISION_PTR, json!((max_rev + 1).to_string()));
            *n = (*st.replace(rs_def, bumped)).clone();
            progressed = true;
        }
    }

    if let Some(mut n) = new_rs.clone() {
        let active = 1 + olds.iter().filter(|o| replicas(o) > 0).count();
        let scaling_event = std::iter::once(&n)
            .chain(olds.iter())
            .filter(|r| replicas(r) > 0)
            .any(|r| str_at(r, DESIRED_PTR) != desired.to_string());
        if !recreate && active > 1 && scaling_event {
            // Scaled mid-rollout: spread the change over the active ReplicaSets in proportion
            // to their size, as the real controller does, instead of rolling this tick.
            let mut sets: Vec<Value> = std::iter::once(n.clone())
                .chain(olds.iter().cloned())
                .collect();
            let sizes: Vec<i64> = sets.iter().map(replicas).collect();
            let targets = proportional(&sizes, desired + surge);
            for (rs, to) in sets.iter_mut().zip(targets) {
                *rs = scale_rs(st, d, rs, to, desired + surge);
            }
            n = sets.remove(0);
            olds = sets;
            progressed = true;
        } else if paused {
            // Paused: only keep the size in line when there is nothing to roll.
            if olds.iter().all(|o| replicas(o) == 0) && replicas(&n) != desired {
                n = scale_rs(st, d, &n, desired, desired + surge);
                progressed = true;
            }
        } else if recreate {
            let mut any_old = false;
            for o in olds.iter_mut() {
                if replicas(o) > 0 {
                    *o = scale_rs(st, d, o, 0, desired);
                    progressed = true;
                }
                any_old |= int_at(o, "/status/replicas", 0) > 0;
            }
            if !any_old && replicas(&n) != desired {
                n = scale_rs(st, d, &n, desired, desired);
                progressed = true;
            }
        } else {
            let all: i64 = replicas(&n) + olds.iter().map(replicas).sum::<i64>();
            let target = if replicas(&n) > desired {
                desired
            } else {
                new_rs_target(desired, surge, replicas(&n), all)
            };
            if target != replicas(&n) {
                n = scale_rs(st, d, &n, target, desired + surge);
                progressed = true;
            }
            let old_total: i64 = olds.iter().map(replicas).sum();
            if old_total > 0 {
                let all = replicas(&n) + old_total;
                let new_unavail = replicas(&n) - int_at(&n, "/status/availableReplicas", 0);
                let mut room = max_scale_down(desired, unavail, all, new_unavail.max(0));
                // First drop old pods that are not available anyway.
                for o in olds.iter_mut() {
                    if room <= 0 {
                        break;
                    }
                    let unhealthy = replicas(o) - int_at(o, "/status/availableReplicas", 0);
                    if unhealthy > 0 {
                        let down = unhealthy.min(room);
                        *o = scale_rs(st, d, o, replicas(o) - down, desired + surge);
                        room -= down;
                        progressed = true;
                    }
                }
                if room > 0 {
                    let available: i64 = int_at(&n, "/status/availableReplicas", 0)
                        + olds
                            .iter()
                            .map(|o| int_at(o, "/status/availableReplicas", 0))
                            .sum::<i64>();
                    let mut total = (available - (desired - unavail)).min(room);
                    for o in olds.iter_mut() {
                        if total <= 0 {
                            break;
                        }
                        if replicas(o) == 0 {
                            continue;
                        }
                        let down = replicas(o).min(total);
                        *o = scale_rs(st, d, o, replicas(o) - down, desired + surge);
                        total -= down;
                        progressed = true;
                    }
                }
            }
        }
        new_rs = Some(n);
    }

    cleanup_history(st, d, &olds);
    update_status(
        st,
        d,
        new_rs.as_ref(),
        &olds,
        unavail,
        progressed,
        created_new,
        &uid,
    );
}

/// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
fn cleanup_history(st: &mut State, d: &Value, olds: &[Value]) {
    let Some(def) = by_plural("replicasets") else {
        return;
    };
    let limit = int_at(d, "/spec/revisionHistoryLimit", 10).max(0) as usize;
    let idle: Vec<&Value> = olds
        .iter()
        .filter(|o| replicas(o) == 0 && int_at(o, "/status/replicas", 0) == 0)
        .collect();
    if idle.len() <= limit {
        return;
    }
    for o in idle.iter().take(idle.len() - limit) {
        st.remove(
            def,
            str_at(o, "/metadata/namespace"),
            str_at(o, "/metadata/name"),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn update_status(
    st: &mut State,
    d: &Value,
    new_rs: Option<&Value>,
    olds: &[Value],
    unavail: i64,
    progressed: bool,
    created_new: bool,
    uid: &str,
) {
    let Some(def) = by_plural("deployments") else {
        return;
    };
    let desired = replicas(d);
    let sum = |p: &str| -> i64 {
        new_rs.map_or(0, |n| int_at(n, p, 0)) + olds.iter().map(|o| int_at(o, p, 0)).sum::<i64>()
    };
    let total = sum("/status/replicas");
    let ready = sum("/status/readyReplicas");
    let available = sum("/status/availableReplicas");
    let updated = new_rs.map_or(0, |n| int_at(n, "/status/replicas", 0));
    let mut new = d.clone();
    let old_status = d.get("status").cloned().unwrap_or(json!({}));
    set_at(
        &mut new,
        "/status/observedGeneration",
        json!(int_at(d, "/metadata/generation", 1)),
    );
    set_at(&mut new, "/status/replicas", json!(total));
    set_at(&mut new, "/status/updatedReplicas", json!(updated));
    set_at(&mut new, "/status/readyReplicas", json!(ready));
    set_at(&mut new, "/status/availableReplicas", json!(available));
    if desired - available > 0 {
        set_at(
            &mut new,
            "/status/unavailableReplicas",
            json!(desired - available),
        );
    } else if let Some(s) = new.get_mut("status").and_then(Value::as_object_mut) {
        s.remove("unavailableReplicas");
    }
    for f in [
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "replicas",
    ] {
        if at(&new, &format!("/status/{f}")) == Some(&json!(0)) {
            if let Some(s) = new.get_mut("status").and_then(Value::as_object_mut) {
                s.remove(f);
            }
        }
    }
    if let Some(n) = new_rs {
        let rev = str_at(n, REVISION_PTR).to_string();
        set_at(&mut new, REVISION_PTR, json!(rev));
    }

    // Available
    if available >= desired - unavail {
        set_condition(
            &mut new,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            cond_changes(d, "Available", "True"),
        );
    } else {
        set_condition(
            &mut new,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            cond_changes(d, "Available", "False"),
        );
    }

    // Progressing
    let counts_changed = [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ]
    .iter()
    .any(|f| old_status.get(*f) != at(&new, &format!("/status/{f}")));
    let now = Instant::now();
    let last_progress = *st.rt.progress.entry(uid.to_string()).or_insert(now);
    let rs_name = new_rs
        .map_or("", |n| str_at(n, "/metadata/name"))
        .to_string();
    let prev = condition(d, "Progressing").cloned();
    let prev_reason = prev
        .as_ref()
        .map_or("", |c| str_at(c, "/reason"))
        .to_string();
    let complete = new_rs.is_some()
        && updated == desired
        && available == desired
        && total == desired
        && new_rs.is_some_and(|n| replicas(n) == desired);
    if at(d, "/spec/paused") == Some(&json!(true)) {
        set_condition(
            &mut new,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            prev_reason != "DeploymentPaused",
        );
    } else if complete {
        st.rt.progress.insert(uid.to_string(), now);
        set_condition(
            &mut new,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            prev_reason != "NewReplicaSetAvailable",
        );
    } else if created_new {
        st.rt.progress.insert(uid.to_string(), now);
        set_condition(
            &mut new,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{rs_name}\""),
            true,
        );
    } else if progressed || counts_changed || prev_reason == "DeploymentPaused" || prev.is_none() {
        st.rt.progress.insert(uid.to_string(), now);
        set_condition(
            &mut new,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
            true,
        );
    } else if prev_reason != "ProgressDeadlineExceeded" {
        let deadline = int_at(d, "/spec/progressDeadlineSeconds", 600) as f64;
        if sim_elapsed(last_progress, st.speed) > deadline {
            set_condition(
                &mut new,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                true,
            );
        }
    }
    st.replace(def, new);
}

fn cond_changes(d: &Value, ctype: &str, status: &str) -> bool {
    condition(d, ctype).is_none_or(|c| str_at(c, "/status") != status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(surge: Value, unavail: Value) -> Value {
        json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}}})
    }

    #[test]
    fn default_budget_for_three_replicas_is_one_surge_zero_unavailable() {
        assert_eq!(rolling_budget(&dep(json!("25%"), json!("25%")), 3), (1, 0));
        assert_eq!(rolling_budget(&dep(json!("25%"), json!("25%")), 10), (3, 2));
        assert_eq!(rolling_budget(&dep(json!(0), json!(0)), 3), (0, 1));
    }

    #[test]
    fn new_replicaset_grows_into_the_surge_room_only() {
        // 3 desired, surge 1: a fresh rollout starts with one new pod beside 3 old.
        assert_eq!(new_rs_target(3, 1, 0, 3), 1);
        assert_eq!(new_rs_target(3, 1, 1, 4), 1);
        assert_eq!(new_rs_target(3, 1, 1, 3), 2);
        // No old pods: straight to the desired size (a scale-up).
        assert_eq!(new_rs_target(5, 2, 3, 3), 5);
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // 1 new + 3 old (total 4 = 3 + surge 1), scaled to 6 (surge 2): room for 8.
        assert_eq!(proportional(&[1, 3], 8), vec![2, 6]);
        assert_eq!(proportional(&[2, 2], 3), vec![2, 1]);
        assert_eq!(proportional(&[0, 5], 2), vec![0, 2]);
        assert_eq!(proportional(&[0, 0], 2), vec![0, 0]);
    }

    #[test]
    fn old_pods_go_only_when_new_ones_are_available() {
        // 3 desired, 0 unavailable: 4 pods with the new one not ready: nothing may go.
        assert_eq!(max_scale_down(3, 0, 4, 1), 0);
        // The new pod became available: one old pod may go.
        assert_eq!(max_scale_down(3, 0, 4, 0), 1);
    }
}
