//! Cancelling and answering executions this replica does not hold: decided under the
//! execution's row lock, so a cancellation and a claim, or two approvals, never both win. One
//! still queued or waiting ends here and then; one running elsewhere is asked to stop
//! through the store (a notice wakes its owner, its next lease renewal reads it anyway).

use std::{
    sync::atomic::{AtomicU8, Ordering},
    time::Duration,
};

use serde_json::json;

use crate::{
    domain::{ExecutionState, ExecutionView},
    engine::{Engine, EngineError},
    store::{Change, Current},
};

/// What the decision found.
const CHANGED: u8 = 1;
const ENDED: u8 = 2;
const NOT_WAITING: u8 = 3;

impl Engine {
    /// Cancels execution `id` (known to exist) with the message `reason`; waits up to
    /// `answer_wait` for one running elsewhere to stop.
    ///
    /// # Errors
    /// [`EngineError::FailedPrecondition`] when it already ended.
    pub(in crate::engine) async fn cancel_shared(
        &self,
        id: &str,
        reason: String,
        answer_wait: Duration,
    ) -> Result<ExecutionView, EngineError> {
        let Some(coordination) = self.coordination() else {
            return Err(Self::not_found(id));
        };
        let found = AtomicU8::new(0);
        let decide = |current: &Current| {
            let state = current.view.state;
            if state.is_terminal() {
                found.store(ENDED, Ordering::SeqCst);
                return None;
            }
            found.store(CHANGED, Ordering::SeqCst);
            Some(match current.owner {
                None => Change::Event {
                    state: ExecutionState::Cancelled,
                    message: reason.clone(),
                    details: serde_json::Value::Null,
                    approval: None,
                },
                Some(_) => Change::RequestCancel(reason.clone()),
            })
        };
        let view = coordination
            .transition(id, &decide)
            .await?
            .ok_or_else(|| Self::not_found(id))?;
        if found.load(Ordering::SeqCst) == ENDED {
            return Err(EngineError::FailedPrecondition(format!(
                "execution {id} already ended ({})",
                view.state.as_str()
            )));
        }
        if view.state.is_terminal() {
            return Ok(view);
        }
        let _ = tokio::time::timeout(answer_wait, self.wait_shared(id)).await;
        self.view_of(id).await
    }

    /// Approves or rejects execution `id`, waiting for approval in the shared store; the
    /// caller checked who may.
    ///
    /// # Errors
    /// [`EngineError::FailedPrecondition`] when it is not waiting for approval.
    pub(in crate::engine) async fn decide_shared(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
    ) -> Result<ExecutionView, EngineError> {
        let Some(coordination) = self.coordination() else {
            return Err(Self::not_found(id));
        };
        let found = AtomicU8::new(0);
        let suffix = if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        };
        let decide = |current: &Current| {
            if current.view.state != ExecutionState::WaitingApproval {
                found.store(NOT_WAITING, Ordering::SeqCst);
                return None;
            }
            found.store(CHANGED, Ordering::SeqCst);
            let (state, verb) = if approve {
                (ExecutionState::Queued, "approved")
            } else {
                (ExecutionState::Rejected, "rejected")
            };
            Some(Change::Event {
                state,
                message: format!("{verb} by {approver}{suffix}"),
                details: json!({ "approver": approver, "reason": reason }),
                approval: Some(json!({
                    "approved": approve,
                    "approver": approver,
                    "reason": reason,
                    "at": chrono::Utc::now(),
                })),
            })
        };
        let view = coordination
            .transition(id, &decide)
            .await?
            .ok_or_else(|| Self::not_found(id))?;
        if found.load(Ordering::SeqCst) == NOT_WAITING {
            return Err(EngineError::FailedPrecondition(format!(
                "execution {id} is not waiting for approval ({})",
                view.state.as_str()
            )));
        }
        Ok(view)
    }
}
