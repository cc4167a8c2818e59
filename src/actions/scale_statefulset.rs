//! `scale_statefulset`: `kubectl scale statefulset` through `/scale`, then follows the ordered
//! rollout (pods come and go one at a time) until every replica is ready.

use super::{scaling::Scale, Access, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

/// What `scale_statefulset` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read for its replicas; the rollout is followed with a watch.
    Access::new("apps", &["statefulsets"], &["get", "list", "watch"]),
    // kubectl scale goes through the scale subresource (the plan as a dry run, the rollback too).
    Access::new("apps", &["statefulsets/scale"], &["patch"]),
];

pub fn action() -> Scale {
    Scale {
        spec: ActionSpec {
            name: "scale_statefulset",
            description:
                "Scale a statefulset to an absolute replica count or by an increment, then wait \
                          until its pods are ready in order (kubectl scale + rollout status).",
            risk: Risk::Medium,
            access: ACCESS,
            target_kinds: &["StatefulSet"],
            params: super::scaling::params(),
        },
        kind: WorkloadKind::StatefulSet,
    }
}
