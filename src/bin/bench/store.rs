//! `bench store`: fills a store with realistic executions (default 100,000, ~5 events each)
//! through the `Store` trait, then measures ListExecutions page latency (first page, a deep
//! page, filtered pages; p50/p99) and the process's resident memory. No gRPC, no cluster: the
//! store alone, any backend (P5 measures the same history through the API).
//!
//! ```text
//! cargo run --release --bin bench -- store                      # SQLite file in a temp dir
//! cargo run --release --bin bench -- store --store target/bench.db   # reused when present
//! cargo run --release --bin bench -- store --store "$(cat target/pg/url)"
//! ```

use std::sync::Arc;
use std::time::Instant;

use executor_service::domain::{ExecutionState, ListFilter};
use executor_service::store::{self, Store};

use crate::history::fill;
use crate::machine::rss_and_peak;
use crate::report::percentile;

/// Measure the execution history store.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
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

async fn fill_and_report(
    store: Arc<dyn Store>,
    n: usize,
    writers: usize,
) -> Result<(), store::StoreError> {
    let took = fill(store, n, writers).await?;
    println!(
        "filled {n} executions (+{} events) in {:.1} s: {:.0} executions/s",
        n * 5,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Fills (unless it already holds executions) and measures the store `args` name.
pub(crate) async fn run(args: &StoreArgs) -> anyhow::Result<()> {
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
    println!("at start: {}", rss_and_peak());
    let store = store::open(&url).await?;
    let (probe, _) = store
        .list(&ListFilter {
            page_size: 1,
            ..Default::default()
        })
        .await?;
    if probe.is_empty() {
        fill_and_report(store.clone(), args.executions, args.writers).await?;
        println!("after filling: {}", rss_and_peak());
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
    println!("after measuring: {}", rss_and_peak());
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
