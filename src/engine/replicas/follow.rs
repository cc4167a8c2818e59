//! Following an execution that runs on another replica: the stored events are the log. A
//! stream subscribes to the notices first, then reads what is stored after its last sequence,
//! and reads again on every notice of that execution, on a missed-notices signal, and on a
//! short safety poll: a lost notice delays an event, never loses it, and sequences make
//! duplicates impossible.

use std::sync::Arc;

use futures::{stream::BoxStream, Stream, StreamExt};
use tokio::sync::broadcast;

use super::SAFETY_POLL;
use crate::{
    domain::{Event, ExecutionView},
    engine::{Engine, EngineError},
    store::Notice,
};

/// Consecutive failed reads of the store after which a stream gives up (its client resumes
/// from the last sequence it got).
const READ_ATTEMPTS: u32 = 10;

impl Engine {
    /// Every stored event of `id` after `from_sequence`, then the later ones as they are
    /// stored, ending after the terminal event.
    pub(in crate::engine) fn follow(
        &self,
        id: &str,
        from_sequence: u64,
    ) -> impl Stream<Item = Arc<Event>> + Send + 'static {
        let store = self.inner.config.store.clone();
        // Before the first read: a notice sent after it is never missed.
        let mut notices = self
            .coordination()
            .map(|c| c.notices())
            .unwrap_or_else(|| broadcast::channel(1).1);
        let id = id.to_string();
        async_stream::stream! {
            let Some(store) = store else {
                return;
            };
            let _counted = crate::telemetry::metrics().subscriber();
            let mut last = from_sequence;
            let mut failures = 0;
            loop {
                let events = match store.events(&id, last).await {
                    Ok(events) => {
                        failures = 0;
                        events
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(execution_id = %id, error = %e, "following an execution");
                        if failures >= READ_ATTEMPTS {
                            return;
                        }
                        Vec::new()
                    }
                };
                let read_nothing = events.is_empty();
                let mut rest = events.into_iter().peekable();
                while let Some(event) = rest.next_if(|e| e.sequence == last + 1) {
                    last = event.sequence;
                    let terminal = event.state.is_terminal();
                    yield Arc::new(event);
                    if terminal {
                        return;
                    }
                }
                let gap = rest.peek().is_some();
                if (read_nothing || gap) && failures == 0 {
                    match store.get(&id).await {
                        // Ended: what is stored is all there will be. Past a gap (events a
                        // failed write lost), the rest is still told, in order, to the end.
                        Ok(Some(view)) if view.state.is_terminal() => {
                            for event in rest {
                                let terminal = event.state.is_terminal();
                                yield Arc::new(event);
                                if terminal {
                                    return;
                                }
                            }
                            if read_nothing && view.last_sequence <= last {
                                return;
                            }
                            if gap {
                                return;
                            }
                        }
                        // Gone (pruned), or never there.
                        Ok(None) => return,
                        _ => {}
                    }
                }
                let poll = tokio::time::sleep(SAFETY_POLL);
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        _ = &mut poll => break,
                        notice = notices.recv() => match notice {
                            Ok(Notice::Events(of)) if of == id => break,
                            Ok(Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Closed) => {
                                (&mut poll).await;
                                break;
                            }
                        },
                    }
                }
            }
        }
    }

    /// A stream of an execution held in memory here, continued from the store if this
    /// replica loses it to another before its end.
    pub(in crate::engine) fn follow_local(
        &self,
        local: impl Stream<Item = Arc<Event>> + Send + 'static,
        id: &str,
        from_sequence: u64,
    ) -> BoxStream<'static, Arc<Event>> {
        let engine = self.clone();
        let id = id.to_string();
        async_stream::stream! {
            let mut last = from_sequence;
            let mut ended = false;
            futures::pin_mut!(local);
            while let Some(event) = local.next().await {
                last = event.sequence;
                ended = event.state.is_terminal();
                yield event;
            }
            if !ended {
                let rest = engine.follow(&id, last);
                futures::pin_mut!(rest);
                while let Some(event) = rest.next().await {
                    yield event;
                }
            }
        }
        .boxed()
    }

    /// Waits for the end of an execution running on another replica, and returns it.
    pub(in crate::engine) async fn wait_shared(
        &self,
        id: &str,
    ) -> Result<ExecutionView, EngineError> {
        let view = self.view_of(id).await?;
        if !view.state.is_terminal() {
            let events = self.follow(id, view.last_sequence.saturating_sub(1));
            futures::pin_mut!(events);
            while events.next().await.is_some() {}
        }
        self.view_of(id).await
    }
}
