//! The benchmark harness: in one run, one simulated cluster and one executor in this process,
//! measured side by side with what a user would do without it.
//!
//! - **P1 latency**: gRPC Execute → terminal event (WatchExecution) of `restart_pod`
//!   (`wait_ready: false`), against the same Kubernetes API calls made directly with kube-rs.
//! - **P2 throughput**: the same at 1, 16 and 64 concurrent clients, each on its own target.
//! - **P3 kubectl**: a `kubectl scale` process against Execute of `scale_deployment`
//!   (`wait_for_rollout: false`, `wait: true`) on the same deployment.
//! - **P4 fan-out**: 1,000 and 10,000 WatchExecution subscribers on one `drain_node` execution
//!   (held for approval until every subscriber is connected): delivery latency, events lost,
//!   memory per subscriber.
//! - **P5 history**: 100,000 executions in a SQLite store, ListExecutions pages through gRPC.
//!
//! ```text
//! cargo build --release --bin bench && target/release/bench --out BENCHMARKS-run.md
//! target/release/bench --only P1,P4
//! cargo run --bin bench -- --smoke          # tiny counts, checks it works (CI)
//! ```

#![forbid(unsafe_code)]

#[path = "shared/history.rs"]
mod history;
use history::{fill, percentile};

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{TimeZone, Utc};
use clap::Parser;
use executor_service::{
    actions::Registry,
    api::{
        self,
        proto::{self, executor_service_client::ExecutorServiceClient},
    },
    cluster::Clusters,
    engine::{Engine, EngineConfig, MAX_PAGE_SIZE},
    policy::{Policy, PolicyConfig},
    sim::{self, Scenario, SimCluster, SimConfig},
    store::{self, Store},
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{Api, DeleteParams, ListParams, Preconditions},
    runtime::{watcher, WatchStreamExt},
};
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

/// Simulated-cluster clock speed: rollouts and pod churn take milliseconds, so the figures
/// are the executor's and the API server's, not the simulated kubelet's.
const DEFAULT_SPEED: f64 = 50.0;
/// Namespace of every benchmark target.
const NS: &str = "bench";
/// Concurrency levels of P2.
const P2_LEVELS: [usize; 3] = [1, 16, 64];
/// WatchExecution streams per HTTP/2 connection in P4 (servers allow 100–200 by default).
const STREAMS_PER_CHANNEL: usize = 100;
/// Nodes that only P4's drains use, with bare pods bound to them.
const FANOUT_NODES: [&str; 2] = ["node-11", "node-12"];

/// Measure the executor against direct kube-rs calls and kubectl, in one run.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Tiny counts: checks every part works (no lost events) in well under a minute, even
    /// in a debug build. No timing is asserted.
    #[arg(long)]
    smoke: bool,
    /// Parts to run, comma-separated (P1,P2,P3,P4,P5); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Simulated cluster clock speed.
    #[arg(long, default_value_t = DEFAULT_SPEED)]
    speed: f64,
    /// kubectl binary for P3 (scripts/install-tools puts one in target/tools/bin).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/bin/kubectl"))]
    kubectl: PathBuf,
    /// Subscriber counts of P4.
    #[arg(long, value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// Executions stored for P5.
    #[arg(long)]
    executions: Option<usize>,
    /// History of the engine P1–P4 measure: `sqlite` (a file in the temp directory, as
    /// `serve` runs), `none` (events published without waiting for a store), or a store URL
    /// (`memory:`, a path, `postgres://…`). For finding what the store costs.
    #[arg(long, default_value = "sqlite")]
    engine_store: String,
    /// Run the engine without a policy (the built-in one otherwise). For finding what the
    /// policy costs.
    #[arg(long)]
    no_policy: bool,
}

/// How much of everything, by mode.
struct Sizes {
    p1_iterations: usize,
    p2_duration: Duration,
    p3_iterations: usize,
    p4_subscribers: Vec<usize>,
    p4_pods: usize,
    p5_executions: usize,
    p5_calls: usize,
}

