//! End-to-end behaviour of the gRPC API against the simulated cluster: executions change the
//! cluster, streams replay then go live, the engine serializes per target and bounds work, and
//! bad input is refused with the field named.

mod common;

use std::time::Duration;

use common::{watch_all, Harness};
use executor_service::{
    api::proto::{
        self, executor_service_client::ExecutorServiceClient, CancelExecutionRequest,
        DryRunRequest, ExecuteRequest, ExecutionEvent, ExecutionState, GetExecutionRequest,
        ListActionsRequest, ListExecutionsRequest, Target, WatchExecutionRequest,
    },
    engine::EngineConfig,
    sim::{mk_deployment, mk_namespace, mk_node, Scenario},
};
use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{api::ListParams, Api, ResourceExt};
use prost_types::{value::Kind, Struct};
use tonic::{transport::Channel, Code};

fn params(json: serde_json::Value) -> Option<Struct> {
    Some(common::to_struct(&json))
}

fn target(namespace: &str, name: &str) -> Option<Target> {
    Some(Target {
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    })
}

fn mk_execute(action: &str, namespace: &str, name: &str, p: serde_json::Value) -> ExecuteRequest {
    ExecuteRequest {
        action: action.into(),
        target: target(namespace, name),
        parameters: params(p),
        ..Default::default()
    }
}

async fn execute(
    client: &mut ExecutorServiceClient<Channel>,
    request: ExecuteRequest,
) -> proto::Execution {
    client
        .execute(request)
        .await
        .expect("execute")
        .into_inner()
        .execution
        .expect("execution")
}

fn state_of(e: &ExecutionEvent) -> ExecutionState {
    ExecutionState::try_from(e.state).unwrap()
}

async fn replicas(kube: &kube::Client, ns: &str, name: &str) -> i32 {
    let d = Api::<Deployment>::namespaced(kube.clone(), ns)
        .get(name)
        .await
        .unwrap();
    d.spec.unwrap().replicas.unwrap()
}

