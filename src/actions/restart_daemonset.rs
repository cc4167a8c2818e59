//! `restart_daemonset`: `kubectl rollout restart daemonset`, then its rollout status (every
//! node's pod updated and available).

use super::{restarting::Restart, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

pub fn action() -> Restart {
    Restart {
        spec: ActionSpec {
            name: "restart_daemonset",
            description: "Restart the pod of a daemonset on every node (kubectl rollout restart), then follow \
                          it like kubectl rollout status.",
            risk: Risk::Medium,
            target_kinds: &["DaemonSet"],
            params: super::restarting::params(),
        },
        kind: WorkloadKind::DaemonSet,
    }
}
