//! What a door that publishes executions' statuses (Kafka) has published of each, kept in the
//! store with the history, with the process that publishes it (replicas share the records):
//! a restart, or another replica once the holder lets its claim lapse, resumes each
//! execution's messages after the last one published, so none is lost; a record held by a
//! live process is published by it alone. Without a store nothing is kept.

use std::time::Duration;

use chrono::Utc;

use super::{Engine, EngineError};
pub use crate::store::{Publication, Tracked};

impl Engine {
    /// Starts the record of what `consumer` publishes of execution `id`, keyed by `key`, held
    /// by `owner` for `hold` (unless another holds it); durable when this returns. Idempotent:
    /// returns where the record stands.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn track_publication(
        &self,
        consumer: &str,
        id: &str,
        key: &str,
        owner: &str,
        hold: Duration,
    ) -> Result<Publication, EngineError> {
        match &self.inner.config.store {
            Some(store) => Ok(store.track(consumer, id, key, owner, until(hold)).await?),
            None => Ok(Publication {
                sequence: 0,
                done: false,
                mine: true,
            }),
        }
    }

    /// `consumer` published execution `id`'s events up to `sequence` (`done`: all of them);
    /// recorded while `owner` holds the record. Returns whether it still does (else another
    /// process publishes it now, and this one must stop).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn published(
        &self,
        consumer: &str,
        id: &str,
        owner: &str,
        sequence: u64,
        done: bool,
    ) -> Result<bool, EngineError> {
        match &self.inner.config.store {
            Some(store) => Ok(store.advance(consumer, id, owner, sequence, done).await?),
            None => Ok(true),
        }
    }

    /// Takes (or keeps) for `owner`, for `hold`, every unfinished record of `consumer` nobody
    /// else holds; returns those `owner` holds.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn claim_publications(
        &self,
        consumer: &str,
        owner: &str,
        hold: Duration,
    ) -> Result<Vec<Tracked>, EngineError> {
        match &self.inner.config.store {
            Some(store) => Ok(store
                .claim_publications(consumer, owner, until(hold))
                .await?),
            None => Ok(Vec::new()),
        }
    }
}

fn until(hold: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(hold).unwrap_or_default()
}
