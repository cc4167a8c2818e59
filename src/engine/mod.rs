//! The engine: validation, a bounded queue, a worker pool, per-target locks, timeouts,
//! cancellation and the event log of every execution. It knows actions and clusters, never
//! proto types.

mod events;
mod locks;
pub mod model;
pub mod target;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use chrono::Utc;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use events::EventLog;
use locks::TargetLocks;
use model::{
    DryRunReport, Event, ExecutionRequest, ExecutionState, ExecutionView, ListFilter, Target,
};

use crate::{
    actions::{
        validate_parameters, ActionContext, ActionError, ActionSpec, Registry, Remediation, Report,
        Reporter,
    },
    cluster::{ClusterError, Clusters},
};

/// Default worker pool size: executions running at once.
pub const DEFAULT_WORKERS: usize = 10;
/// Default queue capacity: executions admitted but not yet running; beyond it, Execute is
/// refused with RESOURCE_EXHAUSTED instead of piling up unbounded work.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// Default per-execution timeout (the seed service's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest timeout a caller may ask for: an action that needs more is not a remediation.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Default and largest page of ListExecutions.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
/// How long CancelExecution waits for the execution to stop before answering.
const CANCEL_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Why the engine refused or could not answer a request. Mapped to gRPC codes in one place
/// (`api::status`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed; `field` names the offending field (`parameters.replicas`).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// An execution or a target object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The cluster's or execution's state forbids the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The queue is full.
    #[error("queue full: {capacity} executions are waiting; retry later")]
    QueueFull { capacity: usize },
    /// The server is shutting down and takes no new work.
    #[error("shutting down: no new executions are accepted")]
    ShuttingDown,
    /// The cluster could not be reached or answered with an error.
    #[error("cluster: {0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        EngineError::InvalidArgument {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<ActionError> for EngineError {
    fn from(err: ActionError) -> Self {
        match err {
            ActionError::InvalidParameter { field, message } => {
                EngineError::InvalidArgument { field, message }
            }
            ActionError::NotFound(what) => EngineError::NotFound(what),
            ActionError::Precondition(why) => EngineError::FailedPrecondition(why),
            ActionError::Cluster(ClusterError::Unknown { name, known }) => EngineError::invalid(
                "target.cluster",
                format!("unknown cluster {name:?} (configured: {known})"),
            ),
            ActionError::Kube(kube::Error::Api(status))
                if status.code == 422 || status.code == 400 =>
            {
                EngineError::FailedPrecondition(format!(
                    "the API server refused the change: {}",
                    status.message
                ))
            }
            ActionError::Rollout(e) => EngineError::FailedPrecondition(e.to_string()),
            ActionError::Internal(e) => EngineError::Internal(e),
            other => EngineError::Unavailable(other.to_string()),
        }
    }
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub default_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: DEFAULT_WORKERS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            default_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The mutable part of an execution, changed only together with an event.
struct Progressing {
    state: ExecutionState,
    message: String,
    started_at: Option<chrono::DateTime<Utc>>,
    finished_at: Option<chrono::DateTime<Utc>>,
    result: Value,
    rollback_data: Value,
}

/// One execution: what was asked, where it stands, and its event log.
struct Execution {
    id: String,
    action: String,
    target: Target,
    parameters: Map<String, Value>,
    request_id: String,
    alert: Option<model::AlertContext>,
    timeout: Duration,
    created_at: chrono::DateTime<Utc>,
    /// Creation order, the stable position used by ListExecutions paging.
    index: usize,
    progressing: Mutex<Progressing>,
    log: Arc<EventLog>,
    cancel: CancellationToken,
    cancel_reason: Mutex<Option<String>>,
}

impl Execution {
    /// Records an event and moves the execution to `state`. Nothing is recorded after a
    /// terminal state.
    fn record(
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
        p.state = state;
        p.message = message.clone();
        self.log.append(Event {
            sequence: 0,
            timestamp: now,
            state,
            message,
            progress,
            details,
        });
    }

    fn state(&self) -> ExecutionState {
        self.progressing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state
    }

