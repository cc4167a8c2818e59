//! [`SqlStore`]: the history in SQL, on a local SQLite file (the embedded default) or on
//! PostgreSQL (several replicas sharing one history). One body of code serves both: every
//! query is written once with `$n` placeholders (which both accept) and type-checked against
//! each driver by `on_pool!`; only the schema's column types and the way a write transaction
//! begins differ, in [`Dialect`].
//!
//! # Layout of the data
//! `executions` holds one row per execution: the whole [`ExecutionView`] as JSON text in
//! `body`, and copies of the fields ListExecutions filters and orders on in columns of their
//! own. `events` holds one row per event, keyed by `(execution_id, sequence)`. JSON is kept as
//! text rather than `jsonb` so that any string an action reports is stored as given (`jsonb`
//! refuses `\u0000`); `body::jsonb` still queries it on PostgreSQL.
//!
//! # Durability (SQLite)
//! WAL journal with `synchronous = FULL`: a commit returns only after the WAL is fsynced.
//! NORMAL would already survive a SIGKILL of the process (the WAL is written before commit
//! returns), but can lose the last commits on power loss or a kernel panic, and losing the
//! record that an action was started could let a retried request run twice. Writes are a few
//! per execution, so the fsync is cheap here (~0.25 ms on this machine's disk).
//!
//! # Caveats
//! The SQLite file must be on a local filesystem (a `ReadWriteOnce` volume, not NFS): WAL
//! needs shared memory between the processes that open it. Only one replica may use it;
//! replicas share PostgreSQL instead. Pruned rows free pages that later inserts reuse, so the
//! file stops growing but does not shrink.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Pool, Row};

use super::paging::{page_size, Cursor};
use super::{NewExecution, Store, StoreError};
use crate::domain::{Event, ExecutionState, ExecutionView, ListFilter};

/// SQLite connections: WAL lets readers run beside the one writer; more would only queue.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// How long a SQLite writer waits for another (this or another process) before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL connections per replica: the engine writes a few rows per execution step.
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
/// How long a call waits for a pooled connection (server down or pool exhausted).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Executions deleted per `DELETE FROM events … IN (…)` statement when pruning: well under
/// SQLite's bound-parameter limit (32766).
const PRUNE_CHUNK: usize = 500;
/// Key of the PostgreSQL advisory lock held while migrating, so that replicas starting
/// together do not race on `CREATE TABLE`. Arbitrary, fixed: "execstor" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6578_6563_7374_6f72;

/// Every state, for the SQL `IN` lists. The match below stops the build when a state is
/// added without being listed here.
const ALL_STATES: [ExecutionState; 11] = [
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
        | ExecutionState::Rejected => {}
    }
}

/// `'A', 'B', …` of the states that are (or are not) terminal. The names are our own
/// constants, so inlining them is safe, and lets the planner use the state index.
fn state_list(terminal: bool) -> String {
    ALL_STATES
        .iter()
        .filter(|s| s.is_terminal() == terminal)
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

fn corrupt(what: &str, id: &str, e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored {what} of {id} is not readable: {e}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

/// Timestamps are compared at microsecond precision (PostgreSQL's), on both backends, so that
/// a page cursor taken from a row equals the row's column exactly.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

fn seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What differs between the two SQL backends.
trait Dialect: sqlx::Database {
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
}

impl Dialect for Sqlite {
    const TIMESTAMP: &'static str = "TEXT";
    const ID_COLLATION: &'static str = "BINARY";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const MIGRATION_LOCK: Option<&'static str> = None;
}

impl Dialect for Postgres {
    const TIMESTAMP: &'static str = "TIMESTAMPTZ";
    const ID_COLLATION: &'static str = "\"C\"";
    // Explicit: the insert-or-find-the-winner logic of a round relies on each statement
    // seeing what other transactions committed (a server defaulting to REPEATABLE READ would
    // fail the whole round on a request_id another replica took).
    const BEGIN_WRITE: &'static str = "BEGIN ISOLATION LEVEL READ COMMITTED";
    const MIGRATION_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock($1)");
}

fn begin_write<DB: Dialect>(_: &Pool<DB>) -> &'static str {
    DB::BEGIN_WRITE
}

/// The schema, as numbered migrations: `store_schema` records the last one applied. Each is
/// idempotent on its own (`IF NOT EXISTS`) so a half-applied one can run again.
fn migrations<DB: Dialect>() -> Vec<Vec<String>> {
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
    ]
}

enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool; the body is compiled once per
/// driver, so the same SQL and the same Rust serve both.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// What one transaction of [`SqlStore::round`] did.
struct Round {
    /// Each insert's outcome, in order.
    inserts: Vec<Result<(), StoreError>>,
    snapshots_updated: u64,
}

