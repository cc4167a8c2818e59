//! Admission with replicas: the checked request goes into the shared queue, its cooldown
//! claimed in the same transaction, so that of two replicas admitting requests on one object
//! exactly one gets it, and a request_id taken on any replica is found again.

use crate::{
    actions::Plan,
    domain::{ExecutionRequest, ExecutionView},
    engine::{
        admission::{in_cooldown, Validated},
        Engine, EngineError,
    },
    policy::Decision,
    store::{Enqueued, NewExecution, RunSpec},
};

impl Engine {
    /// Stores the admitted request as a new execution in the shared queue (or waiting for
    /// its approval); a replica with a free worker claims it.
    ///
    /// # Errors
    /// A cooldown or an execution in flight on one of its objects, a full queue (or too many
    /// waiting for approval), a request_id used for a different request, the store.
    pub(in crate::engine) async fn enqueue_shared(
        &self,
        request: &ExecutionRequest,
        v: &Validated,
        requester: String,
        decision: &Decision,
        plan: &Plan,
        fingerprint: String,
    ) -> Result<ExecutionView, EngineError> {
        let Some(coordination) = self.coordination() else {
            return Err(EngineError::Internal("no shared queue".into()));
        };
        let id = uuid::Uuid::new_v4().to_string();
        let cooldown = self.cooldown_for(v.action.as_ref());
        let spec = RunSpec {
            keys: Self::keys_of(v, plan),
            cooldown,
            rollback_on_failure: request.rollback_on_failure.unwrap_or(true),
            priority: i64::from(request.priority),
        };
        let (execution, _) = self.new_execution(id, request, v, requester, decision, plan);
        let view = execution.view();
        let new = NewExecution {
            view: view.clone(),
            fingerprint: fingerprint.clone(),
            events: execution
                .log
                .after(0)
                .iter()
                .map(|e| (**e).clone())
                .collect(),
        };
        let config = &self.inner.config;
        let capacity = if decision.require_approval {
            config.approval_capacity
        } else {
            config.queue_capacity
        };
        match coordination.enqueue(&new, &spec, capacity).await? {
            Enqueued::Stored => Ok(view),
            Enqueued::Duplicate { existing } => self
                .find_request(&request.request_id, &fingerprint)
                .await?
                .ok_or_else(|| {
                    EngineError::Internal(format!(
                        "request_id taken by execution {existing}, which is gone"
                    ))
                }),
            Enqueued::InCooldown(holder) => Err(in_cooldown(
                &holder.key,
                &holder.execution_id,
                holder.until,
                cooldown,
            )),
            Enqueued::Full { capacity } if decision.require_approval => {
                Err(EngineError::Exhausted {
                    message: format!(
                        "{capacity} executions are waiting for approval; answer some, or retry later"
                    ),
                    retry_after: None,
                })
            }
            Enqueued::Full { capacity } => Err(EngineError::QueueFull { capacity }),
        }
    }
}
