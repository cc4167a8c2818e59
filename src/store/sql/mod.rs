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

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::StoreError;
use schema::{begin_write, lock_of, migrations_of, MIGRATION_LOCK_KEY};

/// SQLite connections: WAL lets readers run beside the one writer; more would only queue.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// How long a SQLite writer waits for another (this or another process) before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL connections per replica: the engine writes a few rows per execution step.
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
/// How long a call waits for a pooled connection (server down or pool exhausted).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

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

// After `on_pool!`: a macro is visible only to the modules declared below it.
mod notices;
mod queries;
mod rows;
mod schema;
mod shared;

/// Execution history in SQLite or PostgreSQL.
pub struct SqlStore {
    backend: Backend,
    /// PostgreSQL's side of several replicas (see [`shared`]).
    shared: Option<notices::Shared>,
    /// SQLite: the lock held on the file's companion `.lock` while this process uses it, so a
    /// second process on the same file is refused instead of sharing it unsafely.
    _file_lock: Option<std::fs::File>,
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
        let file_lock = lock_file(path)?;
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
            shared: None,
            _file_lock: Some(file_lock),
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
        // A replica cut off in the middle of a transaction must not hold its row locks for
        // hours (until TCP notices): the server ends such sessions, and no statement waits on
        // a lock for long (the round or claim is tried again instead).
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("postgres URL: {e}")))?
            .options([
                ("lock_timeout", "5s"),
                ("idle_in_transaction_session_timeout", "30s"),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("connect to postgres: {e}")))?;
        let mut store = SqlStore {
            backend: Backend::Postgres(pool.clone()),
            shared: None,
            _file_lock: None,
        };
        store.migrate().await?;
        store.shared = Some(notices::Shared::start(pool));
        Ok(store)
    }

    /// Whether this store coordinates several replicas (PostgreSQL).
    fn coordinated(&self) -> bool {
        self.shared.is_some()
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

/// Takes an exclusive lock on `PATH.lock` for as long as the returned file is open: SQLite
/// history belongs to one `serve` process (one replica); several replicas share PostgreSQL.
///
/// # Errors
/// [`StoreError::Backend`] naming the file when another process holds it.
fn lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(format!("open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
            "the SQLite store {} is in use by another executor-service process: SQLite history \
             serves one replica; run several replicas on PostgreSQL (--store postgres://…)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Backend(format!(
            "lock {}: {e}",
            lock_path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{rows::micros, schema::state_list};
    use chrono::DateTime;

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
        assert_eq!(versions, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_version_1_store_is_brought_up_to_date() {
        let (_dir, store) = mk_sqlite().await;
        // Undo migrations 4, 3 and 2.
        let mut undo: Vec<String> = [
            "DROP TABLE published",
            "DROP INDEX executions_queued",
            "DROP INDEX executions_leased",
            "DROP TABLE object_locks",
            "DROP TABLE cooldowns",
        ]
        .map(String::from)
        .to_vec();
        for column in [
            "run_keys",
            "cooldown_ms",
            "rollback_on_failure",
            "priority",
            "owner",
            "fence",
            "lease_until",
            "cancel_reason",
        ] {
            undo.push(format!("ALTER TABLE executions DROP COLUMN {column}"));
        }
        undo.push("DROP INDEX executions_by_state_namespace".into());
        undo.push("DELETE FROM store_schema WHERE version >= 2".into());
        for statement in &undo {
            sqlx::query(statement.as_str())
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

    #[tokio::test]
    async fn a_second_open_of_one_sqlite_file_is_refused_until_the_first_closes() {
        let (dir, store) = mk_sqlite().await;
        let path = dir.path().join("h.db");
        let err = SqlStore::open_sqlite(&path).await.unwrap_err();
        assert!(err.to_string().contains("in use by another"), "{err}");
        assert!(err.to_string().contains("postgres://"), "{err}");
        drop(store);
        SqlStore::open_sqlite(&path).await.unwrap();
    }

    #[test]
    fn the_state_lists_split_every_state_by_terminality() {
        assert_eq!(
            state_list(false),
            "'QUEUED', 'RUNNING', 'WAITING_APPROVAL', 'ROLLING_BACK'"
        );
        assert_eq!(state_list(true).split(", ").count(), 8);
    }

    #[test]
    fn timestamps_are_cut_to_microseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(micros(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
