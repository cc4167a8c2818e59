//! The worker pool: executions waiting for a worker are served by priority (higher first),
//! then in arrival order; one waiting longer than [`AGING`] is served before any priority, so
//! a steady stream of urgent work never starves the rest for ever.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

/// How long an execution waits before it goes ahead of every priority.
pub const AGING: Duration = Duration::from_secs(300);

pub struct Workers {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: Vec<Waiter>,
    arrivals: u64,
}

struct Waiter {
    priority: i32,
    since: Instant,
    arrival: u64,
    handoff: oneshot::Sender<Worker>,
}

/// A worker, held while an execution runs; back to the pool (or the next waiter) on drop.
pub struct Worker {
    pool: Arc<Workers>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.pool.release();
    }
}

impl Workers {
    pub fn new(count: usize) -> Arc<Workers> {
        Arc::new(Workers {
            state: Mutex::new(State {
                free: count,
                waiting: Vec::new(),
                arrivals: 0,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a worker, served by `priority` (see the module).
    pub async fn acquire(self: &Arc<Self>, priority: i32) -> Worker {
        let wait = {
            let mut state = self.state();
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                return Worker { pool: self.clone() };
            }
            let (handoff, wait) = oneshot::channel();
            state.arrivals += 1;
            let arrival = state.arrivals;
            state.waiting.push(Waiter {
                priority,
                since: Instant::now(),
                arrival,
                handoff,
            });
            wait
        };
        match wait.await {
            Ok(worker) => worker,
            // The pool never drops a waiter's sender without sending.
            Err(_) => Box::pin(self.acquire(priority)).await,
        }
    }

    /// A worker came back: to the first waiter in order, else to the pool.
    fn release(self: &Arc<Self>) {
        let next = {
            let mut state = self.state();
            let now = Instant::now();
            let rank = |w: &Waiter| {
                let priority = if now.duration_since(w.since) >= AGING {
                    i32::MAX
                } else {
                    w.priority
                };
                (priority, std::cmp::Reverse(w.arrival))
            };
            let best = state
                .waiting
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| rank(w))
                .map(|(i, _)| i);
            match best {
                Some(i) => state.waiting.swap_remove(i),
                None => {
                    state.free += 1;
                    return;
                }
            }
        };
        // A waiter that went away (cancelled) hands the worker on as it is dropped.
        let _ = next.handoff.send(Worker { pool: self.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_served_by_priority_then_arrival() {
        let pool = Workers::new(1);
        let busy = pool.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("low", 1), ("high", 5), ("mid", 3), ("mid-later", 3)] {
            let pool = pool.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let _worker = pool.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(busy);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "mid", "mid-later", "low"]);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_passes_its_turn_on() {
        let pool = Workers::new(1);
        let busy = pool.acquire(0).await;
        let gone = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire(9).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        let next = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire(0).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(busy);
        let worker = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next waiter got the worker")
            .unwrap();
        drop(worker);
        assert_eq!(pool.state().free, 1);
    }
}
