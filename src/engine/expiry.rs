//! Changes that end on their own: a workload put in debug mode (`enable_debug_mode`) carries
//! its end on the object itself, so the end survives any restart of the executor. Every
//! [`EXPIRY_CHECK`] the engine asks the actions which workloads' debug modes have ended on
//! the default cluster and submits `disable_debug_mode` for each: an ordinary execution
//! (history, events, policy), one per end whatever the number of replicas that see it, since
//! its `request_id` is derived from the object and its end.

use std::time::Duration;

use super::{Engine, EngineError};
use crate::actions::ended_debug_modes;
use crate::domain::{ExecutionRequest, RequestedTarget};

/// How often ended debug modes are looked for: the revert comes at most this late.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(5);
/// Who the reverts are recorded as requested by.
const REQUESTER: &str = "executor-service/debug-mode-expiry";

impl Engine {
    /// Submits `disable_debug_mode` for every workload whose debug mode has ended; returns how
    /// many were submitted (or found already submitted).
    ///
    /// # Errors
    /// When the default cluster cannot be listed.
    pub async fn end_expired_debug_modes(&self) -> Result<usize, EngineError> {
        if self.is_closing() {
            return Ok(0);
        }
        let client = self
            .clusters()
            .client("")
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let ended = ended_debug_modes(&client).await.map_err(|e| {
            EngineError::Unavailable(format!("listing workloads in debug mode: {e}"))
        })?;
        let mut submitted = 0;
        for one in ended {
            let workload = one.target.object_ref();
            let request = ExecutionRequest {
                action: "disable_debug_mode".into(),
                target: RequestedTarget {
                    cluster: one.target.cluster,
                    namespace: one.target.namespace,
                    kind: one.target.kind,
                    name: one.target.name,
                },
                request_id: one.request_id,
                requester: REQUESTER.into(),
                ..Default::default()
            };
            match self.submit(request).await {
                Ok(x) => {
                    submitted += 1;
                    tracing::info!(execution_id = %x.id, %workload, "debug mode ended: revert submitted");
                }
                Err(e) => {
                    tracing::warn!(error = %e, %workload, "debug mode ended but its revert was refused")
                }
            }
        }
        Ok(submitted)
    }
}
