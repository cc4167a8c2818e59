//! P5: a SQLite store holding many executions (the synthetic history), paged through
//! ListExecutions by a second engine as `serve` would run it.

use std::time::Instant;

use executor_service::{
    actions::Registry,
    api::proto::{self, executor_service_client::ExecutorServiceClient},
    engine::{Engine, MAX_PAGE_SIZE},
    store,
};

use crate::harness::{connect, engine_config, serve, Bench};
use crate::history::fill;
use crate::machine::rss_kib;
use crate::report::{ms, percentile, Row};

impl Bench {
    /// P5: a store holding many executions, paged through gRPC by a second engine.
    pub(crate) async fn p5(&mut self) -> anyhow::Result<()> {
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
}
