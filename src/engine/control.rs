//! Control of executions in flight: cancelling them, and answering the ones waiting for an
//! approval.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;

use super::{
    authz::Permission,
    execution::{Execution, Verdict},
    Engine, EngineError, ANONYMOUS,
};
use crate::domain::{ExecutionState, ExecutionView};

/// How long CancelExecution and an approval wait for the execution to take the answer in
/// before replying, so the reply shows the state it led to.
const CANCEL_ANSWER_WAIT: Duration = Duration::from_secs(5);

impl Engine {
    fn live(&self, id: &str) -> Result<Arc<Execution>, EngineError> {
        match self.find(id) {
            Some(e) => Ok(e),
            None if self.inner.config.store.is_some() => Err(EngineError::FailedPrecondition(
                format!("execution {id} is not running on this server"),
            )),
            None => Err(Self::not_found(id)),
        }
    }

    /// Stops a queued, waiting or running execution on behalf of `caller`; it ends CANCELLED
    /// with `reason`. With authorization rules, only the execution's requester or someone
    /// allowed to run that action on that target may cancel it. Waits briefly for the
    /// execution to stop so the answer shows the final state.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id, [`EngineError::PermissionDenied`], then
    /// [`EngineError::FailedPrecondition`] when it already ended.
    pub async fn cancel(
        &self,
        id: &str,
        reason: &str,
        caller: &str,
    ) -> Result<ExecutionView, EngineError> {
        super::bounds::check_execution_id(id)?;
        super::bounds::check_reason("reason", reason)?;
        if let Some(authz) = self.authorizer() {
            let (view, _) = self.fetch(id).await?;
            if view.requester != caller {
                authz.check(caller, Permission::Run, &view.action, &view.target)?;
            }
        }
        tracing::info!(execution_id = %id, caller, "cancellation requested");
        self.stop(id, reason).await
    }

    /// [`Engine::cancel`] once the caller is known to be allowed.
    async fn stop(&self, id: &str, reason: &str) -> Result<ExecutionView, EngineError> {
        if self.find(id).is_none() && self.coordination().is_some() {
            return self
                .cancel_shared(id, cancel_message(reason), CANCEL_ANSWER_WAIT)
                .await;
        }
        if self.find(id).is_none() {
            let (view, _) = self.fetch(id).await?;
            return Err(EngineError::FailedPrecondition(format!(
                "execution {id} already ended ({})",
                view.state.as_str()
            )));
        }
        let execution = self.live(id)?;
        let state = execution.state();
        if state.is_terminal() {
            return Err(EngineError::FailedPrecondition(format!(
                "execution {id} already ended ({})",
                state.as_str()
            )));
        }
        let reason = cancel_message(reason);
        execution
            .cancel_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        execution.cancel.cancel();
        let _ = tokio::time::timeout(CANCEL_ANSWER_WAIT, self.wait(id)).await;
        Ok(execution.view())
    }

    /// Answers an execution waiting for approval.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] without an approver, [`EngineError::PermissionDenied`]
    /// when the requester approves their own request, [`EngineError::FailedPrecondition`] when
    /// it is not waiting for approval.
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
    ) -> Result<ExecutionView, EngineError> {
        super::bounds::check_execution_id(id)?;
        super::bounds::check_approver(approver)?;
        super::bounds::check_reason("reason", reason)?;
        if approver.trim().is_empty() {
            return Err(EngineError::invalid("approver", "is required"));
        }
        let execution = match self.find(id) {
            Some(e) => e,
            None if self.coordination().is_some() => {
                let view = self.view_of(id).await?;
                if let Some(authz) = self.authorizer() {
                    authz.check(approver, Permission::Approve, &view.action, &view.target)?;
                }
                if approve && view.requester != ANONYMOUS && view.requester == approver {
                    return Err(EngineError::PermissionDenied(format!(
                        "{approver} requested execution {id} and cannot approve it"
                    )));
                }
                return self.decide_shared(id, approve, approver, reason).await;
            }
            None => {
                let view = self.view_of(id).await?;
                // Only someone who may approve it learns what became of it.
                if let Some(authz) = self.authorizer() {
                    authz.check(approver, Permission::Approve, &view.action, &view.target)?;
                }
                return Err(EngineError::FailedPrecondition(format!(
                    "execution {id} is not waiting for approval ({})",
                    view.state.as_str()
                )));
            }
        };
        self.authorize_approval(approver, &execution)?;
        if approve && execution.requester != ANONYMOUS && execution.requester == approver {
            return Err(EngineError::PermissionDenied(format!(
                "{approver} requested execution {id} and cannot approve it"
            )));
        }
        let tx = execution
            .approval_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(tx) = tx.filter(|_| execution.state() == ExecutionState::WaitingApproval) else {
            return Err(EngineError::FailedPrecondition(format!(
                "execution {id} is not waiting for approval ({})",
                execution.state().as_str()
            )));
        };
        let verdict = if approve {
            Verdict::Approved {
                approver: approver.to_string(),
                reason: reason.to_string(),
            }
        } else {
            Verdict::Rejected {
                approver: approver.to_string(),
                reason: reason.to_string(),
            }
        };
        let _ = tx.send(verdict);
        // Let the runner record the answer before replying.
        let log = execution.log.clone();
        let seen = log.last_sequence();
        let next = log.subscribe(seen);
        futures::pin_mut!(next);
        let _ = tokio::time::timeout(CANCEL_ANSWER_WAIT, next.next()).await;
        Ok(execution.view())
    }
}

/// The message of a cancellation asked with `reason`.
fn cancel_message(reason: &str) -> String {
    if reason.is_empty() {
        "cancelled by request".to_string()
    } else {
        format!("cancelled: {reason}")
    }
}
