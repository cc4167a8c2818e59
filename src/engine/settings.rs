//! The engine's settings and their defaults.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::authz::Authorizer;
use crate::{policy::Policy, store::Store};

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
    pub authorizer: Option<Arc<Authorizer>>,
    /// Executions waiting for an approval at once; beyond, Execute is refused with
    /// RESOURCE_EXHAUSTED. They wait outside the queue, whose places are for work about to run.
    pub approval_capacity: usize,
    /// Dry runs (and their cluster and policy work) at once; beyond, refused at once.
    pub dry_run_limit: usize,
    /// Execute and DryRun requests per second per identity; 0 = no limit.
    pub rate_limit: f64,
    /// Requests one identity may send at once before the rate applies.
    pub rate_burst: u32,
    /// With replicas on PostgreSQL: how long a replica holds a running execution without
    /// renewing; after it, another replica ends the execution as INTERRUPTED.
    pub lease: Duration,
    /// Shadow mode: every Execute is validated, planned, checked by the policy and recorded
    /// with its diff, and ends SHADOWED; nothing is changed.
    pub shadow: bool,
    /// Every mutating action waits for an approval, whatever the policy says.
    pub require_approval: bool,
    /// The namespace the API platform's door (`/deploy`, `/stop`, `/status`) runs code in.
    pub code_namespace: String,
    /// When set, each action runs as its own ServiceAccount in this namespace (Kubernetes
    /// impersonation), with only the rules its role grants; `None` runs every action with the
    /// service's own credentials.
    pub action_identities: Option<String>,
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
            approval_capacity: DEFAULT_APPROVAL_CAPACITY,
            dry_run_limit: DEFAULT_DRY_RUN_LIMIT,
            rate_limit: 0.0,
            rate_burst: DEFAULT_RATE_BURST,
            lease: super::DEFAULT_LEASE,
            shadow: false,
            require_approval: false,
            code_namespace: crate::domain::DEFAULT_CODE_NAMESPACE.to_string(),
            action_identities: None,
        }
    }
}

/// Executions waiting for an approval at once, by default: as many as the queue holds, so an
/// hour of unanswered approvals can never take the queue's places.
pub const DEFAULT_APPROVAL_CAPACITY: usize = 1000;
/// Dry runs at once, by default: each reads the cluster and asks it for a server-side dry
/// run; more would only queue behind the API server.
pub const DEFAULT_DRY_RUN_LIMIT: usize = 32;
/// Requests per second per identity that `serve` allows by default: far above what a
/// workflow or a person sends, far below what a runaway loop does.
pub const DEFAULT_RATE_LIMIT: f64 = 50.0;
/// Burst per identity by default: a workflow fanning out over a hundred targets at once.
pub const DEFAULT_RATE_BURST: u32 = 100;

/// Finished executions kept in memory by default when there is a store (recent ones are read
/// most); older ones are read back from the store, so memory stays bounded
/// however long the service runs.
const FINISHED_KEPT_IN_MEMORY: usize = 1_000;
