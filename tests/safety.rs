//! Safety: dry runs change nothing, the policy denies or parks requests for approval,
//! cooldowns admit exactly one of many concurrent requests, failed rollouts are rolled back,
//! and transient API errors are retried where everyone can see it.

mod common;

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{mk_request, mk_target, watch_all, Harness};
use executor_service::{
    actions::Registry,
    api::proto::{
        ApproveExecutionRequest, DryRunRequest, ExecutionState, ListExecutionsRequest,
        RejectExecutionRequest,
    },
    engine::EngineConfig,
    policy::{Policy, PolicyConfig},
    sim::{mk_daemonset, mk_deployment, mk_node, FaultRule, Scenario, Write},
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
};
use serde_json::json;
use tonic::Code;

/// An API of the platform, deployed before the dry runs.
const DEPLOYED_API: &str = "api-9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";

fn with_policy(config: EngineConfig) -> EngineConfig {
    EngineConfig {
        policy: Some(Arc::new(Policy::builtin(&PolicyConfig::default()).unwrap())),
        ..config
    }
}

/// The demo cluster plus what the actions that undo or restart need to find: a DaemonSet
/// outside the protected namespaces, and a node `node-4` that is cordoned and tainted
/// `maintenance:NoSchedule`.
fn mk_dry_run_scenario() -> Scenario {
    let mut node = mk_node("node-4");
    node["spec"]["unschedulable"] = json!(true);
    node["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoSchedule"}]);
    Scenario::demo()
        .with(mk_daemonset(
            "production",
            "log-agent",
            "fluent/fluent-bit:3.0",
        ))
        .with(mk_daemonset(
            "kube-system",
            "calico-node",
            "calico/node:v3.28",
        ))
        .with(mk_deployment(
            "kube-system",
            "coredns",
            2,
            "coredns/coredns:1.11",
        ))
        .with(executor_service::sim::mk_namespace("istio-system"))
        .with(mk_deployment(
            "istio-system",
            "istiod",
            1,
            "istio/pilot:1.23",
        ))
        .with(node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_of_every_action_changes_nothing_and_returns_the_diff() {
    let h = Harness::start(with_policy(EngineConfig::default()), mk_dry_run_scenario()).await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    // A second revision of `worker`, for rollback_deployment to go back from.
    Api::<Deployment>::namespaced(h.kube.clone(), "production")
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "worker", "image": "example/worker:1.8.1"}
            ]}}}})),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(
        h.kube.clone(),
        "production",
    )
    .create(
        &Default::default(),
        &serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web-ingress", "namespace": "production"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    // Job templates for run_job.
    let templates: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "executor-job-templates", "namespace": "production"},
        "data": {"report": "image: busybox:1.36.1\ncommand: [sh, -c, 'echo report']\n"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(h.kube.clone(), "production")
        .create(&Default::default(), &templates)
        .await
        .unwrap();
    // A primary and a replica for failover_database.
    common::primary_and_replica(&h.kube).await;
    // A deployed API for the code actions (stop, remove, status, logs need one).
    let deployed = common::run_to_end(
        &mut client,
        "deploy_code",
        mk_target("apis", "Deployment", DEPLOYED_API),
        json!({"files": {"main.py": "print(1)"}}),
    )
    .await;
    assert_eq!(
        deployed.state,
        ExecutionState::Succeeded as i32,
        "{deployed:?}"
    );
    let pods: Vec<String> =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(h.kube.clone(), "production")
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
    let since = Instant::now();
    let cases = [
        (
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({"replicas": 5}),
            true,
        ),
        (
            "rolling_restart_deployment",
            mk_target("production", "Deployment", "web"),
            json!({}),
            true,
        ),
        (
            "rollback_deployment",
            mk_target("production", "Deployment", "worker"),
            json!({}),
            true,
        ),
        (
            "increase_resources",
            mk_target("production", "Deployment", "web"),
            json!({}),
            true,
        ),
        (
            "scale_statefulset",
            mk_target("production", "StatefulSet", "db"),
            json!({"replicas": 3}),
            true,
        ),
        (
            "restart_statefulset",
            mk_target("production", "StatefulSet", "db"),
            json!({}),
            true,
        ),
        (
            "restart_daemonset",
            mk_target("production", "DaemonSet", "log-agent"),
            json!({}),
            true,
        ),
        (
            "expand_pvc",
            mk_target("production", "PersistentVolumeClaim", "data-db-0"),
            json!({"size": "20Gi"}),
            true,
        ),
        (
            "update_hpa",
            mk_target("production", "HorizontalPodAutoscaler", "api"),
            json!({"max_replicas": 8}),
            true,
        ),
        (
            "restart_pod",
            mk_target("production", "Pod", &pods[0]),
            json!({}),
            true,
        ),
        (
            "delete_pod",
            mk_target("production", "Pod", &pods[0]),
            json!({}),
            true,
        ),
        (
            "quarantine_pod",
            mk_target("production", "Pod", &pods[0]),
            json!({}),
            true,
        ),
        (
            "cordon_node",
            mk_target("", "Node", "node-2"),
            json!({}),
            true,
        ),
        (
            "uncordon_node",
            mk_target("", "Node", "node-4"),
            json!({}),
            true,
        ),
        (
            "taint_node",
            mk_target("", "Node", "node-2"),
            json!({"key": "maintenance"}),
            true,
        ),
        (
            "untaint_node",
            mk_target("", "Node", "node-4"),
            json!({"key": "maintenance"}),
            true,
        ),
        (
            "drain_node",
            mk_target("", "Node", "node-2"),
            // The deployed API's pod has an emptyDir (its /tmp), as kubectl drain would see.
            json!({"delete_emptydir_data": true}),
            true,
        ),
        (
            "migrate_workload",
            mk_target("production", "Deployment", "web"),
            json!({"from_node": "node-2"}),
            true,
        ),
        (
            "update_network_policy",
            mk_target("production", "NetworkPolicy", "web-ingress"),
            json!({"allow_from_namespace": "staging", "port": 80}),
            true,
        ),
        (
            "rotate_secrets",
            mk_target("production", "Secret", "api-credentials"),
            json!({}),
            true,
        ),
        (
            "restart_network",
            mk_target("", "Namespace", "kube-system"),
            json!({}),
            true,
        ),
        (
            "reset_service_mesh",
            mk_target("", "Namespace", "istio-system"),
            json!({}),
            true,
        ),
        (
            "collect_diagnostics",
            mk_target("production", "Deployment", "web"),
            json!({}),
            false,
        ),
        (
            "cleanup_storage",
            mk_target("production", "PersistentVolumeClaim", "data-db-0"),
            json!({"mode": "delete"}),
            true,
        ),
        (
            "repair_database",
            mk_target("production", "Service", "db"),
            json!({"engine": "postgres", "credentials_secret": "api-credentials"}),
            true,
        ),
        (
            "deploy_code",
            mk_target(
                "apis",
                "Deployment",
                "api-5d1f0c9e-2b7a-4c3e-9f10-6a8b7c6d5e4f",
            ),
            json!({"runtime": "node", "files": {"index.js": "1"}, "max_replicas": 3}),
            true,
        ),
        (
            "stop_code",
            mk_target("apis", "Deployment", DEPLOYED_API),
            json!({}),
            true,
        ),
        (
            "remove_code",
            mk_target("apis", "Deployment", DEPLOYED_API),
            json!({}),
            true,
        ),
        (
            "code_status",
            mk_target("apis", "Deployment", DEPLOYED_API),
            json!({}),
            false,
        ),
        (
            "code_logs",
            mk_target("apis", "Deployment", DEPLOYED_API),
            json!({"duration_seconds": 5}),
            false,
        ),
        (
            "compact_storage",
            mk_target("production", "Service", "db"),
            json!({"engine": "postgres", "credentials_secret": "api-credentials", "full": true}),
            true,
        ),
        (
            "failover_database",
            mk_target("production", "StatefulSet", "db"),
            json!({}),
            true,
        ),
        (
            "backup_data",
            mk_target("production", "StatefulSet", "db"),
            json!({}),
            true,
        ),
        (
            "enable_debug_mode",
            mk_target("production", "Deployment", "web"),
            json!({"duration_seconds": 60}),
            true,
        ),
        (
            "disable_debug_mode",
            mk_target("production", "Deployment", "web"),
            json!({}),
            false,
        ),
        (
            "optimize_resources",
            mk_target("production", "Deployment", "web"),
            json!({"headroom_percent": 100}),
            true,
        ),
        (
            "create_heap_dump",
            mk_target("production", "Deployment", "web"),
            json!({"runtime": "jvm"}),
            true,
        ),
        (
            "apply_manifest",
            mk_target("", "Namespace", "staging"),
            json!({"manifests": {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: b}\n"}}),
            true,
        ),
        (
            "delete_resource",
            mk_target("production", "ConfigMap", "api-config"),
            json!({}),
            true,
        ),
        (
            "patch_resource",
            // A kind its generated role grants (cluster-scoped classes are out of its reach).
            mk_target("production", "HorizontalPodAutoscaler", "api"),
            json!({"patch": "{\"metadata\": {\"labels\": {\"tier\": \"gold\"}}}"}),
            true,
        ),
        (
            "run_job",
            mk_target("", "Namespace", "production"),
            json!({"template": "report"}),
            true,
        ),
        (
            "audit_logs",
            mk_target("", "Namespace", "production"),
            json!({}),
            false,
        ),
        (
            "notify_only",
            mk_target("production", "Deployment", "web"),
            json!({}),
            false,
        ),
    ];
    let mut covered = BTreeSet::new();
    for (action, target, params, changes) in cases {
        assert!(covered.insert(action), "{action}: two cases");
        let report = client
            .dry_run(DryRunRequest {
                action: action.into(),
                target,
                parameters: Some(common::to_struct(&params)),
                alert: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{action}: {e:?}"))
            .into_inner();
        assert!(!report.summary.is_empty(), "{action}: no summary");
        assert!(report.policy.is_some(), "{action}: no policy decision");
        if changes {
            assert!(
                !report.changes.is_empty(),
                "{action}: no change planned: {}",
                report.summary
            );
            assert!(
                report.changes.iter().all(|c| c.patch.is_some()),
                "{action}: no patch"
            );
        }
    }
    // A new action needs its own dry-run case here.
    let registered: BTreeSet<&str> = Registry::builtin().specs().iter().map(|s| s.name).collect();
    let missing: Vec<&&str> = registered.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "actions without a dry-run case: {missing:?}"
    );
    assert_eq!(covered.len(), registered.len(), "cases for unknown actions");
    // Judged from the cluster's own record of client writes: the dry runs asked the API
    // server (dryRun=All) and it applied none of it.
    let during: Vec<Write> = h
        .sim
        .writes()
        .all()
        .into_iter()
        .filter(|w| w.started >= since)
        .collect();
    let applied: Vec<&Write> = during.iter().filter(|w| w.applied()).collect();
    assert!(
        applied.is_empty(),
        "a dry run wrote to the cluster: {applied:#?}"
    );
    assert!(
        during.iter().any(|w| w.dry_run),
        "no server-side dry run was recorded: {during:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_policy_denies_protected_namespaces_and_the_last_schedulable_node() {
    let h = Harness::start(
        with_policy(EngineConfig::default()),
        Scenario::empty().with(mk_deployment("default", "web", 2, "nginx:1.25")),
    )
    .await;
    let mut client = h.grpc().await;
    let err = client
        .execute(mk_request(
            "cordon_node",
            mk_target("", "Node", "node-1"),
            json!({}),
        ))
        .await
        .unwrap_err();
    // The action refuses it itself (FAILED_PRECONDITION) before the policy would.
    assert!(
        matches!(
            err.code(),
            Code::PermissionDenied | Code::FailedPrecondition
        ),
        "{err:?}"
    );
    assert!(
        err.message().contains("last schedulable node"),
        "{}",
        err.message()
    );
    let node = Api::<Node>::all(h.kube.clone())
        .get("node-1")
        .await
        .unwrap();
    assert_ne!(node.spec.unwrap().unschedulable, Some(true));

    let pair = Harness::start(
        with_policy(EngineConfig::default()),
        Scenario::empty().with(mk_node("node-2")),
    )
    .await;
    let err = pair
        .grpc()
        .await
        .execute(mk_request(
            "drain_node",
            mk_target("", "Node", "node-2"),
            // The deployed API's pod has an emptyDir (its /tmp), as kubectl drain would see.
            json!({"delete_emptydir_data": true}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("drain needs at least 3 schedulable nodes, the cluster has 2"),
        "{}",
        err.message()
    );

    let demo = Harness::start(with_policy(EngineConfig::default()), Scenario::demo()).await;
    let mut client = demo.grpc().await;
    let err = client
        .execute(mk_request(
            "restart_daemonset",
            mk_target("kube-system", "DaemonSet", "node-exporter"),
            json!({}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("namespace kube-system is protected"),
        "{}",
        err.message()
    );
    // Aimed at the namespace itself, the change to its objects is refused all the same.
    let err = client
        .execute(mk_request(
            "restart_network",
            mk_target("", "Namespace", "kube-system"),
            json!({"components": "node-exporter"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message()
            .contains("kube-system/daemonset/node-exporter is in protected namespace kube-system"),
        "{}",
        err.message()
    );
    let report = client
        .dry_run(DryRunRequest {
            action: "restart_daemonset".into(),
            target: mk_target("kube-system", "DaemonSet", "node-exporter"),
            parameters: None,
            alert: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.policy.unwrap().decision, "deny");
    // Reading is allowed even there.
    let mut read = mk_request(
        "collect_diagnostics",
        mk_target("kube-system", "DaemonSet", "node-exporter"),
        json!({}),
    );
    read.wait = true;
    let done = client
        .execute(read)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_custom_policy_file_changes_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.rego");
    std::fs::write(
        &path,
        r#"package executor
import rego.v1
deny contains "staging is frozen" if input.target.namespace == "staging"
decision := {"allow": count(deny) == 0, "require_approval": false, "reasons": [m | some m in deny]}
"#,
    )
    .unwrap();
    let policy = Policy::from_file(&path, &PolicyConfig::default()).unwrap();
    let h = Harness::start(
        EngineConfig {
            policy: Some(Arc::new(policy)),
            ..Default::default()
        },
        Scenario::demo(),
    )
    .await;
    let mut client = h.grpc().await;
    let err = client
        .execute(mk_request(
            "scale_deployment",
            mk_target("staging", "Deployment", "web"),
            json!({"replicas": 3}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("staging is frozen"));
    // The custom policy has no protected namespaces: kube-system is now allowed.
    let done = common::run_to_end(
        &mut client,
        "restart_daemonset",
        mk_target("kube-system", "DaemonSet", "node-exporter"),
        json!({"wait_for_rollout": false}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_high_risk_action_waits_for_approval_then_runs_or_ends_rejected() {
    let h = Harness::start(
        with_policy(EngineConfig {
            approval_timeout: Duration::from_secs(2),
            ..Default::default()
        }),
        Scenario::demo().with(mk_node("node-4")),
    )
    .await;
    let mut client = h.grpc().await;
    let drain = |node: &str| {
        mk_request(
            "drain_node",
            mk_target("", "Node", node),
            json!({"eviction_retry_seconds": 1, "timeout_seconds": 60}),
        )
    };
    let waiting = client
        .execute(drain("node-3"))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        waiting.state,
        ExecutionState::WaitingApproval as i32,
        "{}",
        waiting.message
    );
    assert_eq!(
        waiting.policy.as_ref().unwrap().decision,
        "require_approval"
    );
    let node3 = Api::<Node>::all(h.kube.clone())
        .get("node-3")
        .await
        .unwrap();
    assert_ne!(
        node3.spec.unwrap().unschedulable,
        Some(true),
        "nothing happens before the approval"
    );
    let err = client
        .approve_execution(ApproveExecutionRequest {
            execution_id: waiting.id.clone(),
            approver: String::new(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    client
        .approve_execution(ApproveExecutionRequest {
            execution_id: waiting.id.clone(),
            approver: "oncall-lead".into(),
            reason: "node-3 has a failing disk".into(),
        })
        .await
        .unwrap();
    let events = watch_all(&mut client, &waiting.id, 0).await;
    let last = events.last().unwrap();
    assert_eq!(
        last.state,
        ExecutionState::Succeeded as i32,
        "{}",
        last.message
    );
    assert!(events
        .iter()
        .any(|e| e.message.starts_with("approved by oncall-lead")));
    let node3 = Api::<Node>::all(h.kube.clone())
        .get("node-3")
        .await
        .unwrap();
    assert_eq!(node3.spec.unwrap().unschedulable, Some(true));

    let rejected = client
        .execute(drain("node-4"))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    let answer = client
        .reject_execution(RejectExecutionRequest {
            execution_id: rejected.id.clone(),
            approver: "oncall-lead".into(),
            reason: "not during the sale".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        answer.state,
        ExecutionState::Rejected as i32,
        "{}",
        answer.message
    );
    assert_eq!(answer.approval.unwrap().approver, "oncall-lead");

    let expiring = client
        .execute(drain("node-4"))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    let events = watch_all(&mut client, &expiring.id, 0).await;
    let last = events.last().unwrap();
    assert_eq!(last.state, ExecutionState::Rejected as i32);
    assert!(
        last.message.starts_with("approval expired"),
        "{}",
        last.message
    );
    let node4 = Api::<Node>::all(h.kube.clone())
        .get("node-4")
        .await
        .unwrap();
    assert_ne!(node4.spec.unwrap().unschedulable, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_requests_on_one_target_in_cooldown_run_exactly_once() {
    let h = Harness::start(
        EngineConfig {
            cooldown: Duration::from_secs(300),
            ..Default::default()
        },
        Scenario::demo(),
    )
    .await;
    let client = h.grpc().await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move {
            c.execute(mk_request(
                "scale_deployment",
                mk_target("production", "Deployment", "web"),
                json!({"replicas": 4 + (i % 2)}),
            ))
            .await
        }));
    }
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => accepted.push(r.into_inner().execution.unwrap()),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one passes: {refused:?}");
    assert!(
        refused.iter().all(|s| s.code() == Code::FailedPrecondition),
        "{refused:?}"
    );
    let done = h.engine.wait(&accepted[0].id).await.unwrap();
    assert_eq!(
        done.state,
        executor_service::domain::ExecutionState::Succeeded
    );
    let mut c = client.clone();
    let after = c
        .execute(mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({"replicas": 3}),
        ))
        .await
        .unwrap_err();
    assert!(
        after.message().contains("is in cooldown until"),
        "{}",
        after.message()
    );
    let listed = c
        .list_executions(ListExecutionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_that_fails_verification_is_rolled_back() {
    let image = |tag: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "shop", "image": format!("example/shop:{tag}")}]}}}});
    let h = Harness::start(
        EngineConfig::default(),
        Scenario::empty().with({
            let mut d = mk_deployment("default", "shop", 2, "example/shop:1.0");
            d["spec"]["progressDeadlineSeconds"] = json!(10);
            d
        }),
    )
    .await;
    let api = Api::<Deployment>::namespaced(h.kube.clone(), "default");
    // History: revision 2 crashes, revision 3 is healthy again.
    for tag in ["crashloop", "1.1"] {
        api.patch(
            "shop",
            &Default::default(),
            &kube::api::Patch::Strategic(image(tag)),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let done = common::run_to_end(
        &mut client,
        "rollback_deployment",
        mk_target("default", "Deployment", "shop"),
        json!({"to_revision": 2}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::RolledBack as i32,
        "{}",
        done.message
    );
    let events = watch_all(&mut client, &done.id, 0).await;
    let states: Vec<i32> = events.iter().map(|e| e.state).collect();
    assert!(states.contains(&(ExecutionState::RollingBack as i32)));
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("exceeded its progress deadline")),
        "{events:?}"
    );
    let image_now = api
        .get("shop")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image_now, "example/shop:1.1", "the pre-state is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_api_errors_are_retried_and_shown_as_events() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    // A restart holds the target while the scale, already checked at submit, waits its turn;
    // only then does the API server start failing.
    let restart = client
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
    let scale = client
        .execute(mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({"replicas": 4}),
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    h.sim.faults().add(FaultRule {
        verb: Some("patch".into()),
        resource: Some("deployments/scale".into()),
        latency: None,
        error_status: Some(503),
        probability: 1.0,
        count: Some(2),
    });
    h.engine.wait(&restart.id).await.unwrap();
    let done = h.engine.wait(&scale.id).await.unwrap();
    assert_eq!(
        done.state,
        executor_service::domain::ExecutionState::Succeeded,
        "{}",
        done.message
    );
    let events = watch_all(&mut client, &scale.id, 0).await;
    let retries: Vec<&str> = events
        .iter()
        .map(|e| e.message.as_str())
        .filter(|m| m.contains("retrying"))
        .collect();
    assert_eq!(retries.len(), 2, "{events:?}");
    assert!(retries[0].contains("503"), "{}", retries[0]);
    let web = Api::<Deployment>::namespaced(h.kube.clone(), "production")
        .get("web")
        .await
        .unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_watch_answered_403_or_404_fails_the_execution_at_once_naming_the_cause() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let timeout = Duration::from_secs(60);
    for (code, name, cause) in [
        (
            403,
            "web",
            "lost permission to follow deployment production/web: Forbidden (403)",
        ),
        (
            404,
            "worker",
            "deployment production/worker is gone: NotFound (404)",
        ),
    ] {
        // The restart's patch goes through; following its rollout is what the server refuses.
        h.sim.faults().clear();
        h.sim.faults().add(FaultRule {
            verb: Some("watch".into()),
            resource: Some("deployments".into()),
            error_status: Some(code),
            probability: 1.0,
            ..Default::default()
        });
        let mut request = mk_request(
            "rolling_restart_deployment",
            mk_target("production", "Deployment", name),
            json!({}),
        );
        request.timeout = Some(prost_types::Duration {
            seconds: timeout.as_secs() as i64,
            nanos: 0,
        });
        let started = std::time::Instant::now();
        let execution = client
            .execute(request)
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        let done = h.engine.wait(&execution.id).await.unwrap();
        let took = started.elapsed();
        assert_eq!(
            done.state,
            executor_service::domain::ExecutionState::Failed,
            "{code}: {}",
            done.message
        );
        assert!(done.message.starts_with(cause), "{code}: {}", done.message);
        assert!(
            took < timeout / 6,
            "{code}: took {took:?}, not at once: {}",
            done.message
        );
        assert!(done.message.contains(cause), "{code}: {}", done.message);
        assert!(done.message.contains("injected fault"), "{}", done.message);
        let events = watch_all(&mut client, &execution.id, 0).await;
        assert!(
            events.iter().any(|e| e.message.contains(cause)),
            "{code}: no event names the cause: {events:?}"
        );
        // Nothing to restore, or no way to see the restore: no rollback is tried.
        assert!(
            events
                .iter()
                .all(|e| e.state != ExecutionState::RollingBack as i32),
            "{code}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_limit_serializes_work_in_one_namespace_only() {
    let h = Harness::start(
        EngineConfig {
            namespace_limit: 1,
            ..Default::default()
        },
        Scenario::demo(),
    )
    .await;
    let mut client = h.grpc().await;
    let mut ids = Vec::new();
    for (ns, name) in [
        ("production", "web"),
        ("production", "worker"),
        ("staging", "web"),
    ] {
        let e = client
            .execute(mk_request(
                "rolling_restart_deployment",
                mk_target(ns, "Deployment", name),
                json!({}),
            ))
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        ids.push(e.id);
    }
    let mut spans = Vec::new();
    for id in &ids {
        let done = h.engine.wait(id).await.unwrap();
        spans.push((done.started_at.unwrap(), done.finished_at.unwrap()));
    }
    let overlap =
        |a: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
         b: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)| {
            a.0 < b.1 && b.0 < a.1
        };
    assert!(
        !overlap(spans[0], spans[1]),
        "two in production at once: {spans:?}"
    );
    assert!(
        overlap(spans[0], spans[2]) || overlap(spans[1], spans[2]),
        "staging waited for production: {spans:?}"
    );
}

/// Executions waiting for an approval wait outside the queue, under their own bound: a full
/// house of unanswered approvals neither takes the queue's places from work that can run, nor
/// grows without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_wait_outside_the_queue_under_their_own_bound() {
    let h = Harness::start(
        with_policy(EngineConfig {
            queue_capacity: 2,
            approval_capacity: 3,
            ..Default::default()
        }),
        Scenario::demo()
            .with(mk_node("node-4"))
            .with(mk_node("node-5"))
            .with(mk_node("node-6")),
    )
    .await;
    let mut client = h.grpc().await;
    let drain = |node: &str| {
        mk_request(
            "drain_node",
            mk_target("", "Node", node),
            json!({"eviction_retry_seconds": 1, "timeout_seconds": 60}),
        )
    };
    for node in ["node-4", "node-5", "node-6"] {
        let waiting = client
            .execute(drain(node))
            .await
            .unwrap_or_else(|e| panic!("drain of {node}: {e:?}"))
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(
            waiting.state,
            ExecutionState::WaitingApproval as i32,
            "{}",
            waiting.message
        );
    }
    // Three wait for approval with a queue of two: work that needs no approval still runs.
    let scale = common::run_to_end(
        &mut client,
        "scale_deployment",
        mk_target("production", "Deployment", "web"),
        json!({"replicas": 4, "wait_for_rollout": false}),
    )
    .await;
    assert_eq!(
        scale.state,
        ExecutionState::Succeeded as i32,
        "{}",
        scale.message
    );
    // A fourth approval is one too many.
    let err = client
        .execute(drain("node-3"))
        .await
        .expect_err("the approvals are full");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("3 executions are waiting for approval"),
        "{}",
        err.message()
    );
}

/// Reading the target, and cordoning or uncordoning a node, are retried like any other call:
/// two 503s (R2 found actions giving up on the first) cost a retry, not the execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_errors_on_reading_the_target_are_retried() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    for (action, kind, name, verb, resource) in [
        (
            "rolling_restart_deployment",
            "Deployment",
            "web",
            "get",
            "deployments",
        ),
        ("cordon_node", "Node", "node-2", "get", "nodes"),
        ("uncordon_node", "Node", "node-2", "patch", "nodes"),
        ("cordon_node", "Node", "node-2", "patch", "nodes"),
        ("cordon_node", "Node", "node-3", "list", "nodes"),
    ] {
        h.sim.faults().add(FaultRule {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            latency: None,
            error_status: Some(503),
            probability: 1.0,
            count: Some(2),
        });
        let namespace = if kind == "Node" { "" } else { "production" };
        let done = common::run_to_end(
            &mut client,
            action,
            mk_target(namespace, kind, name),
            json!({}),
        )
        .await;
        assert_eq!(
            done.state,
            ExecutionState::Succeeded as i32,
            "{action} with two 503s on {verb} {resource}: {}",
            done.message
        );
        h.sim.faults().clear();
    }
}
