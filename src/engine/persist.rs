//! Persistence: new executions, events and snapshots go to the store in order from one task,
//! a round at a time in one transaction (group commit), so recording never blocks on the
//! database and one sync to disk serves every caller in the round. An event is published to readers only once it is
//! stored: whatever a subscriber saw survives a crash. `flush` waits for everything sent so far.
//!
//! # Bound
//! The channel itself cannot refuse (an event must never be dropped, and it is sent under the
//! execution's lock, in order); it is bounded by admission instead: the writes waiting are
//! counted ([`Persister::backlog`]), and above [`MAX_BACKLOG`] the engine takes no new
//! execution, so only those already running can add to it.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio::sync::{mpsc, oneshot};

use super::{replicas::Fence, EventLog};
use crate::{
    domain::{Event, ExecutionView},
    store::{FenceToken, NewExecution, Store, StoreError},
};

/// Writes batched per round trip at most.
const BATCH: usize = 256;
/// Writes waiting for the store above which new executions are refused: at ~1 KiB each
/// about 100 MiB, minutes of a database that stopped answering under full load.
pub const MAX_BACKLOG: usize = 100_000;
/// Attempts at writing one round before its writes are given up.
const ROUND_ATTEMPTS: u32 = 5;
/// First wait before a round is tried again; doubled each time.
const ROUND_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

enum Write {
    Insert(Box<NewExecution>, oneshot::Sender<Result<(), StoreError>>),
    /// An event, with the snapshot its change of state made (written in the same round).
    Event(
        String,
        Event,
        Arc<EventLog>,
        Option<Arc<Fence>>,
        Option<Box<ExecutionView>>,
    ),
    Snapshot(Box<ExecutionView>, Option<Arc<Fence>>),
    Flush(oneshot::Sender<()>),
}

/// Cheap handle to the persistence task; a no-op without a store.
#[derive(Clone, Default)]
pub struct Persister {
    tx: Option<mpsc::UnboundedSender<Write>>,
    /// Writes sent and not yet through a round.
    queued: Arc<AtomicUsize>,
    /// Set for an execution this replica runs under a lease: its writes carry the token.
    fence: Option<Arc<Fence>>,
}