/// Execution history in SQLite or PostgreSQL.
pub struct SqlStore {
    backend: Backend,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("SqlStore").field("backend", &kind).finish()
    }
}

impl SqlStore {
    /// [`Store::write`], also counting the snapshots that matched an execution.
    async fn round(
        &self,
        inserts: &[NewExecution],
        events: &[(String, Vec<Event>)],
        snapshots: &[ExecutionView],
    ) -> Result<Round, StoreError> {
        // In request_id order: two replicas taking the same ids wait on each other in one order
        // rather than deadlocking.
        let mut order: Vec<usize> = (0..inserts.len()).collect();
        order.sort_by(|&a, &b| inserts[a].view.request_id.cmp(&inserts[b].view.request_id));
        let new_rows = order
            .iter()
            .map(|&k| {
                let n = &inserts[k];
                let events = n
                    .events
                    .iter()
                    .map(|e| Ok((seq(e.sequence), to_json(e)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok((k, n, to_json(&n.view)?, events))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // (execution id, sequence, body); a new execution's first events join once it is in.
        let mut rows: Vec<(&str, i64, String)> = Vec::new();
        for (id, batch) in events {
            for e in batch {
                rows.push((id.as_str(), seq(e.sequence), to_json(e)?));
            }
        }
        let views = snapshots
            .iter()
            .map(|v| Ok((v, to_json(v)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut outcomes: Vec<Result<(), StoreError>> = vec![Ok(()); new_rows.len()];
        let mut snapshots_updated = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(begin_write(pool)).await?;
            for (k, new, body, first_events) in &new_rows {
                let execution = &new.view;
                let request_id = Some(execution.request_id.as_str()).filter(|r| !r.is_empty());
                // DO NOTHING rather than an error: a statement that fails would abort the whole
                // PostgreSQL transaction, and the round carries other executions' writes.
                let inserted = sqlx::query(
                    "INSERT INTO executions (id, request_id, fingerprint, state, action, \
                     namespace, requester, created_at, finished_at, body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                )
                .bind(&execution.id)
                .bind(request_id)
                .bind(&new.fingerprint)
                .bind(execution.state.as_str())
                .bind(&execution.action)
                .bind(&execution.target.namespace)
                .bind(&execution.requester)
                .bind(micros(execution.created_at))
                .bind(execution.finished_at.map(micros))
                .bind(body)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 1 {
                    rows.extend(
                        first_events
                            .iter()
                            .map(|(sequence, body)| (execution.id.as_str(), *sequence, body.clone())),
                    );
                    continue;
                }
                let existing: Option<String> = match request_id {
                    Some(request_id) => {
                        sqlx::query_scalar("SELECT id FROM executions WHERE request_id = $1")
                            .bind(request_id)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                    None => None,
                };
                outcomes[*k] = Err(match existing {
                    Some(existing) => StoreError::DuplicateRequest {
                        request_id: execution.request_id.clone(),
                        existing,
                    },
                    None => {
                        StoreError::Backend(format!("execution {} already exists", execution.id))
                    }
                });
            }
            for (id, sequence, body) in &rows {
                sqlx::query(
                    "INSERT INTO events (execution_id, sequence, body) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(*id)
                .bind(*sequence)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            }
            for (execution, body) in &views {
                snapshots_updated += sqlx::query(
                    "UPDATE executions SET state = $2, action = $3, namespace = $4, \
                     requester = $5, created_at = $6, finished_at = $7, body = $8 WHERE id = $1",
                )
                .bind(&execution.id)
                .bind(execution.state.as_str())
                .bind(&execution.action)
                .bind(&execution.target.namespace)
                .bind(&execution.requester)
                .bind(micros(execution.created_at))
                .bind(execution.finished_at.map(micros))
                .bind(body)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
        });
        Ok(Round {
            inserts: outcomes,
            snapshots_updated,
        })
    }

    /// Opens (creating it and its parent directories if needed) the SQLite file at `path`
    /// and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the file cannot be created or opened, or is not a
    /// database this store can migrate.
    pub async fn open_sqlite(path: &Path) -> Result<SqlStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Backend(format!("create {}: {e}", parent.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection to a local file does not go stale like a network one; the ping
            // before each use is a round trip to its worker thread per query or transaction.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("open {}: {e}", path.display())))?;
        let store = SqlStore {
            backend: Backend::Sqlite(pool),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to PostgreSQL at `url` (`postgres://user:password@host:port/database`) and
    /// brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the URL is malformed or the server unreachable.
    pub async fn open_postgres(url: &str) -> Result<SqlStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("postgres URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("connect to postgres: {e}")))?;
        let store = SqlStore {
            backend: Backend::Postgres(pool),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let steps = migrations_of(pool);
            let mut tx = pool.begin_with(begin_write(pool)).await?;
            if let Some(lock) = lock_of(pool) {
                sqlx::query(lock).bind(MIGRATION_LOCK_KEY).execute(&mut *tx).await?;
            }
            sqlx::query("CREATE TABLE IF NOT EXISTS store_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await?;
            let applied: Option<i64> = sqlx::query("SELECT MAX(version) FROM store_schema")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            let applied = usize::try_from(applied.unwrap_or(0)).unwrap_or(0);
            if applied > steps.len() {
                return Err(StoreError::Backend(format!(
                    "the store's schema is version {applied}, newer than this binary's ({})",
                    steps.len()
                )));
            }
            for (i, step) in steps.iter().enumerate().skip(applied) {
                for statement in step {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO store_schema (version) VALUES ($1)")
                    .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

fn migrations_of<DB: Dialect>(_: &Pool<DB>) -> Vec<Vec<String>> {
    migrations::<DB>()
}

fn lock_of<DB: Dialect>(_: &Pool<DB>) -> Option<&'static str> {
    DB::MIGRATION_LOCK
}

fn parse_view(id: &str, body: &str) -> Result<ExecutionView, StoreError> {
    serde_json::from_str(body).map_err(|e| corrupt("execution", id, e))
}

fn parse_views<R: Row>(rows: Vec<R>) -> Result<Vec<ExecutionView>, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.into_iter()
        .map(|row| {
            let id: String = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            parse_view(&id, &body)
        })
        .collect()
}

#[async_trait]
impl Store for SqlStore {
    async fn insert(&self, execution: &ExecutionView, fingerprint: &str) -> Result<(), StoreError> {
        let new = NewExecution {
            view: execution.clone(),
            fingerprint: fingerprint.to_string(),
            events: Vec::new(),
        };
        let mut outcomes = self.write(std::slice::from_ref(&new), &[], &[]).await?;
        outcomes.pop().unwrap_or(Ok(()))
    }

    async fn find_request(
        &self,
        request_id: &str,
    ) -> Result<Option<(ExecutionView, String)>, StoreError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let row: Option<(String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, body, fingerprint FROM executions WHERE request_id = $1",
            )
            .bind(request_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(id, body, fingerprint)| Ok((parse_view(&id, &body)?, fingerprint)))
            .transpose()
    }

    async fn update(&self, execution: &ExecutionView) -> Result<(), StoreError> {
        let round = self
            .round(&[], &[], std::slice::from_ref(execution))
            .await?;
        if round.snapshots_updated == 0 {
            return Err(StoreError::Backend(format!(
                "update of unknown execution {}",
                execution.id
            )));
        }
        Ok(())
    }

    async fn append_events(&self, execution_id: &str, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(&[], &[(execution_id.to_string(), events.to_vec())], &[])
            .await
            .map(|_| ())
    }

    async fn write(
        &self,
        inserts: &[NewExecution],
        events: &[(String, Vec<Event>)],
        snapshots: &[ExecutionView],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        Ok(self.round(inserts, events, snapshots).await?.inserts)
    }

    async fn get(&self, id: &str) -> Result<Option<ExecutionView>, StoreError> {
        let body: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT body FROM executions WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        body.map(|b| parse_view(id, &b)).transpose()
    }

    async fn events(&self, id: &str, after: u64) -> Result<Vec<Event>, StoreError> {
        let bodies: Vec<String> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT body FROM events WHERE execution_id = $1 AND sequence > $2 \
                 ORDER BY sequence",
            )
            .bind(id)
            .bind(seq(after))
            .fetch_all(pool)
            .await?
        });
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| corrupt("event", id, e)))
            .collect()
    }

    async fn list(&self, filter: &ListFilter) -> Result<(Vec<ExecutionView>, String), StoreError> {
        let cursor = Cursor::decode(&filter.page_token)?;
        let size = page_size(filter.page_size);
        let mut sql = String::from("SELECT id, body FROM executions WHERE TRUE");
        let mut binds: Vec<&str> = Vec::new();
        // Equality filters, in a fixed order; values are bound, never inlined.
        let filters: [(&str, Option<&str>); 4] = [
            ("state", filter.state.map(|s| s.as_str())),
            ("action", filter.action.as_deref()),
            ("namespace", filter.namespace.as_deref()),
            ("requester", filter.requester.as_deref()),
        ];
        for (column, value) in filters {
            if let Some(value) = value {
                binds.push(value);
                sql.push_str(&format!(" AND {column} = ${}", binds.len()));
            }
        }
        let n = binds.len();
        if cursor.is_some() {
            sql.push_str(&format!(" AND (created_at, id) < (${}, ${})", n + 1, n + 2));
        }
        let limit_at = n + if cursor.is_some() { 3 } else { 1 };
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${limit_at}"
        ));
        // One row beyond the page tells whether there is a next one.
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut page = on_pool!(self, pool => {
            let mut query = sqlx::query(&sql);
            for value in &binds {
                query = query.bind(*value);
            }
            if let Some(c) = &cursor {
                query = query.bind(micros(c.created_at)).bind(c.id.as_str());
            }
            parse_views(query.bind(limit).fetch_all(pool).await?)?
        });
        let token = if page.len() > size {
            page.truncate(size);
            page.last()
                .map(|last| {
                    Cursor {
                        created_at: micros(last.created_at),
                        id: last.id.clone(),
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((page, token))
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionView>, StoreError> {
        let sql = format!(
            "SELECT id, body FROM executions WHERE state IN ({}) ORDER BY created_at, id",
            state_list(false)
        );
        on_pool!(self, pool => {
            parse_views(sqlx::query(&sql).fetch_all(pool).await?)
        })
    }

    async fn prune(&self, older_than: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
        let terminal = state_list(true);
        let by_age = format!(
            "DELETE FROM executions WHERE state IN ({terminal}) \
             AND COALESCE(finished_at, created_at) < $1 RETURNING id"
        );
        let nth_newest = format!(
            "SELECT created_at, id FROM executions WHERE state IN ({terminal}) \
             ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET $1"
        );
        let by_count = format!(
            "DELETE FROM executions WHERE state IN ({terminal}) \
             AND (created_at, id) <= ($1, $2) RETURNING id"
        );
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(begin_write(pool)).await?;
            // The count cut is taken before anything goes, as "the newest `keep`" of all.
            let cut: Option<(DateTime<Utc>, String)> = sqlx::query_as(&nth_newest)
                .bind(keep)
                .fetch_optional(&mut *tx)
                .await?;
            let mut gone: Vec<String> = sqlx::query_scalar(&by_age)
                .bind(older_than)
                .fetch_all(&mut *tx)
                .await?;
            if let Some((created_at, id)) = cut {
                let more: Vec<String> = sqlx::query_scalar(&by_count)
                    .bind(created_at)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                gone.extend(more);
            }
            for chunk in gone.chunks(PRUNE_CHUNK) {
                let marks = (1..=chunk.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("DELETE FROM events WHERE execution_id IN ({marks})");
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(gone.len() as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn mk_sqlite() -> (tempfile::TempDir, SqlStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open_sqlite(&dir.path().join("h.db"))
            .await
            .unwrap();
        (dir, store)
    }

    fn sqlite(store: &SqlStore) -> &SqlitePool {
        match &store.backend {
            Backend::Sqlite(pool) => pool,
            Backend::Postgres(_) => unreachable!("a SQLite store"),
        }
    }

    #[tokio::test]
    async fn sqlite_runs_in_wal_mode_with_full_sync_on_every_connection() {
        let (_dir, store) = mk_sqlite().await;
        let pool = sqlite(&store);
        let mut conns = Vec::new();
        for _ in 0..SQLITE_MAX_CONNECTIONS {
            let mut conn = pool.acquire().await.unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!((mode.as_str(), sync), ("wal", 2));
            conns.push(conn);
        }
    }

    #[tokio::test]
    async fn migrating_twice_applies_each_step_once() {
        let (_dir, store) = mk_sqlite().await;
        store.migrate().await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM store_schema")
            .fetch_all(sqlite(&store))
            .await
            .unwrap();
        assert_eq!(versions, [1, 2]);
    }

    #[tokio::test]
    async fn a_version_1_store_is_brought_up_to_date() {
        let (_dir, store) = mk_sqlite().await;
        for statement in [
            "DROP INDEX executions_by_state_namespace",
            "DELETE FROM store_schema WHERE version = 2",
        ] {
            sqlx::query(statement)
                .execute(sqlite(&store))
                .await
                .unwrap();
        }
        store.migrate().await.unwrap();
        let index: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' \
             AND name = 'executions_by_state_namespace'",
        )
        .fetch_optional(sqlite(&store))
        .await
        .unwrap();
        assert_eq!(index.as_deref(), Some("executions_by_state_namespace"));
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let (_dir, store) = mk_sqlite().await;
        sqlx::query("INSERT INTO store_schema (version) VALUES (99)")
            .execute(sqlite(&store))
            .await
            .unwrap();
        let err = store.migrate().await.unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn the_state_lists_split_every_state_by_terminality() {
        assert_eq!(
            state_list(false),
            "'QUEUED', 'RUNNING', 'WAITING_APPROVAL', 'ROLLING_BACK'"
        );
        assert_eq!(state_list(true).split(", ").count(), 7);
    }

    #[test]
    fn timestamps_are_cut_to_microseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(micros(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