impl Sizes {
    fn of(args: &Args) -> Sizes {
        let mut sizes = if args.smoke {
            Sizes {
                p1_iterations: 4,
                p2_duration: Duration::from_millis(300),
                p3_iterations: 3,
                p4_subscribers: vec![20, 200],
                p4_pods: 5,
                p5_executions: 300,
                p5_calls: 10,
            }
        } else {
            Sizes {
                p1_iterations: 200,
                p2_duration: Duration::from_secs(5),
                p3_iterations: 30,
                p4_subscribers: vec![1_000, 10_000],
                p4_pods: 30,
                p5_executions: 100_000,
                p5_calls: 200,
            }
        };
        if !args.subscribers.is_empty() {
            sizes.p4_subscribers = args.subscribers.clone();
        }
        if let Some(n) = args.executions {
            sizes.p5_executions = n;
        }
        sizes
    }
}

/// One line of the report table.
struct Row {
    part: &'static str,
    measure: String,
    executor: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn new(part: &'static str, measure: impl Into<String>) -> Row {
        Row {
            part,
            measure: measure.into(),
            executor: String::new(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: None,
        }
    }
    fn executor(mut self, v: impl Into<String>) -> Row {
        self.executor = v.into();
        self
    }
    fn baseline(mut self, v: impl Into<String>) -> Row {
        self.baseline = v.into();
        self
    }
    fn ratio(mut self, v: impl Into<String>) -> Row {
        self.ratio = v.into();
        self
    }
    fn target(mut self, v: impl Into<String>, met: bool) -> Row {
        self.target = v.into();
        self.met = Some(met);
        self
    }
}

/// Everything the parts share.
struct Bench {
    sizes: Sizes,
    /// Kept alive for the whole run.
    _sim: SimCluster,
    /// A client of the executor's own kind (same client stack), for the direct baselines.
    kube: kube::Client,
    addr: std::net::SocketAddr,
    clusters: Clusters,
    grpc: ExecutorServiceClient<Channel>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Events lost in P4, over all runs.
    lost: u64,
}

/// mimalloc: the service allocates many small short-lived buffers from many tasks at once
/// (one HTTP/2 stream per watcher); glibc's arenas spent a sixth of P4's CPU in malloc/free
/// and their locks. The bench uses the same allocator as the binary it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let parts: BTreeSet<String> = if args.only.is_empty() {
        ["P1", "P2", "P3", "P4", "P5"].map(String::from).into()
    } else {
        args.only.iter().map(|p| p.trim().to_uppercase()).collect()
    };
    if let Some(unknown) = parts
        .iter()
        .find(|p| !["P1", "P2", "P3", "P4", "P5"].contains(&p.as_str()))
    {
        bail!("--only: unknown part {unknown:?} (known: P1,P2,P3,P4,P5)");
    }
    let sizes = Sizes::of(&args);
    let started = Instant::now();
    let mut bench = Bench::start(&args, sizes).await?;
    let mut failures = Vec::new();
    // P5 first: its RSS figure is then the history's, not what 10,000 streams left behind.
    for part in ["P5", "P1", "P2", "P3", "P4"] {
        if !parts.contains(part) {
            continue;
        }
        eprintln!("== {part}");
        let t = Instant::now();
        let result = match part {
            "P1" => bench.p1().await,
            "P2" => bench.p2().await,
            "P3" => bench.p3().await,
            "P4" => bench.p4().await,
            _ => bench.p5().await,
        };
        eprintln!("   {part} took {:.1} s", t.elapsed().as_secs_f64());
        if let Err(e) = result {
            eprintln!("{part} failed: {e:#}");
            bench.notes.push(format!("**{part} failed**: {e:#}"));
            failures.push(part);
        }
    }
    let report = bench.report(&args, started.elapsed());
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    let _ = std::fs::remove_dir_all(&bench.dir);
    if !failures.is_empty() {
        bail!("parts failed: {}", failures.join(", "));
    }
    if bench.lost > 0 {
        bail!("P4 lost {} events", bench.lost);
    }
    Ok(())
}

