//! Write-behind persistence: events and snapshots go to the store in order from one task, so
//! recording never waits on the database while streaming; `flush` waits for everything sent so
//! far (used before answering that an execution ended, and at shutdown).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::model::{Event, ExecutionView};
use crate::store::Store;

/// Writes batched per round trip at most.
const BATCH: usize = 256;

enum Write {
    Event(String, Event),
    Snapshot(Box<ExecutionView>),
    Flush(oneshot::Sender<()>),
}

/// Cheap handle to the persistence task; a no-op without a store.
#[derive(Clone, Default)]
pub struct Persister {
    tx: Option<mpsc::UnboundedSender<Write>>,
}

impl Persister {
    /// Starts the writer task for `store`.
    pub fn start(store: Arc<dyn Store>) -> Persister {
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        tokio::spawn(async move {
            let mut pending = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut pending, BATCH).await > 0 {
                let mut events: Vec<(String, Vec<Event>)> = Vec::new();
                let mut flushes = Vec::new();
                for write in pending.drain(..) {
                    match write {
                        Write::Event(id, event) => match events.last_mut() {
                            Some((last, batch)) if *last == id => batch.push(event),
                            _ => events.push((id, vec![event])),
                        },
                        Write::Snapshot(view) => {
                            // Events before a snapshot land first: the snapshot may name them.
                            write_events(&*store, &mut events).await;
                            if let Err(e) = store.update(&view).await {
                                tracing::error!(error = %e, execution_id = %view.id, "persisting execution");
                            }
                        }
                        Write::Flush(done) => flushes.push(done),
                    }
                }
                write_events(&*store, &mut events).await;
                for done in flushes {
                    let _ = done.send(());
                }
            }
        });
        Persister { tx: Some(tx) }
    }

    pub fn event(&self, id: &str, event: &Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Write::Event(id.to_string(), event.clone()));
        }
    }

    pub fn snapshot(&self, view: ExecutionView) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Write::Snapshot(Box::new(view)));
        }
    }

    /// Waits until everything sent before is in the store.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Write::Flush(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

async fn write_events(store: &dyn Store, events: &mut Vec<(String, Vec<Event>)>) {
    for (id, batch) in events.drain(..) {
        if let Err(e) = store.append_events(&id, &batch).await {
            tracing::error!(error = %e, execution_id = %id, "persisting events");
        }
    }
}
