//! Per-target locks: never two executions on one target at once; later ones wait their turn in
//! arrival order (tokio's mutex is fair).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct TargetLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while an execution runs on its target; released on drop.
pub struct TargetGuard {
    _guard: OwnedMutexGuard<()>,
}

impl TargetLocks {
    /// Waits until no other execution holds `key`.
    pub async fn acquire(&self, key: &str) -> TargetGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Forget locks nobody holds or waits for, so the map stays as small as the work.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key.to_string()).or_default().clone()
        };
        TargetGuard {
            _guard: lock.lock_owned().await,
        }
    }
}