impl Bench {
    async fn start(args: &Args, sizes: Sizes) -> anyhow::Result<Bench> {
        let dir = std::env::temp_dir().join(format!("executor-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut scenario = Scenario::empty()
            .with(sim::mk_namespace(NS))
            .with(sim::mk_node("node-2"))
            .with(sim::mk_node("node-3"));
        for node in FANOUT_NODES {
            scenario = scenario.with(sim::mk_node(node));
        }
        for name in p1_targets() {
            scenario = scenario.with(sim::mk_deployment(NS, &name, 1, "nginx:1.25"));
        }
        for i in 0..P2_LEVELS[P2_LEVELS.len() - 1] {
            scenario = scenario.with(sim::mk_deployment(NS, &format!("p2-{i}"), 1, "nginx:1.25"));
        }
        scenario = scenario.with(sim::mk_deployment(NS, "p3", 1, "nginx:1.25"));
        for node in FANOUT_NODES {
            for k in 0..sizes.p4_pods {
                scenario = scenario.with(sim::mk_pod(
                    NS,
                    &format!("{node}-pod-{k}"),
                    Some(node),
                    "nginx:1.25",
                ));
            }
        }
        let sim = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse()?,
            scenario,
            speed: args.speed,
        })
        .await?;
        sim.wait_settled(Duration::from_secs(60)).await?;
        let kubeconfig = dir.join("sim.kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        // The engine and the direct baseline get separate clients built the same way.
        let clusters = Clusters::from_kubeconfig_value(sim.kubeconfig(), None).await?;
        let kube = Clusters::from_kubeconfig_value(sim.kubeconfig(), None)
            .await?
            .client("")?;
        let store = match args.engine_store.as_str() {
            "none" => None,
            "sqlite" => Some(store::open(&dir.join("engine.db").display().to_string()).await?),
            url => Some(store::open(url).await?),
        };
        let mut config = engine_config(store)?;
        if args.no_policy {
            config.policy = None;
        }
        let engine = Engine::new(config, Registry::builtin(), clusters.clone());
        let addr = serve(engine).await?;
        let grpc = ExecutorServiceClient::new(connect(addr).await?);
        Ok(Bench {
            sizes,
            _sim: sim,
            kube,
            addr,
            clusters,
            grpc,
            dir,
            kubeconfig,
            kubectl: args.kubectl.clone(),
            rows: Vec::new(),
            notes: Vec::new(),
            lost: 0,
        })
    }

    /// The current pod of deployment `app` (not terminating).
    async fn pod_of(&self, app: &str) -> anyhow::Result<String> {
        let api: Api<Pod> = Api::namespaced(self.kube.clone(), NS);
        for _ in 0..500 {
            let pods = api
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await?;
            if let Some(p) = pods
                .items
                .iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
            {
                return Ok(p.metadata.name.clone().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("deployment {app} has no pod")
    }

    /// P1: sequential restart_pod latency, executor and direct calls interleaved.
    async fn p1(&mut self) -> anyhow::Result<()> {
        let [a, b] = p1_targets();
        let mut pod_a = self.pod_of(&a).await?;
        let mut pod_b = self.pod_of(&b).await?;
        let mut grpc = self.grpc.clone();
        // Warm both paths (connections, the policy's first evaluation).
        pod_a = executor_restart(&mut grpc, &pod_a).await?;
        pod_b = direct_restart(&self.kube, &pod_b).await?;
        let (mut executor, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..self.sizes.p1_iterations {
            let t = Instant::now();
            pod_a = executor_restart(&mut grpc, &pod_a).await?;
            executor.push(t.elapsed());
            let t = Instant::now();
            pod_b = direct_restart(&self.kube, &pod_b).await?;
            direct.push(t.elapsed());
        }
        executor.sort();
        direct.sort();
        for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
            let (e, d) = (percentile(&executor, p), percentile(&direct, p));
            let ratio = ratio(e, d);
            self.rows.push(
                Row::new("P1", format!("restart_pod latency {label}"))
                    .executor(ms(e))
                    .baseline(ms(d))
                    .ratio(format!("{ratio:.2}×"))
                    .target("≤ 1.2×", ratio <= 1.2),
            );
        }
        self.notes.push(format!(
            "P1: {} sequential restarts each side, interleaved. Executor: Execute, then \
             WatchExecution until the terminal event. Direct: the executor's own API calls with \
             kube-rs — get + dry-run delete (the admission plan), get, list by labels, watch, \
             delete with a uid precondition, wait for the replacement pod. `wait_ready: false`: \
             both wait for the ReplicaSet controller's replacement, not for the kubelet.",
            self.sizes.p1_iterations
        ));
        Ok(())
    }

    /// P2: executions per second at each concurrency, each client restarting the pod of its
    /// own deployment for a fixed time.
    async fn p2(&mut self) -> anyhow::Result<()> {
        for &clients in &P2_LEVELS {
            let executor = self.p2_run(clients, true).await?;
            let direct = self.p2_run(clients, false).await?;
            let ratio = executor / direct;
            self.rows.push(
                Row::new("P2", format!("restart_pod throughput, {clients} clients"))
                    .executor(format!("{executor:.1}/s"))
                    .baseline(format!("{direct:.1}/s"))
                    .ratio(format!("{ratio:.2}×"))
                    .target("≥ 0.8×", ratio >= 0.8),
            );
        }
        self.notes.push(format!(
            "P2: each client loops on its own deployment (1 replica) for {:.1} s; executor \
             clients share one gRPC channel, direct clients one kube client. Same calls as P1.",
            self.sizes.p2_duration.as_secs_f64()
        ));
        Ok(())
    }

    async fn p2_run(&self, clients: usize, via_executor: bool) -> anyhow::Result<f64> {
        let mut pods = Vec::with_capacity(clients);
        for i in 0..clients {
            pods.push(self.pod_of(&format!("p2-{i}")).await?);
        }
        let duration = self.sizes.p2_duration;
        let start = Instant::now();
        let tasks: Vec<_> = pods
            .into_iter()
            .map(|mut pod| {
                let mut grpc = self.grpc.clone();
                let kube = self.kube.clone();
                tokio::spawn(async move {
                    let mut done = 0usize;
                    while start.elapsed() < duration {
                        pod = if via_executor {
                            executor_restart(&mut grpc, &pod).await?
                        } else {
                            direct_restart(&kube, &pod).await?
                        };
                        done += 1;
                    }
                    Ok::<_, anyhow::Error>(done)
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        Ok(total as f64 / start.elapsed().as_secs_f64())
    }

    /// P3: `kubectl scale` processes against Execute of scale_deployment, interleaved.
    async fn p3(&mut self) -> anyhow::Result<()> {
        if !self.kubectl.exists() {
            // A binary built elsewhere: the checkout it runs from.
            let here = PathBuf::from("target/tools/bin/kubectl");
            if here.exists() {
                self.kubectl = here;
            }
        }
        if !self.kubectl.exists() {
            bail!(
                "kubectl not found at {} (run scripts/install-tools or pass --kubectl)",
                self.kubectl.display()
            );
        }
        let cache = self.dir.join("kube-cache");
        let kubectl_scale = |replicas: u32| {
            let mut cmd = tokio::process::Command::new(&self.kubectl);
            cmd.arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--cache-dir")
                .arg(&cache)
                .args(["-n", NS, "scale", "deployment/p3"])
                .arg(format!("--replicas={replicas}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            async move {
                let out = cmd.output().await?;
                if !out.status.success() {
                    bail!(
                        "kubectl scale failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok(())
            }
        };
        let mut grpc = self.grpc.clone();
        // Warm-up: kubectl's discovery cache, the executor's connections.
        kubectl_scale(2).await?;
        executor_scale(&mut grpc, 1).await?;
        let (mut kubectl, mut executor, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.sizes.p3_iterations {
            let replicas = 1 + (i as u32 % 2);
            let t = Instant::now();
            kubectl_scale(replicas + 1).await?;
            kubectl.push(t.elapsed());
            let (t, sent) = (Instant::now(), Utc::now());
            let id = executor_scale(&mut grpc, replicas).await?;
            executor.push(t.elapsed());
            ids.push((id, sent, Utc::now()));
        }
        let phases = self.p3_phases(&ids).await?;
        kubectl.sort();
        executor.sort();
        for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
            let (e, k) = (percentile(&executor, p), percentile(&kubectl, p));
            let faster = ratio(k, e);
            self.rows.push(
                Row::new("P3", format!("scale per action {label}"))
                    .executor(ms(e))
                    .baseline(format!("{} (kubectl)", ms(k)))
                    .ratio(format!("{faster:.1}× faster"))
                    .target("≥ 50× faster", faster >= 50.0),
            );
        }
        self.notes.push(format!(
            "P3: {} actions each side, interleaved on one deployment. kubectl: one `kubectl scale \
             deployment/p3 --replicas=N` process (warm discovery cache), spawn to exit. \
             Executor: Execute with `wait: true` and `wait_for_rollout: false`, i.e. until \
             the execution is SUCCEEDED. Where an execution's time goes (medians, from its \
             recorded timestamps): {phases}.",
            self.sizes.p3_iterations
        ));
        Ok(())
    }

    /// Medians of the steps of P3's executions, from the client's clock (same machine) and the
    /// timestamps the engine recorded: sent → accepted (`created_at`, after the plan and the
    /// policy) → RUNNING → SUCCEEDED → response received.
    async fn p3_phases(
        &self,
        ids: &[(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)],
    ) -> anyhow::Result<String> {
        let mut grpc = self.grpc.clone();
        let mut steps: [Vec<Duration>; 4] = Default::default();
        let micros = |t: Option<prost_types::Timestamp>| {
            t.map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
        };
        for (id, sent, received) in ids {
            let (execution, events) = execution_with_events(&mut grpc, id).await?;
            let created = micros(execution.created_at);
            let at = |state: proto::ExecutionState| {
                events
                    .iter()
                    .find(|e| e.state == state as i32)
                    .map(|e| micros(e.timestamp))
            };
            let (Some(running), Some(done)) = (
                at(proto::ExecutionState::Running),
                at(proto::ExecutionState::Succeeded),
            ) else {
                continue;
            };
            let (sent, received) = (sent.timestamp_micros(), received.timestamp_micros());
            for (k, (a, b)) in [
                (sent, created),
                (created, running),
                (running, done),
                (done, received),
            ]
            .into_iter()
            .enumerate()
            {
                steps[k].push(Duration::from_micros((b - a).max(0) as u64));
            }
        }
        for s in &mut steps {
            s.sort();
        }
        Ok(format!(
            "sent → accepted {} (RPC, validation, plan: GET + dry-run PATCH, policy), \
             accepted → RUNNING {} (stored with its QUEUED event in one transaction, worker), \
             RUNNING → SUCCEEDED {} (GET + PATCH), SUCCEEDED → response {} (the terminal \
             event made durable, the reply)",
            ms(percentile(&steps[0], 0.5)),
            ms(percentile(&steps[1], 0.5)),
            ms(percentile(&steps[2], 0.5)),
            ms(percentile(&steps[3], 0.5)),
        ))
    }

    /// P4: many WatchExecution subscribers on one drain_node execution.
    async fn p4(&mut self) -> anyhow::Result<()> {
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

    /// P5: a store holding many executions, paged through gRPC by a second engine.
    async fn p5(&mut self) -> anyhow::Result<()> {
        let n = self.sizes.p5_executions;
        let calls = self.sizes.p5_calls;
        let rss_start = rss_kib();
        let path = self.dir.join("history.db");
        let store = store::open(&path.display().to_string()).await?;
        let fill_took = fill(store.clone(), n, 4).await?;
        let rss_filled = rss_kib();
        drop(store);
        // A server as `serve` would run over that history: a fresh pool, the built-in policy.
        let store = store::open(&path.display().to_string()).await?;
        let engine = Engine::new(
            engine_config(Some(store))?,
            Registry::builtin(),
            self.clusters.clone(),
        );
        let addr = serve(engine).await?;
        let mut grpc = ExecutorServiceClient::new(connect(addr).await?);
        let first = proto::ListExecutionsRequest::default();
        let depth = n * 9 / 10;
        let mut deep = proto::ListExecutionsRequest::default();
        let mut skipped = 0;
        while skipped < depth {
            let page = grpc
                .list_executions(proto::ListExecutionsRequest {
                    page_size: (depth - skipped).min(MAX_PAGE_SIZE) as u32,
                    page_token: deep.page_token.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            skipped += page.executions.len();
            deep.page_token = page.next_page_token;
            if deep.page_token.is_empty() {
                break;
            }
        }
        let pages = [
            ("first page".to_string(), first),
            (format!("deep page (after {depth})"), deep),
            (
                "filtered: state=FAILED".to_string(),
                proto::ListExecutionsRequest {
                    state: proto::ExecutionState::Failed as i32,
                    ..Default::default()
                },
            ),
            (
                "filtered: namespace=team-7".to_string(),
                proto::ListExecutionsRequest {
                    namespace: "team-7".into(),
                    ..Default::default()
                },
            ),
            (
                "filtered: state=ROLLED_BACK, namespace=team-7".to_string(),
                proto::ListExecutionsRequest {
                    state: proto::ExecutionState::RolledBack as i32,
                    namespace: "team-7".into(),
                    ..Default::default()
                },
            ),
        ];
        for (label, request) in pages {
            let mut times = Vec::with_capacity(calls);
            let mut rows = 0;
            for _ in 0..calls {
                let t = Instant::now();
                rows = grpc
                    .list_executions(request.clone())
                    .await?
                    .into_inner()
                    .executions
                    .len();
                times.push(t.elapsed());
            }
            times.sort();
            self.rows.push(
                Row::new("P5", format!("ListExecutions {label}")).executor(format!(
                    "p50 {} / p99 {} ({rows} rows)",
                    ms(percentile(&times, 0.50)),
                    ms(percentile(&times, 0.99))
                )),
            );
        }
        let rss_end = rss_kib();
        let peak = rss_end.max(rss_filled);
        self.rows.push(
            Row::new("P5", format!("process RSS with {n} stored executions"))
                .executor(format!("{:.1} MiB", peak as f64 / 1024.0))
                .target("≤ 200 MB", peak as f64 * 1024.0 <= 200e6),
        );
        let db: u64 = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
            .map(|m| m.len())
            .sum();
        self.notes.push(format!(
            "P5: {n} executions (~5 events each) inserted through the Store trait by 4 writers in \
             {:.1} s ({:.0}/s); SQLite files {:.1} MiB. A second engine serves them; {calls} \
             ListExecutions calls per row (page size 50). RSS {:.1} MiB at the start of P5 \
             (simulated cluster, first engine), {:.1} MiB after filling, {:.1} MiB after \
             measuring.",
            fill_took.as_secs_f64(),
            n as f64 / fill_took.as_secs_f64(),
            db as f64 / (1024.0 * 1024.0),
            rss_start as f64 / 1024.0,
            rss_filled as f64 / 1024.0,
            rss_end as f64 / 1024.0,
        ));
        Ok(())
    }

    fn report(&self, args: &Args, took: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# executor-service benchmark run\n");
        let _ = writeln!(
            out,
            "- when: {}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let _ = writeln!(out, "- machine: {}", machine());
        let _ = writeln!(
            out,
            "- build: {}{}",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            if args.smoke {
                ", smoke mode (tiny counts; no timing is meaningful)"
            } else {
                ""
            }
        );
        let command: Vec<String> = std::env::args().collect();
        let _ = writeln!(out, "- command: `{}`", command.join(" "));
        let _ = writeln!(
            out,
            "- setup: simulated cluster (speed {}) and executor in one process, gRPC on \
             127.0.0.1; engine as `serve` runs it ({} policy, history: {}) with {} workers, \
             no namespace limit, no cooldown",
            args.speed,
            if args.no_policy { "no" } else { "built-in" },
            match args.engine_store.as_str() {
                "sqlite" => "SQLite file",
                "none" => "none",
                other => other,
            },
            P2_LEVELS[P2_LEVELS.len() - 1]
        );
        let _ = writeln!(out, "- total time: {:.1} s\n", took.as_secs_f64());
        let _ = writeln!(
            out,
            "| Part | Measure | executor-service | Baseline | Ratio | Target | Met |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
        let order = |p: &str| ["P1", "P2", "P3", "P4", "P5"].iter().position(|x| *x == p);
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| order(r.part));
        for r in rows {
            let met = match r.met {
                Some(true) if !r.target.is_empty() => "yes",
                Some(false) => "**no**",
                _ => "",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.part, r.measure, r.executor, r.baseline, r.ratio, r.target, met
            );
        }
        let _ = writeln!(out);
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
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

/// The deployments P1 restarts: one for the executor, one for the direct calls.
fn p1_targets() -> [String; 2] {
    ["p1-executor".to_string(), "p1-direct".to_string()]
}

/// The engine as `serve` configures it by default, except the limits the benchmark is about:
/// enough workers for P2's 64 clients, no per-namespace limit, no cooldown.
fn engine_config(store: Option<Arc<dyn Store>>) -> anyhow::Result<EngineConfig> {
    Ok(EngineConfig {
        workers: P2_LEVELS[P2_LEVELS.len() - 1],
        namespace_limit: 0,
        policy: Some(Arc::new(Policy::builtin(&PolicyConfig::default())?)),
        store,
        ..EngineConfig::default()
    })
}

/// Serves `engine` on 127.0.0.1:0 for the rest of the process.
async fn serve(engine: Engine) -> anyhow::Result<std::net::SocketAddr> {
    let listener = api::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(api::serve(listener, engine, futures::future::pending()));
    Ok(addr)
}

/// A gRPC channel (one HTTP/2 connection) to `addr`.
async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return Ok(channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("gRPC server at {addr} did not come up")
}

fn mk_request(
    action: &str,
    namespace: &str,
    kind: &str,
    name: &str,
    params: Value,
) -> proto::ExecuteRequest {
    proto::ExecuteRequest {
        action: action.into(),
        target: Some(proto::Target {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        }),
        parameters: Some(to_struct(&params)),
        ..Default::default()
    }
}

/// A JSON object as a protobuf Struct.
fn to_struct(v: &Value) -> prost_types::Struct {
    fn value(v: &Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(value).collect(),
            }),
            Value::Object(_) => Kind::StructValue(to_struct(v)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            .unwrap_or_default(),
    }
}

/// restart_pod through the executor: Execute, then WatchExecution to the terminal event.
/// Returns the replacement pod.
async fn executor_restart(
    grpc: &mut ExecutorServiceClient<Channel>,
    pod: &str,
) -> anyhow::Result<String> {
    let execution = grpc
        .execute(mk_request(
            "restart_pod",
            NS,
            "Pod",
            pod,
            json!({"wait_ready": false}),
        ))
        .await?
        .into_inner()
        .execution
        .ok_or_else(|| anyhow!("no execution"))?;
    let mut stream = grpc
        .watch_execution(proto::WatchExecutionRequest {
            execution_id: execution.id,
            from_sequence: 0,
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await? {
        last = message.event;
    }
    let last = last.ok_or_else(|| anyhow!("no events"))?;
    if last.state != proto::ExecutionState::Succeeded as i32 {
        bail!(
            "restart of {pod} ended in state {}: {}",
            last.state,
            last.message
        );
    }
    match last
        .details
        .and_then(|d| d.fields.get("replacement_pod").cloned())
        .and_then(|v| v.kind)
    {
        Some(prost_types::value::Kind::StringValue(name)) => Ok(name),
        _ => bail!("restart of {pod}: no replacement_pod in the terminal event"),
    }
}

/// restart_pod done directly: the executor's API calls (plan, then execution) with kube-rs.
/// Returns the replacement pod.
async fn direct_restart(client: &kube::Client, name: &str) -> anyhow::Result<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let delete = |pod: &Pod, dry_run: bool| DeleteParams {
        dry_run,
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    // What admission does: look, and let the API server check the delete.
    let pod = api.get(name).await?;
    api.delete(name, &delete(&pod, true)).await?;
    // What the execution does.
    let pod = api.get(name).await?;
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
        .ok_or_else(|| anyhow!("pod {name} has no controller"))?;
    let selector: Vec<String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let selector = selector.join(",");
    let existing: BTreeSet<String> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let mut pods = watcher(api.clone(), watcher::Config::default().labels(&selector))
        .default_backoff()
        .applied_objects()
        .boxed();
    api.delete(name, &delete(&pod, false)).await?;
    let old_uid = pod.metadata.uid.unwrap_or_default();
    while let Some(candidate) = pods.next().await {
        let Ok(candidate) = candidate else { continue };
        let uid = candidate.metadata.uid.clone().unwrap_or_default();
        let owned = candidate
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == owner);
        if owned
            && uid != old_uid
            && !existing.contains(&uid)
            && candidate.metadata.deletion_timestamp.is_none()
        {
            return Ok(candidate.metadata.name.unwrap_or_default());
        }
    }
    bail!("pod watch ended")
}

/// scale_deployment of deployment/p3 through the executor, until it is SUCCEEDED.
/// An execution and its events, through GetExecution.
async fn execution_with_events(
    grpc: &mut ExecutorServiceClient<Channel>,
    id: &str,
) -> anyhow::Result<(proto::Execution, Vec<proto::ExecutionEvent>)> {
    let r = grpc
        .get_execution(proto::GetExecutionRequest {
            execution_id: id.to_string(),
            include_events: true,
        })
        .await?
        .into_inner();
    Ok((r.execution.unwrap_or_default(), r.events))
}

async fn executor_scale(
    grpc: &mut ExecutorServiceClient<Channel>,
    replicas: u32,
) -> anyhow::Result<String> {
    let mut request = mk_request(
        "scale_deployment",
        NS,
        "Deployment",
        "p3",
        json!({"replicas": replicas, "wait_for_rollout": false}),
    );
    request.wait = true;
    let execution = grpc
        .execute(request)
        .await?
        .into_inner()
        .execution
        .ok_or_else(|| anyhow!("no execution"))?;
    if execution.state != proto::ExecutionState::Succeeded as i32 {
        bail!(
            "scale ended in state {}: {}",
            execution.state,
            execution.message
        );
    }
    Ok(execution.id)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// This process's resident memory in KiB (VmRSS).
fn rss_kib() -> u64 {
    proc_field("/proc/self/status", "VmRSS:")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn proc_field(path: impl AsRef<Path>, name: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_string())
}

/// nproc, memory and CPU model.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = proc_field("/proc/meminfo", "MemTotal:")
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map_or("?".to_string(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
        });
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpus} CPUs ({model}), {memory} memory, {}",
        std::env::consts::ARCH
    )
}
