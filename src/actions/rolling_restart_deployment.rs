//! `rolling_restart_deployment`: `kubectl rollout restart deployment`, then `kubectl rollout
//! status` until every replica runs the restarted template. Refuses paused deployments.

use super::{restarting::Restart, Access, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

/// What `rolling_restart_deployment` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read and its template annotated (the plan as a dry run, the rollback
    // restores the template); the rollout is followed with a watch.
    Access::new("apps", &["deployments"], &["get", "list", "watch", "patch"]),
];

pub fn action() -> Restart {
    Restart {
        spec: ActionSpec {
            name: "rolling_restart_deployment",
            description:
                "Restart every pod of a deployment by a rolling update (kubectl rollout restart), \
                          then follow it like kubectl rollout status.",
            risk: Risk::Medium,
            access: ACCESS,
            target_kinds: &["Deployment"],
            params: super::restarting::params(),
        },
        kind: WorkloadKind::Deployment,
    }
}
