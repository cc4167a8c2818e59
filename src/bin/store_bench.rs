//! Fills a store with realistic executions (default 100,000, ~5 events each) through the
//! `Store` trait, then measures ListExecutions page latency (first page, a deep page, filtered
//! pages; p50/p99) and the process's resident memory.
//!
//! ```text
//! cargo run --release --bin store_bench                      # SQLite file in a temp dir
//! cargo run --release --bin store_bench -- --store target/bench.db   # reused when present
//! cargo run --release --bin store_bench -- --store "$(cat target/pg/url)"
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use clap::Parser;
use executor_service::actions::Target;
use executor_service::engine::model::{
    AlertContext, Event, ExecutionState, ExecutionView, ListFilter,
};
use executor_service::store::{self, Store};
use serde_json::json;

/// Measure the execution history store.
#[derive(Debug, Parser)]
struct Args {
    /// Store to fill and measure (path, sqlite://, postgres://). Default: a fresh SQLite file
    /// in a temporary directory, deleted at the end. An existing store that already holds
    /// executions is measured as it is, without filling.
    #[arg(long)]
    store: Option<String>,
    /// Executions to store.
    #[arg(long, default_value_t = 100_000)]
    executions: usize,
    /// Timed calls per measurement.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Concurrent writers while filling (the engine writes from many tasks too).
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

const ACTIONS: [&str; 8] = [
    "scale_deployment",
    "rolling_restart_deployment",
    "restart_pod",
    "rollback_deployment",
    "increase_resources",
    "cordon_node",
    "drain_node",
    "notify_only",
];

/// Deterministic pseudo-random numbers (splitmix64), so two runs store the same history.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Execution `i` of the history: 30 days, newest last; mostly successes.
fn mk_execution(i: usize) -> (ExecutionView, Vec<Event>) {
    let r = mix(i as u64);
    let state = match r % 100 {
        0..=84 => ExecutionState::Succeeded,
        85..=92 => ExecutionState::Failed,
        93..=95 => ExecutionState::TimedOut,
        96..=97 => ExecutionState::Cancelled,
        _ => ExecutionState::RolledBack,
    };
    let created_at = Utc.timestamp_opt(1_760_000_000, 0).unwrap()
        + chrono::Duration::milliseconds(i as i64 * 25_920)
        + chrono::Duration::microseconds((r % 1_000_000) as i64);
    let finished_at = created_at + chrono::Duration::seconds(5 + (r % 90) as i64);
    let ns = format!("team-{}", (r >> 8) % 20);
    let name = format!("svc-{}", (r >> 16) % 300);
    let view = ExecutionView {
        id: format!("{:016x}-{i:08}", r),
        action: ACTIONS[((r >> 24) % ACTIONS.len() as u64) as usize].to_string(),
        target: Target {
            cluster: "prod-eu-1".into(),
            namespace: ns.clone(),
            kind: "Deployment".into(),
            name: name.clone(),
        },
        parameters: json!({"replicas": (r >> 32) % 20, "reason": "p99 latency above SLO"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        request_id: format!("alertmanager-{i}"),
        alert: Some(AlertContext {
            name: "HighLatency".into(),
            severity: "critical".into(),
            labels: [
                ("team".to_string(), ns.clone()),
                ("service".to_string(), name.clone()),
            ]
            .into(),
            annotations: [(
                "runbook".to_string(),
                "https://runbooks.example.com/latency".to_string(),
            )]
            .into(),
        }),
        timeout: Duration::from_secs(120),
        state,
        message: format!("{} {ns}/deployment/{name}", state.as_str().to_lowercase()),
        created_at,
        started_at: Some(created_at + chrono::Duration::milliseconds(40)),
        finished_at: Some(finished_at),
        result: json!({"before": {"replicas": 3, "ready": 3}, "after": {"replicas": 5, "ready": 5}}),
        rollback_data: json!({"replicas": 3}),
        last_sequence: 5,
        requester: format!("oncall-{}@example.com", (r >> 40) % 10),
        policy: json!({"decision": "allow", "reasons": ["within change budget"]}),
        approval: serde_json::Value::Null,
        trace_id: format!("{:032x}", u128::from(r) << 64 | u128::from(mix(r))),
    };
    let steps = [
        (ExecutionState::Queued, "queued"),
        (ExecutionState::Running, "validated parameters and target"),
        (ExecutionState::Running, "patched spec.replicas 3 -> 5"),
        (
            ExecutionState::Running,
            "waiting for rollout: 4 of 5 updated replicas available",
        ),
        (
            state,
            "verified: deployment \"svc\" successfully rolled out",
        ),
    ];
    let events = steps
        .iter()
        .enumerate()
        .map(|(k, (state, message))| Event {
            sequence: k as u64 + 1,
            timestamp: created_at + chrono::Duration::seconds(k as i64),
            state: *state,
            message: message.to_string(),
            progress: Some((k as u64, 4)),
            details: json!({"observedGeneration": k + 1}),
            encoded: Default::default(),
        })
        .collect();
    (view, events)
}

/// Resident and peak resident memory of this process, from /proc/self/status.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!("VmRSS {} (peak VmHWM {})", field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Times `calls` identical list calls; prints p50/p99 and rows returned.
async fn measure(store: &dyn Store, label: &str, filter: &ListFilter, calls: usize) {
    let mut times = Vec::with_capacity(calls);
    let mut rows = 0;
    for _ in 0..calls {
        let start = Instant::now();
        match store.list(filter).await {
            Ok((page, _)) => rows = page.len(),
            Err(e) => {
                eprintln!("{label}: {e}");
                return;
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "{label:<44} p50 {:>9.3} ms   p99 {:>9.3} ms   ({rows} rows/page, {calls} calls)",
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
}

/// The token of the page that starts after `depth` executions (newest first).
async fn token_at(store: &dyn Store, depth: usize) -> Result<String, store::StoreError> {
    let mut filter = ListFilter {
        page_size: executor_service::engine::MAX_PAGE_SIZE,
        ..Default::default()
    };
    let mut skipped = 0;
    while skipped < depth {
        filter.page_size = (depth - skipped).min(executor_service::engine::MAX_PAGE_SIZE);
        let (page, next) = store.list(&filter).await?;
        skipped += page.len();
        if next.is_empty() {
            break;
        }
        filter.page_token = next;
    }
    Ok(filter.page_token)
}

async fn fill(store: Arc<dyn Store>, n: usize, writers: usize) -> Result<(), store::StoreError> {
    let writers = writers.max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(writers) {
                    let (view, events) = mk_execution(i);
                    store.insert(&view, "fingerprint").await?;
                    store.append_events(&view.id, &events).await?;
                }
                Ok::<_, store::StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| store::StoreError::Backend(e.to_string()))??;
    }
    let took = start.elapsed();
    println!(
        "filled {n} executions (+{} events) in {:.1} s: {:.0} executions/s",
        n * 5,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let temp = tempfile_dir()?;
    let url = match &args.store {
        Some(url) => url.clone(),
        None => temp.join("history.db").display().to_string(),
    };
    println!(
        "store {url}; build {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("at start: {}", rss());
    let store = store::open(&url).await?;
    let (probe, _) = store
        .list(&ListFilter {
            page_size: 1,
            ..Default::default()
        })
        .await?;
    if probe.is_empty() {
        fill(store.clone(), args.executions, args.writers).await?;
        println!("after filling: {}", rss());
    } else {
        println!("store already holds executions: measuring it as it is");
    }
    // Measure as a server would see it: a fresh pool over the stored history.
    drop(store);
    let store = store::open(&url).await?;
    let n = args.executions;
    let calls = args.calls;
    measure(&*store, "first page", &ListFilter::default(), calls).await;
    let deep = token_at(&*store, n * 9 / 10).await?;
    measure(
        &*store,
        &format!("deep page (after {} executions)", n * 9 / 10),
        &ListFilter {
            page_token: deep,
            ..Default::default()
        },
        calls,
    )
    .await;
    let filters = [
        (
            "filtered: state=FAILED",
            ListFilter {
                state: Some(ExecutionState::Failed),
                ..Default::default()
            },
        ),
        (
            "filtered: namespace=team-7",
            ListFilter {
                namespace: Some("team-7".into()),
                ..Default::default()
            },
        ),
        (
            "filtered: requester=oncall-3@example.com",
            ListFilter {
                requester: Some("oncall-3@example.com".into()),
                ..Default::default()
            },
        ),
        (
            "filtered: state=ROLLED_BACK, ns=team-7",
            ListFilter {
                state: Some(ExecutionState::RolledBack),
                namespace: Some("team-7".into()),
                ..Default::default()
            },
        ),
        (
            "filtered, none match: requester=nobody",
            ListFilter {
                requester: Some("nobody".into()),
                ..Default::default()
            },
        ),
    ];
    for (label, filter) in &filters {
        measure(&*store, label, filter, calls).await;
    }
    let mut deep_filtered = filters[0].1.clone();
    let (_, next) = store
        .list(&ListFilter {
            page_size: executor_service::engine::MAX_PAGE_SIZE,
            ..deep_filtered.clone()
        })
        .await?;
    deep_filtered.page_token = next;
    measure(
        &*store,
        "filtered deep: state=FAILED after 1000",
        &deep_filtered,
        calls,
    )
    .await;
    println!("after measuring: {}", rss());
    if args.store.is_none() {
        let db = temp.join("history.db");
        let size: u64 = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
            .map(|m| m.len())
            .sum();
        println!("database files: {:.1} MiB", size as f64 / (1024.0 * 1024.0));
        drop(store);
        let _ = std::fs::remove_dir_all(&temp);
    }
    Ok(())
}

/// A fresh directory for the default database.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("executor-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
