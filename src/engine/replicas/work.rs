//! A replica's work: claiming queued executions while it has free workers, running each under
//! its lease, renewing the leases, and ending what other replicas left behind.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::broadcast;
use tracing::Instrument;

use super::{Fence, Replicas};
use crate::{
    domain::{ExecutionState, ExecutionView},
    engine::{admission::Validated, execution::Execution, runner, Engine, EngineError},
    store::{Change, Claimed, Coordination, Current, Notice},
};

/// How often a replica looks for queued work without a notice.
const QUEUE_POLL: Duration = Duration::from_secs(1);

impl Engine {
    pub(in crate::engine) fn replicas(&self) -> Option<&Replicas> {
        self.inner.replicas.as_ref()
    }

    /// The store's coordination, when replicas share it.
    pub(in crate::engine) fn coordination(&self) -> Option<&dyn Coordination> {
        self.inner.replicas.as_ref()?;
        self.inner.config.store.as_deref()?.coordination()
    }

    /// Starts the replica's claim and lease tasks.
    pub(in crate::engine) fn start_replica(&self) {
        if self.coordination().is_none() {
            return;
        }
        tokio::spawn(self.clone().claim_loop());
        tokio::spawn(self.clone().lease_loop());
    }

    /// Claims queued executions one at a time while a worker is free; waits for a notice of
    /// new or freed work, or the poll, when there is none it may take.
    async fn claim_loop(self) {
        let (Some(replicas), Some(coordination)) = (self.replicas(), self.coordination()) else {
            return;
        };
        let mut notices = coordination.notices();
        loop {
            let worker = tokio::select! {
                biased;
                _ = replicas.stop_claiming.cancelled() => return,
                worker = self.inner.workers.acquire(0) => worker,
            };
            // Before the claim: the database's lease runs from its transaction's start, so the
            // local count of it must not start later.
            let asked = Instant::now();
            match coordination
                .claim(
                    &replicas.owner,
                    replicas.lease,
                    self.inner.config.namespace_limit,
                )
                .await
            {
                Ok(Some(claimed)) => {
                    crate::telemetry::metrics().claims.inc();
                    self.start_claimed(claimed, worker, asked);
                    continue;
                }
                Ok(None) => drop(worker),
                Err(e) => {
                    drop(worker);
                    tracing::warn!(error = %e, "claiming queued executions");
                }
            }
            let poll = tokio::time::sleep(QUEUE_POLL);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    _ = replicas.stop_claiming.cancelled() => return,
                    _ = &mut poll => break,
                    notice = notices.recv() => match notice {
                        Ok(Notice::Queue | Notice::Resync)
                        | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Closed) => {
                            (&mut poll).await;
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Runs an execution this replica just claimed, on `worker`, under its lease.
    fn start_claimed(
        &self,
        claimed: Claimed,
        worker: crate::engine::workers::Worker,
        asked: Instant,
    ) {
        let Some(replicas) = self.replicas() else {
            return;
        };
        let Claimed {
            view,
            events,
            spec,
            fence,
        } = claimed;
        let cancel = self.inner.closed.child_token();
        let fence = Arc::new(Fence::new(
            view.id.clone(),
            replicas.owner.clone(),
            fence,
            replicas.lease,
            asked,
            cancel.clone(),
        ));
        replicas.held().insert(view.id.clone(), fence.clone());
        let validated = self.revalidate(&view, &fence, spec.priority);
        let held = fence.clone();
        let execution = Execution::resume(
            view,
            events,
            spec.rollback_on_failure,
            cancel,
            self.inner.persister.fenced(fence),
        );
        let execution = self.remember(execution, "");
        let span = tracing::info_span!(
            "execution",
            execution_id = %execution.id,
            action = %execution.action
        );
        let engine = self.clone();
        self.inner.tasks.spawn(
            async move {
                match validated {
                    Ok(validated) => {
                        let job = runner::Job {
                            execution: execution.clone(),
                            validated,
                            slot: None,
                            approval: None,
                            cooldown: spec.cooldown,
                            keys: spec.keys,
                            claimed: Some(worker),
                        };
                        engine.run(job).await;
                    }
                    Err(e) => {
                        execution.record(
                            ExecutionState::Failed,
                            format!("this replica cannot run it: {e}"),
                            None,
                            serde_json::Value::Null,
                        );
                        engine.inner.persister.flush().await;
                    }
                }
                if let Some(replicas) = engine.replicas() {
                    let mut map = replicas.held();
                    // Only this run's lease: the same execution may be claimed again here.
                    if map
                        .get(&execution.id)
                        .is_some_and(|f| Arc::ptr_eq(f, &held))
                    {
                        map.remove(&execution.id);
                    }
                }
                if held.must_leave() {
                    // What memory says of it is not what happened: the store answers for it.
                    engine.forget(&execution.id);
                } else {
                    engine.retire(execution).await;
                }
            }
            .instrument(span),
        );
    }

    /// What `submit` checked on the replica that admitted it, rebuilt here from the stored
    /// execution (the parameters were validated then); its client refuses writes once the
    /// lease is no longer surely held.
    fn revalidate(
        &self,
        view: &ExecutionView,
        fence: &Arc<Fence>,
        priority: i64,
    ) -> Result<Validated, EngineError> {
        let action =
            self.inner.registry.get(&view.action).ok_or_else(|| {
                EngineError::Internal(format!("unknown action {:?}", view.action))
            })?;
        let cluster = self
            .inner
            .clusters
            .canonical(&view.target.cluster)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?
            .to_string();
        let client = self
            .inner
            .clusters
            .client(&cluster)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let client = self.as_action(client, &view.action)?;
        let gate = fence.clone();
        let client = crate::cluster::gated_client(&client, Arc::new(move || gate.is_valid()));
        Ok(Validated {
            action,
            target: view.target.clone(),
            parameters: view.parameters.clone(),
            timeout: view.timeout,
            client,
            cluster,
            priority: i32::try_from(priority).unwrap_or_default(),
        })
    }

    /// Renews the leases of the executions this replica runs, every third of the lease, and
    /// ends the executions whose owner's lease ran out or whose approval expired.
    async fn lease_loop(self) {
        let Some(replicas) = self.replicas() else {
            return;
        };
        let Some(coordination) = self.coordination() else {
            return;
        };
        let mut notices = coordination.notices();
        let every = replicas.lease / 3;
        // Takeovers in a task of their own: one that waits on a row lock must never hold up
        // the renewals of this replica's own leases.
        {
            let engine = self.clone();
            tokio::spawn(async move {
                let Some(replicas) = engine.replicas() else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = replicas.stopped.cancelled() => return,
                        _ = tokio::time::sleep(every) => engine.take_over_due().await,
                    }
                }
            });
        }
        let mut next = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = replicas.stopped.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {
                    next = tokio::time::Instant::now() + every;
                    self.renew_leases().await;
                }
                // A cancellation asked of an execution held here: renewing reads it now.
                notice = notices.recv() => match notice {
                    Ok(Notice::Control(id)) if replicas.held().contains_key(&id) => {
                        self.renew_leases().await;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(next).await;
                    }
                },
            }
        }
    }

    async fn renew_leases(&self) {
        let (Some(replicas), Some(coordination)) = (self.replicas(), self.coordination()) else {
            return;
        };
        let held: Vec<Arc<Fence>> = replicas.held().values().cloned().collect();
        if held.is_empty() {
            return;
        }
        let pairs: Vec<(String, i64)> = held
            .iter()
            .map(|f| (f.execution_id.clone(), f.token))
            .collect();
        let sent = Instant::now();
        let kept = match coordination
            .renew(&replicas.owner, replicas.lease, &pairs)
            .await
        {
            Ok(kept) => kept,
            // Nothing renewed: the deadline passes by itself, and writes stop with it.
            Err(e) => {
                tracing::warn!(error = %e, "renewing leases");
                return;
            }
        };
        for fence in held {
            match kept.iter().find(|(id, _)| *id == fence.execution_id) {
                Some((_, cancel)) => {
                    fence.extend(sent, replicas.lease);
                    crate::telemetry::metrics().lease_renewals.inc();
                    if let Some(reason) = cancel {
                        self.cancel_here(&fence.execution_id, reason);
                    }
                }
                None => {
                    // Ended meanwhile (its end released the lease), or taken over.
                    let ended = self
                        .find(&fence.execution_id)
                        .is_none_or(|e| e.state().is_terminal());
                    if !ended {
                        fence.lose();
                    }
                }
            }
        }
    }

    /// Cancels an execution running here, as asked through the store by another replica.
    pub(in crate::engine) fn cancel_here(&self, id: &str, reason: &str) {
        if let Some(execution) = self.find(id) {
            execution
                .cancel_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| reason.to_string());
            execution.cancel.cancel();
        }
    }

    /// Ends what is due: executions whose owner went silent past its lease become
    /// INTERRUPTED (never re-applied: what they did is unknown), or go back to the queue if
    /// they never started; approvals nobody gave in time are rejected.
    async fn take_over_due(&self) {
        let Some(coordination) = self.coordination() else {
            return;
        };
        let approval_timeout = self.inner.config.approval_timeout;
        let due = match coordination.due(approval_timeout).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "looking for expired leases");
                return;
            }
        };
        for id in due {
            let took = AtomicBool::new(false);
            let decide = |current: &Current| {
                let change = due_change(current, approval_timeout);
                if current.owner.is_some() && change.is_some() {
                    took.store(true, Ordering::SeqCst);
                }
                change
            };
            match coordination.transition(&id, &decide).await {
                Ok(_) if took.load(Ordering::SeqCst) => {
                    crate::telemetry::metrics().takeovers.inc();
                    tracing::warn!(execution_id = %id, "took over an execution whose lease expired");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(execution_id = %id, error = %e, "ending a due execution"),
            }
        }
    }
}

