//! Several replicas on one PostgreSQL: any replica accepts any call, exactly one runs each
//! execution. The database is the queue and the judge ([`crate::store::Coordination`]); this
//! module is the replica's side:
//! - [`admit`]: an admitted request goes into the shared queue (its cooldown claimed there);
//! - [`work`]: workers claim queued executions, run them under a lease renewed every third of
//!   its length, and end the executions whose owner's lease ran out (never re-applied);
//! - [`follow`]: event streams and waits for executions running on another replica, which
//!   re-read the stored events on every notice, and on a short safety poll;
//! - [`control`]: cancellations and approvals of executions this replica does not hold.
//!
//! A replica that lost a lease (paused, cut off) is fenced: its writes to the store carry the
//! lease's token and are refused, and its writes to the cluster are refused by its own
//! client once the lease it last renewed has run out by its own clock.

mod admit;
mod control;
mod follow;
mod work;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::store::FenceToken;

/// Default length of a lease on a running execution: how long a replica may go silent before
/// another ends what it was running.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// How often a stream following another replica's execution re-reads without a notice.
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// This replica in the group.
pub(super) struct Replicas {
    /// Its name in the `owner` column: host, process and a random part.
    pub owner: String,
    pub lease: Duration,
    /// Executions this replica runs, by id.
    held: Mutex<HashMap<String, Arc<Fence>>>,
    /// Cancelled when the replica stops claiming work (shutdown begins).
    stop_claiming: CancellationToken,
    /// Cancelled when the replica stops entirely.
    stopped: CancellationToken,
}

impl Replicas {
    pub fn new(lease: Duration) -> Replicas {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".to_string());
        let random = uuid::Uuid::new_v4().simple().to_string();
        Replicas {
            owner: format!("{host}/{}/{}", std::process::id(), &random[..8]),
            lease,
            held: Mutex::new(HashMap::new()),
            stop_claiming: CancellationToken::new(),
            stopped: CancellationToken::new(),
        }
    }

    /// Stops claiming queued work; running executions go on (and keep their leases).
    pub fn stop_claiming(&self) {
        self.stop_claiming.cancel();
    }

    /// Stops everything.
    pub fn stop(&self) {
        self.stop_claiming.cancel();
        self.stopped.cancel();
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Fence>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The lease this replica holds on one execution it runs.
pub struct Fence {
    pub execution_id: String,
    owner: String,
    token: i64,
    /// Since `epoch`, in milliseconds: until when the lease is surely held, by this process's
    /// monotonic clock (from the moment its last renewal was *sent*).
    deadline_ms: AtomicU64,
    epoch: Instant,
    lost: AtomicBool,
    /// Some of its writes could not be stored (the database failed, even when retried).
    unwritten: AtomicBool,
    /// The execution's cancellation: losing the lease stops the run.
    cancel: CancellationToken,
}

impl Fence {
    fn new(
        execution_id: String,
        owner: String,
        token: i64,
        lease: Duration,
        taken: Instant,
        cancel: CancellationToken,
    ) -> Fence {
        let fence = Fence {
            execution_id,
            owner,
            token,
            deadline_ms: AtomicU64::new(0),
            epoch: taken,
            lost: AtomicBool::new(false),
            unwritten: AtomicBool::new(false),
            cancel,
        };
        fence.extend(taken, lease);
        fence
    }

    /// The lease was renewed by a request sent at `sent`.
    fn extend(&self, sent: Instant, lease: Duration) {
        let until = sent.saturating_duration_since(self.epoch) + lease;
        self.deadline_ms.fetch_max(
            u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Whether this replica may still act for the execution.
    pub fn is_valid(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        !self.is_lost() && now < self.deadline_ms.load(Ordering::SeqCst)
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Some of the execution's writes were not stored.
    pub fn mark_unwritten(&self) {
        self.unwritten.store(true, Ordering::SeqCst);
    }

    /// Whether this replica must leave the execution: its lease is lost, or the store does not
    /// have what it did.
    pub fn must_leave(&self) -> bool {
        self.is_lost() || self.unwritten.load(Ordering::SeqCst)
    }

    /// Another replica took the execution over: stop it here.
    pub fn lose(&self) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            crate::telemetry::metrics().leases_lost.inc();
            tracing::warn!(
                execution_id = %self.execution_id,
                "lease lost to another replica: stopping the execution here"
            );
        }
        self.cancel.cancel();
    }

    pub fn token(&self) -> FenceToken {
        FenceToken {
            execution_id: self.execution_id.clone(),
            owner: self.owner.clone(),
            fence: self.token,
        }
    }
}
