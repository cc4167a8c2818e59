//! Running one execution: wait for an approval if the policy asked for one, then for the
//! target, a namespace slot and a worker; run the action under its timeout and cancellation;
//! when its verification fails, restore the recorded pre-state and follow that too.

use std::{sync::Arc, time::Duration};

use serde_json::{json, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{
    admission::Validated,
    execution::{Execution, Verdict},
    Engine,
};
use crate::actions::{ActionError, Report, Reporter};
use crate::domain::ExecutionState;

/// Everything `run` needs, handed over by `submit`.
pub(super) struct Job {
    pub execution: Arc<Execution>,
    pub validated: Validated,
    /// Its place in the queue, or among the executions waiting for approval; given back
    /// once it runs. None for an execution claimed from the replicas' shared queue.
    pub slot: Option<OwnedSemaphorePermit>,
    /// Present when the policy requires an approval.
    pub approval: Option<oneshot::Receiver<Verdict>>,
    pub cooldown: Duration,
    /// Every object it will change (`cluster|namespace/kind/name`), sorted: locked in this
    /// order, each claimed for the cooldown.
    pub keys: Vec<String>,
    /// For an execution claimed from the replicas' shared queue: the worker it runs on. Its
    /// objects and namespace place are held in the database, not here.
    pub claimed: Option<super::workers::Worker>,
}

/// How the action part ended.
enum Ended {
    Cancelled,
    TimedOut,
    Done(Result<crate::actions::Outcome, ActionError>),
}

impl Engine {
    pub(super) async fn run(&self, job: Job) {
        let Job {
            execution,
            validated: v,
            slot,
            approval,
            cooldown,
            keys,
            claimed,
        } = job;
        let cancelled = execution.cancel.clone();
        let release_cooldown = |engine: &Engine| {
            if !cooldown.is_zero() {
                engine.inner.cooldowns.release(&keys, &execution.id);
            }
        };
        if let Some(answer) = approval {
            let verdict = tokio::select! {
                biased;
                _ = cancelled.cancelled() => None,
                r = tokio::time::timeout(self.inner.config.approval_timeout, answer) => Some(r),
            };
            match verdict {
                None => {
                    release_cooldown(self);
                    self.finish_cancelled(&execution);
                    return;
                }
                Some(Ok(Ok(Verdict::Approved { approver, reason }))) => {
                    execution.update(|p| {
                        p.approval = json!({ "approved": true, "approver": approver, "reason": reason, "at": chrono::Utc::now() })
                    });
                    execution.record(
                        ExecutionState::Queued,
                        format!("approved by {approver}{}", suffix(&reason)),
                        None,
                        json!({ "approver": approver, "reason": reason }),
                    );
                }
                Some(Ok(Ok(Verdict::Rejected { approver, reason }))) => {
                    execution.update(|p| {
                        p.approval = json!({ "approved": false, "approver": approver, "reason": reason, "at": chrono::Utc::now() })
                    });
                    release_cooldown(self);
                    execution.record(
                        ExecutionState::Rejected,
                        format!("rejected by {approver}{}", suffix(&reason)),
                        None,
                        json!({ "approver": approver, "reason": reason }),
                    );
                    self.inner.persister.flush().await;
                    return;
                }
                Some(_) => {
                    release_cooldown(self);
                    execution.record(
                        ExecutionState::Rejected,
                        format!(
                            "approval expired: nobody answered within {}",
                            humantime::format_duration(self.inner.config.approval_timeout)
                        ),
                        None,
                        Value::Null,
                    );
                    self.inner.persister.flush().await;
                    return;
                }
            }
        }
        let namespace_slots = self.namespace_slots(&v.target.namespace);
        let acquired = if let Some(worker) = claimed {
            Some((Vec::new(), None, worker))
        } else {
            tokio::select! {
            biased;
            _ = cancelled.cancelled() => None,
            guards = async {
                // One global order (the keys are sorted): two executions sharing objects can
                // never each hold one the other waits for.
                let mut objects = Vec::with_capacity(keys.len());
                for key in &keys {
                    objects.push(self.inner.locks.acquire(key).await);
                }
                let namespace = match namespace_slots {
                    Some(slots) => slots.acquire_owned().await.ok(),
                    None => None,
                };
                let worker = self.inner.workers.acquire(v.priority).await;
                (objects, namespace, worker)
            } => Some(guards),
            }
        };
        drop(slot);
        let Some((_object_guards, _namespace_slot, _worker)) = acquired else {
            release_cooldown(self);
            self.finish_cancelled(&execution);
            return;
        };
        execution.record(
            ExecutionState::Running,
            format!(
                "running {} on {}",
                execution.action,
                execution.target.object_ref()
            ),
            None,
            Value::Null,
        );
        // RUNNING is durable before the action can touch the cluster: after a crash, recovery
        // tells a stored QUEUED execution's caller that nothing was changed and to resubmit,
        // which must never be said of one whose write already landed.
        self.inner.persister.flush().await;
        if execution.persister.must_leave() {
            // Another replica took it over before it started, or RUNNING could not be stored:
            // nothing was done here, and the lease, no longer renewed, hands it back.
            return;
        }
        let ctx = Engine::context(&v, reporter_for(&execution, ExecutionState::Running));
        let ended = tokio::select! {
            biased;
            _ = cancelled.cancelled() => Ended::Cancelled,
            r = tokio::time::timeout(v.timeout, v.action.execute(&ctx)) => match r {
                Err(_) => Ended::TimedOut,
                Ok(done) => Ended::Done(done),
            },
        };
        let verification_failed = match &ended {
            Ended::TimedOut => Some(format!(
                "timed out after {}",
                humantime::format_duration(v.timeout)
            )),
            Ended::Done(Err(ActionError::Rollout(e))) => Some(e.to_string()),
            _ => None,
        };
        let rollback_data = execution.view().rollback_data;
        // The cooldown is in force before the terminal state is told to anyone (a caller
        // waiting for the end must find the objects cooling down); it is set again from the
        // real end below, after a rollback that may take a while.
        if !cooldown.is_zero() {
            self.inner.cooldowns.finish(&keys, &execution.id, cooldown);
        }
        match (ended, verification_failed) {
            (_, Some(why))
                if execution.rollback_on_failure
                    && !rollback_data.is_null()
                    && v.action.can_roll_back() =>
            {
                self.roll_back(&execution, &v, &why, &rollback_data).await;
            }
            (Ended::Cancelled, _) => self.finish_cancelled(&execution),
            (Ended::TimedOut, why) => execution.record(
                ExecutionState::TimedOut,
                why.unwrap_or_default(),
                None,
                Value::Null,
            ),
            (Ended::Done(Ok(outcome)), _) => {
                execution.update(|p| p.result = outcome.result.clone());
                execution.record(
                    ExecutionState::Succeeded,
                    outcome.message,
                    None,
                    outcome.result,
                );
            }
            (Ended::Done(Err(err)), _) => {
                tracing::warn!(error = %err, "execution failed");
                execution.record(
                    ExecutionState::Failed,
                    err.to_string(),
                    None,
                    json!({ "error": err.to_string() }),
                );
            }
        }
        if !cooldown.is_zero() {
            self.inner.cooldowns.finish(&keys, &execution.id, cooldown);
        }
        self.inner.persister.flush().await;
    }

    /// Verification failed: restore the pre-state the action recorded and follow it.
    async fn roll_back(&self, execution: &Arc<Execution>, v: &Validated, why: &str, data: &Value) {
        execution.record(
            ExecutionState::RollingBack,
            format!("verification failed ({why}); restoring the recorded pre-state"),
            None,
            json!({ "reason": why, "rollback_data": data }),
        );
        let ctx = Engine::context(v, reporter_for(execution, ExecutionState::RollingBack));
        let cancelled = execution.cancel.clone();
        let outcome = tokio::select! {
            biased;
            _ = cancelled.cancelled() => None,
            r = tokio::time::timeout(v.timeout, v.action.rollback(&ctx, data)) => Some(r),
        };
        match outcome {
            None => self.finish_cancelled(execution),
            Some(Ok(Ok(done))) => execution.record(
                ExecutionState::RolledBack,
                format!("rolled back after: {why}; {}", done.message),
                None,
                json!({ "reason": why, "rollback": done.result }),
            ),
            Some(Ok(Err(e))) => execution.record(
                ExecutionState::Failed,
                format!("{why}; rollback failed too: {e}"),
                None,
                json!({ "reason": why, "rollback_error": e.to_string() }),
            ),
            Some(Err(_)) => execution.record(
                ExecutionState::Failed,
                format!(
                    "{why}; rollback timed out after {}",
                    humantime::format_duration(v.timeout)
                ),
                None,
                json!({ "reason": why }),
            ),
        }
    }

    /// The semaphore limiting executions in `namespace`, if a limit is set.
    fn namespace_slots(&self, namespace: &str) -> Option<Arc<Semaphore>> {
        let limit = self.inner.config.namespace_limit;
        (limit > 0).then(|| {
            self.inner
                .namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(namespace.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone()
        })
    }

    pub(super) fn finish_cancelled(&self, execution: &Execution) {
        let reason = execution
            .cancel_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match reason {
            Some(reason) => execution.record(ExecutionState::Cancelled, reason, None, Value::Null),
            // Not asked for by anyone: the server is going down under it.
            None => execution.record(
                ExecutionState::Interrupted,
                "interrupted: the server shut down before the execution finished",
                None,
                Value::Null,
            ),
        }
    }
}

/// A reporter recording progress as events in `state`, and rollback data on the execution.
fn reporter_for(execution: &Arc<Execution>, state: ExecutionState) -> Reporter {
    let execution = execution.clone();
    Reporter::new(move |report| match report {
        Report::Progress(update) => {
            execution.record(state, update.message, update.progress, update.details)
        }
        Report::RollbackData(data) => {
            // The first recording is the pre-state; a rollback must not overwrite it.
            if state == ExecutionState::Running {
                execution.update(|p| p.rollback_data = data);
            }
        }
    })
}

fn suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}