fn mk_scenario(deployments: &[(&str, &str, i64, &str)]) -> Scenario {
    // `empty` has the default namespace and node-1.
    let mut scenario = Scenario::empty()
        .with(mk_node("node-2"))
        .with(mk_node("node-3"))
        .with(mk_namespace("production"));
    for (ns, name, replicas, image) in deployments {
        scenario = scenario.with(mk_deployment(ns, name, *replicas, image));
    }
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_deployment_changes_the_cluster_and_the_stream_ends_succeeded() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let execution = execute(
        &mut client,
        mk_execute(
            "scale_deployment",
            "production",
            "web",
            serde_json::json!({"replicas": 5}),
        ),
    )
    .await;
    assert_eq!(execution.state, ExecutionState::Queued as i32);
    let events = watch_all(&mut client, &execution.id, 0).await;
    let last = events.last().unwrap();
    assert_eq!(
        state_of(last),
        ExecutionState::Succeeded,
        "{:?}",
        last.message
    );
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(
        events.iter().any(|e| e.progress.is_some()),
        "rollout progress was reported"
    );
    assert_eq!(replicas(&h.kube, "production", "web").await, 5);
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "production")
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let running = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(
        running, 5,
        "five web pods exist once the execution succeeded"
    );
    let got = client
        .get_execution(GetExecutionRequest {
            execution_id: execution.id.clone(),
            include_events: true,
        })
        .await
        .unwrap()
        .into_inner();
    let got_execution = got.execution.unwrap();
    assert_eq!(got_execution.state, ExecutionState::Succeeded as i32);
    assert_eq!(got.events.len(), events.len());
    let rollback = got_execution.rollback_data.expect("rollback data recorded");
    assert_eq!(
        rollback.fields["replicas"].kind,
        Some(Kind::NumberValue(3.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_subscriber_and_a_resumed_one_see_exactly_the_same_events() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let execution = execute(
        &mut client,
        mk_execute(
            "rolling_restart_deployment",
            "production",
            "web",
            serde_json::json!({}),
        ),
    )
    .await;
    let early = {
        let mut c = client.clone();
        let id = execution.id.clone();
        tokio::spawn(async move { watch_all(&mut c, &id, 0).await })
    };
    // Join mid-execution: once at least one progress event exists.
    loop {
        let got = client
            .get_execution(GetExecutionRequest {
                execution_id: execution.id.clone(),
                include_events: false,
            })
            .await
            .unwrap()
            .into_inner();
        if got.execution.unwrap().last_sequence >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let late = watch_all(&mut client, &execution.id, 0).await;
    let early = early.await.unwrap();
    assert_eq!(
        state_of(late.last().unwrap()),
        ExecutionState::Succeeded,
        "{:?}",
        late.last()
    );
    assert_eq!(
        early, late,
        "both subscribers received the identical full sequence"
    );
    let n = 2;
    let resumed = watch_all(&mut client, &execution.id, n).await;
    assert_eq!(
        resumed.as_slice(),
        &late[n as usize..],
        "from_sequence = N yields exactly the events after N"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_executes_on_one_deployment_run_strictly_one_at_a_time() {
    let h = Harness::start(
        EngineConfig {
            workers: 10,
            ..Default::default()
        },
        mk_scenario(&[("production", "web", 2, "nginx:1.25")]),
    )
    .await;
    let client = h.grpc().await;
    let mut submitted = Vec::new();
    for _ in 0..50 {
        let mut c = client.clone();
        submitted.push(tokio::spawn(async move {
            execute(
                &mut c,
                mk_execute(
                    "scale_deployment",
                    "production",
                    "web",
                    serde_json::json!({"replicas_increment": 1, "wait_for_rollout": false}),
                ),
            )
            .await
        }));
    }
    let mut intervals = Vec::new();
    for handle in submitted {
        let execution = handle.await.unwrap();
        let done = h.engine.wait(&execution.id).await.unwrap();
        assert_eq!(
            done.state,
            executor_service::domain::ExecutionState::Succeeded,
            "{}",
            done.message
        );
        intervals.push((done.started_at.unwrap(), done.finished_at.unwrap()));
    }
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "executions on one target overlapped: {pair:?}"
        );
    }
    // Every increment was applied to the state the previous one left: none was lost.
    assert_eq!(replicas(&h.kube, "production", "web").await, 52);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distinct_targets_run_in_parallel_up_to_the_pool_size() {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let deployments: Vec<(&str, &str, i64, &str)> = names
        .iter()
        .map(|n| ("production", *n, 2, "nginx:1.25"))
        .collect();
    let h = Harness::start(
        EngineConfig {
            workers: 4,
            ..Default::default()
        },
        mk_scenario(&deployments),
    )
    .await;
    let mut client = h.grpc().await;
    let mut ids = Vec::new();
    for name in names {
        let e = execute(
            &mut client,
            mk_execute(
                "rolling_restart_deployment",
                "production",
                name,
                serde_json::json!({}),
            ),
        )
        .await;
        ids.push(e.id);
    }
    let mut intervals = Vec::new();
    for id in &ids {
        let done = h.engine.wait(id).await.unwrap();
        assert_eq!(
            done.state,
            executor_service::domain::ExecutionState::Succeeded,
            "{}",
            done.message
        );
        intervals.push((done.started_at.unwrap(), done.finished_at.unwrap()));
    }
    let max_overlap = intervals
        .iter()
        .map(|(start, _)| {
            intervals
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(
        max_overlap, 4,
        "eight independent executions ran four at a time: {intervals:?}"
    );
}

/// A deployment whose new pods crash, so that a rollout never completes.
async fn stall_rollouts_of(h: &Harness, ns: &str, name: &str) {
    let api = Api::<Deployment>::namespaced(h.kube.clone(), ns);
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": name, "image": "nginx:crashloop"}]}}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Strategic(patch),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_running_rolling_restart_ends_it_cancelled_promptly() {
    let h = Harness::demo().await;
    stall_rollouts_of(&h, "production", "worker").await;
    let mut client = h.grpc().await;
    let execution = execute(
        &mut client,
        mk_execute(
            "rolling_restart_deployment",
            "production",
            "worker",
            serde_json::json!({}),
        ),
    )
    .await;
    let mut stream = client
        .watch_execution(WatchExecutionRequest {
            execution_id: execution.id.clone(),
            from_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // Wait for the rollout to be under way.
    while let Some(Ok(item)) = stream.next().await {
        if item.event.unwrap().progress.is_some() {
            break;
        }
    }
    let asked = std::time::Instant::now();
    let cancelled = client
        .cancel_execution(CancelExecutionRequest {
            execution_id: execution.id.clone(),
            reason: "operator changed their mind".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        cancelled.state,
        ExecutionState::Cancelled as i32,
        "{}",
        cancelled.message
    );
    assert!(cancelled.message.contains("operator changed their mind"));
    assert!(asked.elapsed() < Duration::from_secs(5));
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(
        state_of(
            rest.last()
                .unwrap()
                .as_ref()
                .unwrap()
                .event
                .as_ref()
                .unwrap()
        ),
        ExecutionState::Cancelled
    );
    let again = client
        .cancel_execution(CancelExecutionRequest {
            execution_id: execution.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_execution_over_its_timeout_ends_timed_out() {
    let h = Harness::demo().await;
    stall_rollouts_of(&h, "production", "worker").await;
    let mut client = h.grpc().await;
    let mut request = mk_execute(
        "rolling_restart_deployment",
        "production",
        "worker",
        serde_json::json!({}),
    );
    request.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    request.wait = true;
    // Without the automatic rollback, which the safety tests cover.
    request.rollback_on_failure = Some(false);
    let started = std::time::Instant::now();
    let done = execute(&mut client, request).await;
    assert_eq!(
        done.state,
        ExecutionState::TimedOut as i32,
        "{}",
        done.message
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_invalid_arguments_naming_the_field() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let cases: Vec<(ExecuteRequest, &str)> = vec![
        (
            mk_execute(
                "explode_cluster",
                "production",
                "web",
                serde_json::json!({}),
            ),
            "action",
        ),
        (
            mk_execute("", "production", "web", serde_json::json!({})),
            "action",
        ),
        (
            ExecuteRequest {
                action: "scale_deployment".into(),
                parameters: params(serde_json::json!({"replicas": 2})),
                ..Default::default()
            },
            "target.name",
        ),
        (
            mk_execute(
                "scale_deployment",
                "production",
                "web",
                serde_json::json!({"replicas": "abc"}),
            ),
            "parameters.replicas",
        ),
        (
            mk_execute(
                "scale_deployment",
                "production",
                "web",
                serde_json::json!({"replicas": 1000}),
            ),
            "parameters.replicas",
        ),
        (
            mk_execute(
                "scale_deployment",
                "production",
                "web",
                serde_json::json!({"replicas_increment": -10}),
            ),
            "parameters.replicas_increment",
        ),
        (
            mk_execute(
                "scale_deployment",
                "production",
                "web",
                serde_json::json!({}),
            ),
            "parameters.replicas",
        ),
        (
            mk_execute(
                "scale_deployment",
                "production",
                "web",
                serde_json::json!({"replica": 3}),
            ),
            "parameters.replica",
        ),
        (
            mk_execute(
                "scale_deployment",
                "Production!",
                "web",
                serde_json::json!({"replicas": 3}),
            ),
            "target.namespace",
        ),
        (
            ExecuteRequest {
                target: Some(Target {
                    cluster: "prod-eu".into(),
                    namespace: "production".into(),
                    name: "web".into(),
                    ..Default::default()
                }),
                ..mk_execute(
                    "scale_deployment",
                    "production",
                    "web",
                    serde_json::json!({"replicas": 3}),
                )
            },
            "target.cluster",
        ),
        (
            ExecuteRequest {
                target: Some(Target {
                    kind: "Pod".into(),
                    namespace: "production".into(),
                    name: "web".into(),
                    ..Default::default()
                }),
                ..mk_execute(
                    "scale_deployment",
                    "production",
                    "web",
                    serde_json::json!({"replicas": 3}),
                )
            },
            "target.kind",
        ),
    ];
    for (request, field) in cases {
        let err = client.execute(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{request:?}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{field} not named first in {:?}",
            err.message()
        );
    }
    // Nothing ran: the deployment is untouched and no execution was recorded.
    assert_eq!(replicas(&h.kube, "production", "web").await, 3);
    let listed = client
        .list_executions(ListExecutionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.executions.is_empty());
    // A missing deployment is NOT_FOUND, not a queued execution that fails later.
    let err = client
        .execute(mk_execute(
            "scale_deployment",
            "production",
            "nope",
            serde_json::json!({"replicas": 1}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for code in [
        client
            .get_execution(GetExecutionRequest {
                execution_id: "no-such-id".into(),
                include_events: false,
            })
            .await
            .unwrap_err()
            .code(),
        client
            .watch_execution(WatchExecutionRequest {
                execution_id: "no-such-id".into(),
                from_sequence: 0,
            })
            .await
            .unwrap_err()
            .code(),
        client
            .cancel_execution(CancelExecutionRequest {
                execution_id: "no-such-id".into(),
                reason: String::new(),
            })
            .await
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }
    // The server is still serving.
    assert!(client.list_actions(ListActionsRequest {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_resource_exhausted() {
    let h = Harness::start(
        EngineConfig {
            workers: 1,
            queue_capacity: 2,
            ..Default::default()
        },
        mk_scenario(&[("production", "slow", 2, "nginx:1.25")]),
    )
    .await;
    stall_rollouts_of(&h, "production", "slow").await;
    let mut client = h.grpc().await;
    let restart = || {
        mk_execute(
            "rolling_restart_deployment",
            "production",
            "slow",
            serde_json::json!({}),
        )
    };
    let running = execute(&mut client, restart()).await;
    // Wait until the first one left the queue.
    while h
        .engine
        .get(&running.id, executor_service::engine::ANONYMOUS)
        .await
        .unwrap()
        .0
        .state
        != executor_service::domain::ExecutionState::Running
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    execute(&mut client, restart()).await;
    execute(&mut client, restart()).await;
    let err = client.execute(restart()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_pod_reports_the_replacement_pod() {
    let h = Harness::demo().await;
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "production");
    let victim = loop {
        let list = pods
            .list(&ListParams::default().labels("app=api"))
            .await
            .unwrap();
        if let Some(p) = list
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
        {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut client = h.grpc().await;
    let mut request = mk_execute(
        "restart_pod",
        "production",
        &victim.name_any(),
        serde_json::json!({}),
    );
    request.target.as_mut().unwrap().kind = "Pod".into();
    request.wait = true;
    let done = execute(&mut client, request).await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = done.result.unwrap();
    let Some(Kind::StringValue(replacement)) = &result.fields["replacement_pod"].kind else {
        panic!("no replacement in {result:?}")
    };
    assert_ne!(replacement, &victim.name_any());
    let pod = pods.get(replacement).await.expect("replacement pod exists");
    let ready = pod
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "replacement is Ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_pod_refuses_an_unmanaged_pod_without_force() {
    let h = Harness::start(
        EngineConfig::default(),
        mk_scenario(&[]).with(executor_service::sim::mk_pod(
            "default",
            "lonely",
            Some("node-1"),
            "nginx:1.25",
        )),
    )
    .await;
    let mut client = h.grpc().await;
    let mut request = mk_execute("restart_pod", "default", "lonely", serde_json::json!({}));
    request.target.as_mut().unwrap().kind = "Pod".into();
    let err = client.execute(request).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(Api::<Pod>::namespaced(h.kube.clone(), "default")
        .get("lonely")
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_reports_the_change_and_mutates_nothing() {
    let h = Harness::demo().await;
    // Let the controllers finish starting the demo, so any change would be ours.
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let api = Api::<Deployment>::namespaced(h.kube.clone(), "production");
    let mut client = h.grpc().await;
    let report = client
        .dry_run(DryRunRequest {
            action: "scale_deployment".into(),
            target: target("production", "web"),
            parameters: params(serde_json::json!({"replicas": 5})),
            alert: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.summary, "production/deployment/web: replicas 3 → 5");
    assert_eq!(report.changes.len(), 1);
    let restart = client
        .dry_run(DryRunRequest {
            action: "rolling_restart_deployment".into(),
            target: target("production", "web"),
            parameters: None,
            alert: None,
        })
        .await
        .unwrap()
        .into_inner();
    let patch = format!("{:?}", restart.changes[0].patch);
    assert!(patch.contains("restartedAt"), "{patch}");
    // Nothing written, by the cluster's own record: every write the dry runs sent was a
    // server-side dry run. (The deployment's resourceVersion alone would also move with a
    // status update of its controller.)
    let applied: Vec<_> = h
        .sim
        .writes()
        .all()
        .into_iter()
        .filter(|w| w.applied())
        .collect();
    assert!(applied.is_empty(), "the dry runs wrote {applied:?}");
    assert_eq!(
        api.get("web").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_target_can_come_from_the_alert_and_list_filters_work() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let request = ExecuteRequest {
        action: "scale_deployment".into(),
        parameters: params(serde_json::json!({"replicas_increment": 1})),
        alert: Some(proto::AlertContext {
            name: "HighLatency".into(),
            severity: "critical".into(),
            labels: [
                ("app".to_string(), "web".to_string()),
                ("namespace".to_string(), "staging".to_string()),
            ]
            .into_iter()
            .collect(),
            annotations: Default::default(),
        }),
        wait: true,
        ..Default::default()
    };
    let done = execute(&mut client, request).await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let t = done.target.unwrap();
    assert_eq!(
        (t.namespace.as_str(), t.kind.as_str(), t.name.as_str()),
        ("staging", "Deployment", "web")
    );
    assert_eq!(replicas(&h.kube, "staging", "web").await, 3);
    let listed = client
        .list_executions(ListExecutionsRequest {
            namespace: "staging".into(),
            state: ExecutionState::Succeeded as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    let none = client
        .list_executions(ListExecutionsRequest {
            namespace: "production".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.executions.is_empty());
    let actions = client
        .list_actions(ListActionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .actions;
    let scale = actions
        .iter()
        .find(|a| a.name == "scale_deployment")
        .unwrap();
    let replicas_param = scale
        .parameters
        .iter()
        .find(|p| p.name == "replicas")
        .unwrap();
    assert_eq!(
        (replicas_param.minimum, replicas_param.maximum),
        (Some(0), Some(100))
    );
}
