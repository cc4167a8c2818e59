//! The Kafka door: approved actions consumed from a topic become executions of the same
//! engine as every other door, and each execution's story is published to a status topic.
//!
//! - [`message`]: what an incoming message means (two shapes), and what a status says.
//! - [`consume`]: the consumer: each message is admitted (durably, idempotently by its action
//!   id) or refused, and only then is its offset committed — at least once in, effects once.
//! - [`publish`]: one follower per execution taken in, publishing a status per state change
//!   from the durable event log, after a cursor kept in the store, so a restart neither loses
//!   nor invents a status.

pub mod message;

mod consume;
mod publish;

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::engine::Engine;

/// How the door reaches the broker and what it reads and writes.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `HOST:PORT[,…]`.
    pub brokers: String,
    pub approved_topic: String,
    pub status_topic: String,
    pub group: String,
    /// The requester of the executions it creates, for the authorization rules.
    pub identity: String,
    /// Where refused messages are copied, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// librdkafka properties (`security.protocol`, `ssl.ca.location`, `sasl.mechanisms`, …).
    pub options: Vec<(String, String)>,
    /// Test aid: how long to wait between recording a message's execution and committing its
    /// offset (a window for a crash test to hit).
    pub commit_delay: Duration,
}

impl KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }
}

/// Starts the door on `engine`: the publisher resumes what the last run left unpublished,
/// then the consumer joins the group. Runs until the engine shuts down.
///
/// # Errors
/// A configuration librdkafka refuses.
pub async fn start(engine: Engine, config: KafkaConfig) -> anyhow::Result<()> {
    let publisher = publish::Publisher::start(engine.clone(), &config)?;
    publisher.resume().await?;
    let consumer = consume::Consumer::new(engine, &config, publisher)?;
    tokio::spawn(consumer.run());
    tracing::info!(
        brokers = %config.brokers,
        topic = %config.approved_topic,
        status_topic = %config.status_topic,
        group = %config.group,
        "consuming approved actions from Kafka"
    );
    Ok(())
}
