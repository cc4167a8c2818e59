//! P4: 1,000 and 10,000 WatchExecution subscribers on one `drain_node` execution, held for
//! approval until every subscriber has its first event: delivery latency, events lost, memory
//! per subscriber.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use chrono::{TimeZone, Utc};
use executor_service::api::proto;
use serde_json::json;

use crate::harness::{connect, execution_with_events, mk_request, Bench, FANOUT_NODES};
use crate::machine::rss_kib;
use crate::report::{ms, percentile, Row};

/// WatchExecution streams per HTTP/2 connection in P4 (servers allow 100–200 by default).
const STREAMS_PER_CHANNEL: usize = 100;

impl Bench {
    /// P4: many WatchExecution subscribers on one drain_node execution.
    pub(crate) async fn p4(&mut self) -> anyhow::Result<()> {
        let counts = self.sizes.p4_subscribers.clone();
        for (k, &subscribers) in counts.iter().enumerate() {
            let node = FANOUT_NODES[k % FANOUT_NODES.len()];
            let fanout = self.p4_run(node, subscribers).await?;
            self.lost += fanout.lost;
            let big = subscribers >= 10_000;
            let latency = |row: Row, value: Duration| {
                if big {
                    row.target("≤ 50 ms", value <= Duration::from_millis(50))
                } else {
                    row
                }
            };
            self.rows.push(latency(
                Row::new("P4", format!("{subscribers} subscribers: delivery p50"))
                    .executor(ms(fanout.p50)),
                fanout.p50,
            ));
            self.rows.push(
                Row::new("P4", format!("{subscribers} subscribers: delivery p99"))
                    .executor(ms(fanout.p99))
                    .target(
                        if big { "≤ 50 ms" } else { "" },
                        !big || fanout.p99 <= Duration::from_millis(50),
                    ),
            );
            self.rows.push(
                Row::new(
                    "P4",
                    format!("{subscribers} subscribers: one event alone (the approval) p50 / p99"),
                )
                .executor(format!(
                    "{} / {}",
                    ms(fanout.first_p50),
                    ms(fanout.first_p99)
                )),
            );
            self.rows.push(
                Row::new(
                    "P4",
                    format!("{subscribers} subscribers: deliveries per second"),
                )
                .executor(format!(
                    "{:.0}/s",
                    fanout.samples as f64 / fanout.all_done.as_secs_f64().max(1e-9)
                )),
            );
            self.rows.push(
                Row::new("P4", format!("{subscribers} subscribers: events lost"))
                    .executor(format!(
                        "{} of {}",
                        fanout.lost,
                        fanout.events as usize * subscribers
                    ))
                    .target("0", fanout.lost == 0),
            );
            let per = fanout.rss_delta_kib as f64 / subscribers as f64;
            self.rows.push(
                Row::new(
                    "P4",
                    format!("{subscribers} subscribers: RSS per subscriber"),
                )
                .executor(format!("{per:.1} KiB"))
                .target(
                    if big { "≤ 20 KB" } else { "" },
                    !big || per * 1024.0 <= 20_000.0,
                ),
            );
            self.notes.push(format!(
                "P4 ({subscribers}): drain_node of {node} ({} bare pods, `force`), held for \
                 approval until every subscriber had its first event, then approved: {} events \
                 per subscriber, {} of them live after the approval ({} latency samples), \
                 execution took {:.0} ms after the approval, last subscriber done after {:.0} ms. \
                 {} streams over {} HTTP/2 connections. RSS {:.1} MiB before the subscribers, \
                 {:.1} MiB with them connected.",
                self.sizes.p4_pods,
                fanout.events,
                fanout.live_events,
                fanout.samples,
                fanout.execution.as_secs_f64() * 1e3,
                fanout.all_done.as_secs_f64() * 1e3,
                subscribers,
                subscribers.div_ceil(STREAMS_PER_CHANNEL),
                fanout.rss_before_kib as f64 / 1024.0,
                (fanout.rss_before_kib + fanout.rss_delta_kib) as f64 / 1024.0,
            ));
        }
        self.notes.push(
            "P4: latency = receipt time at the subscriber − the event's own timestamp (taken \
             when the engine records it, before it is stored, made durable and published). \
             The server encodes each event once for all streams (api::watch). Subscribers run \
             in this process and decode the fields they check (sequence, timestamp), so the RSS \
             per subscriber counts both ends of each stream (client task, HTTP/2 stream state \
             on both sides, server stream and buffers): an upper bound of the server's share."
                .into(),
        );
        Ok(())
    }