/// What happens to an execution found due, decided again under its row lock.
fn due_change(current: &Current, approval_timeout: Duration) -> Option<Change> {
    let view = &current.view;
    if let (Some(owner), true) = (&current.owner, current.lease_expired) {
        return match view.state {
            // Claimed, never started (RUNNING is stored before the action runs): back to the
            // queue, unless a cancellation was asked of it meanwhile.
            ExecutionState::Queued => Some(match &current.cancel_reason {
                Some(reason) => Change::Event {
                    state: ExecutionState::Cancelled,
                    message: reason.clone(),
                    details: serde_json::Value::Null,
                    approval: None,
                },
                None => Change::Requeue,
            }),
            state if state.is_terminal() => None,
            state => {
                let last = current.last_event.as_ref();
                Some(Change::Event {
                    state: ExecutionState::Interrupted,
                    message: format!(
                        "interrupted: replica {owner} stopped renewing its lease while the execution was {}{}; it was not re-applied — check {} before retrying",
                        state.as_str(),
                        last.map(|e| format!(" (last: {})", e.message)).unwrap_or_default(),
                        view.target.object_ref()
                    ),
                    details: json!({
                        "previous_state": state.as_str(),
                        "owner": owner,
                        "last_event": last.map(|e| json!({
                            "sequence": e.sequence,
                            "message": e.message,
                            "progress": e.progress,
                            "details": e.details,
                        })),
                        "rollback_data": view.rollback_data,
                    }),
                    approval: None,
                })
            }
        };
    }
    let waited = chrono::Utc::now() - view.created_at;
    let expired = waited.to_std().is_ok_and(|w| w >= approval_timeout);
    (current.owner.is_none() && view.state == ExecutionState::WaitingApproval && expired).then(
        || Change::Event {
            state: ExecutionState::Rejected,
            message: format!(
                "approval expired: nobody answered within {}",
                humantime::format_duration(approval_timeout)
            ),
            details: serde_json::Value::Null,
            approval: None,
        },
    )
}
