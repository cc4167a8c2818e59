//! Priorities: executions waiting for a worker start by priority (higher first), then in
//! arrival order — with one replica on SQLite, and with replicas claiming from PostgreSQL.

mod common;

use std::time::Duration;

use common::{
    fresh_postgres_database, get_execution, mk_request, mk_target, until_state, ServeProcess,
    SimProcess,
};

/// How long an execution of these tests may take to reach a state.
const WITHIN: Duration = Duration::from_secs(60);
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState,
};
use serde_json::json;

/// With the one worker busy, executions of priorities 1, 5 and 3 (submitted in that order)
/// start 5, 3, 1.
async fn queued_executions_start_by_priority(server: &ServeProcess) {
    let mut client = ExecutorServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let busy = client
        .execute(mk_request(
            "rolling_restart_deployment",
            mk_target("production", "Deployment", "web"),
            json!({}),
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    until_state(&mut client, &busy.id, &[ExecutionState::Running], WITHIN).await;
    let mut queued = Vec::new();
    for (priority, (namespace, name)) in [
        (1, ("production", "api")),
        (5, ("production", "worker")),
        (3, ("staging", "web")),
    ] {
        let mut request = mk_request(
            "scale_deployment",
            mk_target(namespace, "Deployment", name),
            json!({ "replicas_increment": 1 }),
        );
        request.priority = priority;
        let execution = client
            .execute(request)
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(execution.state(), ExecutionState::Queued);
        queued.push((priority, execution.id));
    }
    // Still the busy one's turn: all three wait.
    assert_eq!(
        get_execution(&mut client, &busy.id).await.state(),
        ExecutionState::Running
    );
    let mut started = Vec::new();
    for (priority, id) in &queued {
        until_state(&mut client, id, &[ExecutionState::Succeeded], WITHIN).await;
        let execution = get_execution(&mut client, id).await;
        let at = execution.started_at.unwrap();
        started.push(((at.seconds, at.nanos), *priority));
    }
    started.sort();
    let order: Vec<i32> = started.iter().map(|(_, p)| *p).collect();
    assert_eq!(order, [5, 3, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_starts_queued_executions_by_priority() {
    let sim = SimProcess::start_at(2.0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::on_cluster(
        &sim.kubeconfig,
        &dir.path().join("history.db"),
        &["--workers", "1", "--rate-limit", "0"],
    );
    queued_executions_start_by_priority(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_claim_queued_executions_by_priority() {
    let sim = SimProcess::start_at(2.0, &[]);
    let database = fresh_postgres_database().await;
    let server = ServeProcess::on_cluster(
        &sim.kubeconfig,
        std::path::Path::new(&database),
        &["--workers", "1", "--rate-limit", "0"],
    );
    queued_executions_start_by_priority(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_priority_out_of_range_is_refused_naming_the_field() {
    let sim = SimProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::on_cluster(&sim.kubeconfig, &dir.path().join("h.db"), &[]);
    let mut client = ExecutorServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let mut request = mk_request(
        "scale_deployment",
        mk_target("production", "Deployment", "api"),
        json!({ "replicas": 3 }),
    );
    request.priority = 5000;
    let refused = client.execute(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("priority"),
        "{}",
        refused.message()
    );
}
