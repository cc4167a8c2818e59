//! `restart_statefulset`: `kubectl rollout restart statefulset`, then its rollout status
//! (pods replaced one at a time, highest ordinal first, until the update revision is current).

use super::{restarting::Restart, Access, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

/// What `restart_statefulset` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read and its template annotated (the plan as a dry run, the rollback
    // restores the template); the rollout is followed with a watch.
    Access::new(
        "apps",
        &["statefulsets"],
        &["get", "list", "watch", "patch"],
    ),
];

pub fn action() -> Restart {
    Restart {
        spec: ActionSpec {
            name: "restart_statefulset",
            description: "Restart every pod of a statefulset in order (kubectl rollout restart), then follow \
                          it like kubectl rollout status.",
            risk: Risk::Medium,
            access: ACCESS,
            target_kinds: &["StatefulSet"],
            params: super::restarting::params(),
        },
        kind: WorkloadKind::StatefulSet,
    }
}