impl Persister {
    /// Starts the writer task for `store`.
    pub fn start(store: Arc<dyn Store>) -> Persister {
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        let queued = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&queued);
        tokio::spawn(async move {
            let mut pending = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut pending, BATCH).await > 0 {
                let round = pending.len();
                let mut inserts = Vec::new();
                let mut inserted = Vec::new();
                let mut events: Vec<Batch> = Vec::new();
                let mut snapshots: Vec<ExecutionView> = Vec::new();
                let mut flushes = Vec::new();
                let mut fences: Vec<Arc<Fence>> = Vec::new();
                let mut fenced_by = |fence: Option<Arc<Fence>>| {
                    if let Some(f) = fence {
                        if !fences.iter().any(|g| Arc::ptr_eq(g, &f)) {
                            fences.push(f);
                        }
                    }
                };
                for write in pending.drain(..) {
                    match write {
                        Write::Insert(new, done) => {
                            inserts.push(*new);
                            inserted.push(done);
                        }
                        Write::Event(id, event, log, fence, snapshot) => {
                            fenced_by(fence);
                            if let Some(view) = snapshot {
                                supersede(&mut snapshots, *view);
                            }
                            match events.iter_mut().find(|b| b.id == id) {
                                Some(batch) => batch.events.push(event),
                                None => events.push(Batch {
                                    id,
                                    events: vec![event],
                                    log,
                                }),
                            }
                        }
                        Write::Snapshot(view, fence) => {
                            fenced_by(fence);
                            supersede(&mut snapshots, *view);
                        }
                        Write::Flush(done) => flushes.push(done),
                    }
                }
                // One round, one transaction: a single sync to disk however many executions
                // and events it carries (group commit: 64 clients' Executes share one).
                let grouped: Vec<(String, Vec<Event>)> = events
                    .iter()
                    .map(|b| (b.id.clone(), b.events.clone()))
                    .collect();
                let tokens: Vec<FenceToken> = fences.iter().map(|f| f.token()).collect();
                // A round is one transaction: tried again as a whole when the database fails
                // (a dropped connection, a deadlock victim), so a hiccup leaves no gap.
                let mut attempt = 0;
                let written = loop {
                    match store
                        .write_fenced(&inserts, &grouped, &snapshots, &tokens)
                        .await
                    {
                        Err(e) if attempt + 1 < ROUND_ATTEMPTS => {
                            attempt += 1;
                            tracing::warn!(error = %e, attempt, "persisting executions; retrying");
                            tokio::time::sleep(ROUND_RETRY * 2u32.pow(attempt)).await;
                        }
                        other => break other,
                    }
                };
                let (outcomes, fenced) = written.unwrap_or_else(|e| {
                    // Publishing anyway keeps streams alive; the gap is in the log for
                    // operators, and the executions stay in memory (their stored copy is
                    // behind). New executions are refused: nobody was told of them. An
                    // execution run under a lease is left instead (below): the store does not
                    // know what it did, so it must not go on.
                    tracing::error!(error = %e, "persisting executions");
                    for batch in &events {
                        batch.log.mark_unstored();
                    }
                    for fence in &fences {
                        fence.mark_unwritten();
                    }
                    (vec![Err(e); inserts.len()], Vec::new())
                });
                // Another replica took these over: nothing of theirs was written, nothing is
                // published, and the run here stops.
                for fence in fences.iter().filter(|f| fenced.contains(&f.execution_id)) {
                    fence.lose();
                }
                for (done, outcome) in inserted.into_iter().zip(outcomes) {
                    let _ = done.send(outcome);
                }
                for batch in &events {
                    let left = fences
                        .iter()
                        .any(|f| f.execution_id == batch.id && f.must_leave());
                    if fenced.contains(&batch.id) || left {
                        batch.log.abandon();
                    } else if let Some(last) = batch.events.last() {
                        batch.log.publish(last.sequence);
                    }
                }
                counted.fetch_sub(round, Ordering::Relaxed);
                for done in flushes {
                    let _ = done.send(());
                }
            }
        });
        Persister {
            tx: Some(tx),
            queued,
            fence: None,
        }
    }

    /// Writes sent to the store and not yet through a round.
    pub fn backlog(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Sends `write`, counted in the backlog.
    fn send(&self, tx: &mpsc::UnboundedSender<Write>, write: Write) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if tx.send(write).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// This persister for an execution run under `fence`.
    pub(super) fn fenced(&self, fence: Arc<Fence>) -> Persister {
        Persister {
            tx: self.tx.clone(),
            queued: Arc::clone(&self.queued),
            fence: Some(fence),
        }
    }

    /// Whether this replica must leave the execution: its lease was lost to another replica
    /// (its writes are refused), or its writes could not be stored.
    pub(super) fn must_leave(&self) -> bool {
        self.fence.as_ref().is_some_and(|f| f.must_leave())
    }

    /// Whether events must wait for the store before they are published.
    pub fn is_durable(&self) -> bool {
        self.tx.is_some()
    }

    /// Records a new execution in the next round; returns once it is durable (or refused, as
    /// [`Store::insert`]). Without a store there is nothing to wait for.
    ///
    /// # Errors
    /// As [`Store::insert`]; [`StoreError::Backend`] when the writer has stopped.
    pub async fn insert(&self, new: NewExecution) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let (done, outcome) = oneshot::channel();
        if !self.send(tx, Write::Insert(Box::new(new), done)) {
            return Err(StoreError::Backend("the history writer has stopped".into()));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("the history writer has stopped".into())))
    }

    /// Stores `event` of `log` (with `snapshot`, in the same round), then publishes it there.
    pub fn event(
        &self,
        id: &str,
        event: &Event,
        log: &Arc<EventLog>,
        snapshot: Option<ExecutionView>,
    ) {
        if let Some(tx) = &self.tx {
            let write = Write::Event(
                id.to_string(),
                event.clone(),
                log.clone(),
                self.fence.clone(),
                snapshot.map(Box::new),
            );
            if !self.send(tx, write) {
                log.publish(event.sequence);
            }
        }
    }

    pub fn snapshot(&self, view: ExecutionView) {
        if let Some(tx) = &self.tx {
            self.send(tx, Write::Snapshot(Box::new(view), self.fence.clone()));
        }
    }

    /// Waits until everything sent before is in the store.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if self.send(tx, Write::Flush(done)) {
                let _ = wait.await;
            }
        }
    }
}

/// Whether the engine may take a new execution with `backlog` writes waiting for the store.
///
/// # Errors
/// [`EngineError::Exhausted`](super::EngineError::Exhausted) above [`MAX_BACKLOG`].
pub(super) fn has_room(backlog: usize) -> Result<(), super::EngineError> {
    if backlog <= MAX_BACKLOG {
        return Ok(());
    }
    Err(super::EngineError::Exhausted {
        message: format!(
            "the history store is {backlog} writes behind: no new execution until it catches up; retry later"
        ),
        retry_after: Some(std::time::Duration::from_secs(1)),
    })
}

/// The latest snapshot of an execution supersedes earlier ones in a round.
fn supersede(snapshots: &mut Vec<ExecutionView>, view: ExecutionView) {
    match snapshots.iter_mut().find(|v| v.id == view.id) {
        Some(older) => *older = view,
        None => snapshots.push(view),
    }
}

/// Consecutive events of one execution.
struct Batch {
    id: String,
    events: Vec<Event>,
    log: Arc<EventLog>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backlog_counts_writes_until_their_round_is_through() {
        let persister = Persister::start(Arc::new(crate::store::MemoryStore::new()));
        assert_eq!(persister.backlog(), 0);
        // Sent without a runtime turn in between: the writer has not taken them yet.
        for _ in 0..3 {
            let (done, _wait) = oneshot::channel();
            let tx = persister.tx.clone().unwrap();
            assert!(persister.send(&tx, Write::Flush(done)));
        }
        assert_eq!(persister.backlog(), 3);
        persister.flush().await;
        assert_eq!(persister.backlog(), 0);
    }

    #[test]
    fn new_executions_are_refused_only_above_the_bound() {
        assert!(has_room(0).is_ok());
        assert!(has_room(MAX_BACKLOG).is_ok());
        let Err(super::super::EngineError::Exhausted {
            message,
            retry_after,
        }) = has_room(MAX_BACKLOG + 1)
        else {
            panic!("refused above the bound")
        };
        assert!(message.contains("writes behind"), "{message}");
        assert!(retry_after.is_some());
    }
}