    async fn p4_run(&self, node: &str, subscribers: usize) -> anyhow::Result<Fanout> {
        let mut grpc = self.grpc.clone();
        let execution = grpc
            .execute(mk_request(
                "drain_node",
                "",
                "Node",
                node,
                json!({"force": true}),
            ))
            .await?
            .into_inner()
            .execution
            .ok_or_else(|| anyhow!("no execution"))?;
        if execution.state != proto::ExecutionState::WaitingApproval as i32 {
            bail!(
                "drain_node should wait for an approval (built-in policy), got state {}",
                execution.state
            );
        }
        let id = execution.id;
        let rss_before = rss_kib();
        let mut channels = Vec::new();
        for _ in 0..subscribers.div_ceil(STREAMS_PER_CHANNEL) {
            channels.push(connect(self.addr).await?);
        }
        let ready = Arc::new(AtomicUsize::new(0));
        let all_ready = Arc::new(tokio::sync::Notify::new());
        let tasks: Vec<_> = (0..subscribers)
            .map(|i| {
                let mut client =
                    tonic::client::Grpc::new(channels[i / STREAMS_PER_CHANNEL].clone());
                let id = id.clone();
                let ready = ready.clone();
                let all_ready = all_ready.clone();
                tokio::spawn(async move {
                    client.ready().await?;
                    let mut stream = client
                        .server_streaming(
                            tonic::Request::new(proto::WatchExecutionRequest {
                                execution_id: id,
                                from_sequence: 0,
                            }),
                            tonic::codegen::http::uri::PathAndQuery::from_static(
                                "/executor.v1.ExecutorService/WatchExecution",
                            ),
                            HeadCodec,
                        )
                        .await?
                        .into_inner();
                    let mut received: Vec<(u64, i64)> = Vec::new();
                    let mut first = true;
                    while let Some(message) = stream.message().await? {
                        let now = Utc::now();
                        let event = message.event.ok_or_else(|| anyhow!("empty message"))?;
                        let ts = event.timestamp.unwrap_or_default();
                        let at = Utc
                            .timestamp_opt(ts.seconds, ts.nanos.max(0) as u32)
                            .single()
                            .unwrap_or(now);
                        received.push((event.sequence, (now - at).num_microseconds().unwrap_or(0)));
                        if first {
                            first = false;
                            if ready.fetch_add(1, Ordering::SeqCst) + 1 == subscribers {
                                all_ready.notify_one();
                            }
                        }
                    }
                    Ok::<_, anyhow::Error>(received)
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(300), async {
            while ready.load(Ordering::SeqCst) < subscribers {
                tokio::select! {
                    _ = all_ready.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
        .await
        .map_err(|_| {
            anyhow!(
                "only {} of {subscribers} subscribers connected",
                ready.load(Ordering::SeqCst)
            )
        })?;
        let rss_ready = rss_kib();
        let before_approval = execution_with_events(&mut grpc, &id).await?.1.len() as u64;
        let approved = Instant::now();
        grpc.approve_execution(proto::ApproveExecutionRequest {
            execution_id: id.clone(),
            approver: "bench".into(),
            reason: "benchmark".into(),
        })
        .await?;
        let mut results = Vec::with_capacity(subscribers);
        for task in tasks {
            results.push(
                tokio::time::timeout(Duration::from_secs(300), task)
                    .await
                    .map_err(|_| anyhow!("a subscriber did not finish in 300 s"))???,
            );
        }
        let all_done = approved.elapsed();
        let (view, events) = execution_with_events(&mut grpc, &id).await?;
        if view.state != proto::ExecutionState::Succeeded as i32 {
            bail!(
                "drain of {node} ended in state {}: {}",
                view.state,
                view.message
            );
        }
        let total = events.len() as u64;
        let execution_took = match (events.get(before_approval as usize), events.last()) {
            (Some(first), Some(last)) => {
                let (a, b) = (
                    first.timestamp.unwrap_or_default(),
                    last.timestamp.unwrap_or_default(),
                );
                Duration::from_nanos(
                    ((b.seconds - a.seconds) * 1_000_000_000 + i64::from(b.nanos - a.nanos)).max(0)
                        as u64,
                )
            }
            _ => Duration::ZERO,
        };
        let expected: Vec<u64> = (1..=total).collect();
        let mut lost = 0u64;
        let mut latencies = Vec::with_capacity(results.len() * total as usize);
        let mut first_live = Vec::with_capacity(results.len());
        for received in &results {
            let seqs: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
            if seqs != expected {
                let got: BTreeSet<u64> = seqs.iter().copied().collect();
                // A duplicate or a reordering counts as a loss too: it is not what was promised.
                lost += (total - got.len() as u64).max(u64::from(got.len() != seqs.len()));
            }
            latencies.extend(
                received
                    .iter()
                    .filter(|(s, _)| *s > before_approval)
                    .map(|(_, us)| Duration::from_micros((*us).max(0) as u64)),
            );
            first_live.extend(
                received
                    .iter()
                    .filter(|(s, _)| *s == before_approval + 1)
                    .map(|(_, us)| Duration::from_micros((*us).max(0) as u64)),
            );
        }
        latencies.sort();
        first_live.sort();
        Ok(Fanout {
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            first_p50: percentile(&first_live, 0.50),
            first_p99: percentile(&first_live, 0.99),
            samples: latencies.len(),
            lost,
            events: total,
            live_events: total - before_approval,
            rss_before_kib: rss_before,
            rss_delta_kib: rss_ready.saturating_sub(rss_before),
            execution: execution_took,
            all_done,
        })
    }
}

/// What a P4 subscriber reads of each `WatchExecutionResponse`: the fields it checks
/// (sequence, timestamp). prost skips the rest without allocating, so the subscribers' own
/// decoding, which shares this process and its two cores with the server, stays small.
#[derive(Clone, PartialEq, prost::Message)]
struct WatchHead {
    #[prost(message, optional, tag = "1")]
    event: Option<EventHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EventHead {
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(message, optional, tag = "3")]
    timestamp: Option<prost_types::Timestamp>,
}

/// prost encoding of the request, [`WatchHead`] decoding, small buffers (tonic's default is
/// 8 KiB per stream; these subscribers share the process whose memory P4 reports).
struct HeadCodec;

impl tonic::codec::Codec for HeadCodec {
    type Encode = proto::WatchExecutionRequest;
    type Decode = WatchHead;
    type Encoder = tonic_prost::ProstEncoder<proto::WatchExecutionRequest>;
    type Decoder = tonic_prost::ProstDecoder<WatchHead>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::new(256, 32 * 1024))
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::new(512, 32 * 1024))
    }
}

/// What one P4 run measured.
struct Fanout {
    p50: Duration,
    p99: Duration,
    /// Latency of the first live event (the approval) alone: one event to every subscriber
    /// before the drain's burst of events queues behind it.
    first_p50: Duration,
    first_p99: Duration,
    samples: usize,
    lost: u64,
    events: u64,
    live_events: u64,
    rss_before_kib: u64,
    rss_delta_kib: u64,
    execution: Duration,
    all_done: Duration,
}
