//! `scale_deployment`: `kubectl scale deployment` (absolute `replicas` or relative
//! `replicas_increment`) through the `/scale` subresource, then `kubectl rollout status` until
//! the new replica count is available.

use super::{scaling::Scale, ActionSpec, Risk};
use crate::cluster::WorkloadKind;

pub fn action() -> Scale {
    Scale {
        spec: ActionSpec {
            name: "scale_deployment",
            description:
                "Scale a deployment to an absolute replica count or by an increment, then wait \
                          until the replicas are available (kubectl scale + rollout status).",
            risk: Risk::Medium,
            target_kinds: &["Deployment"],
            params: super::scaling::params(),
        },
        kind: WorkloadKind::Deployment,
    }
}
