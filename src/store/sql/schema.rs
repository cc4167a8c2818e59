//! The schema of the SQL store and what differs between its two backends.

use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use sqlx::Pool;

use crate::domain::ExecutionState;

/// Key of the PostgreSQL advisory lock held while migrating, so that replicas starting
/// together do not race on `CREATE TABLE`. Arbitrary, fixed: "execstor" in ASCII.
pub(super) const MIGRATION_LOCK_KEY: i64 = 0x6578_6563_7374_6f72;

/// Every state, for the SQL `IN` lists. The match below stops the build when a state is
/// added without being listed here.
const ALL_STATES: [ExecutionState; 12] = [
    ExecutionState::Queued,
    ExecutionState::Running,
    ExecutionState::Succeeded,
    ExecutionState::Failed,
    ExecutionState::Cancelled,
    ExecutionState::TimedOut,
    ExecutionState::WaitingApproval,
    ExecutionState::RollingBack,
    ExecutionState::RolledBack,
    ExecutionState::Interrupted,
    ExecutionState::Rejected,
    ExecutionState::Shadowed,
];

const fn _all_states_are_listed(s: ExecutionState) {
    match s {
        ExecutionState::Queued
        | ExecutionState::Running
        | ExecutionState::Succeeded
        | ExecutionState::Failed
        | ExecutionState::Cancelled
        | ExecutionState::TimedOut
        | ExecutionState::WaitingApproval
        | ExecutionState::RollingBack
        | ExecutionState::RolledBack
        | ExecutionState::Interrupted
        | ExecutionState::Rejected
        | ExecutionState::Shadowed => {}
    }
}

/// `'A', 'B', …` of the states that are (or are not) terminal. The names are our own
/// constants, so inlining them is safe, and lets the planner use the state index.
pub(super) fn state_list(terminal: bool) -> String {
    ALL_STATES
        .iter()
        .filter(|s| s.is_terminal() == terminal)
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What differs between the two SQL backends.
pub(super) trait Dialect: sqlx::Database {
    /// Column type of timestamps. SQLite stores chrono's RFC 3339 text with a fixed `+00:00`
    /// offset and at most microseconds, which orders as the instants do.
    const TIMESTAMP: &'static str;
    /// Collation of ids: byte order, whatever the database's default, so that a page cursor
    /// compares as the listing orders (and faster than a locale's rules).
    const ID_COLLATION: &'static str;
    /// Statement that opens a write transaction. SQLite's must take the write lock up front:
    /// a deferred transaction that reads first cannot wait for the lock when it later writes.
    const BEGIN_WRITE: &'static str;
    /// Statement run first in the migration transaction, if any.
    const MIGRATION_LOCK: Option<&'static str>;
    /// `ADD COLUMN`, with `IF NOT EXISTS` where the backend has it (a migration runs in one
    /// transaction on both, so it is never half-applied either way).
    const ADD_COLUMN: &'static str;
}

impl Dialect for Sqlite {
    const TIMESTAMP: &'static str = "TEXT";
    const ID_COLLATION: &'static str = "BINARY";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const MIGRATION_LOCK: Option<&'static str> = None;
    const ADD_COLUMN: &'static str = "ADD COLUMN";
}

impl Dialect for Postgres {
    const TIMESTAMP: &'static str = "TIMESTAMPTZ";
    const ID_COLLATION: &'static str = "\"C\"";
    // Explicit: the insert-or-find-the-winner logic of a round relies on each statement
    // seeing what other transactions committed (a server defaulting to REPEATABLE READ would
    // fail the whole round on a request_id another replica took).
    const BEGIN_WRITE: &'static str = "BEGIN ISOLATION LEVEL READ COMMITTED";
    const MIGRATION_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock($1)");
    const ADD_COLUMN: &'static str = "ADD COLUMN IF NOT EXISTS";
}

pub(super) fn begin_write<DB: Dialect>(_: &Pool<DB>) -> &'static str {
    DB::BEGIN_WRITE
}

