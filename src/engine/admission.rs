//! Admission: checking a request (validation, authorization, a dry run against the cluster,
//! the policy), claiming its cooldown and a place in the queue, and handing the new execution
//! to its runner; and the dry run, which stops before anything is claimed.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::Instrument;

use super::{
    execution::{Execution, Progressing, Verdict},
    runner, Engine, EngineError, EventLog, Persister, ANONYMOUS, MAX_TIMEOUT,
};
use crate::{
    actions::{validate_parameters, ActionContext, Plan, Remediation, Reporter},
    cluster::ClusterError,
    domain::{ExecutionRequest, ExecutionState, ExecutionView, Target},
    policy::Decision,
    store::{NewExecution, StoreError},
};

/// Time an action with its own timeout gets beyond it, to report and clean up.
const ACTION_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);

/// What a dry run reports.
#[derive(Debug, Clone)]
pub struct DryRunReport {
    pub target: Target,
    pub parameters: Map<String, Value>,
    pub plan: Plan,
    /// The policy's decision; `None` when no policy is configured.
    pub policy: Option<Decision>,
}

/// A request checked against its action (no cluster needed).
pub(super) struct Validated {
    pub action: Arc<dyn Remediation>,
    pub target: Target,
    pub parameters: Map<String, Value>,
    pub timeout: Duration,
    pub client: kube::Client,
    /// The target's cluster by its one name (the default context's name for `""`), so every
    /// alias of an object gives the same lock and cooldown keys.
    pub cluster: String,
    /// Its place among executions waiting for a worker.
    pub priority: i32,
}

/// What an admitted execution holds until it starts running: its place in the queue (or,
/// while it waits for an approval, among the executions waiting for one); and until it ends,
/// the cooldown claims on the objects it will change.
struct Held {
    id: String,
    cooldown: Duration,
    /// Every object the execution will change, as `cluster|namespace/kind/name`, sorted: the
    /// keys of its locks and cooldowns.
    keys: Vec<String>,
    slot: OwnedSemaphorePermit,
}

impl Engine {
    /// Checks everything that needs no cluster — action, target, parameters, timeout — then
    /// whether the requester may run it there, and only then which cluster it names: a caller
    /// learns nothing about configured clusters it may not use.
    fn validate(&self, request: &ExecutionRequest) -> Result<Validated, EngineError> {
        super::bounds::check_request(request)?;
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
        let target =
            super::target::resolve(action.spec(), &request.target, request.alert.as_ref())?;
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
        self.authorize_run(request, action.spec().name, &target)?;
        let unknown = |e: ClusterError| match e {
            // With authorization rules, the list of configured clusters is not for everyone.
            ClusterError::Unknown { name, .. } if self.authorizer().is_some() => {
                EngineError::invalid("target.cluster", format!("unknown cluster {name:?}"))
            }
            ClusterError::Unknown { .. } => EngineError::invalid("target.cluster", e.to_string()),
            other => EngineError::Unavailable(other.to_string()),
        };
        let cluster = self
            .inner
            .clusters
            .canonical(&target.cluster)
            .map_err(unknown)?
            .to_string();
        let client = self.inner.clusters.client(&cluster).map_err(unknown)?;
        let client = self.as_action(client, action.spec().name)?;
        Ok(Validated {
            action,
            target,
            parameters,
            timeout,
            client,
            cluster,
            priority: request.priority,
        })
    }

    /// `client` acting as `action`'s own identity when action identities are on: the action
    /// can then do only what its role grants.
    pub(super) fn as_action(
        &self,
        client: kube::Client,
        action: &str,
    ) -> Result<kube::Client, EngineError> {
        match &self.inner.config.action_identities {
            Some(namespace) => crate::cluster::impersonating(
                &client,
                &crate::actions::service_account_user(namespace, action),
            )
            .map_err(|e| EngineError::Internal(e.to_string())),
            None => Ok(client),
        }
    }

    pub(super) fn context(v: &Validated, reporter: Reporter) -> ActionContext {
        ActionContext {
            client: v.client.clone(),
            target: v.target.clone(),
            params: v.parameters.clone(),
            reporter,
        }
    }

