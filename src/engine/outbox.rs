//! What a door that publishes executions' statuses (Kafka) has published of each, kept in the
//! store with the history: a restart resumes each execution's messages after the last one
//! published, so none is lost and none is invented. Without a store there is nothing to
//! resume, and nothing is kept.

use super::{Engine, EngineError};
pub use crate::store::Tracked;

impl Engine {
    /// Starts the record of what `consumer` publishes of execution `id`, keyed by `key`;
    /// durable when this returns. Idempotent: returns where the record stands (published up
    /// to a sequence; all of it).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn track_publication(
        &self,
        consumer: &str,
        id: &str,
        key: &str,
    ) -> Result<(u64, bool), EngineError> {
        match &self.inner.config.store {
            Some(store) => Ok(store.track(consumer, id, key).await?),
            None => Ok((0, false)),
        }
    }

    /// `consumer` published execution `id`'s events up to `sequence` (`done`: all of them).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn published(
        &self,
        consumer: &str,
        id: &str,
        sequence: u64,
        done: bool,
    ) -> Result<(), EngineError> {
        match &self.inner.config.store {
            Some(store) => Ok(store.advance(consumer, id, sequence, done).await?),
            None => Ok(()),
        }
    }

    /// The executions `consumer` has not published all of.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn unpublished(&self, consumer: &str) -> Result<Vec<Tracked>, EngineError> {
        match &self.inner.config.store {
            Some(store) => Ok(store.tracked(consumer).await?),
            None => Ok(Vec::new()),
        }
    }
}
