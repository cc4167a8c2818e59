//! Coordination of several replicas through the store (PostgreSQL): the queue, the claims on
//! objects, cooldowns, leases with fencing tokens, and notices of what changed. The engine
//! decides *what* happens to an execution; this is *how* it happens atomically, so that two
//! replicas racing for one execution or one object settle it in the database, never in memory.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::broadcast;

use super::{NewExecution, StoreError};
use crate::domain::{Event, ExecutionState, ExecutionView};

/// How an admitted execution is to be run, stored with it for whichever replica claims it.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Every object it will change (`cluster|namespace/kind/name`), sorted: one claim row each
    /// while it runs, and the keys of its cooldown.
    pub keys: Vec<String>,
    /// Cooldown of its objects after it ends; zero: none claimed.
    pub cooldown: Duration,
    pub rollback_on_failure: bool,
    /// Higher first; then oldest first.
    pub priority: i64,
}

/// Who holds an object the request would change.
#[derive(Debug, Clone)]
pub struct Holder {
    pub key: String,
    pub execution_id: String,
    /// `None` while the holder runs.
    pub until: Option<DateTime<Utc>>,
}

/// What [`Coordination::enqueue`] did.
#[derive(Debug, Clone)]
pub enum Enqueued {
    Stored,
    /// The request_id is taken by `existing`.
    Duplicate {
        existing: String,
    },
    /// An object is held by another execution (running, or in its cooldown).
    InCooldown(Holder),
    /// As many executions as `capacity` wait in that state already.
    Full {
        capacity: usize,
    },
}

/// An execution this replica claimed and now runs under `fence`.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub view: ExecutionView,
    /// Its stored events, in order.
    pub events: Vec<Event>,
    pub spec: RunSpec,
    pub fence: i64,
}

/// An execution as a transition finds it, under its row lock.
#[derive(Debug, Clone)]
pub struct Current {
    pub view: ExecutionView,
    /// The replica running it (claimed), if any.
    pub owner: Option<String>,
    pub fence: i64,
    /// Its owner's lease ran out.
    pub lease_expired: bool,
    /// Its last stored event.
    pub last_event: Option<Event>,
    /// A cancellation asked of its owner, not yet carried out.
    pub cancel_reason: Option<String>,
}

/// A change decided on a [`Current`].
#[derive(Debug, Clone)]
pub enum Change {
    /// An event moving it to `state`; a terminal one releases its claims and starts its
    /// cooldown (if it ever ran), and a QUEUED one puts it (back) in the queue.
    Event {
        state: ExecutionState,
        message: String,
        details: Value,
        /// Replaces the recorded approval.
        approval: Option<Value>,
    },
    /// Claimed but never started by a replica that went away: back in the queue, unowned.
    Requeue,
    /// Asks its owner to cancel it.
    RequestCancel(String),
}

/// Something changed in the store; a hint to re-read, never the data itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// New events of this execution.
    Events(String),
    /// A cancellation was asked of this execution's owner.
    Control(String),
    /// Work was queued or freed.
    Queue,
    /// Notices may have been missed (listener reconnected, or a reader fell behind).
    Resync,
}

/// The store's side of several replicas: implemented by PostgreSQL.
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Stores a new execution with its first events and, if its spec has a cooldown, claims
    /// the cooldown of every key, all in one transaction: of two requests on one object,
    /// exactly one gets it. `capacity` bounds the executions in its state (QUEUED, or
    /// WAITING_APPROVAL).
    async fn enqueue(
        &self,
        new: &NewExecution,
        spec: &RunSpec,
        capacity: usize,
    ) -> Result<Enqueued, StoreError>;

    /// Claims the first queued execution (priority, then age) whose objects are all free,
    /// within `namespace_limit` running per namespace (0: none): locks its objects (one row
    /// per object, unique) and takes its lease with a new fencing token.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        namespace_limit: usize,
    ) -> Result<Option<Claimed>, StoreError>;

    /// Renews the lease of each `(execution id, fence)` still held by `owner`; returns the
    /// ones still held, each with a cancellation asked of it, if any.
    async fn renew(
        &self,
        owner: &str,
        lease: Duration,
        held: &[(String, i64)],
    ) -> Result<Vec<(String, Option<String>)>, StoreError>;

    /// Executions something must happen to: their owner's lease ran out, or they waited
    /// longer than `approval_timeout` for an approval.
    async fn due(&self, approval_timeout: Duration) -> Result<Vec<String>, StoreError>;

    /// Under the row lock of execution `id`, applies what `decide` says (nothing when it says
    /// `None`, or when the execution is unknown); returns the execution as it then stands.
    async fn transition(
        &self,
        id: &str,
        decide: &(dyn for<'c> Fn(&'c Current) -> Option<Change> + Send + Sync),
    ) -> Result<Option<ExecutionView>, StoreError>;

    /// Notices from every replica (this one included).
    fn notices(&self) -> broadcast::Receiver<Notice>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A write of a replica running an execution under a lease: `(execution id, owner, fence)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceToken {
    pub execution_id: String,
    pub owner: String,
    pub fence: i64,
}
