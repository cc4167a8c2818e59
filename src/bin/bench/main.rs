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
//! - **R2 API faults**: 1,000 executions of five actions on many targets while the API server
//!   fails a fifth of all requests (503/429/409/500, watches included): every execution ends
//!   within its timeout, no event is lost, executions take turns on each object, and a
//!   SUCCEEDED one's change is in the cluster.
//! - **R4 burst**: 1,000 Execute calls from 200 clients against a queue of 100: the excess is
//!   refused at once with RESOURCE_EXHAUSTED, and the service answers normally right after.
//! - **P6 replicas**: worker-bound throughput of 1, 2 and 4 replicas (`--workers 4` each) on
//!   one PostgreSQL (`--postgres`), executions holding a worker about a second.
//!
//! `bench store` measures the history store alone instead, through the `Store` trait (any
//! backend, no gRPC, no cluster).
//!
//! ```text
//! cargo build --release --bin bench && target/release/bench --out BENCHMARKS-run.md
//! target/release/bench --only P1,P4
//! target/release/bench --only R2,R4 --out /tmp/reliability-run.md
//! cargo run --bin bench -- --smoke          # tiny counts, checks it works (CI)
//! target/release/bench store --store "$(cat target/pg/url)"
//! ```
//!
//! # Layout
//! - `main.rs`: the flags, the order of the parts, the markdown report.
//! - `harness`: the simulated cluster and the executor every part measures, and the gRPC
//!   helpers the parts share.
//! - `p1_latency`, `p2_throughput`, `p3_kubectl`, `p4_fanout`, `p5_history`, `p6_replicas`,
//!   `r2_faults`, `r4_burst`: one part each.
//! - `chaos`: R2's workload and judgement (`tests/reliability_faults.rs` runs R2 small).
//! - `store`: the `store` subcommand.
//! - `history`: the synthetic execution history P5 and `store` fill.
//! - `report`: a row of the table and how figures are written (percentile, ms, ratio).
//! - `machine`: facts from `/proc` (RSS, CPUs, memory).

#![forbid(unsafe_code)]

mod chaos;
mod harness;
mod history;
mod machine;
mod p1_latency;
mod p2_throughput;
mod p3_kubectl;
mod p4_fanout;
mod p5_history;
mod p6_replicas;
mod r2_faults;
mod r4_burst;
mod report;
mod store;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Parser, Subcommand};

use harness::{Bench, P2_LEVELS};

/// Simulated-cluster clock speed: rollouts and pod churn take milliseconds, so the figures
/// are the executor's and the API server's, not the simulated kubelet's.
const DEFAULT_SPEED: f64 = 50.0;
/// Every part, as `--only` names them, in the order of the report.
const PARTS: [&str; 8] = ["P1", "P2", "P3", "P4", "P5", "P6", "R2", "R4"];

/// Measure the executor against direct kube-rs calls and kubectl, in one run.
#[derive(Debug, Parser)]
#[command(name = "bench", args_conflicts_with_subcommands = true)]
struct Args {
    /// Tiny counts: checks every part works (no lost events) in well under a minute, even
    /// in a debug build. No timing is asserted.
    #[arg(long)]
    smoke: bool,
    /// Parts to run, comma-separated (P1,P2,P3,P4,P5,P6,R2,R4); default all (P6 only with
    /// `--postgres`).
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
    /// Executions of R2's load under API faults.
    #[arg(long)]
    r2_executions: Option<usize>,
    /// History of the engine P1–P4 measure: `sqlite` (a file in the temp directory, as
    /// `serve` runs), `none` (events published without waiting for a store), or a store URL
    /// (`memory:`, a path, `postgres://…`). For finding what the store costs.
    #[arg(long, default_value = "sqlite")]
    engine_store: String,
    /// Run the engine without a policy (the built-in one otherwise). For finding what the
    /// policy costs.
    #[arg(long)]
    no_policy: bool,
    /// PostgreSQL server for P6 (a database is created per level; the role needs CREATEDB).
    #[arg(long)]
    postgres: Option<String>,
    /// Instead of the parts: another measurement.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fill a store with realistic executions through the `Store` trait, then measure
    /// ListExecutions page latency and the process's resident memory.
    Store(store::StoreArgs),
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
    r2_executions: usize,
    /// R4: the engine's queue capacity, the Execute calls of the burst, the clients making them.
    r4_queue: usize,
    r4_burst: usize,
    r4_clients: usize,
    /// P6: executions per worker of every replica, per level.
    p6_rounds: usize,
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
                r2_executions: 12,
                r4_queue: 10,
                r4_burst: 100,
                r4_clients: 20,
                p6_rounds: 1,
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
                r2_executions: 1_000,
                r4_queue: 100,
                r4_burst: 1_000,
                r4_clients: 200,
                p6_rounds: 8,
            }
        };
        if !args.subscribers.is_empty() {
            sizes.p4_subscribers = args.subscribers.clone();
        }
        if let Some(n) = args.executions {
            sizes.p5_executions = n;
        }
        if let Some(n) = args.r2_executions {
            sizes.r2_executions = n;
        }
        sizes
    }
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
    if let Some(Command::Store(store_args)) = &args.command {
        return store::run(store_args).await;
    }
    let parts: BTreeSet<String> = if args.only.is_empty() {
        PARTS
            .iter()
            .filter(|p| **p != "P6" || args.postgres.is_some())
            .map(|p| p.to_string())
            .collect()
    } else {
        args.only.iter().map(|p| p.trim().to_uppercase()).collect()
    };
    if let Some(unknown) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        bail!(
            "--only: unknown part {unknown:?} (known: {})",
            PARTS.join(",")
        );
    }
    let sizes = Sizes::of(&args);
    let started = Instant::now();
    let mut bench = Bench::start(&args, sizes).await?;
    let mut failures = Vec::new();
    // P5 first: its RSS figure is then the history's, not what 10,000 streams left behind.
    // R2 and R4 last, each on a cluster and an engine of its own.
    for part in ["P5", "P1", "P2", "P3", "P4", "P6", "R2", "R4"] {
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
            "R2" => bench.r2().await,
            "R4" => bench.r4().await,
            "P6" => bench.p6().await,
            _ => bench.p5().await,
        };
        eprintln!("   {part} took {:.1} s", t.elapsed().as_secs_f64());
        if let Err(e) = result {
            eprintln!("{part} failed: {e:#}");
            bench.notes.push(format!("**{part} failed**: {e:#}"));
            failures.push(part);
        }
    }
    let report = render(&bench, &args, started.elapsed());
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

/// The markdown report: how the run was made, the table (by part), then the notes.
fn render(bench: &Bench, args: &Args, took: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# executor-service benchmark run\n");
    let _ = writeln!(
        out,
        "- when: {}",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let _ = writeln!(out, "- machine: {}", machine::machine());
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
         no namespace limit, no cooldown (R2 and R4: a cluster and an engine of their own, \
         see the notes)",
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
    let order = |p: &str| PARTS.iter().position(|x| *x == p);
    let mut rows: Vec<&report::Row> = bench.rows.iter().collect();
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
    for note in &bench.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}
