//! The history of executions: the ones in memory (unfinished, and the newest finished with a
//! store), what the store keeps, and reading them back: by id, by request_id, as a stream of
//! events, as pages of a listing; recovering what a previous process left unfinished, and
//! pruning what is too old.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use futures::{Stream, StreamExt};
use serde_json::json;

use super::{
    authz::LIST_PAGES_SCANNED, execution::Execution, Engine, EngineError, DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
};
use crate::domain::{Event, ExecutionState, ExecutionView, ListFilter};

/// Executions by id, in creation order, and by request_id. With a store, only the unfinished
/// and the newest [`EngineConfig::finished_in_memory`] finished ones; without, all of them.
#[derive(Default)]
pub(super) struct History {
    pub(super) by_id: HashMap<String, Arc<Execution>>,
    /// Creation order, for listing without a store (empty with one: the store lists).
    pub(super) ordered: Vec<Arc<Execution>>,
    /// Finished executions in memory, oldest first (with a store).
    pub(super) finished: std::collections::VecDeque<Arc<Execution>>,
    /// request_id → (execution id, request fingerprint).
    pub(super) requests: HashMap<String, (String, String)>,
}

impl Engine {
    /// After `execution` ended: once its history is durable, it joins the finished ones kept in
    /// memory, and the oldest beyond [`EngineConfig::finished_in_memory`] are dropped (the store has
    /// them). Without a store memory is the history, and nothing is dropped.
    pub(super) async fn retire(&self, execution: Arc<Execution>) {
        if self.inner.config.store.is_none() {
            return;
        }
        self.inner.persister.flush().await;
        if execution.log.is_unstored() {
            // The store's copy is behind: only memory answers right about this one.
            return;
        }
        let mut history = self
            .inner
            .history
            .write()
            .unwrap_or_else(|e| e.into_inner());
        history.finished.push_back(execution);
        while history.finished.len() > self.inner.config.finished_in_memory {
            let Some(old) = history.finished.pop_front() else {
                break;
            };
            history.by_id.remove(&old.id);
            if history
                .requests
                .get(&old.request_id)
                .is_some_and(|(id, _)| *id == old.id)
            {
                history.requests.remove(&old.request_id);
            }
        }
    }

    /// Drops an execution from memory: reads of it go to the store.
    pub(super) fn forget(&self, id: &str) {
        let mut history = self
            .inner
            .history
            .write()
            .unwrap_or_else(|e| e.into_inner());
        history.by_id.remove(id);
    }

    /// Keeps the execution in memory and indexes its request_id.
    pub(super) fn remember(&self, mut execution: Execution, fingerprint: &str) -> Arc<Execution> {
        let mut history = self
            .inner
            .history
            .write()
            .unwrap_or_else(|e| e.into_inner());
        execution.index = history.ordered.len();
        let execution = Arc::new(execution);
        history
            .by_id
            .insert(execution.id.clone(), execution.clone());
        if self.inner.config.store.is_none() {
            history.ordered.push(execution.clone());
        }
        // With replicas, the store alone knows every request_id.
        if !execution.request_id.is_empty() && self.coordination().is_none() {
            history.requests.insert(
                execution.request_id.clone(),
                (execution.id.clone(), fingerprint.to_string()),
            );
        }
        execution
    }

    /// The execution already created for `request_id`, if any.
    ///
    /// # Errors
    /// [`EngineError::AlreadyExists`] when it was created for a different request.
    pub(super) async fn find_request(
        &self,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<Option<ExecutionView>, EngineError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let known = {
            let history = self.inner.history.read().unwrap_or_else(|e| e.into_inner());
            history
                .requests
                .get(request_id)
                .and_then(|(id, fp)| history.by_id.get(id).map(|e| (e.view(), fp.clone())))
        };
        let known = match known {
            Some(k) => Some(k),
            None => match &self.inner.config.store {
                Some(store) => store.find_request(request_id).await?,
                None => None,
            },
        };
        match known {
            None => Ok(None),
            Some((view, fp)) if fp == fingerprint => Ok(Some(view)),
            Some((view, _)) => Err(EngineError::AlreadyExists(format!(
                "request_id {request_id:?} is already used by execution {} for a different request",
                view.id
            ))),
        }
    }

    /// The execution in memory, unless this replica left it to another (then the store
    /// answers for it).
    pub(super) fn find(&self, id: &str) -> Option<Arc<Execution>> {
        self.inner
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .filter(|e| !e.log.is_abandoned())
            .cloned()
    }

    pub(super) fn not_found(id: &str) -> EngineError {
        EngineError::NotFound(format!("execution {id:?}"))
    }

