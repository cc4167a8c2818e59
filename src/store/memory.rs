//! [`MemoryStore`]: the history in this process only. Used by tests and when persistence is
//! turned off (`--store memory:`); everything is gone when the process exits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::paging::{page_size, Cursor};
use super::{Publication, Store, StoreError, Tracked};
use crate::domain::{Event, ExecutionView, ListFilter};

/// Executions and events in maps behind one lock; no call awaits while holding it.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    executions: HashMap<String, Stored>,
    /// Non-empty request ids → execution id.
    requests: HashMap<String, String>,
    /// `(created_at, id)` of every execution: the listing order, walked backwards.
    order: BTreeSet<(DateTime<Utc>, String)>,
    events: HashMap<String, BTreeMap<u64, Event>>,
    /// (consumer, execution id) → what is published of it, and who holds it until when.
    published: HashMap<(String, String), Published>,
}

#[derive(Debug)]
struct Published {
    key: String,
    sequence: u64,
    done: bool,
    owner: String,
    until: DateTime<Utc>,
}

#[derive(Debug)]
struct Stored {
    view: ExecutionView,
    fingerprint: String,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves maps that are still consistent
        // (every mutation below is a single insert/remove), so poisoning is not fatal.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(stored) = self.executions.remove(id) {
            if !stored.view.request_id.is_empty() {
                self.requests.remove(&stored.view.request_id);
            }
            self.order.remove(&(stored.view.created_at, stored.view.id));
        }
        self.events.remove(id);
    }
}

fn matches(view: &ExecutionView, filter: &ListFilter) -> bool {
    filter.state.is_none_or(|s| view.state == s)
        && filter.action.as_ref().is_none_or(|a| &view.action == a)
        && filter
            .namespace
            .as_ref()
            .is_none_or(|n| &view.target.namespace == n)
        && filter
            .requester
            .as_ref()
            .is_none_or(|r| &view.requester == r)
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert(&self, execution: &ExecutionView, fingerprint: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !execution.request_id.is_empty() {
            if let Some(existing) = inner.requests.get(&execution.request_id) {
                return Err(StoreError::DuplicateRequest {
                    request_id: execution.request_id.clone(),
                    existing: existing.clone(),
                });
            }
        }
        if inner.executions.contains_key(&execution.id) {
            return Err(StoreError::Backend(format!(
                "execution {} already exists",
                execution.id
            )));
        }
        if !execution.request_id.is_empty() {
            inner
                .requests
                .insert(execution.request_id.clone(), execution.id.clone());
        }
        inner
            .order
            .insert((execution.created_at, execution.id.clone()));
        inner.executions.insert(
            execution.id.clone(),
            Stored {
                view: execution.clone(),
                fingerprint: fingerprint.to_string(),
            },
        );
        Ok(())
    }

    async fn find_request(
        &self,
        request_id: &str,
    ) -> Result<Option<(ExecutionView, String)>, StoreError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let inner = self.lock();
        Ok(inner
            .requests
            .get(request_id)
            .and_then(|id| inner.executions.get(id))
            .map(|s| (s.view.clone(), s.fingerprint.clone())))
    }

    async fn update(&self, execution: &ExecutionView) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.executions.get_mut(&execution.id) else {
            return Err(StoreError::Backend(format!(
                "update of unknown execution {}",
                execution.id
            )));
        };
        // `request_id` stays indexed as inserted (it is the idempotency key, fixed at insert);
        // a changed creation time moves the execution in the listing order.
        let old_key = (stored.view.created_at, stored.view.id.clone());
        stored.view = execution.clone();
        inner.order.remove(&old_key);
        inner
            .order
            .insert((execution.created_at, execution.id.clone()));
        Ok(())
    }

    async fn append_events(&self, execution_id: &str, events: &[Event]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let log = inner.events.entry(execution_id.to_string()).or_default();
        for event in events {
            log.entry(event.sequence).or_insert_with(|| event.clone());
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ExecutionView>, StoreError> {
        Ok(self.lock().executions.get(id).map(|s| s.view.clone()))
    }

    async fn events(&self, id: &str, after: u64) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .events
            .get(id)
            .map(|log| {
                log.range(after.saturating_add(1)..)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn list(&self, filter: &ListFilter) -> Result<(Vec<ExecutionView>, String), StoreError> {
        let cursor = Cursor::decode(&filter.page_token)?;
        let size = page_size(filter.page_size);
        let inner = self.lock();
        let upper = match cursor {
            Some(c) => Bound::Excluded((c.created_at, c.id)),
            None => Bound::Unbounded,
        };
        let older = inner.order.range((Bound::Unbounded, upper)).rev();
        let mut page = Vec::with_capacity(size);
        let mut more = false;
        for (_, id) in older {
            let Some(stored) = inner.executions.get(id) else {
                continue;
            };
            if !matches(&stored.view, filter) {
                continue;
            }
            if page.len() == size {
                more = true;
                break;
            }
            page.push(stored.view.clone());
        }
        let token = match (more, page.last()) {
            (true, Some(last)) => Cursor {
                created_at: last.created_at,
                id: last.id.clone(),
            }
            .encode(),
            _ => String::new(),
        };
        Ok((page, token))
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionView>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .order
            .iter()
            .filter_map(|(_, id)| inner.executions.get(id))
            .filter(|s| !s.view.state.is_terminal())
            .map(|s| s.view.clone())
            .collect())
    }

    async fn track(
        &self,
        consumer: &str,
        id: &str,
        key: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Publication, StoreError> {
        let mut inner = self.lock();
        let now = Utc::now();
        let record = inner
            .published
            .entry((consumer.to_string(), id.to_string()))
            .or_insert_with(|| Published {
                key: key.to_string(),
                sequence: 0,
                done: false,
                owner: owner.to_string(),
                until,
            });
        if !record.done && (record.owner == owner || record.until < now) {
            record.owner = owner.to_string();
            record.until = until;
        }
        Ok(Publication {
            sequence: record.sequence,
            done: record.done,
            mine: record.owner == owner,
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
        match self
            .lock()
            .published
            .get_mut(&(consumer.to_string(), id.to_string()))
        {
            Some(record) if record.owner == owner => {
                record.sequence = record.sequence.max(sequence);
                record.done |= done;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn claim_publications(
        &self,
        consumer: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Tracked>, StoreError> {
        let now = Utc::now();
        let mut inner = self.lock();
        let mut held: Vec<Tracked> = Vec::new();
        for ((c, id), record) in inner.published.iter_mut() {
            if c != consumer || record.done || (record.owner != owner && record.until >= now) {
                continue;
            }
            record.owner = owner.to_string();
            record.until = until;
            held.push(Tracked {
                execution_id: id.clone(),
                key: record.key.clone(),
                sequence: record.sequence,
            });
        }
        held.sort_by(|a, b| a.execution_id.cmp(&b.execution_id));
        Ok(held)
    }

    async fn prune(&self, older_than: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        // Terminal executions, newest first: beyond `keep` they go, and so does any older
        // than the cutoff.
        let doomed: Vec<String> = inner
            .order
            .iter()
            .rev()
            .filter_map(|(_, id)| inner.executions.get(id))
            .filter(|s| s.view.state.is_terminal())
            .enumerate()
            .filter(|(rank, s)| {
                *rank >= keep || s.view.finished_at.unwrap_or(s.view.created_at) < older_than
            })
            .map(|(_, s)| s.view.id.clone())
            .collect();
        for id in &doomed {
            inner.remove(id);
        }
        Ok(doomed.len() as u64)
    }
}
