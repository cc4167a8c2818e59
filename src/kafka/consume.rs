//! The consumer: approved actions in, executions out. Each message is handled before the next
//! and its offset committed only once its execution is durably recorded (or its refusal
//! published): at least once in, and the engine's idempotency (the action id is the
//! request_id) makes a redelivery harmless. When the engine cannot take more (queue full,
//! shutting down, store unavailable) the message waits and is tried again: consuming pauses,
//! nothing is dropped or refused for it.

use std::time::Duration;

use rdkafka::{
    consumer::{CommitMode, Consumer as _, ConsumerContext, StreamConsumer},
    message::{BorrowedMessage, Headers},
    statistics::Statistics,
    ClientContext, Message,
};
use serde_json::json;
use tracing::Instrument;

use super::{message, publish::Publisher, KafkaConfig};
use crate::engine::{Engine, EngineError};

/// Wait before trying again a message the engine could not take.
const RETRY: Duration = Duration::from_secs(1);
/// Attempts at a message that keeps failing for a reason that is not the engine's capacity
/// (an internal error, a cluster that does not answer its plan) before it is refused: the
/// partition must not stall on it for ever. A full queue is waited out however long it lasts.
const FAILURE_ATTEMPTS: u32 = 30;

/// How often librdkafka reports its statistics (the lag gauge's source).
const STATISTICS_INTERVAL_MS: &str = "5000";

/// Sets the consumer-lag gauge from librdkafka's statistics: the sum over the partitions this
/// consumer holds of high watermark − committed offset.
struct LagContext;

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0)
            .map(|p| p.consumer_lag.max(0))
            .sum();
        crate::telemetry::metrics().kafka_lag.set(lag);
    }
}

impl ConsumerContext for LagContext {}

pub struct Consumer {
    engine: Engine,
    consumer: StreamConsumer<LagContext>,
    publisher: Publisher,
    config: KafkaConfig,
}

/// What became of a message.
enum Handled {
    /// Admitted, or refused with a published status: commit it.
    Done,
    /// The engine could not take it now: try it again.
    Retry(String),
}

impl Consumer {
    pub fn new(
        engine: Engine,
        config: &KafkaConfig,
        publisher: Publisher,
    ) -> anyhow::Result<Consumer> {
        let consumer: StreamConsumer<LagContext> = config
            .client()
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
            .create_with_context(LagContext)?;
        consumer.subscribe(&[&config.approved_topic])?;
        Ok(Consumer {
            engine,
            consumer,
            publisher,
            config: config.clone(),
        })
    }

    pub async fn run(self) {
        loop {
            if self.engine.is_closing() {
                return;
            }
            let received = tokio::select! {
                m = self.consumer.recv() => m,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            };
            let message = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consuming approved actions");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            crate::telemetry::metrics().kafka_consumed.inc();
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self.handle(&message, attempts >= FAILURE_ATTEMPTS).await {
                    Handled::Done => break,
                    Handled::Retry(why) => {
                        if self.engine.is_closing() {
                            // Not committed: the next consumer of the partition gets it.
                            return;
                        }
                        tracing::warn!(
                            offset = message.offset(),
                            partition = message.partition(),
                            reason = %why,
                            "the engine cannot take the message now; trying again"
                        );
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            if !self.config.commit_delay.is_zero() {
                tokio::time::sleep(self.config.commit_delay).await;
            }
            if let Err(e) = self.consumer.commit_message(&message, CommitMode::Async) {
                // Delivered again later, and idempotent then.
                tracing::warn!(error = %e, offset = message.offset(), "committing an offset");
            }
        }
    }

    /// Admits or refuses `m`; with `last_chance`, a failure that is not about capacity
    /// refuses it rather than asking for another attempt.
    async fn handle(&self, m: &BorrowedMessage<'_>, last_chance: bool) -> Handled {
        let origin = message::Origin {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
        };
        let span = crate::telemetry::request_span("kafka", origin.topic, &trace_headers(m));
        async {
            let approved = match message::parse(m.payload(), &origin) {
                Ok(a) => a,
                Err(refused) => return self.refuse(refused, m.payload()).await,
            };
            let message::Approved {
                action_id,
                request,
                dry_run,
                ..
            } = approved;
            let mut request = request;
            request.requester = self.config.identity.clone();
            request.trace_id = crate::telemetry::current_trace_id();
            if dry_run {
                return match self.engine.dry_run(request).await {
                    Ok(report) => {
                        let status = json!({
                            "action_id": action_id,
                            "state": "DRY_RUN",
                            "status": "dry_run",
                            "message": report.plan.summary,
                            "changes": report.plan.changes.iter().map(|c| json!({
                                "object": c.object, "summary": c.summary,
                            })).collect::<Vec<_>>(),
                            "policy": report.policy.map(|d| d.to_json()),
                            "timestamp": chrono::Utc::now(),
                        });
                        self.publisher.send(&action_id, &status).await;
                        Handled::Done
                    }
                    Err(e) if retryable(&e, last_chance) => Handled::Retry(e.to_string()),
                    Err(error) => {
                        self.refuse(message::Refused { action_id, error }, m.payload())
                            .await
                    }
                };
            }
            match self.engine.submit(request).await {
                Ok(view) => {
                    match self
                        .engine
                        .track_publication(
                            &self.config.group,
                            &view.id,
                            &action_id,
                            &self.publisher.owner,
                            super::publish::HOLD,
                        )
                        .await
                    {
                        // Told already, or being told by a live replica.
                        Ok(p) if p.done || !p.mine => {}
                        Ok(p) => self.publisher.follow(view.id, action_id, p.sequence),
                        Err(e) => return Handled::Retry(e.to_string()),
                    }
                    Handled::Done
                }
                Err(e) if retryable(&e, last_chance) => Handled::Retry(e.to_string()),
                Err(error) => {
                    self.refuse(message::Refused { action_id, error }, m.payload())
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Publishes the `rejected` status of a refused message (and copies it to the
    /// dead-letter topic, if any).
    async fn refuse(&self, refused: message::Refused, payload: Option<&[u8]>) -> Handled {
        tracing::warn!(action_id = %refused.action_id, error = %refused.error, "refused a Kafka message");
        crate::telemetry::metrics().kafka_rejected.inc();
        self.publisher
            .send(&refused.action_id, &message::rejected(&refused))
            .await;
        if let Some(topic) = &self.config.dead_letter_topic {
            self.publisher
                .dead_letter(topic, &refused.action_id, payload.unwrap_or_default())
                .await;
        }
        Handled::Done
    }
}

/// Whether to try the request again later: the engine is full (always), or it failed for a
/// reason that is not the request's (until `last_chance`).
fn retryable(e: &EngineError, last_chance: bool) -> bool {
    match e {
        EngineError::QueueFull { .. }
        | EngineError::Exhausted { .. }
        | EngineError::ShuttingDown => true,
        EngineError::Unavailable(_) | EngineError::Internal(_) => !last_chance,
        _ => false,
    }
}

/// The message's W3C trace headers, for the span to continue its trace.
fn trace_headers(m: &BorrowedMessage<'_>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(kafka) = m.headers() {
        for header in kafka.iter() {
            if header.key != "traceparent" && header.key != "tracestate" {
                continue;
            }
            if let (Ok(name), Some(Ok(value))) = (
                http::HeaderName::from_bytes(header.key.as_bytes()),
                header.value.map(http::HeaderValue::from_bytes),
            ) {
                headers.insert(name, value);
            }
        }
    }
    headers
}
