//! R4: a burst of Execute calls ten times the queue's capacity, from many clients at once,
//! against an engine with a small queue and few workers: the excess is refused at once with
//! RESOURCE_EXHAUSTED, memory stays flat, and the service answers normally right after.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, Utc};
use executor_service::{
    actions::Registry,
    api::proto::{self, executor_service_client::ExecutorServiceClient},
    cluster::Clusters,
    engine::Engine,
    sim::{self, FaultRule, Scenario, SimCluster, SimConfig},
};
use serde_json::json;
use tonic::Code;

use crate::harness::{connect, mk_request, serve, Bench};
use crate::machine::rss_kib;
use crate::report::{ms, percentile, ratio, Row};

/// Namespace of the burst's deployments.
const NS: &str = "burst";
/// Deployments the burst's scales spread over.
const DEPLOYMENTS: usize = 50;
/// Workers of R4's engine: few, so that the queue fills instead of draining.
const WORKERS: usize = 2;
/// gRPC connections the clients share.
const CHANNELS: usize = 8;
/// Every API request of R4's cluster is answered this late, so that an execution takes a
/// while (about 4 requests) and the queue stays full for the whole burst.
const API_LATENCY: Duration = Duration::from_millis(20);
/// How long the accepted executions may take to drain before R4 gives up on them.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
/// A refusal should cost less than this (no cluster call happens before it).
const REFUSAL_P99_TARGET: Duration = Duration::from_millis(100);

/// How one Execute call of the burst ended.
enum Answer {
    Accepted(String, Duration),
    Refused(Duration),
    Other(String),
}

