//! The per-execution event log and its subscriptions: replay, then live, with no gap.
//!
//! Every event is appended to the log (the source of truth) and also broadcast to live
//! subscribers. A subscriber registers for the broadcast *before* it reads the backlog, then
//! skips by sequence, so an event recorded in between is seen exactly once. A subscriber that
//! falls further behind than the broadcast buffer is told so (`Lagged`) and catches up from the
//! log by sequence: it is never silently short of events, and it never slows the producer.
//!
//! With a store, an event is *published* (visible to readers and subscribers) only once it is
//! durable, so what anyone saw survives a crash.

use std::sync::{Arc, RwLock};

use futures::Stream;
use tokio::sync::broadcast;

use crate::domain::Event;

/// Live events buffered per execution for subscribers; a slower one re-reads the log.
const LIVE_BUFFER: usize = 64;

pub struct EventLog {
    events: RwLock<Recorded>,
    live: broadcast::Sender<Arc<Event>>,
    /// Set when a write of these events to the store failed: the store's copy is behind, so
    /// the execution must stay in memory to be read right.
    unstored: std::sync::atomic::AtomicBool,
    /// Cancelled when another replica took the execution over: this log will never be
    /// published further, and its subscribers end (to continue from the store).
    abandoned: tokio_util::sync::CancellationToken,
}

/// Events in sequence order; the first `published` are visible.
#[derive(Default)]
struct Recorded {
    events: Vec<Arc<Event>>,
    published: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            events: RwLock::new(Recorded::default()),
            live: broadcast::channel(LIVE_BUFFER).0,
            unstored: std::sync::atomic::AtomicBool::new(false),
            abandoned: tokio_util::sync::CancellationToken::new(),
        }
    }
}

impl EventLog {
    /// Appends `event` with the next sequence number; with `publish`, it is visible at once,
    /// else once [`EventLog::publish`] reaches it. Returns it as stored.
    pub fn append(&self, mut event: Event, publish: bool) -> Arc<Event> {
        let mut recorded = self.events.write().unwrap_or_else(|e| e.into_inner());
        event.sequence = recorded.events.len() as u64 + 1;
        let event = Arc::new(event);
        recorded.events.push(event.clone());
        if publish {
            self.publish_locked(&mut recorded, event.sequence);
        }
        event
    }

    /// Makes every event up to `sequence` visible and broadcasts them.
    pub fn publish(&self, sequence: u64) {
        let mut recorded = self.events.write().unwrap_or_else(|e| e.into_inner());
        self.publish_locked(&mut recorded, sequence);
    }

    fn publish_locked(&self, recorded: &mut Recorded, sequence: u64) {
        let upto = (sequence as usize).min(recorded.events.len());
        while recorded.published < upto {
            // Sent under the lock so live order is sequence order. No receivers is fine.
            let _ = self.live.send(recorded.events[recorded.published].clone());
            recorded.published += 1;
        }
    }

    /// Published events with a sequence greater than `sequence`.
    pub fn after(&self, sequence: u64) -> Vec<Arc<Event>> {
        let recorded = self.events.read().unwrap_or_else(|e| e.into_inner());
        let start = (sequence as usize).min(recorded.published);
        recorded.events[start..recorded.published].to_vec()
    }

    /// Whether a published terminal event has a sequence at most `sequence`.
    fn ended_by(&self, sequence: u64) -> bool {
        let recorded = self.events.read().unwrap_or_else(|e| e.into_inner());
        recorded.events[..recorded.published]
            .last()
            .is_some_and(|e| e.state.is_terminal() && e.sequence <= sequence)
    }

    /// Records that some of these events did not reach the store.
    pub fn mark_unstored(&self) {
        self.unstored
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Another replica took the execution over: nothing more is published here, and live
    /// subscribers end where they are.
    pub fn abandon(&self) {
        self.mark_unstored();
        self.abandoned.cancel();
    }

    /// Whether another replica took the execution over (see [`EventLog::abandon`]).
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.is_cancelled()
    }

