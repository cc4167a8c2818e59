//! The engine: validation, policy, approvals, cooldowns, a bounded queue, a worker pool with
//! per-target locks and per-namespace limits, timeouts, cancellation, verification with
//! automatic rollback, and the event log of every execution. It knows actions, clusters and
//! the store, never proto types.

mod admission;
pub mod authz;
mod events;
mod execution;
mod locks;
pub mod model;
mod persist;
mod runner;
pub mod target;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use chrono::Utc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use admission::Cooldowns;
pub use events::EventLog;
use execution::{Execution, Progressing, Verdict};
use locks::TargetLocks;
use model::{
    DryRunReport, Event, ExecutionRequest, ExecutionState, ExecutionView, ListFilter, Target,
};
pub use persist::Persister;

use crate::{
    actions::{
        validate_parameters, ActionContext, ActionError, ActionSpec, Plan, Registry, Remediation,
        Reporter,
    },
    cluster::{ClusterError, Clusters},
    policy::{Decision, Policy},
    store::{NewExecution, Store, StoreError},
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
/// How long an execution waits for an approval before it is rejected.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default and largest page of ListExecutions.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Time an action with its own timeout gets beyond it, to report and clean up.
const ACTION_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);
/// How long CancelExecution waits for the execution to stop before answering.
const CANCEL_ANSWER_WAIT: Duration = Duration::from_secs(5);
/// The requester recorded when the caller is not authenticated.
pub const ANONYMOUS: &str = "anonymous";

/// Why the engine refused or could not answer a request. Mapped to gRPC and HTTP codes in
/// one place each (`api::status`, `api::http`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed; `field` names the offending field (`parameters.replicas`).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// An execution or a target object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The cluster's or execution's state forbids the request (includes cooldowns).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The policy or the caller's authorization forbids it.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request_id is taken by a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The queue is full.
    #[error("queue full: {capacity} executions are waiting; retry later")]
    QueueFull { capacity: usize },
    /// The server is shutting down and takes no new work.
    #[error("shutting down: no new executions are accepted")]
    ShuttingDown,
    /// The cluster or the store could not be reached or answered with an error.
    #[error("unavailable: {0}")]
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

    /// The field named by an [`EngineError::InvalidArgument`].
    pub fn field(&self) -> Option<&str> {
        match self {
            EngineError::InvalidArgument { field, .. } => Some(field),
            _ => None,
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

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::BadPageToken => {
                EngineError::invalid("page_token", "is not a token this server issued")
            }
            StoreError::DuplicateRequest {
                request_id,
                existing,
            } => EngineError::AlreadyExists(format!(
                "request_id {request_id:?} is already used by execution {existing}"
            )),
            StoreError::Backend(e) => EngineError::Unavailable(format!("store: {e}")),
        }
    }
}

/// Tunables of the engine. The library default has no cooldown, no namespace limit and no
/// policy; `serve` sets production defaults from its flags.
#[derive(Clone)]
pub struct EngineConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub default_timeout: Duration,
    /// Per target, after an execution ends; zero disables cooldowns.
    pub cooldown: Duration,
    /// Per-action overrides of `cooldown`.
    pub action_cooldowns: HashMap<String, Duration>,
    /// Executions running at once in one namespace; 0 = only the global pool limits.
    pub namespace_limit: usize,
    pub approval_timeout: Duration,
    /// `None` allows everything.
    pub policy: Option<Arc<Policy>>,
    /// `None` keeps history in memory only.
    pub store: Option<Arc<dyn Store>>,
    /// With a store: finished executions kept in memory, the newest; older ones are read back
    /// from the store, so memory stays bounded.
    pub finished_in_memory: usize,
    /// Who may run and approve what where (`--authz`); `None` allows everyone everything.
    pub authorizer: Option<Arc<authz::Authorizer>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: DEFAULT_WORKERS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            default_timeout: DEFAULT_TIMEOUT,
            cooldown: Duration::ZERO,
            action_cooldowns: HashMap::new(),
            namespace_limit: 0,
            approval_timeout: DEFAULT_APPROVAL_TIMEOUT,
            policy: None,
            store: None,
            finished_in_memory: FINISHED_KEPT_IN_MEMORY,
            authorizer: None,
        }
    }
}