impl Bench {
    /// R4: a burst of `r4_burst` Execute calls from `r4_clients` clients against a queue of
    /// `r4_queue`.
    pub(crate) async fn r4(&mut self) -> anyhow::Result<()> {
        let (capacity, burst, clients) = (
            self.sizes.r4_queue,
            self.sizes.r4_burst,
            self.sizes.r4_clients,
        );
        let scenario =
            (0..DEPLOYMENTS).fold(Scenario::empty().with(sim::mk_namespace(NS)), |s, i| {
                s.with(sim::mk_deployment(
                    NS,
                    &format!("burst-{i}"),
                    1,
                    "nginx:1.25",
                ))
            });
        let sim = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse()?,
            scenario,
            speed: self.speed,
        })
        .await?;
        sim.wait_settled(Duration::from_secs(60)).await?;
        let mut config = self.engine_config("r4.db").await?;
        config.workers = WORKERS;
        config.queue_capacity = capacity;
        config.cooldown = Duration::ZERO;
        let clusters = Clusters::from_kubeconfig_value(sim.kubeconfig(), None).await?;
        let addr = serve(Engine::new(config, Registry::builtin(), clusters)).await?;
        let mut channels = Vec::with_capacity(CHANNELS);
        for _ in 0..CHANNELS {
            channels.push(ExecutorServiceClient::new(connect(addr).await?));
        }
        sim.faults().add(FaultRule {
            latency: Some(API_LATENCY),
            probability: 1.0,
            ..Default::default()
        });

        let rss_before = rss_kib();
        let peak = Arc::new(AtomicU64::new(rss_before));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = tokio::spawn({
            let (peak, sampling) = (peak.clone(), sampling.clone());
            async move {
                while sampling.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        let start = Arc::new(tokio::sync::Barrier::new(clients));
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let mut grpc = channels[c % CHANNELS].clone();
                let start = start.clone();
                // Calls spread evenly: client c makes calls c, c + clients, ...
                let calls: Vec<usize> = (c..burst).step_by(clients).collect();
                tokio::spawn(async move {
                    start.wait().await;
                    let mut answers = Vec::with_capacity(calls.len());
                    for i in calls {
                        let request = mk_request(
                            "scale_deployment",
                            NS,
                            "Deployment",
                            &format!("burst-{}", i % DEPLOYMENTS),
                            json!({"replicas": 1 + (i / DEPLOYMENTS) % 2, "wait_for_rollout": false}),
                        );
                        let t = Instant::now();
                        answers.push(match grpc.execute(request).await {
                            Ok(r) => Answer::Accepted(
                                r.into_inner().execution.unwrap_or_default().id,
                                t.elapsed(),
                            ),
                            Err(s) if s.code() == Code::ResourceExhausted => {
                                Answer::Refused(t.elapsed())
                            }
                            Err(s) => Answer::Other(format!("{:?}: {}", s.code(), s.message())),
                        });
                    }
                    answers
                })
            })
            .collect();
        let burst_started = Instant::now();
        let mut answers = Vec::with_capacity(burst);
        for task in tasks {
            answers.extend(task.await?);
        }
        let burst_took = burst_started.elapsed();
        let burst_ended: DateTime<Utc> = Utc::now();
        let mut grpc = channels[0].clone();

        // Right after, with the queue still full: reads are answered.
        let t = Instant::now();
        let listed = grpc
            .list_executions(proto::ListExecutionsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().executions.len());
        let list_took = t.elapsed();

        let mut accepted = Vec::new();
        let (mut accepted_latency, mut refused_latency, mut other) =
            (Vec::new(), Vec::new(), Vec::new());
        for answer in answers {
            match answer {
                Answer::Accepted(id, took) => {
                    accepted.push(id);
                    accepted_latency.push(took);
                }
                Answer::Refused(took) => refused_latency.push(took),
                Answer::Other(why) => other.push(why),
            }
        }
        accepted_latency.sort();
        refused_latency.sort();

        // The accepted ones all end; how many had started by the end of the burst bounds how
        // many the queue could have let in.
        let drain_started = Instant::now();
        let mut succeeded = 0;
        let mut unfinished = 0;
        let mut started_in_burst = 0;
        for id in &accepted {
            let execution = loop {
                let execution = grpc
                    .get_execution(proto::GetExecutionRequest {
                        execution_id: id.clone(),
                        include_events: false,
                    })
                    .await?
                    .into_inner()
                    .execution
                    .unwrap_or_default();
                if execution.finished_at.is_some() || drain_started.elapsed() > DRAIN_LIMIT {
                    break execution;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let started = execution
                .started_at
                .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32));
            started_in_burst += usize::from(started.is_some_and(|t| t <= burst_ended));
            if execution.finished_at.is_none() {
                unfinished += 1;
            } else if execution.state == proto::ExecutionState::Succeeded as i32 {
                succeeded += 1;
            }
        }
        let drained = drain_started.elapsed();

        // A fresh execution after the burst, on a deployment the burst did not touch last.
        let mut fresh_request = mk_request(
            "scale_deployment",
            NS,
            "Deployment",
            "burst-0",
            json!({"replicas": 3, "wait_for_rollout": true}),
        );
        fresh_request.wait = true;
        let t = Instant::now();
        let fresh = grpc
            .execute(fresh_request)
            .await
            .map(|r| r.into_inner().execution.unwrap_or_default());
        let fresh_took = t.elapsed();
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.await;
        let rss_peak = peak.load(Ordering::Relaxed);
        let rss_after = rss_kib();
        sim.faults().clear();
        sim.shutdown().await;

        let bound = capacity + started_in_burst;
        let excess_refused = other.is_empty()
            && accepted.len() + refused_latency.len() == burst
            && accepted.len() <= bound
            && !refused_latency.is_empty();
        let fresh_ok = fresh
            .as_ref()
            .is_ok_and(|e| e.state == proto::ExecutionState::Succeeded as i32);
        let refusal_p99 = percentile(&refused_latency, 0.99);
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        self.rows.push(
            Row::new(
                "R4",
                format!(
                    "burst of {burst} Execute from {clients} clients ({CHANNELS} connections), \
                     queue {capacity}, {WORKERS} workers: accepted"
                ),
            )
            .executor(format!(
                "{} ({started_in_burst} started during the {:.2} s burst)",
                accepted.len(),
                burst_took.as_secs_f64()
            ))
            .target(
                format!("≤ queue + started = {bound}"),
                accepted.len() <= bound,
            ),
        );
        self.rows.push(
            Row::new("R4", "refused with RESOURCE_EXHAUSTED (other errors)")
                .executor(format!("{} ({})", refused_latency.len(), other.len()))
                .target("the rest, nothing else", excess_refused),
        );
        self.rows.push(
            Row::new("R4", "refusal latency p50 / p99 (accepted: baseline)")
                .executor(format!(
                    "{} / {}",
                    ms(percentile(&refused_latency, 0.5)),
                    ms(refusal_p99)
                ))
                .baseline(format!(
                    "{} / {}",
                    ms(percentile(&accepted_latency, 0.5)),
                    ms(percentile(&accepted_latency, 0.99))
                ))
                .ratio(format!(
                    "{:.2}×",
                    ratio(
                        percentile(&refused_latency, 0.5),
                        percentile(&accepted_latency, 0.5)
                    )
                ))
                .target(
                    format!("p99 ≤ {}", ms(REFUSAL_P99_TARGET)),
                    refusal_p99 <= REFUSAL_P99_TARGET,
                ),
        );
        self.rows.push(
            Row::new("R4", "RSS before / peak during / after").executor(format!(
                "{} / {} / {}",
                mib(rss_before),
                mib(rss_peak),
                mib(rss_after)
            )),
        );
        self.rows.push(
            Row::new("R4", "ListExecutions right after the burst (queue full)")
                .executor(match &listed {
                    Ok(n) => format!("{n} listed in {}", ms(list_took)),
                    Err(e) => format!("failed: {}", e.message()),
                })
                .target("answers", listed.is_ok()),
        );
        self.rows.push(
            Row::new("R4", "accepted executions ended (SUCCEEDED)")
                .executor(format!(
                    "{} of {} ({succeeded}) in {:.1} s",
                    accepted.len() - unfinished,
                    accepted.len(),
                    drained.as_secs_f64()
                ))
                .target("all", unfinished == 0),
        );
        self.rows.push(
            Row::new("R4", "a fresh Execute (wait) after the drain")
                .executor(match &fresh {
                    Ok(e) => format!(
                        "{} in {}",
                        crate::chaos::state_name(
                            proto::ExecutionState::try_from(e.state).unwrap_or_default()
                        ),
                        ms(fresh_took)
                    ),
                    Err(s) => format!("{:?}: {}", s.code(), s.message()),
                })
                .target("SUCCEEDED", fresh_ok),
        );
        self.notes.push(format!(
            "R4: own simulated cluster ({DEPLOYMENTS} deployments, every API request {} ms \
             late so executions last) and engine ({WORKERS} workers, queue {capacity}, no \
             cooldown, no rate limit); {clients} clients wait on one barrier, then each makes \
             its share of the {burst} calls one after the other (scale_deployment, no rollout \
             wait). RSS is the whole process (cluster and clients included), sampled every 2 ms.",
            API_LATENCY.as_millis()
        ));
        if let Some(why) = other.first() {
            self.notes.push(format!(
                "**R4: {} calls failed otherwise**, e.g. {why}",
                other.len()
            ));
        }
        if !(excess_refused && listed.is_ok() && unfinished == 0 && fresh_ok) {
            bail!("the burst was not absorbed: see the R4 rows");
        }
        Ok(())
    }
}
