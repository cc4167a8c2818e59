//! P6: worker-bound throughput with 1, 2 and 4 replicas on one PostgreSQL. Each replica is an
//! engine of its own (own pool, own listener, `--workers 4`), all in this process, sharing a
//! database created for the level and one simulated cluster whose clock makes a rolling
//! restart of a one-pod deployment hold a worker about a second. Executions are submitted
//! round-robin across the replicas and waited for; throughput is executions over the time
//! from the first submit to the last end.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use executor_service::{
    actions::Registry,
    cluster::Clusters,
    domain::{ExecutionRequest, ExecutionState, RequestedTarget},
    engine::{Engine, EngineConfig},
    sim::{self, Scenario, SimCluster, SimConfig},
    store,
};

use crate::harness::Bench;
use crate::report::Row;

/// Workers per replica.
const WORKERS: usize = 4;
/// Replica counts measured.
const LEVELS: [usize; 3] = [1, 2, 4];
/// Deployments restarted in turn (more than the workers of four replicas, so the per-object
/// order never limits).
const TARGETS: usize = 32;
/// Simulated clock: a pod starts 2 simulated seconds after it is bound, so a rollout of one
/// pod takes about a second.
const SPEED: f64 = 2.0;
const NAMESPACE: &str = "p6";

impl Bench {
    /// P6: throughput at each replica count, and its ratio to one replica.
    pub(crate) async fn p6(&mut self) -> anyhow::Result<()> {
        let Some(base) = self.postgres.clone() else {
            bail!("P6 needs PostgreSQL: --postgres URL (scripts/start-postgres writes one to target/pg/url)");
        };
        let rounds = self.sizes.p6_rounds;
        let mut scenario = Scenario::empty().with(sim::mk_namespace(NAMESPACE));
        for n in 2..=4 {
            scenario = scenario.with(sim::mk_node(&format!("node-{n}")));
        }
        for i in 0..TARGETS {
            scenario = scenario.with(sim::mk_deployment(
                NAMESPACE,
                &format!("w-{i}"),
                1,
                "nginx:1.25",
            ));
        }
        let cluster = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse()?,
            scenario,
            speed: SPEED,
        })
        .await?;
        cluster.wait_settled(Duration::from_secs(60)).await?;
        let mut single = None;
        for replicas in LEVELS {
            let executions = replicas * WORKERS * rounds;
            let (per_second, mean) = level(&cluster, &base, replicas, executions).await?;
            let base_rate = *single.get_or_insert(per_second);
            let ratio = per_second / base_rate;
            let row = Row::new(
                "P6",
                format!("throughput, {replicas} replica(s) × {WORKERS} workers"),
            )
            .executor(format!("{per_second:.2}/s"))
            .baseline(format!("{base_rate:.2}/s (1 replica)"))
            .ratio(format!("{ratio:.2}×"));
            self.rows.push(if replicas == 4 {
                row.target("≥ 3.5× at 4", ratio >= 3.5)
            } else {
                row
            });
            self.notes.push(format!(
                "P6, {replicas} replica(s): {executions} rolling restarts, each holding a worker \
                 {:.2} s on average",
                mean.as_secs_f64()
            ));
        }
        self.notes.push(format!(
            "P6: each replica an engine of its own in this process (own connection pool and \
             LISTEN connection, {WORKERS} workers) on a database created for the level; \
             {TARGETS} one-pod deployments restarted in turn on a simulated cluster at speed \
             {SPEED}; submitted round-robin across the replicas, all at once."
        ));
        Ok(())
    }
}

/// One level: `replicas` engines on a new database; returns executions per second and the
/// mean running time of one.
async fn level(
    cluster: &SimCluster,
    base: &str,
    replicas: usize,
    executions: usize,
) -> anyhow::Result<(f64, Duration)> {
    let url = fresh_database(base, replicas).await?;
    let mut engines = Vec::new();
    for _ in 0..replicas {
        let store = store::open(&url)
            .await
            .context("open the level's database")?;
        let clusters = Clusters::from_kubeconfig_value(cluster.kubeconfig(), None).await?;
        let config = EngineConfig {
            workers: WORKERS,
            queue_capacity: executions * 2,
            namespace_limit: 0,
            store: Some(store),
            ..EngineConfig::default()
        };
        engines.push(Engine::new(config, Registry::builtin(), clusters));
    }
    let start = Instant::now();
    let mut ids = Vec::with_capacity(executions);
    for i in 0..executions {
        let request = ExecutionRequest {
            action: "rolling_restart_deployment".into(),
            target: RequestedTarget {
                namespace: NAMESPACE.into(),
                kind: "Deployment".into(),
                name: format!("w-{}", i % TARGETS),
                ..Default::default()
            },
            ..Default::default()
        };
        let accepting = &engines[i % replicas];
        ids.push((i % replicas, accepting.submit(request).await?.id));
    }
    let mut running = Duration::ZERO;
    for (replica, id) in &ids {
        let view = engines[*replica].wait(id).await?;
        if view.state != ExecutionState::Succeeded {
            bail!(
                "P6 execution {id} ended {}: {}",
                view.state.as_str(),
                view.message
            );
        }
        if let (Some(started), Some(finished)) = (view.started_at, view.finished_at) {
            running += (finished - started).to_std().unwrap_or_default();
        }
    }
    let elapsed = start.elapsed();
    for engine in &engines {
        engine.shutdown(Duration::from_secs(5)).await;
    }
    Ok((
        executions as f64 / elapsed.as_secs_f64(),
        running / executions.max(1) as u32,
    ))
}

/// A new database on the server of `base`, for one level; its URL.
async fn fresh_database(base: &str, replicas: usize) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("bench_p6_{}_{replicas}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(base).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .context("CREATE DATABASE (the role needs CREATEDB)")?;
    let _ = conn.close().await;
    let (server, _) = base
        .rsplit_once('/')
        .context("a database name in the PostgreSQL URL")?;
    Ok(format!("{server}/{name}"))
}