/// Finished executions kept in memory by default when there is a store (recent ones are read
/// most); older ones are read back from the store, so memory stays bounded
/// however long the service runs.
const FINISHED_KEPT_IN_MEMORY: usize = 1_000;

/// Executions by id, in creation order, and by request_id. With a store, only the unfinished
/// and the newest [`EngineConfig::finished_in_memory`] finished ones; without, all of them.
#[derive(Default)]
struct History {
    by_id: HashMap<String, Arc<Execution>>,
    /// Creation order, for listing without a store (empty with one: the store lists).
    ordered: Vec<Arc<Execution>>,
    /// Finished executions in memory, oldest first (with a store).
    finished: std::collections::VecDeque<Arc<Execution>>,
    /// request_id → (execution id, request fingerprint).
    requests: HashMap<String, (String, String)>,
}

struct Inner {
    config: EngineConfig,
    /// The policy and the authorization rules in force: `config`'s at start, replaced as a
    /// whole by [`Engine::replace_rules`] (SIGHUP) while executions run.
    rules: RwLock<Rules>,
    registry: Registry,
    clusters: Clusters,
    history: RwLock<History>,
    queue: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
    locks: TargetLocks,
    /// Serializes submits that share a request_id, so a retry storm creates one execution.
    request_locks: TargetLocks,
    cooldowns: Cooldowns,
    tasks: TaskTracker,
    closed: CancellationToken,
    persister: Persister,
}

/// What decides whether a request may run.
struct Rules {
    policy: Option<Arc<Policy>>,
    authorizer: Option<Arc<authz::Authorizer>>,
}

/// The execution engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A request checked against its action (no cluster needed).
struct Validated {
    action: Arc<dyn Remediation>,
    target: Target,
    parameters: Map<String, Value>,
    timeout: Duration,
    client: kube::Client,
}

impl Engine {
    pub fn new(config: EngineConfig, registry: Registry, clusters: Clusters) -> Self {
        let persister = config
            .store
            .clone()
            .map(Persister::start)
            .unwrap_or_default();
        Engine {
            inner: Arc::new(Inner {
                queue: Arc::new(Semaphore::new(config.queue_capacity)),
                workers: Arc::new(Semaphore::new(config.workers)),
                namespaces: Mutex::new(HashMap::new()),
                rules: RwLock::new(Rules {
                    policy: config.policy.clone(),
                    authorizer: config.authorizer.clone(),
                }),
                config,
                registry,
                clusters,
                history: RwLock::new(History::default()),
                locks: TargetLocks::default(),
                request_locks: TargetLocks::default(),
                cooldowns: Cooldowns::default(),
                tasks: TaskTracker::new(),
                closed: CancellationToken::new(),
                persister,
            }),
        }
    }

    /// Puts a new policy and new authorization rules in force, both at once. Requests
    /// admitted before keep the decision they got; the next ones are judged by these.
    pub fn replace_rules(
        &self,
        policy: Option<Arc<Policy>>,
        authorizer: Option<Arc<authz::Authorizer>>,
    ) {
        *self.inner.rules.write().unwrap_or_else(|e| e.into_inner()) = Rules { policy, authorizer };
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.inner
            .rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .policy
            .clone()
    }

