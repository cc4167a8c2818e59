//! Status messages: for every execution taken in from Kafka, one message per state change
//! (QUEUED "accepted", RUNNING, each terminal state…), keyed by the action id so one action's
//! messages stay in one partition, in order. Each is produced and acknowledged before the
//! store records it as published; after a restart the follower resumes after the last one
//! recorded.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{message, KafkaConfig};
use crate::{
    domain::{ExecutionState, ExecutionView},
    engine::Engine,
};

/// Executions followed at once; more wait for a place (the queue bounds them anyway).
const FOLLOWERS: usize = 10_000;
/// How long this process holds the records it publishes without renewing them; after it,
/// another process (a replica, or this one restarted) resumes them.
pub const HOLD: Duration = Duration::from_secs(30);
/// How often the held records are renewed and lapsed ones taken over.
const CLAIM_EVERY: Duration = Duration::from_secs(10);
/// How long a produce may wait for the broker before it is retried.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The executions' statuses to the status topic.
#[derive(Clone)]
pub struct Publisher {
    engine: Engine,
    producer: FutureProducer,
    topic: String,
    /// The name under which the store keeps this door's cursors: the consumer group.
    consumer: String,
    identity: String,
    /// This process, as the holder of the records it publishes.
    pub owner: String,
    followers: Arc<Semaphore>,
    /// Executions followed now: a message delivered again never starts a second follower.
    following: Arc<Mutex<HashSet<String>>>,
}

impl Publisher {
    pub fn start(engine: Engine, config: &KafkaConfig) -> anyhow::Result<Publisher> {
        let producer: FutureProducer = config
            .client()
            // Retries never duplicate or reorder a partition's messages.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(Publisher {
            engine,
            producer,
            topic: config.status_topic.clone(),
            consumer: config.group.clone(),
            identity: config.identity.clone(),
            owner: uuid::Uuid::new_v4().to_string(),
            followers: Arc::new(Semaphore::new(FOLLOWERS)),
            following: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Follows every execution whose statuses nobody else publishes now (a previous run's,
    /// or a replica's that went away), then keeps renewing what it holds and taking over what
    /// lapses, every [`CLAIM_EVERY`].
    pub async fn resume(&self) -> anyhow::Result<()> {
        let held = self.claim().await?;
        if held > 0 {
            tracing::info!(executions = held, "resuming Kafka status messages");
        }
        let publisher = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CLAIM_EVERY).await;
                if let Err(e) = publisher.claim().await {
                    tracing::warn!(error = %e, "renewing Kafka status records");
                }
            }
        });
        Ok(())
    }

    /// Renews and takes records; follows those not followed yet. Returns how many it holds.
    async fn claim(&self) -> anyhow::Result<usize> {
        let held = self
            .engine
            .claim_publications(&self.consumer, &self.owner, HOLD)
            .await?;
        let count = held.len();
        for tracked in held {
            self.follow(tracked.execution_id, tracked.key, tracked.sequence);
        }
        Ok(count)
    }

    /// Publishes the statuses of execution `id` (keyed by `key`) after `published`.
    pub fn follow(&self, id: String, key: String, published: u64) {
        if !self
            .following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            return;
        }
        let publisher = self.clone();
        tokio::spawn(async move {
            if let Ok(_place) = publisher.followers.clone().acquire_owned().await {
                if let Err(e) = publisher.publish_all(&id, &key, published).await {
                    tracing::warn!(execution_id = %id, error = %e, "publishing Kafka statuses");
                }
            }
            publisher
                .following
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    async fn publish_all(&self, id: &str, key: &str, published: u64) -> anyhow::Result<()> {
        let events = self.engine.watch(id, 0, &self.identity).await?;
        futures::pin_mut!(events);
        let mut previous: Option<ExecutionState> = None;
        while let Some(event) = events.next().await {
            let changed = previous != Some(event.state) || event.state.is_terminal();
            previous = Some(event.state);
            if event.sequence <= published || !changed {
                continue;
            }
            let terminal = event.state.is_terminal();
            let view = self.view(id).await?;
            let status = message::status(key, &view, &event);
            self.send(key, &status).await;
            crate::telemetry::metrics().kafka_published.inc();
            let held = self
                .engine
                .published(&self.consumer, id, &self.owner, event.sequence, terminal)
                .await?;
            if !held {
                // Another process took the record over (this one was too slow to renew it):
                // it goes on from the cursor.
                tracing::warn!(execution_id = %id, "Kafka status record taken over; stopping here");
                return Ok(());
            }
        }
        Ok(())
    }

    async fn view(&self, id: &str) -> anyhow::Result<ExecutionView> {
        Ok(self.engine.get(id, &self.identity).await?.0)
    }

    /// Copies a refused message's payload to `topic` under `key`, retrying until acknowledged.
    pub async fn dead_letter(&self, topic: &str, key: &str, payload: &[u8]) {
        let mut wait = Duration::from_millis(100);
        loop {
            let record = FutureRecord::to(topic).key(key).payload(payload);
            match self.producer.send(record, PRODUCE_TIMEOUT).await {
                Ok(_) => return,
                Err((e, _)) => {
                    tracing::warn!(error = %e, key, "producing to the dead-letter topic; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Produces `status` under `key`, retrying until the broker acknowledges it.
    pub async fn send(&self, key: &str, status: &Value) {
        let payload = status.to_string();
        let mut wait = Duration::from_millis(100);
        loop {
            let record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                }));
            match self.producer.send(record, PRODUCE_TIMEOUT).await {
                Ok(_) => return,
                Err((e, _)) => {
                    tracing::warn!(error = %e, key, "producing a status message; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
