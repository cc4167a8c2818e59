//! Shadow mode (`serve --shadow`) and `--require-approval`: what the incident platform's
//! `actions.dry_run: true` and `safety.require_confirmation: true` ask for.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{first_pod, mk_request, mk_target, Harness};
use executor_service::{
    api::proto::{ExecutionState, GetExecutionRequest},
    engine::EngineConfig,
    sim::Scenario,
};
use serde_json::{json, Value};

/// `kind namespace/name` → resourceVersion of every object of the kinds the actions change, as
/// the simulated cluster's API lists them.
async fn resource_versions(h: &Harness) -> BTreeMap<String, String> {
    let http = common::plain_http();
    let mut versions = BTreeMap::new();
    for path in [
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/statefulsets",
        "/apis/apps/v1/daemonsets",
        "/apis/apps/v1/replicasets",
        "/apis/autoscaling/v2/horizontalpodautoscalers",
        "/api/v1/pods",
        "/api/v1/nodes",
        "/api/v1/persistentvolumeclaims",
        "/api/v1/configmaps",
        "/api/v1/secrets",
    ] {
        let list: Value = http
            .get(format!("{}{path}", h.sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in list["items"].as_array().expect(path) {
            let m = &item["metadata"];
            versions.insert(
                format!(
                    "{path} {}/{}",
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"]
                ),
                m["resourceVersion"].as_str().unwrap().to_string(),
            );
        }
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_twenty_diffs_and_changes_nothing_in_the_cluster() {
    let h = Harness::start(
        EngineConfig {
            shadow: true,
            ..EngineConfig::default()
        },
        Scenario::demo(),
    )
    .await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let web_pod = first_pod(&h.kube, "production", "web").await;
    let worker_pod = first_pod(&h.kube, "production", "worker").await;
    let api_pod = first_pod(&h.kube, "production", "api").await;
    let requests = [
        (
            "scale_deployment",
            ("production", "Deployment", "web"),
            json!({ "replicas": 5 }),
        ),
        (
            "scale_deployment",
            ("staging", "Deployment", "web"),
            json!({ "replicas_increment": 1 }),
        ),
        (
            "scale_deployment",
            ("production", "Deployment", "worker"),
            json!({ "replicas": 4 }),
        ),
        (
            "rolling_restart_deployment",
            ("production", "Deployment", "worker"),
            json!({}),
        ),
        (
            "rolling_restart_deployment",
            ("staging", "Deployment", "web"),
            json!({}),
        ),
        (
            "restart_pod",
            ("production", "Pod", web_pod.as_str()),
            json!({}),
        ),
        (
            "delete_pod",
            ("production", "Pod", worker_pod.as_str()),
            json!({}),
        ),
        (
            "quarantine_pod",
            ("production", "Pod", api_pod.as_str()),
            json!({}),
        ),
        ("cordon_node", ("", "Node", "node-1"), json!({})),
        (
            "taint_node",
            ("", "Node", "node-2"),
            json!({ "key": "maintenance" }),
        ),
        (
            "drain_node",
            ("", "Node", "node-3"),
            json!({ "ignore_daemonsets": true }),
        ),
        (
            "scale_statefulset",
            ("production", "StatefulSet", "db"),
            json!({ "replicas": 3 }),
        ),
        (
            "restart_statefulset",
            ("production", "StatefulSet", "db"),
            json!({}),
        ),
        (
            "restart_daemonset",
            ("kube-system", "DaemonSet", "node-exporter"),
            json!({}),
        ),
        (
            "update_hpa",
            ("production", "HorizontalPodAutoscaler", "api"),
            json!({ "max_replicas": 8 }),
        ),
        (
            "increase_resources",
            ("production", "Deployment", "web"),
            json!({ "memory_limit": "4Gi" }),
        ),
        (
            "expand_pvc",
            ("production", "PersistentVolumeClaim", "data-db-0"),
            json!({ "size": "20Gi" }),
        ),
        (
            "notify_only",
            ("production", "Deployment", "web"),
            json!({ "message": "shadow" }),
        ),
        (
            "collect_diagnostics",
            ("production", "Deployment", "api"),
            json!({}),
        ),
        (
            "rolling_restart_deployment",
            ("production", "Deployment", "web"),
            json!({}),
        ),
    ];
    let before = resource_versions(&h).await;
    let writes_before = h.sim.writes().all().len();
    let mut with_changes = 0;
    for (action, (namespace, kind, name), parameters) in requests {
        let mut request = mk_request(action, mk_target(namespace, kind, name), parameters);
        request.wait = true;
        let execution = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{action} on {kind} {name}: {e}"))
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(
            execution.state(),
            ExecutionState::Shadowed,
            "{action}: {}",
            execution.message
        );
        assert!(
            execution
                .message
                .starts_with("shadow mode: nothing was changed; the plan: "),
            "{}",
            execution.message
        );
        // The diff is recorded: in the execution's result, read back, and in its last event.
        let stored = client
            .get_execution(GetExecutionRequest {
                execution_id: execution.id.clone(),
                include_events: true,
            })
            .await
            .unwrap()
            .into_inner();
        let record = stored.execution.expect("the execution");
        let result = common::struct_to_json(record.result.as_ref().expect("a result"));
        assert_eq!(result["shadow"], json!(true));
        let changes = result["plan"]["changes"]
            .as_array()
            .expect("changes")
            .clone();
        if !changes.is_empty() {
            with_changes += 1;
            assert!(changes[0]["before"].is_object(), "{action}: {changes:?}");
            assert!(changes[0]["patch"].is_array(), "{action}: {changes:?}");
        }
        let last = stored.events.last().expect("events");
        assert_eq!(last.state(), ExecutionState::Shadowed);
        let details = common::struct_to_json(last.details.as_ref().expect("details"));
        assert_eq!(details["plan"], result["plan"]);
        assert!(stored
            .events
            .iter()
            .all(|e| e.state() != ExecutionState::Running));
    }
    // Every mutating action showed what it would change (notify_only and collect_diagnostics
    // change nothing).
    assert_eq!(with_changes, 18);
    // The cluster's own record: dry runs only, not one applied write; no object moved.
    let applied: Vec<_> = h.sim.writes().all()[writes_before..]
        .iter()
        .filter(|w| w.applied())
        .map(|w| w.to_json())
        .collect();
    assert_eq!(applied, Vec::<Value>::new());
    assert_eq!(resource_versions(&h).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_approval_holds_every_mutating_action_and_lets_reads_run() {
    let h = Harness::start(
        EngineConfig {
            require_approval: true,
            ..EngineConfig::default()
        },
        Scenario::demo(),
    )
    .await;
    let mut client = h.grpc().await;
    let scale = client
        .execute(mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({ "replicas": 4 }),
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(scale.state(), ExecutionState::WaitingApproval);
    assert!(
        scale.message.contains("require_approval"),
        "{}",
        scale.message
    );
    let mut read = mk_request(
        "collect_diagnostics",
        mk_target("production", "Deployment", "api"),
        json!({}),
    );
    read.wait = true;
    let read = client
        .execute(read)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(read.state(), ExecutionState::Succeeded, "{}", read.message);
}

/// `serve --shadow` end to end: the flag reaches the engine, an Execute over HTTP ends
/// SHADOWED, the metrics count it apart from real runs, and the deployment keeps its replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shadow_counts_shadow_runs_apart_and_leaves_the_cluster_alone() {
    let server = common::ServeProcess::start(&["--shadow"]);
    let http = common::plain_http();
    let base = format!("http://{}", server.http_addr);
    let kube = common::kube_client_from(&server.kubeconfig).await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube, "production");
    let before = deployments.get("web").await.unwrap();
    let answer: Value = http
        .post(format!("{base}/api/v1/execute"))
        .json(&json!({"action": "scale_deployment", "wait": true,
                      "target": {"namespace": "production", "kind": "Deployment", "name": "web"},
                      "parameters": {"replicas": 7}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer = &answer["execution"];
    assert_eq!(answer["state"], "SHADOWED", "{answer}");
    let change = &answer["result"]["plan"]["changes"][0];
    assert_eq!(change["before"]["spec"]["replicas"], json!(3), "{answer}");
    assert_eq!(change["after"]["spec"]["replicas"], json!(7), "{answer}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"executor_executions_total{action="scale_deployment",state="SHADOWED"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"state="SUCCEEDED""#), "{metrics}");
    // The spec never changed (its generation), and the cluster's own record of client writes
    // has none applied: the status moves as the demo settles, so not the resourceVersion.
    let after = deployments.get("web").await.unwrap();
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(after.spec.unwrap().replicas, Some(3));
    let applied =
        common::applied_writes(&common::sim_writes(&common::sim_url(&server.kubeconfig)).await);
    assert_eq!(applied, Vec::<Value>::new());
}
