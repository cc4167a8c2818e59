//! One execution in memory: what was asked, where it stands, its event log, and the handles
//! the engine steers it with (cancellation, approval).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{persist::Persister, EventLog};
use crate::domain::{AlertContext, Event, ExecutionState, ExecutionView, Target};

/// An approver's answer to an execution waiting for approval.
#[derive(Debug)]
pub enum Verdict {
    Approved { approver: String, reason: String },
    Rejected { approver: String, reason: String },
}

/// The mutable part of an execution, changed only together with an event.
pub(super) struct Progressing {
    pub state: ExecutionState,
    pub message: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Value,
    pub rollback_data: Value,
    pub approval: Value,
}

pub(super) struct Execution {
    pub id: String,
    pub action: String,
    pub target: Target,
    pub parameters: Map<String, Value>,
    pub request_id: String,
    pub alert: Option<AlertContext>,
    pub timeout: Duration,
    pub created_at: DateTime<Utc>,
    pub requester: String,
    pub policy: Value,
    pub trace_id: String,
    pub recommendation: Option<crate::domain::Recommendation>,
    /// Restore the recorded pre-state when verification fails.
    pub rollback_on_failure: bool,
    /// Creation order, the stable position used by in-memory paging.
    pub index: usize,
    pub progressing: Mutex<Progressing>,
    pub log: Arc<EventLog>,
    pub cancel: CancellationToken,
    pub cancel_reason: Mutex<Option<String>>,
    /// Taken by the approver's answer; `None` once answered (or when none is needed).
    pub approval_tx: Mutex<Option<oneshot::Sender<Verdict>>>,
    pub persister: Persister,
}

impl Execution {
    /// An execution stored by another replica, claimed by this one to run: its stored events
    /// are its log (published: they are durable), and `persister` carries its lease.
    pub fn resume(
        view: ExecutionView,
        events: Vec<Event>,
        rollback_on_failure: bool,
        cancel: CancellationToken,
        persister: Persister,
    ) -> Execution {
        let log = Arc::new(EventLog::default());
        for event in events {
            log.append(event, true);
        }
        Execution {
            id: view.id,
            action: view.action,
            target: view.target,
            parameters: view.parameters,
            request_id: view.request_id,
            alert: view.alert,
            timeout: view.timeout,
            created_at: view.created_at,
            requester: view.requester,
            policy: view.policy,
            trace_id: view.trace_id,
            recommendation: view.recommendation,
            rollback_on_failure,
            index: 0,
            progressing: Mutex::new(Progressing {
                state: view.state,
                message: view.message,
                started_at: view.started_at,
                finished_at: view.finished_at,
                result: view.result,
                rollback_data: view.rollback_data,
                approval: view.approval,
            }),
            log,
            cancel,
            cancel_reason: Mutex::new(None),
            approval_tx: Mutex::new(None),
            persister,
        }
    }

    /// Records an event and moves the execution to `state`; the event goes to subscribers at
    /// once and to the store in order. Nothing is recorded after a terminal state.
    pub fn record(
        &self,
        state: ExecutionState,
        message: impl Into<String>,
        progress: Option<(u64, u64)>,
        details: Value,
    ) {
        let message = message.into();
        let mut p = self.progressing.lock().unwrap_or_else(|e| e.into_inner());
        if p.state.is_terminal() {
            return;
        }
        let now = Utc::now();
        if state == ExecutionState::Running && p.started_at.is_none() {
            p.started_at = Some(now);
        }
        if state.is_terminal() {
            p.finished_at = Some(now);
        }
        let changed = p.state != state;
        p.state = state;
        p.message = message.clone();
        let event = self.log.append(
            Event {
                sequence: 0,
                timestamp: now,
                state,
                message,
                progress,
                details,
                encoded: Default::default(),
            },
            !self.persister.is_durable(),
        );
        // A change of state goes to the store with its event, in one round: a reader never
        // finds the terminal event stored beside a snapshot that is still running.
        let snapshot = (changed || state.is_terminal()).then(|| self.view_of(&p));
        self.persister.event(&self.id, &event, &self.log, snapshot);
        if state.is_terminal() {
            let ran = p.started_at.and_then(|start| (now - start).to_std().ok());
            crate::telemetry::metrics().execution_ended(&self.action, state.as_str(), ran);
        }
    }

    /// Changes the snapshot without an event (result, rollback data, approval).
    pub fn update(&self, change: impl FnOnce(&mut Progressing)) {
        change(&mut self.progressing.lock().unwrap_or_else(|e| e.into_inner()));
        self.persister.snapshot(self.view());
    }

    pub fn state(&self) -> ExecutionState {
        self.progressing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state
    }

    pub fn view(&self) -> ExecutionView {
        self.view_of(&self.progressing.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn view_of(&self, p: &Progressing) -> ExecutionView {
        ExecutionView {
            id: self.id.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            parameters: self.parameters.clone(),
            request_id: self.request_id.clone(),
            alert: self.alert.clone(),
            timeout: self.timeout,
            state: p.state,
            message: p.message.clone(),
            created_at: self.created_at,
            started_at: p.started_at,
            finished_at: p.finished_at,
            result: p.result.clone(),
            rollback_data: p.rollback_data.clone(),
            last_sequence: self.log.last_sequence(),
            requester: self.requester.clone(),
            policy: self.policy.clone(),
            approval: p.approval.clone(),
            trace_id: self.trace_id.clone(),
            recommendation: self.recommendation.clone(),
        }
    }
}
