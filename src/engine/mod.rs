//! The engine: every door (gRPC, HTTP, …) calls it, and it alone decides what runs. This file
//! is its facade — the [`Engine`] handle, its state, starting and stopping; the work is in the
//! modules below, in the order a request meets them:
//! - [`admission`]: validate, authorize ([`access`] with the rules of [`authz`]), dry run,
//!   policy, cooldown ([`cooldowns`]) and queue; hands the new execution to its runner.
//! - [`runner`]: one execution: approval, per-target lock ([`locks`]), namespace and worker
//!   slots, the action under its timeout and cancellation, verification and rollback.
//! - [`execution`] and [`events`]: an execution's state and its event log, which streams
//!   replay-then-live; [`persist`] writes both to the store in rounds.
//! - [`history`]: reading executions back (get, watch, list), recovery and pruning.
//! - [`control`]: cancellation and approvals.
//! - [`replicas`]: with PostgreSQL, the queue, claims, cooldowns and leases move into the
//!   database, shared by every replica; this replica claims, runs, follows and answers
//!   through it.
//! - [`error`] and [`settings`]: the one error type and the tunables.
//!
//! It knows actions, clusters, the policy and the store, never proto types.

mod access;
mod admission;
mod aliases;
pub mod authz;
mod bounds;
mod control;
mod cooldowns;
mod decision;
mod error;
mod events;
mod execution;
mod expiry;
mod history;
pub mod json;
mod limits;
mod locks;
pub mod outbox;
mod persist;
mod replicas;
mod runner;
mod settings;
mod shadow;
pub mod target;
mod workers;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use admission::DryRunReport;
use cooldowns::Cooldowns;
pub use error::EngineError;
pub use events::EventLog;
pub use expiry::EXPIRY_CHECK;
use history::History;
use limits::RateLimits;
use locks::TargetLocks;
pub use persist::Persister;
pub use replicas::DEFAULT_LEASE;
pub use settings::{
    EngineConfig, DEFAULT_APPROVAL_CAPACITY, DEFAULT_APPROVAL_TIMEOUT, DEFAULT_DRY_RUN_LIMIT,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_RATE_BURST, DEFAULT_RATE_LIMIT, DEFAULT_TIMEOUT,
    DEFAULT_WORKERS, MAX_TIMEOUT,
};

pub use crate::domain::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::{
    actions::Registry,
    cluster::Clusters,
    domain::{ActionSpec, ExecutionState},
    policy::Policy,
};

/// The requester recorded when the caller is not authenticated.
pub const ANONYMOUS: &str = "anonymous";

struct Inner {
    config: EngineConfig,
    /// The policy and the authorization rules in force: `config`'s at start, replaced as a
    /// whole by [`Engine::replace_rules`] (SIGHUP) while executions run.
    rules: RwLock<Rules>,
    registry: Registry,
    clusters: Clusters,
    history: RwLock<History>,
    queue: Arc<Semaphore>,
    /// Places of executions waiting for an approval (outside the queue).
    approvals: Arc<Semaphore>,
    /// Dry runs in progress.
    dry_runs: Arc<Semaphore>,
    /// Execute and DryRun per identity.
    limits: RateLimits,
    workers: Arc<workers::Workers>,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
    locks: TargetLocks,
    /// Serializes submits that share a request_id, so a retry storm creates one execution.
    request_locks: TargetLocks,
    cooldowns: Cooldowns,
    tasks: TaskTracker,
    closed: CancellationToken,
    persister: Persister,
    /// This replica among several, when the store coordinates them (PostgreSQL).
    replicas: Option<replicas::Replicas>,
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

impl Engine {
    pub fn new(config: EngineConfig, registry: Registry, clusters: Clusters) -> Self {
        let persister = config
            .store
            .clone()
            .map(Persister::start)
            .unwrap_or_default();
        let replicas = config
            .store
            .as_deref()
            .and_then(|s| s.coordination())
            .map(|_| replicas::Replicas::new(config.lease));
        let engine = Engine {
            inner: Arc::new(Inner {
                queue: Arc::new(Semaphore::new(config.queue_capacity)),
                approvals: Arc::new(Semaphore::new(config.approval_capacity)),
                dry_runs: Arc::new(Semaphore::new(config.dry_run_limit)),
                limits: RateLimits::new(config.rate_limit, config.rate_burst),
                workers: workers::Workers::new(config.workers),
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
                replicas,
            }),
        };
        engine.start_replica();
        engine
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

    /// How long an execution waits for an approval before it is rejected.
    pub fn approval_timeout(&self) -> Duration {
        self.inner.config.approval_timeout
    }

    /// The namespace the API platform's door runs code in (`--code-namespace`).
    pub fn code_namespace(&self) -> &str {
        &self.inner.config.code_namespace
    }

    pub fn actions(&self) -> Vec<ActionSpec> {
        self.inner.registry.specs()
    }

    pub fn clusters(&self) -> &Clusters {
        &self.inner.clusters
    }

    /// Stops taking work, lets in-flight executions finish for up to `grace`, then interrupts
    /// the rest. Returns when every execution task has ended and history is written.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.tasks.close();
        // Queued work stays in the shared queue for the other replicas.
        if let Some(replicas) = self.replicas() {
            replicas.stop_claiming();
        }
        let drained = tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(?grace, "grace period over: interrupting running executions");
        }
        self.inner.closed.cancel();
        self.inner.tasks.wait().await;
        self.inner.persister.flush().await;
        if let Some(replicas) = self.replicas() {
            replicas.stop();
        }
    }

    /// Cancelled once the engine has stopped: long-lived doors (the Kubernetes controller)
    /// end with it.
    pub fn closing(&self) -> CancellationToken {
        self.inner.closed.clone()
    }

    /// Interrupts every execution at once (second signal).
    pub fn abort(&self) {
        self.inner.tasks.close();
        if let Some(replicas) = self.replicas() {
            replicas.stop_claiming();
        }
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

    /// Whether the store answers (true without a store, or with a local one).
    pub async fn store_reachable(&self) -> bool {
        match self.coordination() {
            Some(coordination) => coordination.ping().await.is_ok(),
            None => true,
        }
    }

    /// Whether `shutdown` or `abort` began.
    pub fn is_closing(&self) -> bool {
        self.inner.tasks.is_closed()
    }
}
