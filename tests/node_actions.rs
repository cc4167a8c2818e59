//! End-to-end behaviour of the node actions against the simulated cluster: cordon, uncordon,
//! taint and untaint change the node; drain evicts as PodDisruptionBudgets allow, refuses
//! before touching anything when a pod cannot go, and gives the node back when it fails.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{mk_request, mk_target, to_struct, Harness};
use executor_service::{
    api::proto::{CancelExecutionRequest, DryRunRequest, ExecuteRequest, ListExecutionsRequest},
    domain::ExecutionState,
    engine::EngineConfig,
    sim::{mk_daemonset, mk_deployment, mk_namespace, mk_node, mk_pdb, mk_pod, PdbLimit, Scenario},
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api, ResourceExt,
};
use serde_json::{json, Value};
use tonic::Code;

/// A request for `action` on node `node`; nodes are cluster-scoped, so no namespace.
fn mk_node_request(action: &str, node: &str, p: Value) -> ExecuteRequest {
    mk_request(action, mk_target("", "Node", node), p)
}

/// A node that takes no pods until uncordoned (so that a test decides where pods land).
fn mk_cordoned_node(name: &str) -> Value {
    let mut node = mk_node(name);
    node["spec"]["unschedulable"] = json!(true);
    node
}

/// Samples of the Ready web pods a drain lasting over a second must at least yield.
const MIN_BUDGET_SAMPLES: usize = 20;

/// Runs `request` through gRPC and waits for the execution to end.
async fn run(h: &Harness, request: ExecuteRequest) -> executor_service::domain::ExecutionView {
    let mut client = h.grpc().await;
    let execution = client
        .execute(request)
        .await
        .expect("execute accepted")
        .into_inner()
        .execution
        .expect("execution");
    h.engine
        .wait(&execution.id)
        .await
        .expect("execution exists")
}

async fn event_messages(h: &Harness, id: &str) -> Vec<(String, Option<(u64, u64)>)> {
    let (_, events) = h
        .engine
        .get(id, executor_service::engine::ANONYMOUS)
        .await
        .expect("execution exists");
    events
        .iter()
        .map(|e| (e.message.clone(), e.progress))
        .collect()
}

async fn node(h: &Harness, name: &str) -> Node {
    Api::<Node>::all(h.kube.clone())
        .get(name)
        .await
        .expect("node exists")
}