    /// An execution's snapshot without its events, from memory or from the store; no
    /// authorization (the engine's own reads).
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub(super) async fn view_of(&self, id: &str) -> Result<ExecutionView, EngineError> {
        if let Some(execution) = self.find(id) {
            return Ok(execution.view());
        }
        match &self.inner.config.store {
            Some(store) => store.get(id).await?.ok_or_else(|| Self::not_found(id)),
            None => Err(Self::not_found(id)),
        }
    }

    /// An execution with its events, from memory or from the store; no authorization.
    pub(super) async fn fetch(
        &self,
        id: &str,
    ) -> Result<(ExecutionView, Vec<Arc<Event>>), EngineError> {
        if let Some(execution) = self.find(id) {
            return Ok((execution.view(), execution.log.after(0)));
        }
        let store = self
            .inner
            .config
            .store
            .as_ref()
            .ok_or_else(|| Self::not_found(id))?;
        let mut view = store.get(id).await?.ok_or_else(|| Self::not_found(id))?;
        let events: Vec<Arc<Event>> = store
            .events(id, 0)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        // The stored snapshot may lag its events (written in the same round or the next).
        if let Some(last) = events.last() {
            view.last_sequence = view.last_sequence.max(last.sequence);
        }
        Ok((view, events))
    }

    /// An execution with its events, from memory or from the store, as `caller` may see it.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id, then [`EngineError::PermissionDenied`]
    /// when the authorization rules do not let `caller` read it.
    pub async fn get(
        &self,
        id: &str,
        caller: &str,
    ) -> Result<(ExecutionView, Vec<Arc<Event>>), EngineError> {
        super::bounds::check_execution_id(id)?;
        let (view, events) = self.fetch(id).await?;
        self.authorize_read(caller, &view)?;
        Ok((view, events))
    }

    /// Waits until the execution reached a terminal state, and returns it.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id.
    pub async fn wait(&self, id: &str) -> Result<ExecutionView, EngineError> {
        let Some(execution) = self.find(id) else {
            if self.coordination().is_some() {
                return self.wait_shared(id).await;
            }
            return Ok(self.fetch(id).await?.0);
        };
        let events = execution
            .log
            .clone()
            .subscribe(execution.log.last_sequence().saturating_sub(1));
        futures::pin_mut!(events);
        while events.next().await.is_some() {}
        if execution.log.is_abandoned() {
            // Left to another replica: it ends there.
            return self.wait_shared(id).await;
        }
        Ok(execution.view())
    }

