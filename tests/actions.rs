//! The catalog's actions against the simulated cluster: each does what kubectl would, reports
//! progress, records undo data, and refuses bad parameters naming them.

mod common;

use std::time::Duration;

use common::{mk_request, mk_target, watch_all, Harness};
use executor_service::{
    api::proto::{ExecutionState, ListActionsRequest, ParameterType},
    engine::EngineConfig,
    sim::{mk_daemonset, mk_deployment, mk_pod, mk_pvc, mk_secret, mk_storage_class, Scenario},
};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{PersistentVolumeClaim, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{api::ListParams, Api, ResourceExt};
use prost_types::value::Kind;
use serde_json::json;
use tonic::Code;

fn field<'a>(s: &'a Option<prost_types::Struct>, name: &str) -> &'a Kind {
    s.as_ref().unwrap().fields[name].kind.as_ref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_action_rejects_ill_typed_and_out_of_bound_parameters_naming_them() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let actions = client
        .list_actions(ListActionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .actions;
    let names: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
    for expected in [
        "restart_pod",
        "scale_deployment",
        "rolling_restart_deployment",
        "rollback_deployment",
        "increase_resources",
        "expand_pvc",
        "cordon_node",
        "uncordon_node",
        "taint_node",
        "untaint_node",
        "drain_node",
        "quarantine_pod",
        "collect_diagnostics",
        "notify_only",
        "delete_pod",
        "scale_statefulset",
        "restart_statefulset",
        "restart_daemonset",
        "update_hpa",
        "migrate_workload",
        "update_network_policy",
        "rotate_secrets",
        "restart_network",
        "reset_service_mesh",
        "audit_logs",
        "cleanup_storage",
        "repair_database",
        "compact_storage",
        "failover_database",
        "backup_data",
        "optimize_resources",
        "create_heap_dump",
        "apply_manifest",
        "delete_resource",
        "patch_resource",
        "run_job",
        "enable_debug_mode",
        "disable_debug_mode",
        "deploy_code",
        "stop_code",
        "remove_code",
        "code_status",
        "code_logs",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from ListActions: {names:?}"
        );
    }
    let mut checked = 0;
    for action in &actions {
        assert!(
            !action.description.is_empty(),
            "{} has no description",
            action.name
        );
        // An action on any kind ("*") takes a real one.
        let kind = match action.target_kinds[0].as_str() {
            "*" => "ConfigMap",
            kind => kind,
        };
        let target = mk_target("production", kind, "x");
        for p in &action.parameters {
            let mut bad = vec![];
            match ParameterType::try_from(p.r#type).unwrap() {
                ParameterType::Integer => {
                    bad.push(json!("abc"));
                    bad.push(json!(1.5));
                    if let Some(max) = p.maximum {
                        bad.push(json!(max + 1));
                    }
                    if let Some(min) = p.minimum {
                        bad.push(json!(min - 1));
                    }
                }
                ParameterType::Boolean => bad.push(json!("maybe")),
                ParameterType::Quantity => bad.push(json!("lots")),
                ParameterType::Files => {
                    bad.push(json!("main.py"));
                    bad.push(json!({"../escape.py": "print(1)"}));
                    bad.push(json!({"main.py": 5}));
                }
                ParameterType::String => {
                    bad.push(json!(42));
                    if !p.allowed_values.is_empty() {
                        bad.push(json!("bogus"));
                    }
                }
                ParameterType::Unspecified => panic!("{}.{} has no type", action.name, p.name),
            }
            for value in bad {
                let request = mk_request(
                    &action.name,
                    target.clone(),
                    json!({ p.name.clone(): value }),
                );
                let err = client.execute(request).await.unwrap_err();
                assert_eq!(
                    err.code(),
                    Code::InvalidArgument,
                    "{}.{} = {value}: {err:?}",
                    action.name,
                    p.name
                );
                assert!(
                    err.message()
                        .starts_with(&format!("parameters.{}:", p.name)),
                    "{}.{} = {value}: {}",
                    action.name,
                    p.name,
                    err.message()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} bad values were tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expand_pvc_grows_the_claim_and_waits_for_the_capacity() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(h.kube.clone(), "production");
    let claim = loop {
        let list = claims.list(&ListParams::default()).await.unwrap().items;
        if let Some(c) = list
            .into_iter()
            .find(|c| c.name_any().starts_with("data-db-"))
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let name = claim.name_any();
    let target = mk_target("production", "PersistentVolumeClaim", &name);
    let err = client
        .execute(mk_request(
            "expand_pvc",
            target.clone(),
            json!({"size": "5Gi"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("parameters.size: must be larger"),
        "{}",
        err.message()
    );
    let done = common::run_to_end(&mut client, "expand_pvc", target, json!({"size": "20Gi"})).await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let after = claims.get(&name).await.unwrap();
    let capacity = after.status.unwrap().capacity.unwrap()["storage"].0.clone();
    assert_eq!(capacity, "20Gi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expand_pvc_refuses_a_storage_class_without_expansion() {
    let h = Harness::start(
        EngineConfig::default(),
        Scenario::empty()
            .with(mk_storage_class("fixed", false))
            .with(mk_pvc("default", "logs", "1Gi", "fixed")),
    )
    .await;
    let mut client = h.grpc().await;
    let err = client
        .execute(mk_request(
            "expand_pvc",
            mk_target("default", "PersistentVolumeClaim", "logs"),
            json!({"size": "2Gi"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("does not allow volume expansion"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_hpa_changes_the_bounds_and_refuses_min_above_max() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let target = mk_target("production", "HorizontalPodAutoscaler", "api");
    let err = client
        .execute(mk_request(
            "update_hpa",
            target.clone(),
            json!({"min_replicas": 8}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("parameters.min_replicas"),
        "{}",
        err.message()
    );
    let done = common::run_to_end(
        &mut client,
        "update_hpa",
        target,
        json!({"min_replicas": 3, "max_replicas": 10}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(h.kube.clone(), "production")
        .get("api")
        .await
        .unwrap();
    let spec = hpa.spec.unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 10));
    assert_eq!(
        field(&done.rollback_data, "max_replicas"),
        &Kind::NumberValue(6.0)
    );
}

async fn first_pod(h: &Harness, ns: &str, app: &str) -> Pod {
    let pods = Api::<Pod>::namespaced(h.kube.clone(), ns);
    loop {
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap();
        if let Some(p) = list
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quarantine_pod_labels_the_pod_and_isolates_it_once() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let pod = first_pod(&h, "production", "api").await;
    let target = mk_target("production", "Pod", &pod.name_any());
    let done = common::run_to_end(
        &mut client,
        "quarantine_pod",
        target.clone(),
        json!({"reason": "suspicious egress"}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "production");
    let labelled = pods.get(&pod.name_any()).await.unwrap();
    assert_eq!(
        labelled
            .labels()
            .get("executor-service.io/quarantine")
            .map(String::as_str),
        Some("true")
    );
    let policy = Api::<NetworkPolicy>::namespaced(h.kube.clone(), "production")
        .get("executor-service-quarantine")
        .await
        .unwrap();
    let spec = serde_json::to_value(policy.spec.unwrap()).unwrap();
    assert_eq!(
        spec["podSelector"]["matchLabels"]["executor-service.io/quarantine"],
        json!("true")
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(spec["egress"][0]["ports"][0]["port"], json!(53));
    // The second quarantine finds both in place and writes nothing: judged from the cluster's
    // own record of client writes and from what the action would have changed (the pod's
    // labels, the policy's version). The pod's own resourceVersion is no measure: the
    // simulated kubelet bumps it with status updates while the pod becomes Ready.
    let writes = h.sim.writes();
    let applied = |resource: &str, name: &str| {
        writes
            .on(resource, "production", name)
            .iter()
            .filter(|w| w.applied())
            .count()
    };
    let pod_writes = applied("pods", &pod.name_any());
    let policy_writes = applied("networkpolicies", "executor-service-quarantine");
    assert!(pod_writes >= 1, "the first quarantine labelled the pod");
    let again = common::run_to_end(&mut client, "quarantine_pod", target, json!({})).await;
    assert_eq!(again.state, ExecutionState::Succeeded as i32);
    assert!(
        again.message.contains("already quarantined"),
        "{}",
        again.message
    );
    assert_eq!(applied("pods", &pod.name_any()), pod_writes);
    assert_eq!(
        applied("networkpolicies", "executor-service-quarantine"),
        policy_writes
    );
    let after = pods.get(&pod.name_any()).await.unwrap();
    assert_eq!(after.labels(), labelled.labels());
    let policy_after = Api::<NetworkPolicy>::namespaced(h.kube.clone(), "production")
        .get("executor-service-quarantine")
        .await
        .unwrap();
    assert_eq!(
        policy_after.resource_version(),
        policy.metadata.resource_version
    );
}

/// A value no diagnostics may ever show: the password of the Secret the broken pods read.
const SECRET_PASSWORD: &str = "hunter2-Zq7vX9-never-in-diagnostics";
/// An environment value written inline in the pod spec (diagnostics copy no env values either).
const INLINE_ENV_VALUE: &str = "inline-env-Kp4mW8-never-in-diagnostics";

/// `broken`: two crash-looping pods that take a password from Secret `broken-credentials`
/// (one key through `secretKeyRef`, the whole Secret through `envFrom`) and have an inline
/// environment value.
fn mk_broken_with_a_secret() -> Scenario {
    let mut deployment = mk_deployment("default", "broken", 2, "example/broken:crashloop");
    let container = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    container["env"] = json!([
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "broken-credentials", "key": "password"}}},
        {"name": "GREETING", "value": INLINE_ENV_VALUE},
    ]);
    container["envFrom"] = json!([{"secretRef": {"name": "broken-credentials"}}]);
    Scenario::empty()
        .with(mk_secret(
            "default",
            "broken-credentials",
            json!({"password": SECRET_PASSWORD}),
        ))
        .with(deployment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collect_diagnostics_reports_crashing_containers_logs_and_events_without_secrets() {
    use base64::Engine as _;
    let h = Harness::start(EngineConfig::default(), mk_broken_with_a_secret()).await;
    let mut client = h.grpc().await;
    // Let the containers crash at least once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let done = common::run_to_end(
        &mut client,
        "collect_diagnostics",
        mk_target("default", "Deployment", "broken"),
        json!({"tail_lines": 5}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    assert!(done.message.contains("unhealthy"), "{}", done.message);
    let Kind::StructValue(artifact) = field(&done.result, "diagnostics") else {
        panic!("no diagnostics artifact")
    };
    let artifact = serde_json::to_string(&format!("{artifact:?}")).unwrap();
    assert!(artifact.contains("restart_count"), "{artifact}");
    assert!(artifact.contains("logs"), "{artifact}");
    let events = watch_all(&mut client, &done.id, 0).await;
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("collected pod broken-")),
        "{events:?}"
    );
    // Neither the execution (result, message, rollback data) nor any of its events carries
    // the Secret's value, as it is or as the API serves it (base64), nor an inline env value.
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_PASSWORD);
    let mut places = vec![
        ("the result".to_string(), format!("{:?}", done.result)),
        ("the message".to_string(), done.message.clone()),
        (
            "the rollback data".to_string(),
            format!("{:?}", done.rollback_data),
        ),
    ];
    places.extend(
        events
            .iter()
            .map(|e| (format!("event {}", e.sequence), format!("{e:?}"))),
    );
    for (what, value) in [
        ("the Secret's value", SECRET_PASSWORD),
        ("the Secret's value in base64", encoded.as_str()),
        ("an inline env value", INLINE_ENV_VALUE),
    ] {
        for (place, text) in &places {
            assert!(!text.contains(value), "{what} leaked into {place}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_only_records_the_message_and_touches_nothing() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let before = common::quiet_version(&h.kube).await;
    let done = common::run_to_end(
        &mut client,
        "notify_only",
        mk_target("production", "Deployment", "web"),
        json!({"message": "latency above SLO"}),
    )
    .await;
    assert_eq!(done.state, ExecutionState::Succeeded as i32);
    let events = watch_all(&mut client, &done.id, 0).await;
    assert!(events.iter().any(|e| e.message == "latency above SLO"));
    let after = common::quiet_version(&h.kube).await;
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_pod_waits_until_the_pod_is_gone() {
    let h = Harness::start(
        EngineConfig::default(),
        Scenario::empty().with(mk_pod("default", "scratch", Some("node-1"), "busybox:1.36")),
    )
    .await;
    let mut client = h.grpc().await;
    let target = mk_target("default", "Pod", "scratch");
    let err = client
        .execute(mk_request("delete_pod", target.clone(), json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "unmanaged pods need force: {err:?}"
    );
    let done = common::run_to_end(
        &mut client,
        "delete_pod",
        target,
        json!({"force": true, "grace_period_seconds": 0}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    assert!(Api::<Pod>::namespaced(h.kube.clone(), "default")
        .get_opt("scratch")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_statefulset_follows_the_ordered_rollout() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let done = common::run_to_end(
        &mut client,
        "scale_statefulset",
        mk_target("production", "StatefulSet", "db"),
        json!({"replicas": 3}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let sts = Api::<StatefulSet>::namespaced(h.kube.clone(), "production")
        .get("db")
        .await
        .unwrap();
    assert_eq!(sts.status.unwrap().ready_replicas, Some(3));
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "production");
    assert!(pods.get("db-2").await.is_ok(), "the third ordinal exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_statefulset_and_daemonset_roll_every_pod() {
    let h = Harness::start(
        EngineConfig::default(),
        Scenario::demo().with(mk_daemonset("default", "agent", "example/agent:1.0")),
    )
    .await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "production");
    let old_db0 = pods.get("db-0").await.unwrap().uid();
    let mut client = h.grpc().await;
    let done = common::run_to_end(
        &mut client,
        "restart_statefulset",
        mk_target("production", "StatefulSet", "db"),
        json!({}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    assert_ne!(
        pods.get("db-0").await.unwrap().uid(),
        old_db0,
        "db-0 was replaced"
    );
    let done = common::run_to_end(
        &mut client,
        "restart_daemonset",
        mk_target("default", "DaemonSet", "agent"),
        json!({}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let ds = Api::<DaemonSet>::namespaced(h.kube.clone(), "default")
        .get("agent")
        .await
        .unwrap();
    let status = ds.status.unwrap();
    assert_eq!(
        status.updated_number_scheduled,
        Some(status.desired_number_scheduled)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_without_history_fails_with_kubectls_message() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let err = client
        .execute(mk_request(
            "rollback_deployment",
            mk_target("production", "Deployment", "web"),
            json!({}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "no rollout history found for deployment \"web\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_to_a_crashing_image_fails_on_the_progress_deadline() {
    let h = Harness::start(
        EngineConfig::default(),
        Scenario::empty().with({
            let mut d = mk_deployment("default", "shaky", 2, "example/shaky:crashloop");
            d["spec"]["progressDeadlineSeconds"] = json!(10);
            d
        }),
    )
    .await;
    let mut client = h.grpc().await;
    let done = common::run_to_end(
        &mut client,
        "rolling_restart_deployment",
        mk_target("default", "Deployment", "shaky"),
        json!({}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Failed as i32,
        "{}",
        done.message
    );
    assert!(
        done.message.contains("exceeded its progress deadline"),
        "{}",
        done.message
    );
}

/// The nodes the live pods of `app` run on.
async fn nodes_of(h: &Harness, ns: &str, app: &str) -> Vec<String> {
    Api::<Pod>::namespaced(h.kube.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.and_then(|s| s.node_name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_workload_moves_every_pod_off_the_node_and_undoes_by_the_template() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let target = mk_target("production", "Deployment", "web");
    let from = nodes_of(&h, "production", "web").await[0].clone();
    // Refusals name the parameter: both given, neither, a node that does not exist.
    for (params, field) in [
        (
            json!({"from_node": from, "from_zone": "zone-1"}),
            "parameters.from_zone",
        ),
        (json!({}), "parameters.from_node"),
        (json!({"from_node": "node-9"}), "parameters.from_node"),
    ] {
        let err = client
            .execute(mk_request("migrate_workload", target.clone(), params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let done = common::run_to_end(
        &mut client,
        "migrate_workload",
        target.clone(),
        json!({"from_node": from}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    // The cluster's record: no pod of web on the node, all three running elsewhere, and the
    // template keeps them away.
    let now = nodes_of(&h, "production", "web").await;
    assert!(!now.contains(&from), "{now:?} still has {from}");
    let web =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(h.kube.clone(), "production")
            .get("web")
            .await
            .unwrap();
    let affinity = serde_json::to_value(web.spec.unwrap().template.spec.unwrap().affinity).unwrap();
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [from]})
    );
    assert!(matches!(
        field(&done.rollback_data, "template"),
        Kind::StructValue(_)
    ));
    // A zone with every other node cordoned has nowhere to go: refused before any change.
    for node in ["node-1", "node-2", "node-3"] {
        if node != from {
            let done = common::run_to_end(
                &mut client,
                "cordon_node",
                mk_target("", "Node", node),
                json!({}),
            )
            .await;
            assert_eq!(
                done.state,
                ExecutionState::Succeeded as i32,
                "{}",
                done.message
            );
        }
    }
    let err = client
        .execute(mk_request(
            "migrate_workload",
            mk_target("production", "Deployment", "worker"),
            json!({"from_node": from}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("nowhere to go"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_network_policy_adds_a_rule_once_removes_it_and_names_bad_input() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let policies = Api::<NetworkPolicy>::namespaced(h.kube.clone(), "production");
    policies
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
    let target = mk_target("production", "NetworkPolicy", "web-ingress");
    for (params, field) in [
        (json!({"port": 80}), "parameters.allow_from_namespace"),
        (
            json!({"allow_from_labels": "app"}),
            "parameters.allow_from_labels",
        ),
        (
            json!({"allow_from_namespace": "staging", "port": 70000}),
            "parameters.port",
        ),
        (
            json!({"allow_from_namespace": "staging", "protocol": "HTTP"}),
            "parameters.protocol",
        ),
    ] {
        let err = client
            .execute(mk_request("update_network_policy", target.clone(), params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let rule =
        json!({"allow_from_namespace": "staging", "allow_from_labels": "app=gateway", "port": 80});
    let ingress = |p: NetworkPolicy| serde_json::to_value(p.spec.unwrap().ingress).unwrap();
    let expected = json!([{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "staging"}},
                  "podSelector": {"matchLabels": {"app": "gateway"}}}],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }]);
    let done = common::run_to_end(
        &mut client,
        "update_network_policy",
        target.clone(),
        rule.clone(),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    assert_eq!(
        ingress(policies.get("web-ingress").await.unwrap()),
        expected
    );
    assert!(matches!(
        field(&done.rollback_data, "spec"),
        Kind::StructValue(_)
    ));
    // Again: nothing to add, the rule is there once.
    let again = common::run_to_end(
        &mut client,
        "update_network_policy",
        target.clone(),
        rule.clone(),
    )
    .await;
    assert_eq!(
        again.state,
        ExecutionState::Succeeded as i32,
        "{}",
        again.message
    );
    assert!(
        again.message.contains("already as asked"),
        "{}",
        again.message
    );
    assert_eq!(
        ingress(policies.get("web-ingress").await.unwrap()),
        expected
    );
    // Removed: no ingress rule left.
    let mut remove = rule.clone();
    remove["remove"] = json!(true);
    let removed = common::run_to_end(&mut client, "update_network_policy", target, remove).await;
    assert_eq!(
        removed.state,
        ExecutionState::Succeeded as i32,
        "{}",
        removed.message
    );
    assert_eq!(
        ingress(policies.get("web-ingress").await.unwrap()),
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_secrets_replaces_values_keeps_the_previous_restarts_consumers_and_never_shows_values(
) {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let deployments = Api::<Deployment>::namespaced(h.kube.clone(), "production");
    // A consumer: its pods read the password from the Secret.
    deployments
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "billing", "namespace": "production"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "billing"}},
                  "template": {"metadata": {"labels": {"app": "billing"}},
                    "spec": {"containers": [{"name": "billing", "image": "example/billing:1",
                      "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "api-credentials", "key": "password"}}}]}]}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let target = mk_target("production", "Secret", "api-credentials");
    let err = client
        .execute(mk_request(
            "rotate_secrets",
            target.clone(),
            json!({"keys": "passwd"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().starts_with("parameters.keys"),
        "{}",
        err.message()
    );
    // The dry run shows what changes, never a value (plain or base64).
    let plan = client
        .dry_run(executor_service::api::proto::DryRunRequest {
            action: "rotate_secrets".into(),
            target: target.clone(),
            parameters: Some(common::to_struct(&json!({"keys": "password"}))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shown = format!("{plan:?}");
    assert!(shown.contains("production/deployment/billing"), "{shown}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("czNjcjN0"),
        "{shown}"
    );

    let done = common::run_to_end(
        &mut client,
        "rotate_secrets",
        target,
        json!({"keys": "password"}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let secrets = Api::<Secret>::namespaced(h.kube.clone(), "production");
    let data = secrets.get("api-credentials").await.unwrap().data.unwrap();
    let password = &data["password"].0;
    assert_eq!(password.len(), 32);
    assert!(password.iter().all(u8::is_ascii_alphanumeric));
    assert_eq!(
        data["username"].0,
        b"api".to_vec(),
        "a key not named is kept"
    );
    // The previous values are in a labelled copy in the cluster.
    let copies = secrets
        .list(&ListParams::default().labels("executor-service.io/rotated-from=api-credentials"))
        .await
        .unwrap()
        .items;
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].data.as_ref().unwrap()["password"].0,
        b"s3cr3t".to_vec()
    );
    // The consumer was restarted; a workload that does not use the Secret was not.
    let restarted = |d: Deployment| {
        d.spec
            .unwrap()
            .template
            .metadata
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt"))
    };
    assert!(restarted(deployments.get("billing").await.unwrap()));
    assert!(!restarted(deployments.get("web").await.unwrap()));
    // Neither value is anywhere in what the execution recorded.
    let recorded = client
        .get_execution(executor_service::api::proto::GetExecutionRequest {
            execution_id: done.id.clone(),
            include_events: true,
        })
        .await
        .unwrap()
        .into_inner();
    let recorded = format!("{recorded:?}");
    let new = String::from_utf8(password.clone()).unwrap();
    assert!(
        !recorded.contains("s3cr3t") && !recorded.contains(&new),
        "{recorded}"
    );
    assert!(
        recorded.contains("production/deployment/billing"),
        "{recorded}"
    );
}

/// Whether a workload's template was restarted (kubectl's restartedAt annotation).
async fn restarted_at(h: &Harness, kind: &str, ns: &str, name: &str) -> Option<String> {
    let object: serde_json::Value = match kind {
        "DaemonSet" => serde_json::to_value(
            Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(h.kube.clone(), ns)
                .get(name)
                .await
                .unwrap(),
        ),
        _ => serde_json::to_value(
            Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(h.kube.clone(), ns)
                .get(name)
                .await
                .unwrap(),
        ),
    }
    .unwrap();
    object["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_network_restarts_the_plugin_then_dns_and_reset_service_mesh_the_control_plane_then_meshed_workloads(
) {
    use executor_service::sim::{mk_daemonset, mk_deployment, mk_namespace, Scenario};
    let mut meshed = mk_deployment("shop", "cart", 2, "example/cart:1");
    meshed["spec"]["template"]["metadata"]["annotations"] =
        json!({"sidecar.istio.io/inject": "true"});
    let scenario = Scenario::demo()
        .with(mk_daemonset(
            "kube-system",
            "calico-node",
            "calico/node:v3.28",
        ))
        .with(mk_daemonset(
            "kube-system",
            "kube-proxy",
            "registry.k8s.io/kube-proxy:v1.33.0",
        ))
        .with(mk_deployment(
            "kube-system",
            "coredns",
            2,
            "coredns/coredns:1.11",
        ))
        .with(mk_namespace("istio-system"))
        .with(mk_deployment(
            "istio-system",
            "istiod",
            1,
            "istio/pilot:1.23",
        ))
        .with(mk_namespace("shop"))
        .with(meshed)
        .with(mk_deployment("shop", "plain", 1, "example/plain:1"));
    let h = Harness::start(executor_service::engine::EngineConfig::default(), scenario).await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;

    // Unknown components are named; the known ones are found; kube-proxy only when asked.
    let err = client
        .execute(mk_request(
            "restart_network",
            mk_target("", "Namespace", "kube-system"),
            json!({"components": "calico-node,weave"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().starts_with("parameters.components"),
        "{}",
        err.message()
    );
    let done = common::run_to_end(
        &mut client,
        "restart_network",
        mk_target("", "Namespace", "kube-system"),
        json!({}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let calico = restarted_at(&h, "DaemonSet", "kube-system", "calico-node").await;
    let dns = restarted_at(&h, "Deployment", "kube-system", "coredns").await;
    assert!(calico.is_some() && dns.is_some(), "{calico:?} {dns:?}");
    assert_eq!(
        restarted_at(&h, "DaemonSet", "kube-system", "kube-proxy").await,
        None
    );
    // One after the other: the plugin's rollout was followed to the end before DNS began.
    let events = client
        .get_execution(executor_service::api::proto::GetExecutionRequest {
            execution_id: done.id.clone(),
            include_events: true,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let position = |text: &str| {
        messages
            .iter()
            .position(|m| m.contains(text))
            .unwrap_or_else(|| panic!("{text} not in {messages:#?}"))
    };
    assert!(
        position("daemon set \"calico-node\" successfully rolled out")
            < position("kube-system/deployment/coredns: restarted"),
        "{messages:#?}"
    );
    assert!(
        matches!(field(&done.rollback_data, "members"), Kind::ListValue(l) if l.values.len() == 2)
    );

    // The mesh: istiod first, then the meshed workload of shop; the plain one is left alone.
    let err = client
        .execute(mk_request(
            "reset_service_mesh",
            mk_target("", "Namespace", "istio-system"),
            json!({"mesh": "linkerd"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let done = common::run_to_end(
        &mut client,
        "reset_service_mesh",
        mk_target("", "Namespace", "istio-system"),
        json!({"restart_workloads_in": "shop"}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    assert!(restarted_at(&h, "Deployment", "istio-system", "istiod")
        .await
        .is_some());
    assert!(restarted_at(&h, "Deployment", "shop", "cart")
        .await
        .is_some());
    assert_eq!(restarted_at(&h, "Deployment", "shop", "plain").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_logs_reports_who_changed_what_with_events_and_pods_and_no_secret_or_data() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    // Something to find: a scale by this executor (its field manager) and a ConfigMap edit by
    // someone else.
    let scaled = common::run_to_end(
        &mut client,
        "scale_deployment",
        mk_target("production", "Deployment", "worker"),
        json!({"replicas": 3}),
    )
    .await;
    assert_eq!(
        scaled.state,
        ExecutionState::Succeeded as i32,
        "{}",
        scaled.message
    );
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(h.kube.clone(), "production")
        .patch(
            "api-config",
            &kube::api::PatchParams::apply("intruder").force(),
            &kube::api::Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "api-config"},
                "data": {"LOG_LEVEL": "trace-and-leak"},
            })),
        )
        .await
        .unwrap();
    let done = common::run_to_end(
        &mut client,
        "audit_logs",
        mk_target("", "Namespace", "production"),
        json!({"since_minutes": 30, "tail_lines": 5}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    let changes = result["audit"]["changes"].as_array().unwrap();
    let by = |object: &str, manager: &str| {
        changes
            .iter()
            .any(|c| c["object"] == object && c["manager"] == manager)
    };
    assert!(
        by("production/configmap/api-config", "intruder"),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["object"] == "production/deployment/worker"),
        "{changes:#?}"
    );
    assert!(!result["audit"]["events"].as_array().unwrap().is_empty());
    assert!(!result["audit"]["pods"].as_array().unwrap().is_empty());
    // No data: not the ConfigMap's value, not the Secret's.
    let text = result.to_string();
    assert!(
        !text.contains("trace-and-leak") && !text.contains("s3cr3t"),
        "{text}"
    );
    assert!(done.message.contains("intruder"), "{}", done.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cleanup_storage_runs_a_hardened_job_on_the_claims_node_and_refuses_paths_outside() {
    use k8s_openapi::api::batch::v1::Job;
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let target = mk_target("production", "PersistentVolumeClaim", "data-db-0");
    for (params, field) in [
        (json!({"path": "../../etc"}), "parameters.path"),
        (json!({"pattern": "$(reboot)"}), "parameters.pattern"),
        (json!({"mode": "shred"}), "parameters.mode"),
    ] {
        let err = client
            .execute(mk_request("cleanup_storage", target.clone(), params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let err = client
        .execute(mk_request(
            "cleanup_storage",
            mk_target("production", "PersistentVolumeClaim", "nope"),
            json!({}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let done = common::run_to_end(
        &mut client,
        "cleanup_storage",
        target,
        json!({"path": "pg_log", "pattern": "*.log", "older_than_days": 30, "mode": "delete"}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    let name = result["job"].as_str().unwrap();
    // The cluster's record of the Job: done, hardened, bounded, on the node of the pod that
    // mounts the claim.
    let job = Api::<Job>::namespaced(h.kube.clone(), "production")
        .get(name)
        .await
        .unwrap();
    let job = serde_json::to_value(job).unwrap();
    assert_eq!(job["status"]["succeeded"], json!(1), "{job:#}");
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], json!(3600));
    assert_eq!(job["spec"]["backoffLimit"], json!(0));
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], json!(false));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        json!(true)
    );
    assert_eq!(
        container["command"],
        json!([
            "find",
            "/data/pg_log",
            "-xdev",
            "-type",
            "f",
            "-name",
            "*.log",
            "-mtime",
            "+30",
            "-print",
            "-delete"
        ])
    );
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        json!("data-db-0")
    );
    let db0 = Api::<Pod>::namespaced(h.kube.clone(), "production")
        .get("db-0")
        .await
        .unwrap();
    assert_eq!(pod["nodeName"], json!(db0.spec.unwrap().node_name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_database_runs_the_engines_checks_in_a_job_with_credentials_from_the_secret() {
    use k8s_openapi::api::batch::v1::Job;
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let target = mk_target("production", "Service", "db");
    for (params, field) in [
        (
            json!({"engine": "oracle", "credentials_secret": "api-credentials"}),
            "parameters.engine",
        ),
        (
            json!({"engine": "postgres"}),
            "parameters.credentials_secret",
        ),
        (
            json!({"engine": "postgres", "credentials_secret": "api-credentials", "database": "x; DROP"}),
            "parameters.database",
        ),
    ] {
        let err = client
            .execute(mk_request("repair_database", target.clone(), params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let done = common::run_to_end(
        &mut client,
        "repair_database",
        target,
        json!({"engine": "postgres", "credentials_secret": "api-credentials", "database": "orders"}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    let job = Api::<Job>::namespaced(h.kube.clone(), "production")
        .get(result["job"].as_str().unwrap())
        .await
        .unwrap();
    let job = serde_json::to_value(job).unwrap();
    assert_eq!(job["status"]["succeeded"], json!(1), "{job:#}");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], json!("postgres:16.4"));
    let script = container["command"][2].as_str().unwrap();
    assert!(
        script.contains("PGHOST=db.production.svc PGPORT=5432")
            && script.contains("pg_amcheck")
            && script.contains("--database=orders"),
        "{script}"
    );
    assert_eq!(
        container["env"][1],
        json!({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "api-credentials", "key": "password"}}})
    );
    // The executor never read the credentials: nothing of them in what it recorded.
    assert!(!format!("{done:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn compact_storage_runs_the_engines_compaction_in_a_job_and_refuses_bad_names() {
    use k8s_openapi::api::batch::v1::Job;
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let target = mk_target("production", "Service", "db");
    for (params, field) in [
        (
            json!({"engine": "mysql", "credentials_secret": "api-credentials", "full": true}),
            "parameters.full",
        ),
        (
            json!({"engine": "postgres", "credentials_secret": "$(id)"}),
            "parameters.credentials_secret",
        ),
    ] {
        let err = client
            .execute(mk_request("compact_storage", target.clone(), params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let done = common::run_to_end(
        &mut client,
        "compact_storage",
        target,
        json!({"engine": "mysql", "credentials_secret": "api-credentials"}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    let job = Api::<Job>::namespaced(h.kube.clone(), "production")
        .get(result["job"].as_str().unwrap())
        .await
        .unwrap();
    let job = serde_json::to_value(job).unwrap();
    assert_eq!(job["status"]["succeeded"], json!(1), "{job:#}");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], json!("mysql:8.4.2"));
    let script = container["command"][2].as_str().unwrap();
    assert!(
        script.contains("--host=db.production.svc --port=5432")
            && script.contains("--optimize")
            && script.contains("--all-databases"),
        "{script}"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(
        result["log"].as_str().is_some_and(|l| !l.is_empty()),
        "{result}"
    );
}

#[tokio::test]
async fn failover_database_moves_the_primary_label_and_the_service_and_undoes_a_failed_check() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    common::primary_and_replica(&h.kube).await;
    let mut client = h.grpc().await;
    let target = mk_target("production", "StatefulSet", "db");
    let role = |pod: &Pod| pod.labels().get("role").cloned().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "production");

    let err = client
        .execute(mk_request(
            "failover_database",
            target.clone(),
            json!({"to_pod": "web-1"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().starts_with("parameters.to_pod"),
        "{}",
        err.message()
    );

    let done =
        common::run_to_end(&mut client, "failover_database", target.clone(), json!({})).await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    assert_eq!(role(&pods.get("db-1").await.unwrap()), "primary");
    assert_eq!(role(&pods.get("db-0").await.unwrap()), "replica");
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    assert_eq!(
        (&result["from"], &result["to"]),
        (&json!("db-0"), &json!("db-1"))
    );
    assert_eq!(result["service"], "db-primary");

    // A pod outside the StatefulSet that the Service also selects: the check after the
    // failover fails, and the labels go back.
    let mut stray = mk_pod("production", "stray", None, "postgres:16.4");
    stray["metadata"]["labels"] = json!({"app": "db", "role": "primary", "legacy": "yes"});
    pods.create(&Default::default(), &serde_json::from_value(stray).unwrap())
        .await
        .unwrap();
    let mut failing = mk_request("failover_database", target, json!({"to_pod": "db-0"}));
    failing.wait = true;
    let done = client
        .execute(failing)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        done.state,
        ExecutionState::RolledBack as i32,
        "{}",
        done.message
    );
    assert!(
        done.message.contains("stray") || format!("{done:?}").contains("stray"),
        "{done:?}"
    );
    assert_eq!(
        role(&pods.get("db-1").await.unwrap()),
        "primary",
        "restored"
    );
    assert_eq!(
        role(&pods.get("db-0").await.unwrap()),
        "replica",
        "restored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_data_snapshots_every_claim_waits_until_ready_and_reports_the_controllers_error() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;

    let err = client
        .execute(mk_request(
            "backup_data",
            mk_target("production", "Deployment", "web"),
            json!({}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("no PersistentVolumeClaim"),
        "{}",
        err.message()
    );

    let failed = common::run_to_end(
        &mut client,
        "backup_data",
        mk_target("production", "PersistentVolumeClaim", "data-db-0"),
        json!({"snapshot_class": "no-such-class"}),
    )
    .await;
    assert_eq!(
        failed.state,
        ExecutionState::Failed as i32,
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("no-such-class\" not found"),
        "{}",
        failed.message
    );

    let done = common::run_to_end(
        &mut client,
        "backup_data",
        mk_target("production", "StatefulSet", "db"),
        json!({}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    let snapshots = result["snapshots"].as_array().unwrap();
    let claims: Vec<&str> = snapshots
        .iter()
        .filter_map(|s| s["claim"].as_str())
        .collect();
    assert_eq!(claims, ["data-db-0", "data-db-1"], "{result}");
    // What kubectl shows, from the cluster's own record.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_json::to_string(&h.sim.kubeconfig()).unwrap(),
    )
    .unwrap();
    // kubectl blocks: off the runtime's threads, so the in-process cluster keeps answering.
    let listed = tokio::task::spawn_blocking(move || {
        common::run_ok(
            std::process::Command::new(common::tool("kubectl"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "volumesnapshots", "-n", "production"]),
        )
    })
    .await
    .unwrap();
    for s in snapshots {
        let name = s["name"].as_str().unwrap();
        let row = listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listed}"));
        assert!(
            row.contains("true") && row.contains("10Gi") && row.contains("csi-snapclass"),
            "{row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_resources_sizes_requests_from_the_peaks_the_metrics_api_saw() {
    use k8s_openapi::api::apps::v1::Deployment;
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "production");
    // What the web pods use, as metrics-server would report it.
    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert!(!web.is_empty());
    for pod in &web {
        let patch = json!({"metadata": {"annotations": {"sim.executor-service.io/usage": "cpu=200m,memory=300Mi"}}});
        pods.patch(
            &pod.name_any(),
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    }
    // kubectl top reads the same API.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_json::to_string(&h.sim.kubeconfig()).unwrap(),
    )
    .unwrap();
    let top = tokio::task::spawn_blocking(move || {
        common::run_ok(
            std::process::Command::new(common::tool("kubectl"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["top", "pods", "-n", "production", "-l", "app=web"]),
        )
    })
    .await
    .unwrap();
    assert!(top.contains("200m") && top.contains("300Mi"), "{top}");

    let target = mk_target("production", "Deployment", "web");
    let err = client
        .execute(mk_request(
            "optimize_resources",
            target.clone(),
            json!({"container": "sidecar"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().starts_with("parameters.container"),
        "{}",
        err.message()
    );

    let done = common::run_to_end(
        &mut client,
        "optimize_resources",
        target,
        json!({"window_seconds": 5, "samples": 3, "headroom_percent": 50}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let d = Api::<Deployment>::namespaced(h.kube.clone(), "production")
        .get("web")
        .await
        .unwrap();
    let resources =
        serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers[0].resources)
            .unwrap();
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "300m", "memory": "450Mi"}, "limits": {"cpu": "600m", "memory": "900Mi"}}),
        "peak plus half, limits twice that"
    );
}

#[tokio::test]
async fn create_heap_dump_runs_a_debug_container_against_the_process_and_reports_the_file() {
    let h = Harness::demo().await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let target = mk_target("production", "Deployment", "web");
    for (params, field) in [
        (json!({"runtime": "ruby"}), "parameters.runtime"),
        (
            json!({"runtime": "go", "container": "nope"}),
            "parameters.container",
        ),
    ] {
        let err = client
            .execute(mk_request("create_heap_dump", target.clone(), params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let done = common::run_to_end(
        &mut client,
        "create_heap_dump",
        target.clone(),
        json!({"runtime": "go"}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    assert!(
        result["path"].as_str().unwrap().starts_with("/tmp/heap-"),
        "{result}"
    );
    assert!(
        result["fetch"]
            .as_str()
            .unwrap()
            .starts_with("kubectl cp production/"),
        "{result}"
    );
    // The cluster's record: the debug container joined the web container's processes, ran, ended.
    let pod = Api::<Pod>::namespaced(h.kube.clone(), "production")
        .get(result["pod"].as_str().unwrap())
        .await
        .unwrap();
    let pod = serde_json::to_value(pod).unwrap();
    let debug = &pod["spec"]["ephemeralContainers"][0];
    assert_eq!(debug["targetContainerName"], "web", "{debug}");
    assert_eq!(debug["image"], "busybox:1.36.1");
    assert!(
        debug["command"][2]
            .as_str()
            .unwrap()
            .contains("/debug/pprof/heap"),
        "{debug}"
    );
    assert_eq!(
        pod["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert!(result["log"].as_str().unwrap().contains("wget"), "{result}");

    let stuck = common::run_to_end(
        &mut client,
        "create_heap_dump",
        target,
        json!({"runtime": "jvm", "image": "example/jdk:badimage"}),
    )
    .await;
    assert_eq!(
        stuck.state,
        ExecutionState::Failed as i32,
        "{}",
        stuck.message
    );
    assert!(
        stuck.message.contains("ImagePullBackOff"),
        "{}",
        stuck.message
    );
}
