//! `restart_daemonset`: `kubectl rollout restart daemonset`, then its rollout status (every
//! node's pod updated and available).

use super::{restarting::Restart, Access, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

/// What `restart_daemonset` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read and its template annotated (the plan as a dry run, the rollback
    // restores the template); the rollout is followed with a watch.
    Access::new("apps", &["daemonsets"], &["get", "list", "watch", "patch"]),
];

pub fn action() -> Restart {
    Restart {
        spec: ActionSpec {
            name: "restart_daemonset",
            description: "Restart the pod of a daemonset on every node (kubectl rollout restart), then follow \
                          it like kubectl rollout status.",
            risk: Risk::Medium,
            access: ACCESS,
            target_kinds: &["DaemonSet"],
            params: super::restarting::params(),
        },
        kind: WorkloadKind::DaemonSet,
    }
}