    fn view(&self) -> ExecutionView {
        let p = self.progressing.lock().unwrap_or_else(|e| e.into_inner());
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
            requester: String::new(),
            policy: Value::Null,
            approval: Value::Null,
            trace_id: String::new(),
        }
    }
}

/// Executions by id, in creation order.
#[derive(Default)]
struct History {
    by_id: HashMap<String, Arc<Execution>>,
    ordered: Vec<Arc<Execution>>,
}

struct Inner {
    config: EngineConfig,
    registry: Registry,
    clusters: Clusters,
    history: RwLock<History>,
    queue: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    locks: TargetLocks,
    tasks: TaskTracker,
    closed: CancellationToken,
}

/// The execution engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A request checked against its action and the cluster's current state.
struct Validated {
    action: Arc<dyn Remediation>,
    target: Target,
    parameters: Map<String, Value>,
    timeout: Duration,
    client: kube::Client,
}

impl Engine {
    pub fn new(config: EngineConfig, registry: Registry, clusters: Clusters) -> Self {
        Engine {
            inner: Arc::new(Inner {
                queue: Arc::new(Semaphore::new(config.queue_capacity)),
                workers: Arc::new(Semaphore::new(config.workers)),
                config,
                registry,
                clusters,
                history: RwLock::new(History::default()),
                locks: TargetLocks::default(),
                tasks: TaskTracker::new(),
                closed: CancellationToken::new(),
            }),
        }
    }

    pub fn actions(&self) -> Vec<ActionSpec> {
        self.inner.registry.specs()
    }

    pub fn clusters(&self) -> &Clusters {
        &self.inner.clusters
    }

    /// Checks everything that needs no cluster: action, target, parameters, timeout, cluster
    /// name.
    fn validate(&self, request: &ExecutionRequest) -> Result<Validated, EngineError> {
        if request.action.is_empty() {
            return Err(EngineError::invalid("action", "is required"));
        }
        let action = self.inner.registry.get(&request.action).ok_or_else(|| {
            let known: Vec<&str> = self.inner.registry.specs().iter().map(|s| s.name).collect();
            EngineError::invalid(
                "action",
                format!(
                    "unknown action {:?} (known: {})",
                    request.action,
                    known.join(", ")
                ),
            )
        })?;
        let target = target::resolve(action.spec(), &request.target, request.alert.as_ref())?;
        let parameters = validate_parameters(&action.spec().params, &request.parameters)?;
        action.validate(&parameters)?;
        let timeout = match request.timeout {
            None => self.inner.config.default_timeout,
            Some(t) if t.is_zero() || t > MAX_TIMEOUT => {
                return Err(EngineError::invalid(
                    "timeout",
                    format!(
                        "must be between 1s and {}",
                        humantime::format_duration(MAX_TIMEOUT)
                    ),
                ))
            }
            Some(t) => t,
        };
        let client = self
            .inner
            .clusters
            .client(&target.cluster)
            .map_err(|e| match e {
                ClusterError::Unknown { .. } => {
                    EngineError::invalid("target.cluster", e.to_string())
                }
                other => EngineError::Unavailable(other.to_string()),
            })?;
        Ok(Validated {
            action,
            target,
            parameters,
            timeout,
            client,
        })
    }

    fn context(v: &Validated, reporter: Reporter) -> ActionContext {
        ActionContext {
            client: v.client.clone(),
            target: v.target.clone(),
            params: v.parameters.clone(),
            reporter,
        }
    }

    /// What `request` would change; nothing is mutated.
    ///
    /// # Errors
    /// Invalid requests, a missing target, or a state the action refuses.
    pub async fn dry_run(&self, request: ExecutionRequest) -> Result<DryRunReport, EngineError> {
        let v = self.validate(&request)?;
        let plan = v
            .action
            .plan(&Self::context(&v, Reporter::discard()))
            .await?;
        Ok(DryRunReport {
            target: v.target,
            parameters: v.parameters,
            plan,
        })
    }

