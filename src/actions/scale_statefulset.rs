//! `scale_statefulset`: `kubectl scale statefulset` through `/scale`, then follows the ordered
//! rollout (pods come and go one at a time) until every replica is ready.

use super::{scaling::Scale, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

pub fn action() -> Scale {
    Scale {
        spec: ActionSpec {
            name: "scale_statefulset",
            description:
                "Scale a statefulset to an absolute replica count or by an increment, then wait \
                          until its pods are ready in order (kubectl scale + rollout status).",
            risk: Risk::Medium,
            target_kinds: &["StatefulSet"],
            params: super::scaling::params(),
        },
        kind: WorkloadKind::StatefulSet,
    }
}
