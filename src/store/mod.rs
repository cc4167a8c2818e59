//! Execution history: every execution and every event, durable across restarts. One trait,
//! [`Store`], with an embedded backend (a local file) and PostgreSQL (several replicas sharing
//! one history). The engine writes through it and reads history that is no longer in memory.

mod coordination;
mod memory;
mod paging;
mod sql;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use coordination::{
    Change, Claimed, Coordination, Current, Enqueued, FenceToken, Holder, Notice, RunSpec,
};
pub use memory::MemoryStore;
pub use sql::SqlStore;

use crate::domain::{Event, ExecutionView, ListFilter};

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// `request_id` is already taken by execution `existing`.
    #[error("request_id {request_id:?} already used by execution {existing}")]
    DuplicateRequest {
        request_id: String,
        existing: String,
    },
    /// The page token was not issued by this store.
    #[error("invalid page token")]
    BadPageToken,
    /// The backend failed (I/O, connection, SQL).
    #[error("store: {0}")]
    Backend(String),
}

/// A door's record of one execution, as [`Store::track`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publication {
    /// Published up to this sequence.
    pub sequence: u64,
    /// All of it is published.
    pub done: bool,
    /// The caller holds it (publishes it).
    pub mine: bool,
}

/// A door's record of what it has published of one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub execution_id: String,
    /// What the door keys the execution's messages by (Kafka: the action id).
    pub key: String,
    /// Its events up to this sequence are published.
    pub sequence: u64,
}

/// An execution to record, with its request fingerprint (see [`Store::insert`]) and its first
/// events, stored with it or not at all.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub view: ExecutionView,
    pub fingerprint: String,
    pub events: Vec<Event>,
}

