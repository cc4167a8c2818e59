//! `restart_statefulset`: `kubectl rollout restart statefulset`, then its rollout status
//! (pods replaced one at a time, highest ordinal first, until the update revision is current).

use super::{restarting::Restart, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

pub fn action() -> Restart {
    Restart {
        spec: ActionSpec {
            name: "restart_statefulset",
            description: "Restart every pod of a statefulset in order (kubectl rollout restart), then follow \
                          it like kubectl rollout status.",
            risk: Risk::Medium,
            target_kinds: &["StatefulSet"],
            params: super::restarting::params(),
        },
        kind: WorkloadKind::StatefulSet,
    }
}