    /// What `request` would change and what the policy says; nothing is mutated.
    ///
    /// # Errors
    /// Invalid requests, a missing target, or a state the action refuses.
    pub async fn dry_run(&self, request: ExecutionRequest) -> Result<DryRunReport, EngineError> {
        let request = super::aliases::normalize(&request);
        let v = self.validate(&request)?;
        self.inner.limits.admit(&requester_of(&request))?;
        // Dry runs reach the cluster and the policy: under their own bound, refused at once
        // beyond it rather than queued.
        let _slot = self
            .inner
            .dry_runs
            .clone()
            .try_acquire_owned()
            .map_err(|_| EngineError::Exhausted {
                message: format!(
                    "too many dry runs at once ({}); retry shortly",
                    self.inner.config.dry_run_limit
                ),
                retry_after: Some(Duration::from_secs(1)),
            })?;
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

    pub(super) fn cooldown_for(&self, action: &dyn Remediation) -> Duration {
        if action.read_only() || !action.cools_down() {
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
        let request = super::aliases::normalize(&request);
        // Cheapest first: checks without I/O (bounds, action, target, parameters,
        // authorization), the caller's rate, idempotency, a place in the queue; only then the
        // cluster (a dry run of the change) and the policy.
        let v = self.validate(&request)?;
        let requester = requester_of(&request);
        self.inner.limits.admit(&requester)?;
        let fingerprint = fingerprint(&request, &v);
        let _same_request = match request.request_id.as_str() {
            "" => None,
            id => Some(self.inner.request_locks.acquire(id).await),
        };
        if let Some(existing) = self.find_request(&request.request_id, &fingerprint).await? {
            return Ok(existing);
        }
        // The history writer's backlog is bounded here (a retry of an accepted request above
        // still gets its execution): running executions may add to it, new ones wait.
        super::persist::has_room(self.inner.persister.backlog())?;
        // With replicas the queue is the database's, bounded there.
        let queue_slot = match self.coordination() {
            Some(_) => None,
            None => Some(self.queue_slot()?),
        };
        // Refuse now what would fail at once (missing target, out-of-bounds result); the
        // action checks again when it runs, against the state it finds then.
        let plan = v
            .action
            .plan(&Self::context(&v, Reporter::discard()))
            .await?;
        let decision = self.decide(&v, &plan, &requester).await?;
        if !decision.allow {
            return Err(EngineError::PermissionDenied(format!(
                "denied by policy: {}",
                decision.reasons.join("; ")
            )));
        }
        if self.inner.config.shadow {
            return self
                .shadow(&request, &v, requester, &decision, &plan, &fingerprint)
                .await;
        }
        let Some(queue_slot) = queue_slot else {
            return self
                .enqueue_shared(&request, &v, requester, &decision, &plan, fingerprint)
                .await;
        };
        let slot = if decision.require_approval {
            // Waiting for an approval can take an hour: not in the queue, whose places are for
            // work about to run, but among the approvals, under their own bound.
            self.approval_slot()?
        } else {
            queue_slot
        };
        let id = uuid::Uuid::new_v4().to_string();
        let held = self.hold(&v, &plan, &id, slot)?;
        let (execution, approval) =
            self.new_execution(id, &request, &v, requester, &decision, &plan);
        // From here on the execution may be stored, so storing it, remembering it and starting
        // it happen in a task of their own: a caller that goes away meanwhile cannot leave it
        // stored but never run, nor its cooldown held.
        let engine = self.clone();
        let request_id = request.request_id.clone();
        let admitted = self.inner.tasks.spawn(
            async move {
                engine
                    .store_and_start(execution, v, held, approval, &request_id, &fingerprint)
                    .await
            }
            // Under the caller's span: the execution's span hangs off the request that made it.
            .instrument(tracing::Span::current()),
        );
        admitted
            .await
            .map_err(|e| EngineError::Internal(format!("admitting the execution: {e}")))?
    }

    /// A place in the queue of executions admitted but not yet running.
    ///
    /// # Errors
    /// [`EngineError::QueueFull`].
    fn queue_slot(&self) -> Result<OwnedSemaphorePermit, EngineError> {
        self.inner
            .queue
            .clone()
            .try_acquire_owned()
            .map_err(|_| EngineError::QueueFull {
                capacity: self.inner.config.queue_capacity,
            })
    }

    /// A place among the executions waiting for an approval.
    ///
    /// # Errors
    /// [`EngineError::Exhausted`] when as many wait as `approval_capacity` allows.
    fn approval_slot(&self) -> Result<OwnedSemaphorePermit, EngineError> {
        self.inner
            .approvals
            .clone()
            .try_acquire_owned()
            .map_err(|_| EngineError::Exhausted {
                message: format!(
                    "{} executions are waiting for approval; answer some, or retry later",
                    self.inner.config.approval_capacity
                ),
                retry_after: None,
            })
    }

    /// Every object `plan` will change, and the target itself, as lock and cooldown keys
    /// (`cluster|namespace/kind/name`), sorted and without duplicates: the one global order in
    /// which locks are taken, so two executions can never wait for each other.
    pub(super) fn keys_of(v: &Validated, plan: &Plan) -> Vec<String> {
        let mut keys: Vec<String> = std::iter::once(v.target.object_ref())
            .chain(plan.changes.iter().map(|c| c.object.clone()))
            .map(|object| format!("{}|{}", v.cluster, object.to_lowercase()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Claims the cooldown of every object the execution will change (unless the action has
    /// none), all or nothing, and keeps `slot`.
    ///
    /// # Errors
    /// [`EngineError::FailedPrecondition`] naming the object whose cooldown holds it.
    fn hold(
        &self,
        v: &Validated,
        plan: &Plan,
        id: &str,
        slot: OwnedSemaphorePermit,
    ) -> Result<Held, EngineError> {
        let cooldown = self.cooldown_for(v.action.as_ref());
        let keys = Self::keys_of(v, plan);
        if !cooldown.is_zero() {
            self.inner
                .cooldowns
                .claim(&keys, id)
                .map_err(|busy| in_cooldown(&busy.key, &busy.execution_id, busy.until, cooldown))?;
        }
        Ok(Held {
            id: id.to_string(),
            cooldown,
            keys,
            slot,
        })
    }

    /// Gives back what [`Engine::hold`] claimed, for an execution that will not run.
    fn release(&self, held: Held) {
        if !held.cooldown.is_zero() {
            self.inner.cooldowns.release(&held.keys, &held.id);
        }
    }

    /// The execution, not yet stored nor known to anyone, with its first event (QUEUED, or
    /// WAITING_APPROVAL when the policy asks for an approval: then also the receiver that
    /// gets the answer).
    pub(super) fn new_execution(
        &self,
        id: String,
        request: &ExecutionRequest,
        v: &Validated,
        requester: String,
        decision: &Decision,
        plan: &Plan,
    ) -> (Execution, Option<oneshot::Receiver<Verdict>>) {
        // A shadow run only tells whether it would have waited.
        let needs_approval = decision.require_approval && !self.inner.config.shadow;
        let (approval_tx, approval_rx) = oneshot::channel();
        let execution = Execution {
            id,
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
            recommendation: request.recommendation.clone(),
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
            // Detached from persistence until it is stored: its first event goes into the
            // store with it, in one round.
            persister: Persister::default(),
        };
        let object = execution.target.object_ref();
        let (state, message) = if needs_approval {
            (
                ExecutionState::WaitingApproval,
                format!(
                    "waiting for approval of {} on {object}: {}",
                    execution.action,
                    decision.reasons.join("; ")
                ),
            )
        } else {
            (
                ExecutionState::Queued,
                format!("queued {} on {object}", execution.action),
            )
        };
        let details = json!({
            "parameters": execution.parameters,
            "plan": plan.summary,
            "policy": execution.policy,
        });
        execution.record(state, message, None, details);
        (execution, needs_approval.then_some(approval_rx))
    }

    /// Stores the new execution with its first event (durable before anyone is told it
    /// exists; the store settles request_id races), remembers it and starts its runner.
    async fn store_and_start(
        &self,
        mut execution: Execution,
        v: Validated,
        held: Held,
        approval: Option<oneshot::Receiver<Verdict>>,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<ExecutionView, EngineError> {
        match self.insert_new(&execution, request_id, fingerprint).await {
            Ok(None) => {}
            Ok(Some(existing)) => {
                self.release(held);
                return Ok(existing);
            }
            Err(e) => {
                self.release(held);
                return Err(e);
            }
        }
        execution.persister = self.inner.persister.clone();
        let execution = self.remember(execution, fingerprint);
        let view = execution.view();
        let span = tracing::info_span!(
            "execution",
            execution_id = %execution.id,
            action = %execution.action
        );
        let ran = execution.clone();
        let Held {
            cooldown,
            keys,
            slot,
            ..
        } = held;
        let job = runner::Job {
            execution,
            validated: v,
            slot: Some(slot),
            approval,
            cooldown,
            keys,
            claimed: None,
        };
        let runner = self.clone();
        self.inner.tasks.spawn(
            async move {
                runner.run(job).await;
                runner.retire(ran).await;
            }
            .instrument(span),
        );
        Ok(view)
    }
}

impl Engine {
    /// Stores a new execution with its first events (durable before anyone is told it
    /// exists). `Some` is the execution that already holds `request_id` for the same
    /// request: the store settled a race, and that one is the answer.
    pub(super) async fn insert_new(
        &self,
        execution: &Execution,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<Option<ExecutionView>, EngineError> {
        if self.inner.config.store.is_none() {
            return Ok(None);
        }
        let new = NewExecution {
            view: execution.view(),
            fingerprint: fingerprint.to_string(),
            events: execution
                .log
                .after(0)
                .iter()
                .map(|e| (**e).clone())
                .collect(),
        };
        match self.inner.persister.insert(new).await {
            Ok(()) => Ok(None),
            Err(e @ StoreError::DuplicateRequest { .. }) => {
                match self.find_request(request_id, fingerprint).await? {
                    Some(existing) => Ok(Some(existing)),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The refusal of a request because the object of `key` is held by `execution_id`: running
/// (no `until` yet), or in its cooldown until `until`.
pub(super) fn in_cooldown(
    key: &str,
    execution_id: &str,
    until: Option<chrono::DateTime<Utc>>,
    cooldown: Duration,
) -> EngineError {
    let object = key.split_once('|').map_or(key, |(_, object)| object);
    EngineError::FailedPrecondition(match until {
        Some(until) => format!(
            "{object} is in cooldown until {} (after execution {execution_id})",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        None => format!(
            "{object} has execution {execution_id} in flight; its cooldown of {} starts when it ends",
            humantime::format_duration(cooldown)
        ),
    })
}

pub(super) fn requester_of(request: &ExecutionRequest) -> String {
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
