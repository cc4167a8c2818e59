//! Reliability runs against the real binary, judged by the simulated cluster's own record of
//! client writes (`GET /sim/v1/writes`) rather than by the executor's account of itself.
//!
//! R3: `serve` is SIGKILLed with 100 executions in flight on a cluster in its own process
//! (so the cluster outlives it) and restarted on the same history: every execution is
//! accounted for, and nothing is re-applied.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{mk_request, mk_target, run_to_end, ServeProcess, SimProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecuteRequest, Execution, ExecutionState,
    GetExecutionRequest, ListExecutionsRequest,
};
use serde_json::{json, Value};
use tonic::transport::Channel;

/// Executions in flight when the server is killed.
const EXECUTIONS: usize = 100;
/// The demo scenario's deployments, taken in turn: a few run at once, the rest queue behind
/// the per-object locks.
const DEPLOYMENTS: [(&str, &str); 4] = [
    ("production", "web"),
    ("production", "api"),
    ("production", "worker"),
    ("staging", "web"),
];
/// Finished executions seen before the kill: some history behind it, most still ahead.
const SUCCEEDED_BEFORE_KILL: usize = 8;
/// `serve` without request throttling: the 100 go in as fast as it admits them.
const SERVE_FLAGS: [&str; 2] = ["--rate-limit", "0"];

/// The memory limit execution `i` sets: a value no other execution carries, so the cluster's
/// record tells whose change each write was. Rising with `i`, as each deployment's queue runs
/// in order and `increase_resources` never lowers.
fn memory_limit(i: usize) -> String {
    format!("{}Mi", 1001 + i)
}

/// How a write's body carries `memory` (JSON-quoted, so `1001Mi` never matches `11001Mi`).
fn carries(write: &Value, memory: &str) -> bool {
    write["body"]
        .as_str()
        .is_some_and(|body| body.replace(' ', "").contains(&format!("\"{memory}\"")))
}

/// Execution `i`: raise the memory limit of a deployment, with its own request_id.
fn mk_numbered(i: usize) -> ExecuteRequest {
    let (namespace, name) = DEPLOYMENTS[i % DEPLOYMENTS.len()];
    let mut request = mk_request(
        "increase_resources",
        mk_target(namespace, "Deployment", name),
        json!({ "memory_limit": memory_limit(i) }),
    );
    request.request_id = format!("r3-{i:03}");
    // A rollback writes back the template before: the previous execution's value, which
    // would blur whose write is whose.
    request.rollback_on_failure = Some(false);
    request
}

