//! Executions: what is asked for, how it goes (states and events), what is kept of it, and how
//! the history is listed.

use std::{sync::OnceLock, time::Duration};

use bytes::Bytes;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Target;

/// Lifecycle of an execution. QUEUED → RUNNING → one of the terminal states. The later states
/// (approval, rollback, interruption) are named now so that the API never renumbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    WaitingApproval,
    RollingBack,
    RolledBack,
    Interrupted,
    Rejected,
    /// Shadow mode: validated, planned and checked by the policy, its diff recorded; nothing
    /// was changed.
    Shadowed,
}

impl ExecutionState {
    /// The name used in storage and filters, e.g. `SUCCEEDED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Queued => "QUEUED",
            ExecutionState::Running => "RUNNING",
            ExecutionState::Succeeded => "SUCCEEDED",
            ExecutionState::Failed => "FAILED",
            ExecutionState::Cancelled => "CANCELLED",
            ExecutionState::TimedOut => "TIMED_OUT",
            ExecutionState::WaitingApproval => "WAITING_APPROVAL",
            ExecutionState::RollingBack => "ROLLING_BACK",
            ExecutionState::RolledBack => "ROLLED_BACK",
            ExecutionState::Interrupted => "INTERRUPTED",
            ExecutionState::Rejected => "REJECTED",
            ExecutionState::Shadowed => "SHADOWED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Succeeded
                | ExecutionState::Failed
                | ExecutionState::Cancelled
                | ExecutionState::TimedOut
                | ExecutionState::RolledBack
                | ExecutionState::Interrupted
                | ExecutionState::Rejected
                | ExecutionState::Shadowed
        )
    }
}

/// The alert that triggered a request, as sent by an incident system.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertContext {
    pub name: String,
    pub severity: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Why the action was proposed, as the recommending system (an incident platform's decision
/// engine) said it: kept with the execution for the audit trail, never used to decide.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recommendation {
    #[serde(default)]
    pub incident_id: String,
    /// 0 to 1.
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub reasoning: String,
    /// Who recommended it (a system or model name).
    #[serde(default)]
    pub source: String,
}

/// The target as the caller gave it; empty strings mean "not given".
#[derive(Debug, Clone, Default)]
pub struct RequestedTarget {
    pub cluster: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

/// A request to run (or dry-run) an action, before validation.
#[derive(Debug, Clone, Default)]
pub struct ExecutionRequest {
    pub action: String,
    pub target: RequestedTarget,
    pub parameters: Map<String, Value>,
    /// Caller's idempotency key; empty = none.
    pub request_id: String,
    /// `None` = the engine's default.
    pub timeout: Option<Duration>,
    pub alert: Option<AlertContext>,
    /// Authenticated identity of the caller; empty = anonymous.
    pub requester: String,
    /// W3C trace id of the caller's request; empty without tracing.
    pub trace_id: String,
    /// Restore the recorded pre-state when verification fails; `None` = yes.
    pub rollback_on_failure: Option<bool>,
    /// Higher runs first among executions waiting for a worker (see [`MAX_PRIORITY`]).
    pub priority: i32,
    /// The recommendation behind the request, for the audit trail.
    pub recommendation: Option<Recommendation>,
}

/// Priorities run from `-MAX_PRIORITY` to `MAX_PRIORITY`; 0 is the default.
pub const MAX_PRIORITY: i32 = 1000;

/// One recorded step of an execution.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// 1, 2, 3… per execution, assigned by the event log; no gaps.
    pub sequence: u64,
    pub timestamp: DateTime<Utc>,
    pub state: ExecutionState,
    pub message: String,
    pub progress: Option<(u64, u64)>,
    pub details: Value,
    /// The event as the API sends it to watchers, encoded by the first one and shared by the
    /// rest: 10,000 subscribers of one execution cost one encoding per event, not 10,000.
    #[serde(skip)]
    pub encoded: Encoded,
}

/// A once-filled cache of an event's wire form. Opaque to the engine (it holds bytes, not proto
/// types); invisible to equality, and empty in a clone, which may be changed.
#[derive(Default)]
pub struct Encoded(OnceLock<Bytes>);

impl Encoded {
    /// The cached bytes, computed by `encode` on first use.
    pub fn get_or_init(&self, encode: impl FnOnce() -> Bytes) -> Bytes {
        self.0.get_or_init(encode).clone()
    }
}

impl Clone for Encoded {
    fn clone(&self) -> Self {
        Encoded::default()
    }
}

impl PartialEq for Encoded {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Encoded(cached)"
        } else {
            "Encoded(empty)"
        })
    }
}

/// A consistent snapshot of one execution.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionView {
    pub id: String,
    pub action: String,
    pub target: Target,
    pub parameters: Map<String, Value>,
    pub request_id: String,
    pub alert: Option<AlertContext>,
    pub timeout: Duration,
    pub state: ExecutionState,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Value,
    pub rollback_data: Value,
    pub last_sequence: u64,
    /// Who asked: the authenticated identity, `anonymous` without authentication.
    #[serde(default)]
    pub requester: String,
    /// The policy decision recorded when the request was admitted (allow / deny /
    /// require_approval, with reasons); null in executions stored before policies existed.
    #[serde(default)]
    pub policy: Value,
    /// Who approved or rejected, when and why; null when no approval was involved.
    #[serde(default)]
    pub approval: Value,
    /// W3C trace id of the request that created the execution; empty without tracing.
    #[serde(default)]
    pub trace_id: String,
    /// The recommendation behind the request, as the caller sent it.
    #[serde(default)]
    pub recommendation: Option<Recommendation>,
}

/// Filters and paging for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<ExecutionState>,
    pub action: Option<String>,
    pub namespace: Option<String>,
    pub requester: Option<String>,
    /// 0 = default page size.
    pub page_size: usize,
    pub page_token: String,
}

/// Default page of a listing, when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page of a listing: bounds the memory and time one request can take.
pub const MAX_PAGE_SIZE: usize = 1000;
