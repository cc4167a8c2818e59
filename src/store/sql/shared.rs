//! PostgreSQL's side of several replicas: [`Coordination`] on the executions table and two
//! tables of claims, and one `LISTEN` connection per process turning notifications into
//! [`Notice`]s.
//!
//! Every rule that must hold across replicas is a constraint or a row lock, never a check
//! followed by an act: a queued execution is claimed under `FOR UPDATE SKIP LOCKED`; an
//! object is held by the primary key of `object_locks` while an execution runs on it, and of
//! `cooldowns` from admission until its cooldown ends; a lease is a timestamp on the
//! execution with a fencing token (`fence`) that every takeover increments and every write of
//! the owner must match.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::broadcast;

use super::rows::{corrupt, micros, parse_view, seq, to_json};
use super::{Backend, SqlStore};
use crate::domain::{Event, ExecutionState, ExecutionView};
use crate::store::{
    Change, Claimed, Coordination, Current, Enqueued, Holder, NewExecution, Notice, RunSpec,
    StoreError,
};

use super::notices::{CONTROL, EVENTS, QUEUE};
/// Queued executions examined per claim.
const CLAIM_CANDIDATES: i64 = 64;
/// Executions returned by one call of `due`.
const DUE_BATCH: i64 = 256;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Queues a notification, sent when the transaction commits.
pub(super) async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Releases what execution `id` holds as it ends: its object claims go; its cooldown runs
/// from now if it ever started (it may have changed its objects), else its cooldown claims go
/// too (it changed nothing); it has no owner any more.
pub(super) async fn end(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    started: bool,
) -> Result<(), StoreError> {
    if started {
        sqlx::query(
            "UPDATE cooldowns c SET until = now() + e.cooldown_ms * INTERVAL '1 millisecond' \
             FROM executions e WHERE e.id = $1 AND c.execution_id = $1",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query("DELETE FROM cooldowns WHERE execution_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM object_locks WHERE execution_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE executions SET owner = NULL, lease_until = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    notify(tx, QUEUE, "").await
}

impl SqlStore {
    fn pg(&self) -> Result<&PgPool, StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => Ok(pool),
            Backend::Sqlite(_) => Err(StoreError::Backend(
                "coordination of replicas needs PostgreSQL".into(),
            )),
        }
    }

    async fn begin(&self) -> Result<Transaction<'_, Postgres>, StoreError> {
        Ok(self
            .pg()?
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?)
    }
}

async fn stored_events(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
) -> Result<Vec<Event>, StoreError> {
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body FROM events WHERE execution_id = $1 ORDER BY sequence")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(|e| corrupt("event", id, e)))
        .collect()
}