/// Durable execution history.
///
/// Executions are keyed by id; `request_id` (when not empty) is unique. Events are keyed by
/// `(execution_id, sequence)`; appending an event that exists is a no-op (writes may be retried).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a new execution together with its request fingerprint (a hash of what was asked,
    /// used to tell a retry from a different request under the same `request_id`).
    ///
    /// # Errors
    /// [`StoreError::DuplicateRequest`] when its non-empty `request_id` is taken — atomically,
    /// so that of concurrent inserts with one `request_id` exactly one succeeds.
    async fn insert(&self, execution: &ExecutionView, fingerprint: &str) -> Result<(), StoreError>;

    /// The execution holding `request_id` and its fingerprint.
    async fn find_request(
        &self,
        request_id: &str,
    ) -> Result<Option<(ExecutionView, String)>, StoreError>;

    /// Replaces the stored snapshot of an existing execution (state, timestamps, result…).
    async fn update(&self, execution: &ExecutionView) -> Result<(), StoreError>;

    /// Appends events of one execution, in sequence order.
    async fn append_events(&self, execution_id: &str, events: &[Event]) -> Result<(), StoreError>;

    async fn get(&self, id: &str) -> Result<Option<ExecutionView>, StoreError>;

    /// Events of `id` with a sequence greater than `after`, in order.
    async fn events(&self, id: &str, after: u64) -> Result<Vec<Event>, StoreError>;

    /// Executions matching `filter`, newest first (by `created_at`, then id), and the token of
    /// the next page (empty on the last).
    ///
    /// # Errors
    /// [`StoreError::BadPageToken`] for a token this store did not issue.
    async fn list(&self, filter: &ListFilter) -> Result<(Vec<ExecutionView>, String), StoreError>;

    /// Executions not in a terminal state (for recovery at start).
    async fn unfinished(&self) -> Result<Vec<ExecutionView>, StoreError>;

    /// One round of writes, all at once where the backend can (one transaction, one sync to
    /// disk): new executions (as [`Store::insert`], each with its first events), then events (per execution, in sequence
    /// order), then snapshots. Returns each insert's own outcome, in order: a taken
    /// `request_id` fails that insert alone. The SQL backends write a round in one
    /// transaction; the default makes one call at a time and is not atomic (fine for the
    /// in-memory store, whose calls cannot fail part-way).
    ///
    /// # Errors
    /// When the round could not be written (with one transaction: nothing of it is stored).
    async fn write(
        &self,
        inserts: &[NewExecution],
        events: &[(String, Vec<Event>)],
        snapshots: &[ExecutionView],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut outcomes = Vec::with_capacity(inserts.len());
        for new in inserts {
            let outcome = match self.insert(&new.view, &new.fingerprint).await {
                Err(e @ StoreError::Backend(_)) => return Err(e),
                outcome => outcome,
            };
            if outcome.is_ok() {
                self.append_events(&new.view.id, &new.events).await?;
            }
            outcomes.push(outcome);
        }
        for (id, batch) in events {
            self.append_events(id, batch).await?;
        }
        for view in snapshots {
            self.update(view).await?;
        }
        Ok(outcomes)
    }

    /// [`Store::write`] for replicas running executions under leases: the events and
    /// snapshots of an execution whose `fences` token is no longer current (another replica
    /// took it over) are not written, and its id is returned. Without coordination there are
    /// no leases and everything is written.
    ///
    /// # Errors
    /// As [`Store::write`].
    async fn write_fenced(
        &self,
        inserts: &[NewExecution],
        events: &[(String, Vec<Event>)],
        snapshots: &[ExecutionView],
        fences: &[FenceToken],
    ) -> Result<(Vec<Result<(), StoreError>>, Vec<String>), StoreError> {
        let _ = fences;
        Ok((self.write(inserts, events, snapshots).await?, Vec::new()))
    }

    /// The coordination of several replicas, where the backend provides it (PostgreSQL).
    fn coordination(&self) -> Option<&dyn Coordination> {
        None
    }

    /// Starts a door's record of what it has published of execution `id` (its status
    /// messages, keyed by `key`): nothing yet, published by `owner` (one process), which holds
    /// it until `until` unless it renews. Idempotent: an existing record stays as it is, and
    /// is taken over by `owner` only if nobody holds it. Returns the record as it stands.
    async fn track(
        &self,
        consumer: &str,
        id: &str,
        key: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Publication, StoreError>;

    /// Takes every unfinished record of `consumer` that nobody holds (or whose holder let it
    /// lapse) for `owner` until `until`, and renews those `owner` holds; returns all that
    /// `owner` now holds.
    async fn claim_publications(
        &self,
        consumer: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Tracked>, StoreError>;

    /// Everything of execution `id` up to `sequence` is published by `consumer`; with `done`,
    /// all of it. Recorded only while `owner` holds the record: returns whether it does.
    async fn advance(
        &self,
        consumer: &str,
        id: &str,
        owner: &str,
        sequence: u64,
        done: bool,
    ) -> Result<bool, StoreError>;

    /// Deletes terminal executions (and their events) finished before `older_than`, and the
    /// oldest terminal ones beyond the newest `keep`; returns how many went.
    async fn prune(&self, older_than: DateTime<Utc>, keep: usize) -> Result<u64, StoreError>;
}

/// Opens the store named by `url`:
/// - `memory:` — [`MemoryStore`], nothing persisted;
/// - `postgres://…` or `postgresql://…` — PostgreSQL, shared by replicas;
/// - `sqlite://PATH`, `sqlite:PATH` or a plain path — a local SQLite file, created with its
///   parent directories when missing.
///
/// The SQL backends create or migrate their schema before returning.
///
/// # Errors
/// [`StoreError::Backend`] for an unknown URL scheme, an empty path, or a backend that cannot
/// be opened or reached.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let url = url.trim();
    if url == "memory:" || url == "memory://" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(SqlStore::open_postgres(url).await?));
    }
    let path = match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        // SQLite URL options (`?mode=…`) are not taken: the store sets its own.
        Some(path) => path.split_once('?').map_or(path, |(p, _)| p),
        None => url,
    };
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(StoreError::Backend(format!(
            "unsupported store URL scheme {scheme:?}: use a path, sqlite://PATH, \
             postgres://… or memory:"
        )));
    }
    if path.is_empty() {
        return Err(StoreError::Backend("empty store path".into()));
    }
    Ok(Arc::new(SqlStore::open_sqlite(Path::new(path)).await?))
}
