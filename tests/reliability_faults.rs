//! A small R2 in CI: 40 executions of five actions (scale_deployment with and without its
//! rollout, rolling_restart_deployment, restart_pod, cordon_node/uncordon_node) on many
//! targets while the simulated API server fails a fifth of all requests, watches included.
//! Every execution ends within its timeout, loses no event, takes its turn on its object, and
//! a SUCCEEDED one leaves its change in the cluster; one that did not succeed leaves the
//! pre-state or says what it changed. The load and the judgement are the benchmark's
//! (`src/bin/bench/chaos.rs`), included here so that both apply the same rules. No timing is
//! asserted.

mod common;

#[allow(dead_code)]
#[path = "../src/bin/bench/chaos.rs"]
mod chaos;

use std::sync::Arc;
use std::time::Duration;

use common::Harness;
use executor_service::{
    engine::EngineConfig,
    policy::{Policy, PolicyConfig},
    sim::Scenario,
};

/// Executions of the run: a few per target, so that executions queue on each object.
const EXECUTIONS: usize = 40;
/// Executions in flight at once.
const CLIENTS: usize = 16;

fn mk_config() -> EngineConfig {
    // As `serve` runs it, but without the cooldown: executions on one object take turns.
    EngineConfig {
        workers: CLIENTS,
        policy: Some(Arc::new(
            Policy::builtin(&PolicyConfig::default()).expect("the built-in policy"),
        )),
        ..EngineConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_api_faults_every_execution_ends_loses_no_event_takes_turns_and_leaves_its_change() {
    let layout = chaos::Layout::for_executions(EXECUTIONS);
    let scenario = layout
        .objects()
        .into_iter()
        .fold(Scenario::empty(), Scenario::with);
    let h = Harness::start(mk_config(), scenario).await;
    h.sim
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("the scenario settles");
    let pods = chaos::pod_targets(&h.kube).await.expect("list the pods");
    let plan = chaos::plan(&layout, &pods);

    for rule in chaos::fault_rules() {
        h.sim.faults().add(rule);
    }
    let runs = chaos::run(h.grpc().await, plan, CLIENTS).await;
    h.sim.faults().clear();

    let injected = h.sim.faults().stats();
    assert!(
        injected.error_total() > 0,
        "no error was injected: {injected:?}"
    );
    let cluster = chaos::read_back(&h.kube)
        .await
        .expect("read the targets back");
    assert_eq!(h.sim.writes().dropped(), 0, "the record of writes is whole");
    let verdict = chaos::judge(&runs, &h.sim.writes().all(), &cluster);
    let findings = verdict.findings(10);
    assert!(
        verdict.refused.is_empty(),
        "refused on every attempt: {:?}",
        verdict.refused
    );
    assert_eq!(verdict.admitted, EXECUTIONS);
    assert_eq!(verdict.terminal, EXECUTIONS, "not all ended:\n{findings}");
    assert!(verdict.stuck.is_empty(), "stuck:\n{findings}");
    assert!(verdict.over_time.is_empty(), "over time:\n{findings}");
    assert!(verdict.lost.is_empty(), "lost events:\n{findings}");
    assert!(verdict.overlaps.is_empty(), "overlaps:\n{findings}");
    assert!(verdict.stray_writes.is_empty(), "stray writes:\n{findings}");
    assert!(
        verdict.missing_changes.is_empty(),
        "changes missing:\n{findings}"
    );
    assert!(
        verdict.unreported_changes.is_empty(),
        "changes unreported:\n{findings}"
    );
    assert_eq!(verdict.succeeded_verified, verdict.succeeded);
    assert_eq!(verdict.others_verified, verdict.others);
    assert!(verdict.succeeded > 0, "nothing succeeded: {verdict:?}");
}