fn keys_of(column: &str) -> Vec<String> {
    column
        .split('\n')
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

#[async_trait]
impl Coordination for SqlStore {
    async fn enqueue(
        &self,
        new: &NewExecution,
        spec: &RunSpec,
        capacity: usize,
    ) -> Result<Enqueued, StoreError> {
        let view = &new.view;
        let mut tx = self.begin().await?;
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM executions WHERE state = $1")
            .bind(view.state.as_str())
            .fetch_one(&mut *tx)
            .await?;
        if usize::try_from(waiting).unwrap_or(usize::MAX) >= capacity {
            return Ok(Enqueued::Full { capacity });
        }
        let request_id = Some(view.request_id.as_str()).filter(|r| !r.is_empty());
        let inserted = sqlx::query(
            "INSERT INTO executions (id, request_id, fingerprint, state, action, namespace, \
             requester, created_at, finished_at, body, run_keys, cooldown_ms, \
             rollback_on_failure, priority) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&view.id)
        .bind(request_id)
        .bind(&new.fingerprint)
        .bind(view.state.as_str())
        .bind(&view.action)
        .bind(&view.target.namespace)
        .bind(&view.requester)
        .bind(micros(view.created_at))
        .bind(view.finished_at.map(micros))
        .bind(to_json(view)?)
        .bind(spec.keys.join("\n"))
        .bind(millis(spec.cooldown))
        .bind(spec.rollback_on_failure)
        .bind(spec.priority)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT id FROM executions WHERE request_id = $1")
                    .bind(request_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return match existing {
                Some(existing) => Ok(Enqueued::Duplicate { existing }),
                None => Err(StoreError::Backend(format!(
                    "execution {} already exists",
                    view.id
                ))),
            };
        }
        if !spec.cooldown.is_zero() {
            // In key order, so two requests sharing objects wait on each other in one order.
            for key in &spec.keys {
                let claimed = sqlx::query(
                    "INSERT INTO cooldowns (key, execution_id, until) VALUES ($1, $2, NULL) \
                     ON CONFLICT (key) DO UPDATE SET execution_id = EXCLUDED.execution_id, \
                     until = NULL \
                     WHERE cooldowns.until IS NOT NULL AND cooldowns.until <= now()",
                )
                .bind(key)
                .bind(&view.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    let (execution_id, until): (String, Option<DateTime<Utc>>) =
                        sqlx::query_as("SELECT execution_id, until FROM cooldowns WHERE key = $1")
                            .bind(key)
                            .fetch_one(&mut *tx)
                            .await?;
                    return Ok(Enqueued::InCooldown(Holder {
                        key: key.clone(),
                        execution_id,
                        until,
                    }));
                }
            }
        }
        for event in &new.events {
            sqlx::query("INSERT INTO events (execution_id, sequence, body) VALUES ($1, $2, $3)")
                .bind(&view.id)
                .bind(seq(event.sequence))
                .bind(to_json(event)?)
                .execute(&mut *tx)
                .await?;
        }
        notify(&mut tx, EVENTS, &view.id).await?;
        if view.state == ExecutionState::Queued {
            notify(&mut tx, QUEUE, "").await?;
        }
        tx.commit().await?;
        Ok(Enqueued::Stored)
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        namespace_limit: usize,
    ) -> Result<Option<Claimed>, StoreError> {
        let mut tx = self.begin().await?;
        // Only those whose objects are all free now: a long queue on one busy object must not
        // hide the work behind it.
        let candidates: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT e.id, e.run_keys, e.namespace FROM executions e \
             WHERE e.state = 'QUEUED' AND e.owner IS NULL AND NOT EXISTS ( \
               SELECT 1 FROM object_locks l \
               WHERE l.key = ANY(string_to_array(e.run_keys, E'\\n'))) \
             AND ($2 = 0 OR (SELECT count(*) FROM executions x \
               WHERE x.namespace = e.namespace AND x.owner IS NOT NULL) < $2) \
             ORDER BY CASE WHEN e.created_at < now() - INTERVAL '300 seconds' \
               THEN 2147483647 ELSE e.priority END DESC, e.created_at, e.id \
             LIMIT $1 FOR UPDATE OF e SKIP LOCKED",
        )
        .bind(CLAIM_CANDIDATES)
        .bind(i64::try_from(namespace_limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        if candidates.is_empty() {
            return Ok(None);
        }
        // Objects held by committed claims: skipped without waiting on them.
        let all: Vec<String> = candidates.iter().flat_map(|c| keys_of(&c.1)).collect();
        let busy: std::collections::HashSet<String> =
            sqlx::query_scalar("SELECT key FROM object_locks WHERE key = ANY($1)")
                .bind(&all)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        for (id, keys, namespace) in candidates {
            let keys = keys_of(&keys);
            if keys.iter().any(|k| busy.contains(k)) {
                continue;
            }
            sqlx::query("SAVEPOINT candidate").execute(&mut *tx).await?;
            if namespace_limit > 0 {
                // One claim at a time per namespace, across replicas, until this commits.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('executor-namespace:' || $1))")
                    .bind(&namespace)
                    .execute(&mut *tx)
                    .await?;
                let running: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM executions WHERE namespace = $1 AND owner IS NOT NULL",
                )
                .bind(&namespace)
                .fetch_one(&mut *tx)
                .await?;
                if usize::try_from(running).unwrap_or(usize::MAX) >= namespace_limit {
                    sqlx::query("ROLLBACK TO SAVEPOINT candidate")
                        .execute(&mut *tx)
                        .await?;
                    continue;
                }
            }
            // Sorted keys: concurrent claims wait on each other in one order, never in a cycle.
            let locked = sqlx::query(
                "INSERT INTO object_locks (key, execution_id) \
                 SELECT k, $2 FROM unnest($1::text[]) AS k ON CONFLICT DO NOTHING",
            )
            .bind(&keys)
            .bind(&id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if locked != keys.len() as u64 {
                sqlx::query("ROLLBACK TO SAVEPOINT candidate")
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let row = sqlx::query(
                "UPDATE executions SET owner = $2, fence = fence + 1, \
                 lease_until = now() + $3 * INTERVAL '1 millisecond', cancel_reason = NULL \
                 WHERE id = $1 \
                 RETURNING fence, body, cooldown_ms, rollback_on_failure, priority",
            )
            .bind(&id)
            .bind(owner)
            .bind(millis(lease))
            .fetch_one(&mut *tx)
            .await?;
            let fence: i64 = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            let cooldown_ms: i64 = row.try_get(2)?;
            let rollback_on_failure: bool = row.try_get(3)?;
            let priority: i64 = row.try_get(4)?;
            let events = stored_events(&mut tx, &id).await?;
            tx.commit().await?;
            return Ok(Some(Claimed {
                view: parse_view(&id, &body)?,
                events,
                spec: RunSpec {
                    keys,
                    cooldown: Duration::from_millis(u64::try_from(cooldown_ms).unwrap_or(0)),
                    rollback_on_failure,
                    priority,
                },
                fence,
            }));
        }
        Ok(None)
    }

    async fn renew(
        &self,
        owner: &str,
        lease: Duration,
        held: &[(String, i64)],
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
        let fences: Vec<i64> = held.iter().map(|(_, f)| *f).collect();
        // Locked in id order, as a write round locks them: never a cycle between the two.
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "WITH held AS ( \
               SELECT e.id FROM executions e \
               JOIN unnest($1::text[], $2::bigint[]) AS h(id, fence) \
                 ON e.id = h.id AND e.fence = h.fence \
               WHERE e.owner = $4 ORDER BY e.id FOR UPDATE OF e) \
             UPDATE executions e SET lease_until = now() + $3 * INTERVAL '1 millisecond' \
             FROM held WHERE e.id = held.id \
             RETURNING e.id, e.cancel_reason",
        )
        .bind(&ids)
        .bind(&fences)
        .bind(millis(lease))
        .bind(owner)
        .fetch_all(self.pg()?)
        .await?;
        Ok(rows)
    }

    async fn due(&self, approval_timeout: Duration) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "(SELECT id FROM executions WHERE owner IS NOT NULL AND lease_until < now() LIMIT $1) \
             UNION \
             (SELECT id FROM executions WHERE state = 'WAITING_APPROVAL' \
              AND created_at < now() - $2 * INTERVAL '1 millisecond' LIMIT $1)",
        )
        .bind(DUE_BATCH)
        .bind(millis(approval_timeout))
        .fetch_all(self.pg()?)
        .await?;
        Ok(ids)
    }

    async fn transition(
        &self,
        id: &str,
        decide: &(dyn for<'c> Fn(&'c Current) -> Option<Change> + Send + Sync),
    ) -> Result<Option<ExecutionView>, StoreError> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT body, owner, fence, COALESCE(lease_until < now(), FALSE), cancel_reason \
             FROM executions WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let body: String = row.try_get(0)?;
        let mut view = parse_view(id, &body)?;
        let last_event: Option<String> = sqlx::query_scalar(
            "SELECT body FROM events WHERE execution_id = $1 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let last_event: Option<Event> = last_event
            .map(|b| serde_json::from_str(&b).map_err(|e| corrupt("event", id, e)))
            .transpose()?;
        // The snapshot may lag its events: continue after the last stored one.
        view.last_sequence = last_event
            .as_ref()
            .map_or(view.last_sequence, |e| e.sequence);
        let current = Current {
            view,
            owner: row.try_get(1)?,
            fence: row.try_get(2)?,
            lease_expired: row.try_get(3)?,
            last_event,
            cancel_reason: row.try_get(4)?,
        };
        let Some(change) = decide(&current) else {
            return Ok(Some(current.view));
        };
        let mut view = current.view;
        match change {
            Change::Event {
                state,
                message,
                details,
                approval,
            } => {
                let now = Utc::now();
                let event = Event {
                    sequence: view.last_sequence + 1,
                    timestamp: now,
                    state,
                    message: message.clone(),
                    progress: None,
                    details,
                    encoded: Default::default(),
                };
                view.state = state;
                view.message = message;
                view.last_sequence = event.sequence;
                if let Some(approval) = approval {
                    view.approval = approval;
                }
                if state.is_terminal() {
                    view.finished_at = Some(now);
                }
                sqlx::query(
                    "INSERT INTO events (execution_id, sequence, body) VALUES ($1, $2, $3)",
                )
                .bind(id)
                .bind(seq(event.sequence))
                .bind(to_json(&event)?)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE executions SET state = $2, finished_at = $3, body = $4, \
                     fence = fence + 1 WHERE id = $1",
                )
                .bind(id)
                .bind(state.as_str())
                .bind(view.finished_at.map(micros))
                .bind(to_json(&view)?)
                .execute(&mut *tx)
                .await?;
                if state.is_terminal() {
                    end(&mut tx, id, view.started_at.is_some()).await?;
                } else if state == ExecutionState::Queued {
                    notify(&mut tx, QUEUE, "").await?;
                }
                notify(&mut tx, EVENTS, id).await?;
            }
            Change::Requeue => {
                sqlx::query(
                    "UPDATE executions SET owner = NULL, lease_until = NULL, fence = fence + 1 \
                     WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM object_locks WHERE execution_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                notify(&mut tx, QUEUE, "").await?;
            }
            Change::RequestCancel(reason) => {
                sqlx::query("UPDATE executions SET cancel_reason = $2 WHERE id = $1")
                    .bind(id)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
                notify(&mut tx, CONTROL, id).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(view))
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        match &self.shared {
            Some(shared) => shared.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.pg()?).await?;
        Ok(())
    }
}

/// What a round of the engine's writes does last, with coordination: releases the claims of
/// each execution whose snapshot is terminal (in the same transaction as its terminal event)
/// and announces the executions with new events. The caller passes only what it wrote: a
/// fenced execution's snapshot must not release what its new owner holds. Nothing on SQLite, which has one replica.
pub(super) trait RoundEnd {
    async fn end_round(
        &mut self,
        events: &[(&str, i64, String)],
        snapshots: &[&ExecutionView],
    ) -> Result<(), StoreError>;
}

impl RoundEnd for Transaction<'_, sqlx::Sqlite> {
    async fn end_round(
        &mut self,
        _: &[(&str, i64, String)],
        _: &[&ExecutionView],
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

impl RoundEnd for Transaction<'_, Postgres> {
    async fn end_round(
        &mut self,
        events: &[(&str, i64, String)],
        snapshots: &[&ExecutionView],
    ) -> Result<(), StoreError> {
        for view in snapshots {
            if view.state.is_terminal() {
                end(self, &view.id, view.started_at.is_some()).await?;
            }
        }
        let mut announced: Vec<&str> = events.iter().map(|(id, _, _)| *id).collect();
        announced.sort_unstable();
        announced.dedup();
        for id in announced {
            notify(self, EVENTS, id).await?;
        }
        Ok(())
    }
}
