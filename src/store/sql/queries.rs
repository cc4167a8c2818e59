//! The queries of the SQL store: each written once with `$n` placeholders and compiled for
//! both backends by `on_pool!`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rows::{corrupt, micros, parse_view, parse_views, seq, to_json};
use super::schema::{begin_write, state_list};
use super::{Backend, SqlStore};
use crate::domain::{Event, ExecutionView, ListFilter};
use crate::store::paging::{page_size, Cursor};
use crate::store::{
    Coordination, FenceToken, NewExecution, Publication, Store, StoreError, Tracked,
};

/// Executions deleted per `DELETE FROM events … IN (…)` statement when pruning: well under
/// SQLite's bound-parameter limit (32766).
const PRUNE_CHUNK: usize = 500;

/// What one transaction of [`SqlStore::round`] did.
struct Round {
    /// Each insert's outcome, in order.
    inserts: Vec<Result<(), StoreError>>,
    snapshots_updated: u64,
    /// Executions whose writes were refused: their fencing token is no longer current.
    fenced: Vec<String>,
}

impl SqlStore {
    /// [`Store::write_fenced`], also counting the snapshots that matched an execution.
    ///
    /// With coordination (PostgreSQL), the round also: locks the row of every fenced
    /// execution first and drops its writes when its token is not current; releases the
    /// claims of each execution whose snapshot is terminal (cooldowns start from now), in the
    /// same transaction as its terminal event; and announces the executions with new events.
    async fn round(
        &self,
        inserts: &[NewExecution],
        events: &[(String, Vec<Event>)],
        snapshots: &[ExecutionView],
        fences: &[FenceToken],
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
        let coordinated = self.coordinated();
        let mut fenced: Vec<String> = Vec::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin_with(begin_write(pool)).await?;
            // First, under the row lock (held to commit): a takeover cannot slip in between
            // this check and the writes.
            // In id order: two transactions locking several of these rows never wait on
            // each other in a cycle (lease renewals lock them in the same order).
            let mut fences: Vec<&FenceToken> = fences.iter().collect();
            fences.sort_by(|a, b| a.execution_id.cmp(&b.execution_id));
            for token in fences {
                let current: Option<i64> = sqlx::query_scalar(
                    "SELECT fence FROM executions WHERE id = $1 AND owner = $2 FOR UPDATE",
                )
                .bind(&token.execution_id)
                .bind(&token.owner)
                .fetch_optional(&mut *tx)
                .await?;
                if current != Some(token.fence) {
                    fenced.push(token.execution_id.clone());
                }
            }
            rows.retain(|(id, _, _)| !fenced.iter().any(|f| f == id));
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
                if fenced.contains(&execution.id) {
                    continue;
                }
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
            if coordinated {
                let written: Vec<&ExecutionView> = views
                    .iter()
                    .map(|(view, _)| *view)
                    .filter(|view| !fenced.contains(&view.id))
                    .collect();
                super::shared::RoundEnd::end_round(&mut tx, &rows, &written).await?;
            }
            tx.commit().await?;
        });
        Ok(Round {
            inserts: outcomes,
            snapshots_updated,
            fenced,
        })
    }
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
            .round(&[], &[], std::slice::from_ref(execution), &[])
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
        Ok(self.round(inserts, events, snapshots, &[]).await?.inserts)
    }

    async fn write_fenced(
        &self,
        inserts: &[NewExecution],
        events: &[(String, Vec<Event>)],
        snapshots: &[ExecutionView],
        fences: &[FenceToken],
    ) -> Result<(Vec<Result<(), StoreError>>, Vec<String>), StoreError> {
        let round = self.round(inserts, events, snapshots, fences).await?;
        Ok((round.inserts, round.fenced))
    }

    fn coordination(&self) -> Option<&dyn Coordination> {
        self.coordinated().then_some(self as &dyn Coordination)
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

    async fn track(
        &self,
        consumer: &str,
        id: &str,
        key: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Publication, StoreError> {
        let now = micros(Utc::now());
        let (sequence, done, holder): (i64, bool, String) = on_pool!(self, pool => {
            let mut tx = pool.begin_with(begin_write(pool)).await?;
            sqlx::query(
                "INSERT INTO published (consumer, execution_id, key, sequence, done, owner, until) \
                 VALUES ($1, $2, $3, 0, FALSE, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(consumer)
            .bind(id)
            .bind(key)
            .bind(owner)
            .bind(micros(until))
            .execute(&mut *tx)
            .await?;
            // Taken over only when nobody holds it.
            sqlx::query(
                "UPDATE published SET owner = $3, until = $4 WHERE consumer = $1 \
                 AND execution_id = $2 AND NOT done AND (owner = $3 OR until IS NULL OR until < $5)",
            )
            .bind(consumer)
            .bind(id)
            .bind(owner)
            .bind(micros(until))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query_as(
                "SELECT sequence, done, owner FROM published \
                 WHERE consumer = $1 AND execution_id = $2",
            )
            .bind(consumer)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            row
        });
        Ok(Publication {
            sequence: u64::try_from(sequence).unwrap_or(0),
            done,
            mine: holder == owner,
        })
    }

    async fn advance(
        &self,
        consumer: &str,
        id: &str,
        owner: &str,
        sequence: u64,
        done: bool,
    ) -> Result<bool, StoreError> {
        let updated = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE published SET sequence = $4, done = $5 \
                 WHERE consumer = $1 AND execution_id = $2 AND owner = $3 AND sequence <= $4",
            )
            .bind(consumer)
            .bind(id)
            .bind(owner)
            .bind(seq(sequence))
            .bind(done)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    async fn claim_publications(
        &self,
        consumer: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Tracked>, StoreError> {
        let now = micros(Utc::now());
        let rows: Vec<(String, String, i64)> = on_pool!(self, pool => {
            let mut tx = pool.begin_with(begin_write(pool)).await?;
            sqlx::query(
                "UPDATE published SET owner = $2, until = $3 WHERE consumer = $1 AND NOT done \
                 AND (owner = $2 OR until IS NULL OR until < $4)",
            )
            .bind(consumer)
            .bind(owner)
            .bind(micros(until))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let rows = sqlx::query_as(
                "SELECT execution_id, key, sequence FROM published \
                 WHERE consumer = $1 AND owner = $2 AND NOT done ORDER BY execution_id",
            )
            .bind(consumer)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            rows
        });
        Ok(rows
            .into_iter()
            .map(|(execution_id, key, sequence)| Tracked {
                execution_id,
                key,
                sequence: u64::try_from(sequence).unwrap_or(0),
            })
            .collect())
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
                for table in ["events", "published"] {
                    let sql = format!("DELETE FROM {table} WHERE execution_id IN ({marks})");
                    let mut query = sqlx::query(&sql);
                    for id in chunk {
                        query = query.bind(id.as_str());
                    }
                    query.execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(gone.len() as u64)
        })
    }
}
