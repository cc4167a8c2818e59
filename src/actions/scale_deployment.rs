//! `scale_deployment`: `kubectl scale deployment` (absolute `replicas` or relative
//! `replicas_increment`) through the `/scale` subresource, then `kubectl rollout status` until
//! the new replica count is available.

use super::{scaling::Scale, Access, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

/// What `scale_deployment` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read for its replicas; the rollout is followed with a watch.
    Access::new("apps", &["deployments"], &["get", "list", "watch"]),
    // kubectl scale goes through the scale subresource (the plan as a dry run, the rollback too).
    Access::new("apps", &["deployments/scale"], &["patch"]),
];

pub fn action() -> Scale {
    Scale {
        spec: ActionSpec {
            name: "scale_deployment",
            description:
                "Scale a deployment to an absolute replica count or by an increment, then wait \
                          until the replicas are available (kubectl scale + rollout status).",
            risk: Risk::Medium,
            access: ACCESS,
            target_kinds: &["Deployment"],
            params: super::scaling::params(),
        },
        kind: WorkloadKind::Deployment,
    }
}