    /// Every event after `from_sequence`, then live ones; ends after the terminal event. An
    /// execution that is no longer in memory is replayed from the store. The live channel is
    /// subscribed before the backlog is read, so no event falls between the two.
    ///
    /// # Errors
    /// As [`Engine::get`]; the permission is checked on the snapshot alone.
    pub async fn watch(
        &self,
        id: &str,
        from_sequence: u64,
        caller: &str,
    ) -> Result<impl Stream<Item = Arc<Event>> + Send + 'static, EngineError> {
        super::bounds::check_execution_id(id)?;
        if self.authorizer().is_some() {
            let view = self.view_of(id).await?;
            self.authorize_read(caller, &view)?;
        }
        if let Some(execution) = self.find(id) {
            let local = execution.log.clone().subscribe(from_sequence);
            if self.coordination().is_some() {
                return Ok(self.follow_local(local, id, from_sequence));
            }
            return Ok(local.boxed());
        }
        if self.coordination().is_some() {
            // Running (or queued) elsewhere, or ended: the store has it all.
            self.view_of(id).await?;
            return Ok(self.follow(id, from_sequence).boxed());
        }
        let (_, events) = self.fetch(id).await?;
        let replay: Vec<Arc<Event>> = events
            .into_iter()
            .filter(|e| e.sequence > from_sequence)
            .collect();
        Ok(futures::stream::iter(replay).boxed())
    }

    /// Executions newest first, only those `caller` may read: from the store when there is one
    /// (with live state overlaid), else from memory. With authorization rules a page holds up
    /// to `page_size` readable executions: further store pages are read to fill it, up to
    /// [`LIST_PAGES_SCANNED`] (a caller who may read little of a long history gets short pages
    /// quickly rather than one slow one); the token continues after the last one examined.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] for a bad page token or page size.
    pub async fn list(
        &self,
        filter: &ListFilter,
        caller: &str,
    ) -> Result<(Vec<ExecutionView>, String), EngineError> {
        self.inner.persister.flush().await;
        if self.authorizer().is_none() {
            return self.list_flushed(filter).await;
        }
        let mut page = Vec::new();
        let mut filter = filter.clone();
        let wanted = match filter.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n,
        };
        for _ in 0..LIST_PAGES_SCANNED {
            filter.page_size = wanted - page.len();
            let (found, next) = self.list_flushed(&filter).await?;
            page.extend(found.into_iter().filter(|v| self.may_read(caller, v)));
            if page.len() >= wanted || next.is_empty() {
                return Ok((page, next));
            }
            filter.page_token = next;
        }
        Ok((page, filter.page_token))
    }

    /// [`Engine::list`] once what was recorded is in the store.
    async fn list_flushed(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<ExecutionView>, String), EngineError> {
        if filter.page_size > MAX_PAGE_SIZE {
            return Err(EngineError::invalid(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        let mut filter = filter.clone();
        if filter.page_size == 0 {
            filter.page_size = DEFAULT_PAGE_SIZE;
        }
        if let Some(store) = &self.inner.config.store {
            let (mut page, next) = store.list(&filter).await?;
            for view in &mut page {
                if let Some(live) = self.find(&view.id) {
                    *view = live.view();
                }
            }
            return Ok((page, next));
        }
        let history = self.inner.history.read().unwrap_or_else(|e| e.into_inner());
        // The token is the creation index to continue below (newest first).
        let start = if filter.page_token.is_empty() {
            history.ordered.len()
        } else {
            filter
                .page_token
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= history.ordered.len())
                .ok_or_else(|| {
                    EngineError::invalid("page_token", "is not a token this server issued")
                })?
        };
        let mut page = Vec::with_capacity(filter.page_size);
        let mut next = String::new();
        for execution in history.ordered[..start].iter().rev() {
            let view = execution.view();
            if !matches(&filter, &view) {
                continue;
            }
            if page.len() == filter.page_size {
                next = (execution.index + 1).to_string();
                break;
            }
            page.push(view);
        }
        Ok((page, next))
    }

    /// Marks executions a previous process left unfinished: RUNNING (and rolling back) ones
    /// become INTERRUPTED — never re-applied, since what they did is unknown — and QUEUED or
    /// WAITING_APPROVAL ones become INTERRUPTED too, to be resubmitted by their caller (a
    /// request_id makes that safe). Returns how many.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let Some(store) = &self.inner.config.store else {
            return Ok(0);
        };
        if self.coordination().is_some() {
            // Other replicas may be running what is unfinished: leases settle it instead.
            return Ok(0);
        }
        let unfinished = store.unfinished().await?;
        for mut view in unfinished.iter().cloned() {
            // The snapshot may lag its events: continue after the last stored one.
            let stored = store.events(&view.id, 0).await?;
            view.last_sequence = stored.last().map_or(view.last_sequence, |e| e.sequence);
            let message = match view.state {
                ExecutionState::Running | ExecutionState::RollingBack => format!(
                    "interrupted: the server stopped while the execution was {}; it was not re-applied — check {} before retrying",
                    view.state.as_str(),
                    view.target.object_ref()
                ),
                _ => format!(
                    "interrupted: the server stopped before the execution started ({}); nothing was changed — resubmit it",
                    view.state.as_str()
                ),
            };
            let now = Utc::now();
            let event = Event {
                sequence: view.last_sequence + 1,
                timestamp: now,
                state: ExecutionState::Interrupted,
                message: message.clone(),
                progress: None,
                details: json!({ "previous_state": view.state.as_str() }),
                encoded: Default::default(),
            };
            store
                .append_events(&view.id, std::slice::from_ref(&event))
                .await?;
            view.state = ExecutionState::Interrupted;
            view.message = message;
            view.finished_at = Some(now);
            view.last_sequence = event.sequence;
            store.update(&view).await?;
            tracing::warn!(execution_id = %view.id, "recovered an unfinished execution as INTERRUPTED");
        }
        Ok(unfinished.len())
    }

    /// Deletes history older than `max_age` and beyond the newest `keep` (0 = no count limit).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn prune(&self, max_age: Duration, keep: usize) -> Result<u64, EngineError> {
        let Some(store) = &self.inner.config.store else {
            return Ok(0);
        };
        let older_than = Utc::now() - chrono::Duration::from_std(max_age).unwrap_or_default();
        // A count of 0 means "no count limit", not "keep nothing".
        let keep = if keep == 0 { usize::MAX } else { keep };
        Ok(store.prune(older_than, keep).await?)
    }
}

fn matches(filter: &ListFilter, view: &ExecutionView) -> bool {
    filter.state.is_none_or(|s| s == view.state)
        && filter.action.as_deref().is_none_or(|a| a == view.action)
        && filter
            .namespace
            .as_deref()
            .is_none_or(|n| n == view.target.namespace)
        && filter
            .requester
            .as_deref()
            .is_none_or(|r| r == view.requester)
}
