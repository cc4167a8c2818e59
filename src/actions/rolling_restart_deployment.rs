//! `rolling_restart_deployment`: `kubectl rollout restart deployment`, then `kubectl rollout
//! status` until every replica runs the restarted template. Refuses paused deployments.

use super::{restarting::Restart, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

pub fn action() -> Restart {
    Restart {
        spec: ActionSpec {
            name: "rolling_restart_deployment",
            description:
                "Restart every pod of a deployment by a rolling update (kubectl rollout restart), \
                          then follow it like kubectl rollout status.",
            risk: Risk::Medium,
            target_kinds: &["Deployment"],
            params: super::restarting::params(),
        },
        kind: WorkloadKind::Deployment,
    }
}