    /// Validates `request`, checks it against the cluster (a dry run), and enqueues it.
    /// Returns at once with the QUEUED execution.
    ///
    /// # Errors
    /// Invalid requests ([`EngineError::InvalidArgument`] naming the field), a missing target,
    /// a full queue, or a shutting-down engine.
    #[tracing::instrument(skip_all, fields(action = %request.action))]
    pub async fn submit(&self, request: ExecutionRequest) -> Result<ExecutionView, EngineError> {
        if self.is_closing() {
            return Err(EngineError::ShuttingDown);
        }
        let v = self.validate(&request)?;
        // Refuse now what would fail at once (missing target, out-of-bounds result); the
        // action checks again when it runs, against the state it finds then.
        v.action
            .plan(&Self::context(&v, Reporter::discard()))
            .await?;
        let queue_slot =
            self.inner
                .queue
                .clone()
                .try_acquire_owned()
                .map_err(|_| EngineError::QueueFull {
                    capacity: self.inner.config.queue_capacity,
                })?;
        let execution = {
            let mut history = self
                .inner
                .history
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let execution = Arc::new(Execution {
                id: uuid::Uuid::new_v4().to_string(),
                action: request.action.clone(),
                target: v.target.clone(),
                parameters: v.parameters.clone(),
                request_id: request.request_id.clone(),
                alert: request.alert.clone(),
                timeout: v.timeout,
                created_at: Utc::now(),
                index: history.ordered.len(),
                progressing: Mutex::new(Progressing {
                    state: ExecutionState::Queued,
                    message: String::new(),
                    started_at: None,
                    finished_at: None,
                    result: Value::Null,
                    rollback_data: Value::Null,
                }),
                log: Arc::new(EventLog::default()),
                cancel: self.inner.closed.child_token(),
                cancel_reason: Mutex::new(None),
            });
            history
                .by_id
                .insert(execution.id.clone(), execution.clone());
            history.ordered.push(execution.clone());
            execution
        };
        execution.record(
            ExecutionState::Queued,
            format!(
                "queued {} on {}",
                execution.action,
                execution.target.object_ref()
            ),
            None,
            serde_json::json!({ "parameters": execution.parameters }),
        );
        let view = execution.view();
        let span = tracing::info_span!("execution", execution_id = %execution.id, action = %execution.action);
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.run(execution, v, queue_slot).await }.instrument(span));
        Ok(view)
    }

    /// Runs one execution: wait for the target, then a worker, then the action under its
    /// timeout and cancellation.
    async fn run(
        &self,
        execution: Arc<Execution>,
        v: Validated,
        queue_slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let key = format!("{}|{}", v.target.cluster, v.target.object_ref());
        let cancelled = execution.cancel.clone();
        let acquired = tokio::select! {
            biased;
            _ = cancelled.cancelled() => None,
            guards = async {
                let target = self.inner.locks.acquire(&key).await;
                let worker = self.inner.workers.clone().acquire_owned().await;
                (target, worker)
            } => Some(guards),
        };
        drop(queue_slot);
        let Some((_target_guard, Ok(_worker))) = acquired else {
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
        let reporter = {
            let execution = execution.clone();
            Reporter::new(move |report| match report {
                Report::Progress(update) => execution.record(
                    ExecutionState::Running,
                    update.message,
                    update.progress,
                    update.details,
                ),
                Report::RollbackData(data) => {
                    execution
                        .progressing
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .rollback_data = data;
                }
            })
        };
        let ctx = Self::context(&v, reporter);
        let outcome = tokio::select! {
            biased;
            _ = cancelled.cancelled() => None,
            r = tokio::time::timeout(v.timeout, v.action.execute(&ctx)) => Some(r),
        };
        match outcome {
            None => self.finish_cancelled(&execution),
            Some(Err(_)) => execution.record(
                ExecutionState::TimedOut,
                format!("timed out after {}", humantime::format_duration(v.timeout)),
                None,
                Value::Null,
            ),
            Some(Ok(Ok(outcome))) => {
                execution
                    .progressing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .result = outcome.result.clone();
                execution.record(
                    ExecutionState::Succeeded,
                    outcome.message,
                    None,
                    outcome.result,
                );
            }
            Some(Ok(Err(err))) => {
                tracing::warn!(error = %err, "execution failed");
                execution.record(
                    ExecutionState::Failed,
                    err.to_string(),
                    None,
                    serde_json::json!({ "error": err.to_string() }),
                );
            }
        }
    }

    fn finish_cancelled(&self, execution: &Execution) {
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

    fn find(&self, id: &str) -> Result<Arc<Execution>, EngineError> {
        self.inner
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("execution {id:?}")))
    }

    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub fn get(&self, id: &str) -> Result<(ExecutionView, Vec<Arc<Event>>), EngineError> {
        let execution = self.find(id)?;
        Ok((execution.view(), execution.log.after(0)))
    }

    /// Waits until the execution reached a terminal state, and returns it.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub async fn wait(&self, id: &str) -> Result<ExecutionView, EngineError> {
        let execution = self.find(id)?;
        let events = execution
            .log
            .clone()
            .subscribe(execution.log.last_sequence().saturating_sub(1));
        futures::pin_mut!(events);
        while events.next().await.is_some() {}
        Ok(execution.view())
    }

    /// Every event after `from_sequence`, then live ones; ends after the terminal event.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub fn watch(
        &self,
        id: &str,
        from_sequence: u64,
    ) -> Result<impl Stream<Item = Arc<Event>> + Send + 'static, EngineError> {
        Ok(self.find(id)?.log.clone().subscribe(from_sequence))
    }

    /// Executions newest first.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] for a bad page token or page size.
    pub fn list(&self, filter: &ListFilter) -> Result<(Vec<ExecutionView>, String), EngineError> {
        let page_size = match filter.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(EngineError::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ))
            }
            n => n,
        };
        let history = self.inner.history.read().unwrap_or_else(|e| e.into_inner());
        // The token is the creation index to continue below (newest first).
        let start = if filter.page_token.is_empty() {
            history.ordered.len()
        } else {
            filter
                .page_token
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= history.ordered.len())
                .ok_or_else(|| {
                    EngineError::invalid("page_token", "is not a token this server issued")
                })?
        };
        let mut page = Vec::with_capacity(page_size);
        let mut next = String::new();
        for execution in history.ordered[..start].iter().rev() {
            let view = execution.view();
            let keep = filter.state.is_none_or(|s| s == view.state)
                && filter.action.as_deref().is_none_or(|a| a == view.action)
                && filter
                    .namespace
                    .as_deref()
                    .is_none_or(|n| n == view.target.namespace);
            if !keep {
                continue;
            }
            if page.len() == page_size {
                next = (execution.index + 1).to_string();
                break;
            }
            page.push(view);
        }
        Ok((page, next))
    }

    /// Stops a queued or running execution; it ends CANCELLED with `reason`. Waits briefly for
    /// the execution to stop so the answer shows the final state.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id, [`EngineError::FailedPrecondition`] when it
    /// already ended.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<ExecutionView, EngineError> {
        let execution = self.find(id)?;
        let state = execution.state();
        if state.is_terminal() {
            return Err(EngineError::FailedPrecondition(format!(
                "execution {id} already ended ({state:?})"
            )));
        }
        let reason = if reason.is_empty() {
            "cancelled by request".to_string()
        } else {
            format!("cancelled: {reason}")
        };
        execution
            .cancel_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        execution.cancel.cancel();
        let _ = tokio::time::timeout(CANCEL_ANSWER_WAIT, self.wait(id)).await;
        Ok(execution.view())
    }

    /// Stops taking work, lets in-flight executions finish for up to `grace`, then interrupts
    /// the rest. Returns when every execution task has ended.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.tasks.close();
        let drained = tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(?grace, "grace period over: interrupting running executions");
        }
        self.inner.closed.cancel();
        self.inner.tasks.wait().await;
    }

    /// Interrupts every execution at once (second signal).
    pub fn abort(&self) {
        self.inner.tasks.close();
        self.inner.closed.cancel();
    }

    /// Whether `shutdown` or `abort` began.
    pub fn is_closing(&self) -> bool {
        self.inner.tasks.is_closed()
    }
}
