//! R2: a mixed load of executions while the API server fails a fifth of all requests (the
//! workload and the judgement are `chaos`'s, shared with `tests/reliability_faults.rs`), on a
//! simulated cluster and an engine of its own so that no other part sees the faults.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;
use executor_service::{
    actions::Registry,
    api::proto::executor_service_client::ExecutorServiceClient,
    cluster::Clusters,
    engine::Engine,
    sim::{Scenario, SimCluster, SimConfig},
};

use crate::chaos::{self, Layout};
use crate::harness::{connect, serve, Bench};
use crate::report::{ms, percentile, Row};

/// Executions in flight at once: each client asks for one, follows it to its end, then takes
/// the next. Below the 100 streams a server allows per HTTP/2 connection.
const CLIENTS: usize = 64;

impl Bench {
    /// R2: every execution of the load ends within its timeout, loses no event, takes turns
    /// on its object and, when it succeeded, leaves its change in the cluster.
    pub(crate) async fn r2(&mut self) -> anyhow::Result<()> {
        let layout = Layout::for_executions(self.sizes.r2_executions);
        let scenario = layout
            .objects()
            .into_iter()
            .fold(Scenario::empty(), Scenario::with);
        let sim = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse()?,
            scenario,
            speed: self.speed,
        })
        .await?;
        sim.wait_settled(Duration::from_secs(120)).await?;
        let kube = sim.client().await?;
        let plan = chaos::plan(&layout, &chaos::pod_targets(&kube).await?);
        let clusters = Clusters::from_kubeconfig_value(sim.kubeconfig(), None).await?;
        let engine = Engine::new(
            self.engine_config("r2.db").await?,
            Registry::builtin(),
            clusters,
        );
        let grpc = ExecutorServiceClient::new(connect(serve(engine).await?).await?);
        for rule in chaos::fault_rules() {
            sim.faults().add(rule);
        }
        let started = Instant::now();
        let runs = chaos::run(grpc, plan, CLIENTS).await;
        let took = started.elapsed();
        sim.faults().clear();
        let stats = sim.faults().stats();
        let cluster = chaos::read_back(&kube).await?;
        let writes = sim.writes();
        let v = chaos::judge(&runs, &writes.all(), &cluster);
        let dropped = writes.dropped();
        sim.shutdown().await;

        let zero = |n: usize| (n.to_string(), "0", n == 0);
        let all = |k: usize, n: usize| (format!("{k} of {n}"), "all", k == n);
        let state = |s: &str| v.by_state.get(s).copied().unwrap_or(0);
        let rows: Vec<(&str, (String, &str, bool))> = vec![
            (
                "executions admitted (Execute retried while the cluster's errors refuse it)",
                (
                    format!(
                        "{} of {} ({} retries: {})",
                        v.admitted,
                        layout.executions,
                        v.retries,
                        v.retries_by_action
                            .iter()
                            .map(|(action, n)| format!("{action} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "all",
                    v.refused.is_empty(),
                ),
            ),
            (
                "reached a terminal state",
                (
                    format!(
                        "{:.1}% ({} of {})",
                        100.0 * v.terminal as f64 / v.admitted.max(1) as f64,
                        v.terminal,
                        v.admitted
                    ),
                    "100%",
                    v.terminal == v.admitted,
                ),
            ),
            (
                "succeeded / failed / rolled back / other",
                (
                    format!(
                        "{} / {} / {} / {}",
                        state("SUCCEEDED"),
                        state("FAILED"),
                        state("ROLLED_BACK"),
                        v.terminal - state("SUCCEEDED") - state("FAILED") - state("ROLLED_BACK")
                    ),
                    "",
                    true,
                ),
            ),
            ("stuck (no terminal event in time)", zero(v.stuck.len())),
            ("ended later than their timeout", zero(v.over_time.len())),
            (
                "lost events (live WatchExecution, GetExecution)",
                zero(v.lost.len()),
            ),
            (
                "overlapping executions on one object",
                zero(v.overlaps.len()),
            ),
            (
                "writes outside every execution on the object",
                zero(v.stray_writes.len()),
            ),
            (
                "SUCCEEDED whose change is in the cluster",
                all(v.succeeded_verified, v.succeeded),
            ),
            (
                "others that left the pre-state or report their change",
                all(v.others_verified, v.others),
            ),
            (
                "did not succeed on an injected error: at once / after every retry",
                (
                    v.transient_failures
                        .iter()
                        .map(|(action, (at_once, retried))| {
                            format!("{action} {at_once} / {retried}")
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    "",
                    true,
                ),
            ),
            (
                "duration p50 / p99 (RUNNING → terminal)",
                (
                    format!(
                        "{} / {}",
                        ms(percentile(&v.durations, 0.5)),
                        ms(percentile(&v.durations, 0.99))
                    ),
                    "",
                    true,
                ),
            ),
            (
                "API errors injected (all verbs, watch included)",
                (
                    format!(
                        "{} of {} requests ({:.1}%): {}",
                        stats.error_total(),
                        stats.requests,
                        100.0 * stats.error_total() as f64 / stats.requests.max(1) as f64,
                        stats
                            .errors
                            .iter()
                            .map(|(code, n)| format!("{code} ×{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "",
                    true,
                ),
            ),
            (
                "writes answered with an injected error (the record)",
                (
                    v.write_faults
                        .iter()
                        .map(|(code, n)| format!("{code} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    "",
                    true,
                ),
            ),
        ];
        for (measure, (value, target, met)) in rows {
            let row = Row::new("R2", measure).executor(value);
            self.rows.push(if target.is_empty() {
                row
            } else {
                row.target(target, met)
            });
        }
        let mut by_action = String::new();
        for (action, states) in &v.by_action {
            let counts: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
            let _ = write!(by_action, "{action}: {}; ", counts.join(", "));
        }
        self.notes.push(format!(
            "R2: {} executions ({} clients at a time, each following its execution to the end) \
             on {} deployments scaled and restarted in turns, the pods of {} more restarted \
             once each, and {} nodes cordoned and uncordoned in turns, while the API server answered {:.0}% of \
             requests on every verb with 503/429/409/500 and delayed {:.0}% by {} ms; timeout \
             {} s each; {:.1} s in all. Engine as P1–P4's, own simulated cluster. By action: {}",
            layout.executions,
            CLIENTS,
            layout.deployments,
            layout.pod_deployments,
            layout.nodes,
            chaos::ERROR_SHARE * 100.0,
            chaos::ERROR_SHARE * 100.0,
            chaos::FAULT_LATENCY.as_millis(),
            chaos::TIMEOUT.as_secs(),
            took.as_secs_f64(),
            by_action.trim_end_matches("; ")
        ));
        for (action, examples) in &v.failure_examples {
            self.notes.push(format!(
                "R2 {action} did not succeed, e.g.: {}",
                examples.join(" | ")
            ));
        }
        for why in v.refused.iter().take(3) {
            self.notes
                .push(format!("R2 refused on every attempt: {why}"));
        }
        if dropped > 0 {
            bail!(
                "the record of writes dropped {dropped} writes: the overlaps were not all judged"
            );
        }
        if v.violations() > 0 {
            let findings = v.findings(5);
            for line in findings.lines() {
                self.notes.push(format!("**R2 {line}**"));
            }
            bail!("{} broken invariants:\n{findings}", v.violations());
        }
        Ok(())
    }
}