    fn authorizer(&self) -> Option<Arc<authz::Authorizer>> {
        self.inner
            .rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .authorizer
            .clone()
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
            // An action with its own time limit (a drain's timeout_seconds) gets that much,
            // plus room to report and clean up, rather than being cut short by the default.
            None => match parameters.get("timeout_seconds").and_then(Value::as_u64) {
                Some(own) => self
                    .inner
                    .config
                    .default_timeout
                    .max(Duration::from_secs(own) + ACTION_TIMEOUT_MARGIN),
                None => self.inner.config.default_timeout,
            },
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

    /// The facts about the cluster the policy needs: schedulable nodes, for node targets.
    async fn cluster_facts(&self, v: &Validated) -> Result<Value, EngineError> {
        if v.target.kind != "Node" {
            return Ok(json!({}));
        }
        // The same notion of "schedulable" the node actions use (Ready, not cordoned, not
        // being deleted), so policy and actions never disagree about the last node.
        let schedulable =
            crate::cluster::nodes::schedulable_nodes(&kube::Api::<Node>::all(v.client.clone()))
                .await
                .map_err(|e| EngineError::Unavailable(format!("listing nodes: {e}")))?;
        Ok(json!({
            "schedulable_nodes": schedulable.len(),
            "target_node_schedulable": schedulable.contains(&v.target.name),
        }))
    }

    /// The policy's decision on a validated, planned request; allow-all without a policy.
    async fn decide(
        &self,
        v: &Validated,
        plan: &Plan,
        requester: &str,
    ) -> Result<Decision, EngineError> {
        let Some(policy) = self.policy() else {
            return Ok(Decision {
                allow: true,
                require_approval: false,
                reasons: Vec::new(),
            });
        };
        let spec = v.action.spec();
        let input = json!({
            "action": spec.name,
            "risk": spec.risk,
            "read_only": v.action.read_only(),
            "target": v.target,
            "parameters": v.parameters,
            "requester": requester,
            "changes": plan.changes.iter().map(|c| json!({
                "object": c.object, "summary": c.summary, "before": c.before, "after": c.after,
            })).collect::<Vec<_>>(),
            "cluster": self.cluster_facts(v).await?,
        });
        policy
            .evaluate(&input)
            .map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// What `request` would change and what the policy says; nothing is mutated.
    ///
    /// # Errors
    /// Invalid requests, a missing target, or a state the action refuses.
    pub async fn dry_run(&self, request: ExecutionRequest) -> Result<DryRunReport, EngineError> {
        let v = self.validate(&request)?;
        self.authorize_run(&request, &v)?;
        let plan = v
            .action
            .plan(&Self::context(&v, Reporter::discard()))
            .await?;
        let decision = self.decide(&v, &plan, &requester_of(&request)).await?;
        Ok(DryRunReport {
            target: v.target,
            parameters: v.parameters,
            plan,
            policy: Some(decision),
        })
    }

    fn cooldown_for(&self, action: &dyn Remediation) -> Duration {
        if action.read_only() {
            return Duration::ZERO;
        }
        let config = &self.inner.config;
        config
            .action_cooldowns
            .get(action.spec().name)
            .copied()
            .unwrap_or(config.cooldown)
    }

    /// Validates `request`, checks it against the cluster (a dry run) and the policy, claims
    /// the target's cooldown, and enqueues it (or parks it for approval). Returns at once.
    ///
    /// A repeated `request_id` with the same request returns the existing execution; with a
    /// different request it is refused.
    ///
    /// # Errors
    /// Invalid requests ([`EngineError::InvalidArgument`] naming the field), a missing target,
    /// a policy denial, a cooldown, a full queue, or a shutting-down engine.
    #[tracing::instrument(skip_all, fields(action = %request.action))]
    pub async fn submit(&self, request: ExecutionRequest) -> Result<ExecutionView, EngineError> {
        if self.is_closing() {
            return Err(EngineError::ShuttingDown);
        }
        let v = self.validate(&request)?;
        self.authorize_run(&request, &v)?;
        let fingerprint = fingerprint(&request, &v);
        let _same_request = match request.request_id.as_str() {
            "" => None,
            id => Some(self.inner.request_locks.acquire(id).await),
        };
        if let Some(existing) = self.find_request(&request.request_id, &fingerprint).await? {
            return Ok(existing);
        }
        // Refuse now what would fail at once (missing target, out-of-bounds result); the
        // action checks again when it runs, against the state it finds then.
        let plan = v
            .action
            .plan(&Self::context(&v, Reporter::discard()))
            .await?;
        let requester = requester_of(&request);
        let decision = self.decide(&v, &plan, &requester).await?;
        if !decision.allow {
            return Err(EngineError::PermissionDenied(format!(
                "denied by policy: {}",
                decision.reasons.join("; ")
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let cooldown = self.cooldown_for(v.action.as_ref());
        let cooldown_key = format!("{}|{}", v.target.cluster, v.target.object_ref());
        if !cooldown.is_zero() {
            self.inner
                .cooldowns
                .claim(&cooldown_key, &id)
                .map_err(|busy| {
                    EngineError::FailedPrecondition(match busy.until {
                        Some(until) => format!(
                            "{} is in cooldown until {} (after execution {})",
                            v.target.object_ref(),
                            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            busy.execution_id
                        ),
                        None => format!(
                            "{} has execution {} in flight; its cooldown of {} starts when it ends",
                            v.target.object_ref(),
                            busy.execution_id,
                            humantime::format_duration(cooldown)
                        ),
                    })
                })?;
        }
        let release = |engine: &Engine| {
            if !cooldown.is_zero() {
                engine.inner.cooldowns.release(&cooldown_key, &id);
            }
        };
        let Ok(queue_slot) = self.inner.queue.clone().try_acquire_owned() else {
            release(self);
            return Err(EngineError::QueueFull {
                capacity: self.inner.config.queue_capacity,
            });
        };
        let needs_approval = decision.require_approval;
        let (approval_tx, approval_rx) = oneshot::channel();
        // Detached from persistence until it is stored: its first event goes into the store
        // with it, in one round (nobody can see it before it is remembered below).
        let mut execution = Execution {
            id: id.clone(),
            action: request.action.clone(),
            target: v.target.clone(),
            parameters: v.parameters.clone(),
            request_id: request.request_id.clone(),
            alert: request.alert.clone(),
            timeout: v.timeout,
            created_at: Utc::now(),
            requester,
            policy: decision.to_json(),
            trace_id: request.trace_id.clone(),
            rollback_on_failure: request.rollback_on_failure.unwrap_or(true),
            index: 0,
            progressing: Mutex::new(Progressing {
                state: ExecutionState::Queued,
                message: String::new(),
                started_at: None,
                finished_at: None,
                result: Value::Null,
                rollback_data: Value::Null,
                approval: Value::Null,
            }),
            log: Arc::new(EventLog::default()),
            cancel: self.inner.closed.child_token(),
            cancel_reason: Mutex::new(None),
            approval_tx: Mutex::new(needs_approval.then_some(approval_tx)),
            persister: Persister::default(),
        };
        let (state, message) = if needs_approval {
            (
                ExecutionState::WaitingApproval,
                format!(
                    "waiting for approval of {} on {}: {}",
                    execution.action,
                    execution.target.object_ref(),
                    decision.reasons.join("; ")
                ),
            )
        } else {
            (
                ExecutionState::Queued,
                format!(
                    "queued {} on {}",
                    execution.action,
                    execution.target.object_ref()
                ),
            )
        };
        execution.record(
            state,
            message,
            None,
            json!({ "parameters": execution.parameters, "plan": plan.summary, "policy": execution.policy }),
        );
        // From here on the execution may be stored, so storing it, remembering it and starting
        // it happen in a task of their own: a caller that goes away meanwhile cannot leave it
        // stored but never run, nor its cooldown held.
        let engine = self.clone();
        let request_id = request.request_id.clone();
        let admitted = self.inner.tasks.spawn(
            async move {
            // Durable, first event included, before anyone is told it exists; the store
            // settles request_id races.
            if engine.inner.config.store.is_some() {
                let new = NewExecution {
                    view: execution.view(),
                    fingerprint: fingerprint.clone(),
                    events: execution
                        .log
                        .after(0)
                        .iter()
                        .map(|e| (**e).clone())
                        .collect(),
                };
                if let Err(e) = engine.inner.persister.insert(new).await {
                    if !cooldown.is_zero() {
                        engine.inner.cooldowns.release(&cooldown_key, &id);
                    }
                    drop(queue_slot);
                    if let StoreError::DuplicateRequest { .. } = e {
                        if let Some(existing) = engine.find_request(&request_id, &fingerprint).await? {
                            return Ok(existing);
                        }
                    }
                    return Err(e.into());
                }
            }
            execution.persister = engine.inner.persister.clone();
            let execution = engine.remember(execution, &fingerprint);
            let view = execution.view();
            let span = tracing::info_span!("execution", execution_id = %execution.id, action = %execution.action);
            let ran = execution.clone();
            let job = runner::Job {
                execution,
                validated: v,
                queue_slot,
                approval: needs_approval.then_some(approval_rx),
                cooldown,
                cooldown_key,
            };
            let runner = engine.clone();
            engine.inner.tasks.spawn(
                async move {
                    runner.run(job).await;
                    runner.retire(ran).await;
                }
                .instrument(span),
            );
            Ok(view)
        }
        // Under the caller's span: the execution's span hangs off the request that made it.
        .instrument(tracing::Span::current()));
        admitted
            .await
            .map_err(|e| EngineError::Internal(format!("admitting the execution: {e}")))?
    }

    /// After `execution` ended: once its history is durable, it joins the finished ones kept in
    /// memory, and the oldest beyond [`EngineConfig::finished_in_memory`] are dropped (the store has
    /// them). Without a store memory is the history, and nothing is dropped.
    async fn retire(&self, execution: Arc<Execution>) {
        if self.inner.config.store.is_none() {
            return;
        }
        self.inner.persister.flush().await;
        if execution.log.is_unstored() {
            // The store's copy is behind: only memory answers right about this one.
            return;
        }
        let mut history = self
            .inner
            .history
            .write()
            .unwrap_or_else(|e| e.into_inner());
        history.finished.push_back(execution);
        while history.finished.len() > self.inner.config.finished_in_memory {
            let Some(old) = history.finished.pop_front() else {
                break;
            };
            history.by_id.remove(&old.id);
            if history
                .requests
                .get(&old.request_id)
                .is_some_and(|(id, _)| *id == old.id)
            {
                history.requests.remove(&old.request_id);
            }
        }
    }

    /// Keeps the execution in memory and indexes its request_id.
    fn remember(&self, mut execution: Execution, fingerprint: &str) -> Arc<Execution> {
        let mut history = self
            .inner
            .history
            .write()
            .unwrap_or_else(|e| e.into_inner());
        execution.index = history.ordered.len();
        let execution = Arc::new(execution);
        history
            .by_id
            .insert(execution.id.clone(), execution.clone());
        if self.inner.config.store.is_none() {
            history.ordered.push(execution.clone());
        }
        if !execution.request_id.is_empty() {
            history.requests.insert(
                execution.request_id.clone(),
                (execution.id.clone(), fingerprint.to_string()),
            );
        }
        execution
    }

    /// The execution already created for `request_id`, if any.
    ///
    /// # Errors
    /// [`EngineError::AlreadyExists`] when it was created for a different request.
    async fn find_request(
        &self,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<Option<ExecutionView>, EngineError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let known = {
            let history = self.inner.history.read().unwrap_or_else(|e| e.into_inner());
            history
                .requests
                .get(request_id)
                .and_then(|(id, fp)| history.by_id.get(id).map(|e| (e.view(), fp.clone())))
        };
        let known = match known {
            Some(k) => Some(k),
            None => match &self.inner.config.store {
                Some(store) => store.find_request(request_id).await?,
                None => None,
            },
        };
        match known {
            None => Ok(None),
            Some((view, fp)) if fp == fingerprint => Ok(Some(view)),
            Some((view, _)) => Err(EngineError::AlreadyExists(format!(
                "request_id {request_id:?} is already used by execution {} for a different request",
                view.id
            ))),
        }
    }

    fn find(&self, id: &str) -> Option<Arc<Execution>> {
        self.inner
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .cloned()
    }

    fn not_found(id: &str) -> EngineError {
        EngineError::NotFound(format!("execution {id:?}"))
    }

    /// An execution with its events, from memory or from the store.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    /// An execution's snapshot without its events, from memory or from the store.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub async fn view_of(&self, id: &str) -> Result<ExecutionView, EngineError> {
        if let Some(execution) = self.find(id) {
            return Ok(execution.view());
        }
        match &self.inner.config.store {
            Some(store) => store.get(id).await?.ok_or_else(|| Self::not_found(id)),
            None => Err(Self::not_found(id)),
        }
    }

    pub async fn get(&self, id: &str) -> Result<(ExecutionView, Vec<Arc<Event>>), EngineError> {
        if let Some(execution) = self.find(id) {
            return Ok((execution.view(), execution.log.after(0)));
        }
        let store = self
            .inner
            .config
            .store
            .as_ref()
            .ok_or_else(|| Self::not_found(id))?;
        let view = store.get(id).await?.ok_or_else(|| Self::not_found(id))?;
        let events = store
            .events(id, 0)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        Ok((view, events))
    }

    /// Waits until the execution reached a terminal state, and returns it.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub async fn wait(&self, id: &str) -> Result<ExecutionView, EngineError> {
        let Some(execution) = self.find(id) else {
            return Ok(self.get(id).await?.0);
        };
        let events = execution
            .log
            .clone()
            .subscribe(execution.log.last_sequence().saturating_sub(1));
        futures::pin_mut!(events);
        while events.next().await.is_some() {}
        Ok(execution.view())
    }

    /// Every event after `from_sequence`, then live ones; ends after the terminal event. An
    /// execution that is no longer in memory is replayed from the store.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub async fn watch(
        &self,
        id: &str,
        from_sequence: u64,
    ) -> Result<impl Stream<Item = Arc<Event>> + Send + 'static, EngineError> {
        if let Some(execution) = self.find(id) {
            return Ok(execution.log.clone().subscribe(from_sequence).left_stream());
        }
        let (_, events) = self.get(id).await?;
        let replay: Vec<Arc<Event>> = events
            .into_iter()
            .filter(|e| e.sequence > from_sequence)
            .collect();
        Ok(futures::stream::iter(replay).right_stream())
    }

    /// Executions newest first: from the store when there is one (with live state overlaid),
    /// else from memory.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] for a bad page token or page size.
    pub async fn list(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<ExecutionView>, String), EngineError> {
        self.inner.persister.flush().await;
        self.list_flushed(filter).await
    }

    /// [`Engine::list`] once what was recorded is in the store.
    async fn list_flushed(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<ExecutionView>, String), EngineError> {
        if filter.page_size > MAX_PAGE_SIZE {
            return Err(EngineError::invalid(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        let mut filter = filter.clone();
        if filter.page_size == 0 {
            filter.page_size = DEFAULT_PAGE_SIZE;
        }
        if let Some(store) = &self.inner.config.store {
            let (mut page, next) = store.list(&filter).await?;
            for view in &mut page {
                if let Some(live) = self.find(&view.id) {
                    *view = live.view();
                }
            }
            return Ok((page, next));
        }
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
        let mut page = Vec::with_capacity(filter.page_size);
        let mut next = String::new();
        for execution in history.ordered[..start].iter().rev() {
            let view = execution.view();
            if !matches(&filter, &view) {
                continue;
            }
            if page.len() == filter.page_size {
                next = (execution.index + 1).to_string();
                break;
            }
            page.push(view);
        }
        Ok((page, next))
    }

    fn live(&self, id: &str) -> Result<Arc<Execution>, EngineError> {
        match self.find(id) {
            Some(e) => Ok(e),
            None if self.inner.config.store.is_some() => Err(EngineError::FailedPrecondition(
                format!("execution {id} is not running on this server"),
            )),
            None => Err(Self::not_found(id)),
        }
    }

    /// Stops a queued, waiting or running execution; it ends CANCELLED with `reason`. Waits
    /// briefly for the execution to stop so the answer shows the final state.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id, [`EngineError::FailedPrecondition`] when it
    /// already ended.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<ExecutionView, EngineError> {
        if self.find(id).is_none() {
            let (view, _) = self.get(id).await?;
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
        if approver.trim().is_empty() {
            return Err(EngineError::invalid("approver", "is required"));
        }
        let execution = match self.find(id) {
            Some(e) => e,
            None => {
                let view = self.view_of(id).await?;
                // Only someone who may approve it learns what became of it.
                if let Some(authz) = self.authorizer() {
                    authz.check(
                        approver,
                        authz::Permission::Approve,
                        &view.action,
                        &view.target,
                    )?;
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

    /// Marks executions a previous process left unfinished: RUNNING (and rolling back) ones
    /// become INTERRUPTED — never re-applied, since what they did is unknown — and QUEUED or
    /// WAITING_APPROVAL ones become INTERRUPTED too, to be resubmitted by their caller (a
    /// request_id makes that safe). Returns how many.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let Some(store) = &self.inner.config.store else {
            return Ok(0);
        };
        let unfinished = store.unfinished().await?;
        for mut view in unfinished.iter().cloned() {
            // The snapshot may lag its events: continue after the last stored one.
            let stored = store.events(&view.id, 0).await?;
            view.last_sequence = stored.last().map_or(view.last_sequence, |e| e.sequence);
            let message = match view.state {
                ExecutionState::Running | ExecutionState::RollingBack => format!(
                    "interrupted: the server stopped while the execution was {}; it was not re-applied — check {} before retrying",
                    view.state.as_str(),
                    view.target.object_ref()
                ),
                _ => format!(
                    "interrupted: the server stopped before the execution started ({}); nothing was changed — resubmit it",
                    view.state.as_str()
                ),
            };
            let now = Utc::now();
            let event = Event {
                sequence: view.last_sequence + 1,
                timestamp: now,
                state: ExecutionState::Interrupted,
                message: message.clone(),
                progress: None,
                details: json!({ "previous_state": view.state.as_str() }),
                encoded: Default::default(),
            };
            store
                .append_events(&view.id, std::slice::from_ref(&event))
                .await?;
            view.state = ExecutionState::Interrupted;
            view.message = message;
            view.finished_at = Some(now);
            view.last_sequence = event.sequence;
            store.update(&view).await?;
            tracing::warn!(execution_id = %view.id, "recovered an unfinished execution as INTERRUPTED");
        }
        Ok(unfinished.len())
    }

    /// Deletes history older than `max_age` and beyond the newest `keep` (0 = no count limit).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn prune(&self, max_age: Duration, keep: usize) -> Result<u64, EngineError> {
        let Some(store) = &self.inner.config.store else {
            return Ok(0);
        };
        let older_than = Utc::now() - chrono::Duration::from_std(max_age).unwrap_or_default();
        // A count of 0 means "no count limit", not "keep nothing".
        let keep = if keep == 0 { usize::MAX } else { keep };
        Ok(store.prune(older_than, keep).await?)
    }

    /// Stops taking work, lets in-flight executions finish for up to `grace`, then interrupts
    /// the rest. Returns when every execution task has ended and history is written.
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
        self.inner.persister.flush().await;
    }

    /// Interrupts every execution at once (second signal).
    pub fn abort(&self) {
        self.inner.tasks.close();
        self.inner.closed.cancel();
    }

    /// How many executions are held in memory (unfinished ones, and with a store the newest
    /// finished ones).
    pub fn executions_in_memory(&self) -> usize {
        self.inner
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    /// Sets the state gauges from the executions in memory and returns the Prometheus text.
    pub fn metrics_text(&self) -> String {
        let (mut queued, mut running, mut waiting) = (0, 0, 0);
        let in_memory = {
            let history = self.inner.history.read().unwrap_or_else(|e| e.into_inner());
            for execution in history.by_id.values() {
                match execution.state() {
                    ExecutionState::Queued => queued += 1,
                    ExecutionState::Running | ExecutionState::RollingBack => running += 1,
                    ExecutionState::WaitingApproval => waiting += 1,
                    _ => {}
                }
            }
            history.by_id.len()
        };
        let metrics = crate::telemetry::metrics();
        metrics.in_memory.set(in_memory as i64);
        metrics.queue_depth.set(queued);
        metrics.in_flight.set(running);
        metrics.waiting_approval.set(waiting);
        metrics.encode()
    }

    /// Whether `shutdown` or `abort` began.
    pub fn is_closing(&self) -> bool {
        self.inner.tasks.is_closed()
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
}

fn requester_of(request: &ExecutionRequest) -> String {
    if request.requester.is_empty() {
        ANONYMOUS.to_string()
    } else {
        request.requester.clone()
    }
}

/// What identifies a request for idempotency: action, resolved target and parameters.
fn fingerprint(request: &ExecutionRequest, v: &Validated) -> String {
    use sha2::{Digest, Sha256};
    let canonical = json!({
        "action": request.action,
        "target": v.target,
        "parameters": v.parameters,
        "timeout_ms": v.timeout.as_millis() as u64,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn matches(filter: &ListFilter, view: &ExecutionView) -> bool {
    filter.state.is_none_or(|s| s == view.state)
        && filter.action.as_deref().is_none_or(|a| a == view.action)
        && filter
            .namespace
            .as_deref()
            .is_none_or(|n| n == view.target.namespace)
        && filter
            .requester
            .as_deref()
            .is_none_or(|r| r == view.requester)
}