    /// Whether some of these events did not reach the store.
    pub fn is_unstored(&self) -> bool {
        self.unstored.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sequence of the last published event.
    pub fn last_sequence(&self) -> u64 {
        self.events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .published as u64
    }

    /// Every event after `from_sequence`, then live ones, ending after the first terminal
    /// event.
    pub fn subscribe(
        self: Arc<Self>,
        from_sequence: u64,
    ) -> impl Stream<Item = Arc<Event>> + Send + 'static {
        // Subscribe first: anything appended from here on is in `live` or in the backlog.
        let mut live = self.live.subscribe();
        async_stream::stream! {
            let _counted = crate::telemetry::metrics().subscriber();
            let mut last = from_sequence;
            for event in self.after(last) {
                last = event.sequence;
                let terminal = event.state.is_terminal();
                yield event;
                if terminal {
                    return;
                }
            }
            // Asked for what comes after the end: there is nothing more to wait for.
            if self.ended_by(last) {
                return;
            }
            loop {
                let received = tokio::select! {
                    biased;
                    r = live.recv() => r,
                    _ = self.abandoned.cancelled() => return,
                };
                let batch = match received {
                    Ok(event) if event.sequence <= last => continue,
                    Ok(event) if event.sequence == last + 1 => vec![event],
                    // A gap (cannot happen while sends are ordered) or a lag: the log has it all.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.after(last),
                    Err(broadcast::error::RecvError::Closed) => {
                        for event in self.after(last) {
                            yield event;
                        }
                        return;
                    }
                };
                for event in batch {
                    last = event.sequence;
                    let terminal = event.state.is_terminal();
                    yield event;
                    if terminal {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExecutionState;
    use futures::StreamExt;

    impl EventLog {
        fn append_now(&self, event: Event) -> Arc<Event> {
            self.append(event, true)
        }
    }

    #[tokio::test]
    async fn unpublished_events_are_invisible_until_published_in_order() {
        let log = Arc::new(EventLog::default());
        let stream = log.clone().subscribe(0);
        log.append(mk_event(ExecutionState::Running), false);
        log.append(mk_event(ExecutionState::Succeeded), false);
        assert!(log.after(0).is_empty());
        log.publish(2);
        let seqs: Vec<u64> = stream.map(|e| e.sequence).collect().await;
        assert_eq!(seqs, vec![1, 2]);
    }

    fn mk_event(state: ExecutionState) -> Event {
        Event {
            sequence: 0,
            timestamp: chrono::Utc::now(),
            state,
            message: String::new(),
            progress: None,
            details: serde_json::Value::Null,
            encoded: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_sees_backlog_then_live_without_gap_or_duplicate() {
        let log = Arc::new(EventLog::default());
        log.append_now(mk_event(ExecutionState::Queued));
        log.append_now(mk_event(ExecutionState::Running));
        let stream = log.clone().subscribe(0);
        for _ in 0..10 {
            log.append_now(mk_event(ExecutionState::Running));
        }
        log.append_now(mk_event(ExecutionState::Succeeded));
        let seqs: Vec<u64> = stream.map(|e| e.sequence).collect().await;
        assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_subscriber_that_lags_catches_up_from_the_log() {
        let log = Arc::new(EventLog::default());
        let stream = log.clone().subscribe(0);
        // Far more than the live buffer before the subscriber reads anything.
        for _ in 0..(LIVE_BUFFER * 3) {
            log.append_now(mk_event(ExecutionState::Running));
        }
        log.append_now(mk_event(ExecutionState::Failed));
        let seqs: Vec<u64> = stream.map(|e| e.sequence).collect().await;
        assert_eq!(seqs, (1..=(LIVE_BUFFER as u64 * 3 + 1)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn resuming_after_the_terminal_event_ends_at_once() {
        let log = Arc::new(EventLog::default());
        log.append_now(mk_event(ExecutionState::Running));
        log.append_now(mk_event(ExecutionState::Succeeded));
        let rest: Vec<u64> = log.clone().subscribe(2).map(|e| e.sequence).collect().await;
        assert!(rest.is_empty());
        let beyond: Vec<u64> = log.clone().subscribe(7).map(|e| e.sequence).collect().await;
        assert!(beyond.is_empty());
    }

    #[tokio::test]
    async fn resuming_from_a_sequence_yields_exactly_the_later_events() {
        let log = Arc::new(EventLog::default());
        for _ in 0..5 {
            log.append_now(mk_event(ExecutionState::Running));
        }
        log.append_now(mk_event(ExecutionState::Succeeded));
        let seqs: Vec<u64> = log.clone().subscribe(4).map(|e| e.sequence).collect().await;
        assert_eq!(seqs, vec![5, 6]);
    }
}