async fn connect(addr: &str) -> ExecutorServiceClient<Channel> {
    ExecutorServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// Every execution, newest first (one page holds them all).
async fn list_all(client: &mut ExecutorServiceClient<Channel>) -> Vec<Execution> {
    client
        .list_executions(ListExecutionsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list executions")
        .into_inner()
        .executions
}

fn count(executions: &[Execution], state: ExecutionState) -> usize {
    executions
        .iter()
        .filter(|e| e.state == state as i32)
        .count()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}

/// The cluster's writes that changed something (not dry runs, answered 2xx).
async fn applied_writes(sim: &SimProcess) -> Vec<Value> {
    common::applied_writes(&sim.writes().await)
}

/// How an execution the restarted server found unfinished was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Interrupted {
    /// It was running: what it did is unknown, it is not re-applied.
    WhileRunning,
    /// It had not started: nothing was changed.
    BeforeStart,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_with_100_executions_in_flight_restarts_with_each_accounted_for_and_none_reapplied(
) {
    let began = Instant::now();
    let sim = SimProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("history.db");
    let mut first = ServeProcess::on_cluster(&sim.kubeconfig, &store, &SERVE_FLAGS);
    let mut client = connect(&first.addr).await;

    let requests: Vec<ExecuteRequest> = (0..EXECUTIONS).map(mk_numbered).collect();
    let mut ids = Vec::with_capacity(EXECUTIONS);
    for request in &requests {
        let execution = client
            .execute(request.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", request.request_id))
            .into_inner()
            .execution
            .expect("an execution");
        ids.push(execution.id);
    }

    // Kill once some have finished, while some are running and the rest wait.
    let at_kill = loop {
        let listed = list_all(&mut client).await;
        if count(&listed, ExecutionState::Succeeded) >= SUCCEEDED_BEFORE_KILL
            && count(&listed, ExecutionState::Running) > 0
        {
            first.child.kill().expect("SIGKILL the server");
            break listed;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "never {SUCCEEDED_BEFORE_KILL} succeeded with one running: {:?}",
            listed
                .iter()
                .map(|e| (e.state, e.message.as_str()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.child.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(at_kill.len(), EXECUTIONS);
    // Requests the dead process had already sent may still be answered; then the cluster
    // hears nothing more of it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let restarted_at = Utc::now();
    let restarting = Instant::now();
    let second = ServeProcess::on_cluster(&sim.kubeconfig, &store, &SERVE_FLAGS);
    let time_to_restart = restarting.elapsed();
    let serving_after_kill = killed.elapsed();
    let mut client = connect(&second.addr).await;

    // Every request_id is the execution it was: the same request gives the same id.
    for (request, id) in requests.iter().zip(&ids) {
        let again = client
            .execute(request.clone())
            .await
            .unwrap_or_else(|e| panic!("{} after the restart: {e:?}", request.request_id))
            .into_inner()
            .execution
            .expect("an execution");
        assert_eq!(
            &again.id, id,
            "{} became another execution after the restart",
            request.request_id
        );
    }
    // ...and each ended: finished before the kill, or interrupted by it.
    let mut states = Vec::with_capacity(EXECUTIONS);
    let mut interrupted = HashMap::new();
    for (request, id) in requests.iter().zip(&ids) {
        let got = client
            .get_execution(GetExecutionRequest {
                execution_id: id.clone(),
                include_events: true,
            })
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", request.request_id))
            .into_inner();
        let execution = got.execution.expect("an execution");
        let state = ExecutionState::try_from(execution.state).unwrap();
        assert!(
            matches!(
                state,
                ExecutionState::Succeeded | ExecutionState::Failed | ExecutionState::Interrupted
            ),
            "{} is {state:?} after the restart: {}",
            request.request_id,
            execution.message
        );
        if state == ExecutionState::Interrupted {
            let last = got.events.last().expect("events");
            assert_eq!(last.state, ExecutionState::Interrupted as i32);
            let how = if last.message.contains("it was not re-applied") {
                Interrupted::WhileRunning
            } else if last.message.contains("nothing was changed") {
                Interrupted::BeforeStart
            } else {
                panic!("{}: {}", request.request_id, last.message)
            };
            interrupted.insert(id.clone(), how);
        }
        states.push(state);
    }
    // The restarted server serves: a new execution on a deployment the kill left behind.
    let (namespace, name) = DEPLOYMENTS[0];
    let after = run_to_end(
        &mut client,
        "increase_resources",
        mk_target(namespace, "Deployment", name),
        json!({ "memory_limit": "2000Mi" }),
    )
    .await;
    assert_eq!(
        after.state,
        ExecutionState::Succeeded as i32,
        "{}",
        after.message
    );

    // The cluster's account: each execution's change reached it at most once, those that had
    // not started never, and none of the 100 after the restart (the new one exactly once).
    let writes = applied_writes(&sim).await;
    let mut per_execution: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, (request, id)) in requests.iter().zip(&ids).enumerate() {
        let memory = memory_limit(i);
        let own: Vec<&Value> = writes.iter().filter(|w| carries(w, &memory)).collect();
        *per_execution.entry(own.len()).or_default() += 1;
        let state = states[i];
        assert!(
            own.len() <= 1,
            "{} ({state:?}) was applied {} times: {own:#?}",
            request.request_id,
            own.len()
        );
        if state == ExecutionState::Succeeded {
            assert_eq!(own.len(), 1, "{} succeeded unwritten", request.request_id);
        }
        if interrupted.get(id) == Some(&Interrupted::BeforeStart) {
            assert!(
                own.is_empty(),
                "{} is INTERRUPTED as never started, yet its change was applied: {own:#?}",
                request.request_id
            );
        }
        for w in &own {
            assert!(
                time(&w["startedAt"]) < restarted_at,
                "{} ({state:?}) was re-applied after the restart at {restarted_at}: {w:#}",
                request.request_id
            );
        }
    }
    let new_writes = writes.iter().filter(|w| carries(w, "2000Mi")).count();
    assert_eq!(new_writes, 1, "the new execution's change, once");

    // Nor does the restarted server hold any work of its own: it runs nothing it was not asked
    // to run.
    let unfinished: Vec<(String, String)> = list_all(&mut client)
        .await
        .into_iter()
        .filter(|e| {
            !matches!(
                ExecutionState::try_from(e.state),
                Ok(ExecutionState::Succeeded
                    | ExecutionState::Failed
                    | ExecutionState::Interrupted)
            )
        })
        .map(|e| (e.id, e.message))
        .collect();
    assert!(
        unfinished.is_empty(),
        "the restarted server has work nobody asked for: {unfinished:?}"
    );

    let interrupted_while_running = interrupted
        .values()
        .filter(|how| **how == Interrupted::WhileRunning)
        .count();
    assert!(
        interrupted_while_running > 0,
        "the kill came while executions ran, yet none was interrupted running"
    );
    let succeeded = states
        .iter()
        .filter(|s| **s == ExecutionState::Succeeded)
        .count();
    let failed = states
        .iter()
        .filter(|s| **s == ExecutionState::Failed)
        .count();
    eprintln!("R3 kill -9 with {EXECUTIONS} executions in flight, sim in its own process:");
    eprintln!(
        "  listed just before the kill: {} SUCCEEDED, {} RUNNING, {} QUEUED, {} other",
        count(&at_kill, ExecutionState::Succeeded),
        count(&at_kill, ExecutionState::Running),
        count(&at_kill, ExecutionState::Queued),
        EXECUTIONS
            - count(&at_kill, ExecutionState::Succeeded)
            - count(&at_kill, ExecutionState::Running)
            - count(&at_kill, ExecutionState::Queued)
    );
    eprintln!(
        "  after the restart: {succeeded} SUCCEEDED, {failed} FAILED, {} INTERRUPTED ({interrupted_while_running} while running, {} before starting), 0 lost",
        interrupted.len(),
        interrupted.len() - interrupted_while_running
    );
    eprintln!(
        "  restart: serving {} ms after `serve` was started again (recovery included), {} ms after the kill (200 ms of it waiting on purpose)",
        time_to_restart.as_millis(),
        serving_after_kill.as_millis()
    );
    eprintln!(
        "  applied writes per execution (count: executions): {per_execution:?}; after the restart: 0 of the {EXECUTIONS}, 1 of the new execution"
    );
    eprintln!("  whole run: {} ms", began.elapsed().as_millis());
}
