//! The disruption controller: PodDisruptionBudget arithmetic (shared with the eviction
//! subresource) and PDB status.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{
    condition, controller_kind, controller_uid, int_or_percent, is_active_pod, kubelet,
    set_condition,
};
use crate::sim::resources::by_plural;
use crate::sim::selectors::LabelSelector;
use crate::sim::store::{at, int_at, set_at, str_at, State};

/// A PDB's numbers, as in its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub expected: i64,
    pub current_healthy: i64,
    pub desired_healthy: i64,
    pub disruptions_allowed: i64,
}

/// The desired-healthy count from a budget spec (`minAvailable` or `maxUnavailable`, int or
/// percent of `expected`).
pub fn desired_healthy(spec: &Value, expected: i64) -> i64 {
    if let Some(min) = spec.get("minAvailable") {
        int_or_percent(Some(min), expected, true, 1)
    } else if let Some(max) = spec.get("maxUnavailable") {
        expected - int_or_percent(Some(max), expected, true, 0)
    } else {
        1
    }
    .max(0)
}

/// Computes a PDB's budget from the live pods: expected pods come from the scale of each
/// selected pod's top controller (the Deployment for ReplicaSet pods), healthy pods are the
/// Ready, non-terminating ones.
pub fn budget(st: &State, pdb: &Value) -> Budget {
    let ns = str_at(pdb, "/metadata/namespace");
    let sel = LabelSelector::from_json(at(pdb, "/spec/selector"));
    let pods: Vec<_> = st
        .list("pods", Some(ns))
        .into_iter()
        .filter(|p| is_active_pod(p) && sel.matches_obj(p))
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut expected = 0;
    for p in &pods {
        let (Some(kind), Some(uid)) = (controller_kind(p), controller_uid(p)) else {
            expected += 1;
            continue;
        };
        if !seen.insert(uid.to_string()) {
            continue;
        }
        let scale = match kind {
            "ReplicaSet" => st
                .list("replicasets", Some(ns))
                .into_iter()
                .find(|r| str_at(r, "/metadata/uid") == uid)
                .map(|rs| {
                    match controller_uid(&rs).and_then(|du| {
                        st.list("deployments", Some(ns))
                            .into_iter()
                            .find(|d| str_at(d, "/metadata/uid") == du)
                    }) {
                        Some(d) => {
                            if seen.insert(str_at(&d, "/metadata/uid").to_string()) {
                                int_at(&d, "/spec/replicas", 0)
                            } else {
                                0
                            }
                        }
                        None => int_at(&rs, "/spec/replicas", 0),
                    }
                }),
            "StatefulSet" => st
                .list("statefulsets", Some(ns))
                .into_iter()
                .find(|s| str_at(s, "/metadata/uid") == uid)
                .map(|s| int_at(&s, "/spec/replicas", 0)),
            _ => None,
        };
        expected += scale.unwrap_or(1);
    }
    let current_healthy = pods.iter().filter(|p| kubelet::is_ready(p)).count() as i64;
    let desired = desired_healthy(pdb.get("spec").unwrap_or(&json!({})), expected);
    Budget {
        expected,
        current_healthy,
        desired_healthy: desired,
        disruptions_allowed: (current_healthy - desired).max(0),
    }
}

pub fn run(st: &mut State) {
    let Some(def) = by_plural("poddisruptionbudgets") else {
        return;
    };
    for pdb in st.list("poddisruptionbudgets", None) {
        let b = budget(st, &pdb);
        let mut new = (*pdb).clone();
        set_at(
            &mut new,
            "/status/observedGeneration",
            json!(int_at(&pdb, "/metadata/generation", 1)),
        );
        set_at(&mut new, "/status/expectedPods", json!(b.expected));
        set_at(&mut new, "/status/currentHealthy", json!(b.current_healthy));
        set_at(&mut new, "/status/desiredHealthy", json!(b.desired_healthy));
        set_at(
            &mut new,
            "/status/disruptionsAllowed",
            json!(b.disruptions_allowed),
        );
        let (status, reason) = if b.disruptions_allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        let unchanged =
            condition(&pdb, "DisruptionAllowed").is_some_and(|c| str_at(c, "/status") == status);
        if !unchanged {
            set_condition(&mut new, "DisruptionAllowed", status, reason, "", false);
            if let Some(cs) = new
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                for c in cs.iter_mut() {
                    if let Some(m) = c.as_object_mut() {
                        m.insert(
                            "observedGeneration".into(),
                            json!(int_at(&pdb, "/metadata/generation", 1)),
                        );
                    }
                }
            }
        }
        st.replace(def, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_resolve_ints_and_percentages() {
        assert_eq!(desired_healthy(&json!({"maxUnavailable": 1}), 3), 2);
        assert_eq!(desired_healthy(&json!({"minAvailable": 3}), 3), 3);
        assert_eq!(desired_healthy(&json!({"minAvailable": "50%"}), 3), 2);
        assert_eq!(desired_healthy(&json!({"maxUnavailable": "50%"}), 3), 1);
        assert_eq!(desired_healthy(&json!({"maxUnavailable": 0}), 4), 4);
    }
}
