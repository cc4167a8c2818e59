//! "Never two executions on one object at once, and a cooldown after each", tried as an
//! operator would against the real binary: through every name of the cluster, and through
//! targets that change an object other than themselves (a pod's owning deployment). Judged
//! by the simulated cluster's own record of client writes (`GET /sim/v1/writes`), not by the
//! executor's account of itself.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::{mk_request, mk_target, run_to_end, ServeProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState, GetExecutionRequest,
};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api, ResourceExt};
use serde_json::{json, Value};
use tonic::{transport::Channel, Code};

/// The embedded simulated cluster's context name: the default cluster's one real name.
const SIM_CONTEXT: &str = "sim";

async fn connect(server: &ServeProcess) -> ExecutorServiceClient<Channel> {
    let endpoint = format!("http://{}", server.addr);
    for _ in 0..100 {
        if let Ok(client) = ExecutorServiceClient::connect(endpoint.clone()).await {
            return client;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("gRPC server at {endpoint} did not come up");
}

async fn kube_client(server: &ServeProcess) -> kube::Client {
    common::kube_client_from(&server.kubeconfig).await
}

/// A running pod of `production/web`, whose owner is the deployment `web`.
async fn pod_of_web(kube: &kube::Client) -> String {
    let pods = Api::<Pod>::namespaced(kube.clone(), "production");
    for _ in 0..200 {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        if let Some(pod) = list
            .items
            .iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
        {
            return pod.name_any();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no pod of production/web");
}

/// A target on the named cluster.
fn on_cluster(
    cluster: &str,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Option<executor_service::api::proto::Target> {
    let mut target = mk_target(namespace, kind, name);
    if let Some(t) = target.as_mut() {
        t.cluster = cluster.to_string();
    }
    target
}

/// The cluster's record of client writes that changed something.
async fn applied_writes(server: &ServeProcess) -> Vec<Value> {
    common::applied_writes(&common::sim_writes(&common::sim_url(&server.kubeconfig)).await)
}

/// The execution `id` once it has ended.
async fn ended(
    client: &ExecutorServiceClient<Channel>,
    id: &str,
) -> executor_service::api::proto::Execution {
    for _ in 0..1200 {
        let execution = client
            .clone()
            .get_execution(GetExecutionRequest {
                execution_id: id.to_string(),
                ..Default::default()
            })
            .await
            .expect("get execution")
            .into_inner()
            .execution
            .expect("an execution");
        if execution.finished_at.is_some() {
            return execution;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("execution {id} did not end within a minute");
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cooldown_holds_under_every_name_of_the_cluster_and_every_target_that_changes_the_object()
{
    let server = ServeProcess::start(&["--cooldown", "5m"]);
    let mut client = connect(&server).await;
    let kube = kube_client(&server).await;
    let pod = pod_of_web(&kube).await;
    let done = run_to_end(
        &mut client,
        "scale_deployment",
        on_cluster("", "production", "Deployment", "web"),
        json!({"replicas": 4, "wait_for_rollout": false}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    // The same object under the default context's own name.
    let err = client
        .execute(mk_request(
            "scale_deployment",
            on_cluster(SIM_CONTEXT, "production", "Deployment", "web"),
            json!({"replicas": 5}),
        ))
        .await
        .expect_err("the deployment is in cooldown, whatever the cluster is called");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("production/deployment/web is in cooldown until"),
        "{}",
        err.message()
    );
    // A pod of it: increase_resources changes the pod's owning deployment.
    let err = client
        .execute(mk_request(
            "increase_resources",
            on_cluster(SIM_CONTEXT, "production", "Pod", &pod),
            json!({"memory_limit": "1Gi"}),
        ))
        .await
        .expect_err("the pod's deployment is in cooldown");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("production/deployment/web is in cooldown"),
        "{}",
        err.message()
    );
    // Nothing but the first scale reached the deployment.
    let on_web: Vec<Value> = applied_writes(&server)
        .await
        .into_iter()
        .filter(|w| w["namespace"] == "production" && w["name"] == "web")
        .collect();
    assert_eq!(on_web.len(), 1, "{on_web:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executions_through_different_names_and_targets_never_overlap_on_one_object() {
    // No cooldown: the four wait for each other instead of being refused.
    let server = ServeProcess::start(&[]);
    let client = connect(&server).await;
    let kube = kube_client(&server).await;
    let pod = pod_of_web(&kube).await;
    // Each one's writes are told apart by what they carry. The pod's goes first: the others
    // replace the deployment's pods, after which "this pod" no longer exists to aim at.
    let runs: Vec<(&str, &str, _, Value)> = vec![
        (
            "memory",
            "increase_resources",
            on_cluster("", "production", "Pod", &pod),
            json!({"memory_limit": "1Gi"}),
        ),
        (
            "replicas\":2",
            "scale_deployment",
            on_cluster("", "production", "Deployment", "web"),
            json!({"replicas": 2}),
        ),
        (
            "replicas\":5",
            "scale_deployment",
            on_cluster(SIM_CONTEXT, "production", "Deployment", "web"),
            json!({"replicas": 5}),
        ),
        (
            "restartedAt",
            "rolling_restart_deployment",
            on_cluster(SIM_CONTEXT, "production", "Deployment", "web"),
            json!({}),
        ),
    ];
    let (_, action, target, params) = &runs[0];
    let first = client
        .clone()
        .execute(mk_request(action, target.clone(), params.clone()))
        .await
        .expect("the pod's execution is admitted")
        .into_inner()
        .execution
        .unwrap();
    let mut executions = join_all(runs[1..].iter().map(|(_, action, target, params)| {
        let mut client = client.clone();
        let (action, target, params) = (action.to_string(), target.clone(), params.clone());
        async move { run_to_end(&mut client, &action, target, params).await }
    }))
    .await;
    executions.insert(0, ended(&client, &first.id).await);
    let mut finished: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for ((marker, action, ..), execution) in runs.iter().zip(&executions) {
        assert_eq!(
            execution.state,
            ExecutionState::Succeeded as i32,
            "{action}: {}",
            execution.message
        );
        let at = execution.finished_at.expect("finished");
        finished.insert(
            marker,
            DateTime::from_timestamp(at.seconds, at.nanos as u32).unwrap(),
        );
    }
    // The cluster's writes to the deployment, in the order it received them, each with the
    // execution whose change it carried.
    let mut writes: Vec<(&str, DateTime<Utc>)> = applied_writes(&server)
        .await
        .iter()
        .filter(|w| {
            w["namespace"] == "production"
                && w["name"] == "web"
                && w["resource"].as_str().unwrap().starts_with("deployments")
        })
        .map(|w| {
            let body = w["body"].as_str().unwrap().replace(' ', "");
            let marker = runs
                .iter()
                .map(|(marker, ..)| *marker)
                .find(|m| body.contains(m))
                .unwrap_or_else(|| panic!("a write of no execution here: {w}"));
            (marker, time(&w["startedAt"]))
        })
        .collect();
    writes.sort_by_key(|(_, at)| *at);
    let writers: std::collections::BTreeSet<&str> = writes.iter().map(|(m, _)| *m).collect();
    assert_eq!(
        writers.len(),
        runs.len(),
        "every execution wrote: {writes:?}"
    );
    // Whenever the writer changes, the previous writer had ended: no write of one execution
    // fell while another was still working on the deployment (following its rollout).
    for pair in writes.windows(2) {
        let ((before, _), (after, at)) = (pair[0], pair[1]);
        if before != after {
            assert!(
                at >= finished[before],
                "{after} wrote at {at} while {before} ran until {}: {writes:?}",
                finished[before]
            );
        }
    }
}

/// One caller's flood is refused at the engine's door, before any cluster or policy work, with
/// when to come back; another caller is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callers_flood_is_refused_with_a_retry_after_and_the_next_caller_goes_on() {
    let server = ServeProcess::start(&["--rate-limit", "1", "--rate-burst", "2"]);
    let mut client = connect(&server).await;
    let dry_run = || executor_service::api::proto::DryRunRequest {
        action: "scale_deployment".into(),
        target: mk_target("production", "Deployment", "web"),
        parameters: Some(common::to_struct(&json!({"replicas": 4}))),
        alert: None,
    };
    for _ in 0..2 {
        client.dry_run(dry_run()).await.expect("within the burst");
    }
    let refused = client.dry_run(dry_run()).await.expect_err("over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("rate limit: anonymous may send 1 requests per second"),
        "{}",
        refused.message()
    );
    assert_eq!(
        refused
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // The HTTP door is the same engine: 429 with Retry-After.
    let response = common::plain_http()
        .post(format!("http://{}/api/v1/dry-run", server.http_addr))
        .json(&json!({
            "action": "scale_deployment",
            "target": {"namespace": "production", "name": "web"},
            "parameters": {"replicas": 4},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // A second later the caller is served again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    client.dry_run(dry_run()).await.expect("a token is back");
}