async fn is_cordoned(h: &Harness, name: &str) -> bool {
    node(h, name)
        .await
        .spec
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

async fn set_cordoned(h: &Harness, name: &str, cordoned: bool) {
    let value = if cordoned { json!(true) } else { Value::Null };
    Api::<Node>::all(h.kube.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": value}})),
        )
        .await
        .expect("patch node");
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The live (not terminating) pods labelled `app=<app>` in `ns`.
async fn live_pods(h: &Harness, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(h.kube.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// Waits until `n` live pods of `app` are Ready (and, when given, all on `on`).
async fn wait_ready(h: &Harness, ns: &str, app: &str, n: usize, on: Option<&str>) -> Vec<Pod> {
    for _ in 0..500 {
        let pods = live_pods(h, ns, app).await;
        let placed = on.is_none_or(|node| pods.iter().all(|p| node_of(p) == node));
        if pods.len() == n && placed && pods.iter().all(is_ready) {
            return pods;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} Ready pods of {ns}/{app} never showed up");
}

fn three_node_cluster() -> Scenario {
    Scenario::empty()
        .with(mk_node("node-2"))
        .with(mk_node("node-3"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cordon_and_uncordon_flip_spec_unschedulable_and_repeat_harmlessly() {
    let h = Harness::start(EngineConfig::default(), three_node_cluster()).await;
    let done = run(&h, mk_node_request("cordon_node", "node-2", json!({}))).await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    assert!(is_cordoned(&h, "node-2").await, "node-2 is cordoned");
    assert!(
        !is_cordoned(&h, "node-1").await,
        "other nodes are untouched"
    );
    assert_eq!(
        done.rollback_data["unschedulable"],
        json!(false),
        "the previous state is recorded"
    );
    assert!(event_messages(&h, &done.id)
        .await
        .iter()
        .any(|(m, _)| m == "node node-2 cordoned"));

    let again = run(&h, mk_node_request("cordon_node", "node-2", json!({}))).await;
    assert_eq!(again.state, ExecutionState::Succeeded, "{}", again.message);
    assert!(
        again.message.contains("already cordoned"),
        "{}",
        again.message
    );
    assert_eq!(again.result["changed"], json!(false));

    let undone = run(&h, mk_node_request("uncordon_node", "node-2", json!({}))).await;
    assert_eq!(
        undone.state,
        ExecutionState::Succeeded,
        "{}",
        undone.message
    );
    assert!(
        !is_cordoned(&h, "node-2").await,
        "node-2 is schedulable again"
    );
    let spec = node(&h, "node-2").await.spec.unwrap();
    assert_eq!(
        spec.unschedulable, None,
        "uncordon removes the field, as kubectl's null patch does"
    );
    assert_eq!(undone.rollback_data["unschedulable"], json!(true));

    let again = run(&h, mk_node_request("uncordon_node", "node-2", json!({}))).await;
    assert_eq!(again.state, ExecutionState::Succeeded, "{}", again.message);
    assert!(
        again.message.contains("already uncordoned"),
        "{}",
        again.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_schedulable_node_is_never_cordoned_or_drained() {
    let h = Harness::start(
        EngineConfig::default(),
        Scenario::empty().with(mk_cordoned_node("node-2")),
    )
    .await;
    let before = node(&h, "node-1").await.resource_version();
    let mut client = h.grpc().await;
    for action in ["cordon_node", "drain_node"] {
        let err = client
            .execute(mk_node_request(action, "node-1", json!({})))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{action}: {err:?}");
        assert!(
            err.message().contains("node node-1")
                && err.message().contains("last schedulable node"),
            "{action}: {}",
            err.message()
        );
    }
    assert!(!is_cordoned(&h, "node-1").await);
    assert_eq!(
        node(&h, "node-1").await.resource_version(),
        before,
        "node-1 was not written"
    );
    // Cordoning an already cordoned node stays fine, and so does node-1 once node-2 is back.
    let done = run(&h, mk_node_request("cordon_node", "node-2", json!({}))).await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    set_cordoned(&h, "node-2", false).await;
    let done = run(&h, mk_node_request("cordon_node", "node-1", json!({}))).await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    assert!(is_cordoned(&h, "node-1").await);
}

fn taints(node: &Node) -> Vec<(String, Option<String>, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value, t.effect))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn taint_and_untaint_change_the_node_taints_idempotently() {
    let h = Harness::start(EngineConfig::default(), three_node_cluster()).await;
    let taint = |p: Value| mk_node_request("taint_node", "node-1", p);
    let done = run(&h, taint(json!({"key": "dedicated", "value": "db"}))).await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    assert_eq!(
        taints(&node(&h, "node-1").await),
        vec![("dedicated".into(), Some("db".into()), "NoSchedule".into())],
        "effect defaults to NoSchedule"
    );
    assert_eq!(done.rollback_data["taints"], json!([]), "no taints before");

    let again = run(&h, taint(json!({"key": "dedicated", "value": "db"}))).await;
    assert_eq!(again.state, ExecutionState::Succeeded, "{}", again.message);
    assert!(
        again
            .message
            .contains("already has taint dedicated=db:NoSchedule"),
        "{}",
        again.message
    );

    // A different value for the same key and effect needs overwrite, as in kubectl.
    let mut client = h.grpc().await;
    let err = client
        .execute(taint(json!({"key": "dedicated", "value": "web"})))
        .await
        .expect_err("refused without overwrite");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let done = run(
        &h,
        taint(json!({"key": "dedicated", "value": "web", "overwrite": true})),
    )
    .await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    let done = run(
        &h,
        taint(json!({"key": "dedicated", "effect": "PreferNoSchedule"})),
    )
    .await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    let done = run(
        &h,
        taint(json!({"key": "example.com/other", "effect": "NoExecute"})),
    )
    .await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    assert_eq!(taints(&node(&h, "node-1").await).len(), 3);

    // untaint with an effect removes only that one; without, every effect of the key.
    let untaint = |p: Value| mk_node_request("untaint_node", "node-1", p);
    let done = run(
        &h,
        untaint(json!({"key": "dedicated", "effect": "PreferNoSchedule"})),
    )
    .await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    assert_eq!(
        done.rollback_data["taints"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        taints(&node(&h, "node-1").await),
        vec![
            ("dedicated".into(), Some("web".into()), "NoSchedule".into()),
            ("example.com/other".into(), None, "NoExecute".into()),
        ]
    );
    let done = run(&h, untaint(json!({"key": "example.com/other"}))).await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    let done = run(&h, untaint(json!({"key": "dedicated"}))).await;
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    assert!(taints(&node(&h, "node-1").await).is_empty());
    let again = run(&h, untaint(json!({"key": "dedicated"}))).await;
    assert_eq!(again.state, ExecutionState::Succeeded, "{}", again.message);
    assert!(
        again.message.contains("has no taint dedicated"),
        "{}",
        again.message
    );
    assert!(
        taints(&node(&h, "node-2").await).is_empty(),
        "other nodes are untouched"
    );
}

/// node-1 hosts the three `web` pods guarded by `web-pdb` (maxUnavailable 1) and a
/// DaemonSet pod; node-2 and node-3 are cordoned until the pods are placed.
async fn web_on_node_1() -> Harness {
    let scenario = Scenario::empty()
        .with(mk_cordoned_node("node-2"))
        .with(mk_cordoned_node("node-3"))
        .with(mk_namespace("production"))
        .with(mk_namespace("kube-system"))
        .with(mk_deployment("production", "web", 3, "nginx:1.25"))
        .with(mk_pdb(
            "production",
            "web-pdb",
            "web",
            PdbLimit::MaxUnavailable(1),
        ))
        .with(mk_daemonset(
            "kube-system",
            "node-exporter",
            "prom/node-exporter:v1.8.0",
        ));
    let h = Harness::start(EngineConfig::default(), scenario).await;
    wait_ready(&h, "production", "web", 3, Some("node-1")).await;
    // Daemon pods tolerate cordoned nodes: one on each node.
    wait_ready(&h, "kube-system", "node-exporter", 3, None).await;
    set_cordoned(&h, "node-2", false).await;
    set_cordoned(&h, "node-3", false).await;
    // The budget's status trails the pods' readiness: wait until it allows one disruption.
    let budgets = kube::Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(
        h.kube.clone(),
        "production",
    );
    for _ in 0..500 {
        let allowed = budgets
            .get("web-pdb")
            .await
            .ok()
            .and_then(|b| b.status)
            .map(|s| s.disruptions_allowed);
        if allowed == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_evicts_only_as_the_pdb_allows_and_the_events_show_it() {
    let h = web_on_node_1().await;
    let before: Vec<String> = live_pods(&h, "production", "web")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();

    // The dry run shows the plan and the budget, and changes nothing.
    let node_version = node(&h, "node-1").await.resource_version();
    let plan = h
        .grpc()
        .await
        .dry_run(DryRunRequest {
            action: "drain_node".into(),
            target: mk_node_request("drain_node", "node-1", json!({})).target,
            parameters: Some(to_struct(&json!({}))),
            alert: None,
        })
        .await
        .expect("dry run")
        .into_inner();
    assert!(plan.summary.contains("evict 3 pods"), "{}", plan.summary);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("drain evicts 3 pods; PDB production/web-pdb allows 1 at a time")),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("ignoring DaemonSet-managed Pods: kube-system/node-exporter")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(
        plan.changes.len(),
        4,
        "the node and three pods: {:?}",
        plan.changes
    );
    assert_eq!(node(&h, "node-1").await.resource_version(), node_version);
    assert_eq!(live_pods(&h, "production", "web").await.len(), 3);

    // Watch the budget while the drain runs: never fewer than two Ready web pods. Every
    // sample must be a successful list, and there must be enough of them to span the drain.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (kube, stop) = (h.kube.clone(), stop.clone());
        tokio::spawn(async move {
            let api = Api::<Pod>::namespaced(kube, "production");
            let mut ready_counts = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let list = api
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .map_err(|e| format!("listing the web pods during the drain: {e}"))?;
                let ready = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                    .count();
                ready_counts.push(ready);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, String>(ready_counts)
        })
    };
    let done = run(
        &h,
        mk_node_request("drain_node", "node-1", json!({"eviction_retry_seconds": 1})),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let ready_counts = sampler.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.state, ExecutionState::Succeeded, "{}", done.message);
    // The drain waits at least one eviction retry (1 s, asserted below): at one sample per
    // ~10 ms, fewer than this many means the budget was not watched.
    assert!(
        ready_counts.len() >= MIN_BUDGET_SAMPLES,
        "only {} samples of the web pods during the drain",
        ready_counts.len()
    );
    let min_ready = ready_counts.iter().min().copied().unwrap_or_default();
    assert!(
        min_ready >= 2,
        "the budget of one disruption was exceeded: {min_ready} Ready web pods seen"
    );

    let events = event_messages(&h, &done.id).await;
    let blocked: Vec<&String> = events
        .iter()
        .map(|(m, _)| m)
        .filter(|m| m.contains("PodDisruptionBudget web-pdb"))
        .collect();
    assert!(
        !blocked.is_empty(),
        "a refused eviction names the budget: {events:#?}"
    );
    assert!(
        blocked.iter().all(|m| m.contains("will retry after 1s")),
        "{blocked:?}"
    );
    let counted: Vec<(u64, u64)> = events
        .iter()
        .filter(|(m, _)| m.contains(" evicted ("))
        .filter_map(|(_, p)| *p)
        .collect();
    assert_eq!(counted, vec![(1, 3), (2, 3), (3, 3)], "{events:#?}");
    assert!(
        events.iter().any(|(m, _)| m == "node node-1 cordoned"),
        "{events:#?}"
    );
    // At least one eviction waited for the budget, so they did not all go at once.
    let first_block = events
        .iter()
        .position(|(m, _)| m.contains("PodDisruptionBudget web-pdb"));
    let last_evicted = events.iter().rposition(|(m, _)| m.contains(" evicted ("));
    assert!(first_block < last_evicted, "{events:#?}");

    // The node is cordoned and keeps only its DaemonSet pod; web runs elsewhere.
    assert!(is_cordoned(&h, "node-1").await);
    let left: Vec<Pod> = Api::<Pod>::all(h.kube.clone())
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert!(
        left.iter()
            .all(|p| p.labels().get("app").map(String::as_str) == Some("node-exporter")),
        "only the DaemonSet pod stays: {:?}",
        left.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    let web = wait_ready(&h, "production", "web", 3, None).await;
    assert!(web
        .iter()
        .all(|p| node_of(p) != "node-1" && !node_of(p).is_empty()));
    assert!(
        web.iter().all(|p| !before.contains(&p.name_any())),
        "every web pod was replaced"
    );

    let evicted = done.result["evicted"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(evicted.len(), 3, "{}", done.result);
    let skipped = done.result["skipped"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(skipped.len(), 1, "{}", done.result);
    assert_eq!(
        skipped[0]["pod"],
        json!(format!("kube-system/{}", left[0].name_any()))
    );
    assert_eq!(
        skipped[0]["reason"],
        json!("ignoring DaemonSet-managed Pods")
    );
    assert_eq!(done.rollback_data["unschedulable"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_refuses_unmanaged_and_emptydir_pods_before_cordoning_or_evicting() {
    let mut scratch = mk_pod("default", "scratch", Some("node-1"), "busybox:1.36");
    scratch["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}]);
    let scenario = three_node_cluster()
        .with(mk_namespace("production"))
        .with(mk_deployment("production", "web", 3, "nginx:1.25"))
        .with(mk_pod("default", "lonely", Some("node-1"), "nginx:1.25"))
        .with(scratch);
    let h = Harness::start(EngineConfig::default(), scenario).await;
    let web: Vec<String> = wait_ready(&h, "production", "web", 3, None)
        .await
        .iter()
        .map(|p| p.uid().unwrap_or_default())
        .collect();
    let node_version = node(&h, "node-1").await.resource_version();
    let mut client = h.grpc().await;
    let err = client
        .execute(mk_node_request("drain_node", "node-1", json!({})))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let message = err.message();
    assert!(
        message.contains(
            "cannot delete Pods declare no controller (use --force to override): default/lonely"
        ),
        "{message}"
    );
    assert!(
        message.contains("cannot delete Pods with local storage (use --delete-emptydir-data to override): default/scratch"),
        "{message}"
    );
    // Nothing happened: not cordoned, nothing evicted, no execution recorded.
    assert!(!is_cordoned(&h, "node-1").await);
    assert_eq!(node(&h, "node-1").await.resource_version(), node_version);
    let pods = Api::<Pod>::namespaced(h.kube.clone(), "default");
    for name in ["lonely", "scratch"] {
        let pod = pods.get(name).await.expect("still there");
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{name} untouched"
        );
    }
    let now: Vec<String> = live_pods(&h, "production", "web")
        .await
        .iter()
        .map(|p| p.uid().unwrap_or_default())
        .collect();
    assert_eq!(now, web, "no web pod was evicted");
    let listed = client
        .list_executions(ListExecutionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.executions.is_empty(), "no execution was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_that_times_out_lists_the_pods_left_and_uncordons_the_node() {
    // minAvailable 2 of 2: the budget never allows an eviction.
    let scenario = Scenario::empty()
        .with(mk_cordoned_node("node-2"))
        .with(mk_namespace("production"))
        .with(mk_deployment("production", "web", 2, "nginx:1.25"))
        .with(mk_pdb(
            "production",
            "web-pdb",
            "web",
            PdbLimit::MinAvailable(2),
        ));
    let h = Harness::start(EngineConfig::default(), scenario).await;
    let web = wait_ready(&h, "production", "web", 2, Some("node-1")).await;
    set_cordoned(&h, "node-2", false).await;
    let started = std::time::Instant::now();
    let done = run(
        &h,
        mk_node_request(
            "drain_node",
            "node-1",
            json!({"timeout_seconds": 2, "eviction_retry_seconds": 1}),
        ),
    )
    .await;
    assert_eq!(done.state, ExecutionState::Failed, "{}", done.message);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        done.message
            .contains("timed out after 2s with 2 of 2 pods left"),
        "{}",
        done.message
    );
    for pod in &web {
        assert!(
            done.message
                .contains(&format!("production/{}", pod.name_any())),
            "{}",
            done.message
        );
    }
    assert!(
        done.message.contains("uncordoned again"),
        "{}",
        done.message
    );
    let events = event_messages(&h, &done.id).await;
    assert!(
        events.iter().any(|(m, _)| m == "node node-1 cordoned"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|(m, _)| m.contains("node node-1 uncordoned again")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|(m, _)| m.contains("PodDisruptionBudget web-pdb")),
        "{events:#?}"
    );
    assert!(
        !is_cordoned(&h, "node-1").await,
        "the node is schedulable again"
    );
    let still: Vec<String> = live_pods(&h, "production", "web")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(still.len(), 2);
    assert!(
        web.iter().all(|p| still.contains(&p.name_any())),
        "the pods were never evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_actions_reject_bad_parameters_naming_them() {
    let h = Harness::start(EngineConfig::default(), three_node_cluster()).await;
    let mut client = h.grpc().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("cordon_node", json!({"force": true}), "parameters.force"),
        ("uncordon_node", json!({"key": "x"}), "parameters.key"),
        ("taint_node", json!({}), "parameters.key"),
        ("taint_node", json!({"key": "bad key!"}), "parameters.key"),
        ("taint_node", json!({"key": "-x"}), "parameters.key"),
        (
            "taint_node",
            json!({"key": "k", "effect": "NoWay"}),
            "parameters.effect",
        ),
        (
            "taint_node",
            json!({"key": "k", "value": "not a value"}),
            "parameters.value",
        ),
        (
            "taint_node",
            json!({"key": "k", "value": 3}),
            "parameters.value",
        ),
        (
            "taint_node",
            json!({"key": "k", "overwrite": "maybe"}),
            "parameters.overwrite",
        ),
        ("untaint_node", json!({}), "parameters.key"),
        (
            "untaint_node",
            json!({"key": "k", "effect": "Sometimes"}),
            "parameters.effect",
        ),
        ("untaint_node", json!({"key": ["k"]}), "parameters.key"),
        (
            "drain_node",
            json!({"timeout_seconds": 0}),
            "parameters.timeout_seconds",
        ),
        (
            "drain_node",
            json!({"timeout_seconds": 3601}),
            "parameters.timeout_seconds",
        ),
        (
            "drain_node",
            json!({"timeout_seconds": "soon"}),
            "parameters.timeout_seconds",
        ),
        (
            "drain_node",
            json!({"grace_period_seconds": -2}),
            "parameters.grace_period_seconds",
        ),
        (
            "drain_node",
            json!({"grace_period_seconds": 1.5}),
            "parameters.grace_period_seconds",
        ),
        (
            "drain_node",
            json!({"eviction_retry_seconds": 0}),
            "parameters.eviction_retry_seconds",
        ),
        (
            "drain_node",
            json!({"eviction_retry_seconds": 61}),
            "parameters.eviction_retry_seconds",
        ),
        ("drain_node", json!({"force": "yes"}), "parameters.force"),
        (
            "drain_node",
            json!({"ignore_daemonsets": 1}),
            "parameters.ignore_daemonsets",
        ),
        (
            "drain_node",
            json!({"delete_emptydir_data": "no"}),
            "parameters.delete_emptydir_data",
        ),
        ("drain_node", json!({"grace": 3}), "parameters.grace"),
    ];
    for (action, p, field) in cases {
        let err = client
            .execute(mk_node_request(action, "node-1", p.clone()))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{action} {p}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{action} {p}: {field} not named first in {:?}",
            err.message()
        );
    }
    // A pod is not a node.
    let mut wrong_kind = mk_node_request("cordon_node", "node-1", json!({}));
    wrong_kind.target.as_mut().unwrap().kind = "Pod".into();
    let err = client.execute(wrong_kind).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("target.kind:"),
        "{}",
        err.message()
    );
    // A missing node is NOT_FOUND.
    let err = client
        .execute(mk_node_request("cordon_node", "node-9", json!({})))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for name in ["node-1", "node-2", "node-3"] {
        let n = node(&h, name).await;
        assert!(!n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false));
        assert!(taints(&n).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_blocked_drain_gives_the_node_back() {
    let scenario = Scenario::empty()
        .with(mk_cordoned_node("node-2"))
        .with(mk_namespace("production"))
        .with(mk_deployment("production", "web", 2, "nginx:1.25"))
        .with(mk_pdb(
            "production",
            "web-pdb",
            "web",
            PdbLimit::MinAvailable(2),
        ));
    let h = Harness::start(EngineConfig::default(), scenario).await;
    wait_ready(&h, "production", "web", 2, Some("node-1")).await;
    set_cordoned(&h, "node-2", false).await;
    let mut client = h.grpc().await;
    let execution = client
        .execute(mk_node_request(
            "drain_node",
            "node-1",
            json!({"eviction_retry_seconds": 1}),
        ))
        .await
        .expect("execute accepted")
        .into_inner()
        .execution
        .expect("execution");
    // Wait until the drain is blocked on the budget, with the node cordoned.
    for _ in 0..500 {
        if event_messages(&h, &execution.id)
            .await
            .iter()
            .any(|(m, _)| m.contains("PodDisruptionBudget web-pdb"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(is_cordoned(&h, "node-1").await);
    client
        .cancel_execution(CancelExecutionRequest {
            execution_id: execution.id.clone(),
            reason: "maintenance postponed".into(),
        })
        .await
        .expect("cancelled");
    let done = h.engine.wait(&execution.id).await.unwrap();
    assert_eq!(done.state, ExecutionState::Cancelled, "{}", done.message);
    for _ in 0..250 {
        if !is_cordoned(&h, "node-1").await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node-1 stayed cordoned after the drain was cancelled");
}