/// The schema, as numbered migrations: `store_schema` records the last one applied. Each is
/// idempotent on its own (`IF NOT EXISTS`) so a half-applied one can run again.
pub(super) fn migrations<DB: Dialect>() -> Vec<Vec<String>> {
    let ts = DB::TIMESTAMP;
    let id = format!("TEXT COLLATE {}", DB::ID_COLLATION);
    let by = |name: &str, column: &str| {
        format!(
            "CREATE INDEX IF NOT EXISTS executions_by_{name} \
             ON executions ({column}, created_at DESC, id DESC)"
        )
    };
    vec![
        vec![
            // request_id is NULL when empty: UNIQUE ignores NULLs on both backends, and the
            // plain index serves `request_id = $1` (a partial index would not, for a parameter).
            format!(
                "CREATE TABLE IF NOT EXISTS executions (
                id {id} NOT NULL PRIMARY KEY,
                request_id TEXT UNIQUE,
                fingerprint TEXT NOT NULL,
                state TEXT NOT NULL,
                action TEXT NOT NULL,
                namespace TEXT NOT NULL,
                requester TEXT NOT NULL,
                created_at {ts} NOT NULL,
                finished_at {ts},
                body TEXT NOT NULL
            )"
            ),
            "CREATE INDEX IF NOT EXISTS executions_by_created \
         ON executions (created_at DESC, id DESC)"
                .to_string(),
            by("state", "state"),
            by("action", "action"),
            by("namespace", "namespace"),
            by("requester", "requester"),
            format!(
                "CREATE TABLE IF NOT EXISTS events (
                execution_id {id} NOT NULL,
                sequence BIGINT NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (execution_id, sequence)
            )"
            ),
        ],
        // 2: the dashboard's "failed in my namespace" listing walked one of the single-column
        // indexes and filtered the other column (P5: ~6.5 ms a page against ~1.5 ms for one
        // filter); with both columns it is one index range again.
        vec![by("state_namespace", "state, namespace")],
        // 3: several replicas on one database (used by PostgreSQL; SQLite has one replica).
        // How to run an execution (for whichever replica claims it), its owner's lease and
        // fencing token, a cancellation asked of its owner; one row per object claimed while
        // an execution runs (the primary key is the exclusivity), and per object in cooldown.
        {
            let add = |column: &str| format!("ALTER TABLE executions {} {column}", DB::ADD_COLUMN);
            vec![
                add("run_keys TEXT NOT NULL DEFAULT ''"),
                add("cooldown_ms BIGINT NOT NULL DEFAULT 0"),
                add("rollback_on_failure BOOLEAN NOT NULL DEFAULT TRUE"),
                add("priority BIGINT NOT NULL DEFAULT 0"),
                add("owner TEXT"),
                add("fence BIGINT NOT NULL DEFAULT 0"),
                add(&format!("lease_until {ts}")),
                add("cancel_reason TEXT"),
                format!(
                    "CREATE TABLE IF NOT EXISTS object_locks (
                    key {id} NOT NULL PRIMARY KEY,
                    execution_id {id} NOT NULL
                )"
                ),
                "CREATE INDEX IF NOT EXISTS object_locks_by_execution ON object_locks (execution_id)"
                    .to_string(),
                format!(
                    "CREATE TABLE IF NOT EXISTS cooldowns (
                    key {id} NOT NULL PRIMARY KEY,
                    execution_id {id} NOT NULL,
                    until {ts}
                )"
                ),
                "CREATE INDEX IF NOT EXISTS cooldowns_by_execution ON cooldowns (execution_id)"
                    .to_string(),
                "CREATE INDEX IF NOT EXISTS executions_queued ON executions \
                 (priority DESC, created_at, id) WHERE state = 'QUEUED' AND owner IS NULL"
                    .to_string(),
                "CREATE INDEX IF NOT EXISTS executions_leased ON executions (lease_until) \
                 WHERE owner IS NOT NULL"
                    .to_string(),
            ]
        },
        // 4: what a door (Kafka) has published of each execution it took in, so a restart
        // resumes its status messages where they stopped, neither losing nor repeating one.
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS published (
                consumer TEXT NOT NULL,
                execution_id {id} NOT NULL,
                key TEXT NOT NULL,
                sequence BIGINT NOT NULL,
                done BOOLEAN NOT NULL,
                PRIMARY KEY (consumer, execution_id)
            )"
            ),
            "CREATE INDEX IF NOT EXISTS published_pending ON published (consumer) WHERE NOT done"
                .to_string(),
        ],
        // 5: which process publishes each record, until when (several replicas share them).
        vec![
            format!(
                "ALTER TABLE published {} owner TEXT NOT NULL DEFAULT ''",
                DB::ADD_COLUMN
            ),
            format!("ALTER TABLE published {} until {ts}", DB::ADD_COLUMN),
        ],
    ]
}

pub(super) fn migrations_of<DB: Dialect>(_: &Pool<DB>) -> Vec<Vec<String>> {
    migrations::<DB>()
}

pub(super) fn lock_of<DB: Dialect>(_: &Pool<DB>) -> Option<&'static str> {
    DB::MIGRATION_LOCK
}
