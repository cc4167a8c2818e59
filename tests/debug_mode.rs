//! `enable_debug_mode` ends on time by itself, also when the executor was restarted in
//! between (issue 17): real `serve` processes on a simulated cluster of their own process and
//! one history; the cluster's own record of the pod template is the judge.

mod common;

use std::time::{Duration, Instant};

use common::{kube_client_from, mk_request, mk_target, ServeProcess, SimProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState, ListExecutionsRequest,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;
use tonic::{transport::Channel, Code};

async fn connect(addr: &str) -> ExecutorServiceClient<Channel> {
    ExecutorServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// The value of `LOG_LEVEL` in the first container of production/web's template.
async fn log_level(kube: &kube::Client) -> Option<String> {
    let d = Api::<Deployment>::namespaced(kube.clone(), "production")
        .get("web")
        .await
        .unwrap();
    let env =
        serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers[0].env).unwrap();
    env.as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "LOG_LEVEL")
        .map(|e| e["value"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_mode_for_thirty_seconds_is_reverted_on_time_across_a_restart_of_the_executor() {
    let sim = SimProcess::start(&[]);
    let kube = kube_client_from(&sim.kubeconfig).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("history.db");
    let first = ServeProcess::on_cluster(&sim.kubeconfig, &store, &[]);
    let mut client = connect(&first.addr).await;

    for (params, field) in [
        (
            json!({"duration_seconds": 10}),
            "parameters.duration_seconds",
        ),
        (json!({"env_name": "LOG LEVEL"}), "parameters.env_name"),
        (json!({"container": "sidecar"}), "parameters.container"),
    ] {
        let err = client
            .execute(mk_request(
                "enable_debug_mode",
                mk_target("production", "Deployment", "web"),
                params,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    assert_eq!(
        log_level(&kube).await,
        None,
        "no change from refused requests"
    );

    let mut enable = mk_request(
        "enable_debug_mode",
        mk_target("production", "Deployment", "web"),
        json!({"duration_seconds": 30}),
    );
    enable.wait = true;
    let enabled = client
        .execute(enable)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        enabled.state,
        ExecutionState::Succeeded as i32,
        "{}",
        enabled.message
    );
    assert_eq!(log_level(&kube).await.as_deref(), Some("debug"));
    let d = Api::<Deployment>::namespaced(kube.clone(), "production")
        .get("web")
        .await
        .unwrap();
    let annotations = d.metadata.annotations.unwrap_or_default();
    assert!(
        annotations.contains_key("executor-service.io/debug-until"),
        "{annotations:?}"
    );

    // The executor goes away for a while; a new one on the same history takes over.
    drop(client);
    drop(first);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = ServeProcess::on_cluster(&sim.kubeconfig, &store, &[]);
    let mut client = connect(&second.addr).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while log_level(&kube).await.is_some() {
        assert!(Instant::now() < deadline, "debug mode was never reverted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(29),
        "reverted early, after {after:?}"
    );
    assert!(
        after <= Duration::from_secs(45),
        "reverted late, after {after:?}"
    );
    let d = Api::<Deployment>::namespaced(kube.clone(), "production")
        .get("web")
        .await
        .unwrap();
    let annotations = d.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("executor-service.io/debug-until"),
        "{annotations:?}"
    );

    // The revert is an execution like any other, in the history, done by the executor itself.
    let listed = client
        .list_executions(ListExecutionsRequest {
            action: "disable_debug_mode".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .executions;
    assert_eq!(listed.len(), 1, "one revert: {listed:?}");
    let revert = &listed[0];
    assert_eq!(revert.requester, "executor-service/debug-mode-expiry");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let x = client
            .get_execution(executor_service::api::proto::GetExecutionRequest {
                execution_id: revert.id.clone(),
                include_events: false,
            })
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        if x.state == ExecutionState::Succeeded as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revert did not succeed: {x:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
