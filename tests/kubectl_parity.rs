//! The executor against one simulated cluster and kubectl 1.37 against a twin built from the
//! same scenario: the objects each changed must end identical (spec and pod template; uids,
//! timestamps, resourceVersions and the restartedAt value aside).

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::{run_ok, to_struct, tool, Harness, TEST_SPEED};
use executor_service::{
    api::proto::{ExecuteRequest, ExecutionState, Target},
    engine::EngineConfig,
    sim::{Scenario, SimCluster, SimConfig},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
};
use serde_json::{json, Value};

/// The executor's cluster and kubectl's twin, both from the demo scenario and settled.
struct Twins {
    executor: Harness,
    kubectl: SimCluster,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

const SETTLE: Duration = Duration::from_secs(60);

impl Twins {
    async fn start() -> Twins {
        let executor = Harness::start(EngineConfig::default(), Scenario::demo()).await;
        let kubectl = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            scenario: Scenario::demo(),
            speed: TEST_SPEED,
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("twin.kubeconfig");
        kubectl.write_kubeconfig(&kubeconfig).unwrap();
        let twins = Twins {
            executor,
            kubectl,
            kubeconfig,
            _dir: dir,
        };
        twins.settle().await;
        twins
    }

    async fn settle(&self) {
        self.executor.sim.wait_settled(SETTLE).await.unwrap();
        self.kubectl.wait_settled(SETTLE).await.unwrap();
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(tool("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        // kubectl blocks; let the runtime keep serving the simulated clusters meanwhile.
        tokio::task::block_in_place(|| run_ok(&mut cmd))
    }

    /// Runs an action through gRPC and waits for it to succeed.
    async fn execute(&self, action: &str, target: Target, params: Value) {
        let mut client = self.executor.grpc().await;
        let execution = client
            .execute(ExecuteRequest {
                action: action.into(),
                target: Some(target),
                parameters: Some(to_struct(&params)),
                wait: true,
                ..Default::default()
            })
            .await
            .expect("execute")
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(
            execution.state,
            ExecutionState::Succeeded as i32,
            "{action}: {}",
            execution.message
        );
    }

    /// The same change made on both clusters directly (history both sides must share).
    async fn on_both(&self, ns: &str, name: &str, patch: Value) {
        let mine = self.executor.kube.clone();
        let theirs = self.kubectl.client().await.unwrap();
        for client in [mine, theirs] {
            Api::<Deployment>::namespaced(client, ns)
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch.clone()),
                )
                .await
                .unwrap();
        }
        self.settle().await;
    }

    async fn deployments(&self, ns: &str, name: &str) -> (Value, Value) {
        let mine = Api::<Deployment>::namespaced(self.executor.kube.clone(), ns)
            .get(name)
            .await
            .unwrap();
        let theirs = Api::<Deployment>::namespaced(self.kubectl.client().await.unwrap(), ns)
            .get(name)
            .await
            .unwrap();
        (comparable_spec(&mine), comparable_spec(&theirs))
    }

    async fn nodes(&self, name: &str) -> (Value, Value) {
        let mine = Api::<Node>::all(self.executor.kube.clone())
            .get(name)
            .await
            .unwrap();
        let theirs = Api::<Node>::all(self.kubectl.client().await.unwrap())
            .get(name)
            .await
            .unwrap();
        (comparable_spec(&mine), comparable_spec(&theirs))
    }
}

/// The object's spec, with the restartedAt value (a timestamp) blanked.
fn comparable_spec(object: &impl serde::Serialize) -> Value {
    let mut spec = serde_json::to_value(object).unwrap()["spec"].clone();
    if let Some(at) =
        spec.pointer_mut("/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
    {
        *at = json!("<time>");
    }
    spec
}

fn deployment(ns: &str, name: &str) -> Target {
    Target {
        namespace: ns.into(),
        kind: "Deployment".into(),
        name: name.into(),
        ..Default::default()
    }
}

fn node(name: &str) -> Target {
    Target {
        kind: "Node".into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_matches_kubectl_scale() {
    let t = Twins::start().await;
    t.execute(
        "scale_deployment",
        deployment("production", "web"),
        json!({"replicas": 5}),
    )
    .await;
    t.kubectl(&[
        "-n",
        "production",
        "scale",
        "deployment/web",
        "--replicas=5",
    ]);
    t.settle().await;
    let (mine, theirs) = t.deployments("production", "web").await;
    assert_eq!(mine["replicas"], json!(5));
    assert_eq!(mine, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_matches_kubectl_rollout_restart() {
    let t = Twins::start().await;
    t.execute(
        "rolling_restart_deployment",
        deployment("production", "web"),
        json!({}),
    )
    .await;
    t.kubectl(&["-n", "production", "rollout", "restart", "deployment/web"]);
    t.settle().await;
    let (mine, theirs) = t.deployments("production", "web").await;
    assert_eq!(
        mine["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        json!("<time>")
    );
    assert_eq!(mine, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_matches_kubectl_rollout_undo() {
    let t = Twins::start().await;
    let image = |tag: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": format!("nginx:{tag}")}]}}}});
    t.on_both("production", "web", image("1.26")).await;
    t.execute(
        "rollback_deployment",
        deployment("production", "web"),
        json!({}),
    )
    .await;
    t.kubectl(&["-n", "production", "rollout", "undo", "deployment/web"]);
    t.settle().await;
    let (mine, theirs) = t.deployments("production", "web").await;
    assert_eq!(
        mine["template"]["spec"]["containers"][0]["image"],
        json!("nginx:1.25")
    );
    assert_eq!(mine, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_to_a_revision_matches_kubectl_rollout_undo_to_revision() {
    let t = Twins::start().await;
    let image = |tag: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": format!("nginx:{tag}")}]}}}});
    t.on_both("production", "web", image("1.26")).await;
    t.on_both("production", "web", image("1.27")).await;
    t.execute(
        "rollback_deployment",
        deployment("production", "web"),
        json!({"to_revision": 2}),
    )
    .await;
    t.kubectl(&[
        "-n",
        "production",
        "rollout",
        "undo",
        "deployment/web",
        "--to-revision=2",
    ]);
    t.settle().await;
    let (mine, theirs) = t.deployments("production", "web").await;
    assert_eq!(
        mine["template"]["spec"]["containers"][0]["image"],
        json!("nginx:1.26")
    );
    assert_eq!(mine, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn increase_resources_matches_kubectl_set_resources() {
    let t = Twins::start().await;
    t.execute(
        "increase_resources",
        deployment("production", "web"),
        json!({"container": "web", "cpu_request": "300m", "cpu_limit": "600m", "memory_request": "600Mi", "memory_limit": "1200Mi"}),
    )
    .await;
    t.kubectl(&[
        "-n",
        "production",
        "set",
        "resources",
        "deployment/web",
        "-c",
        "web",
        "--requests=cpu=300m,memory=600Mi",
        "--limits=cpu=600m,memory=1200Mi",
    ]);
    t.settle().await;
    let (mine, theirs) = t.deployments("production", "web").await;
    assert_eq!(
        mine["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        json!("600m")
    );
    assert_eq!(mine, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cordon_matches_kubectl_cordon() {
    let t = Twins::start().await;
    t.execute("cordon_node", node("node-2"), json!({})).await;
    t.kubectl(&["cordon", "node-2"]);
    let (mine, theirs) = t.nodes("node-2").await;
    assert_eq!(mine["unschedulable"], json!(true));
    assert_eq!(mine, theirs);
}

async fn evictable_pods_on(client: kube::Client, node: &str) -> Vec<String> {
    Api::<Pod>::all(client)
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            !p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "DaemonSet")
        })
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_matches_kubectl_drain() {
    let t = Twins::start().await;
    t.execute(
        "drain_node",
        node("node-2"),
        json!({"ignore_daemonsets": true, "delete_emptydir_data": true, "eviction_retry_seconds": 1, "timeout_seconds": 120}),
    )
    .await;
    t.kubectl(&[
        "drain",
        "node-2",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
    ]);
    t.settle().await;
    let (mine, theirs) = t.nodes("node-2").await;
    assert_eq!(mine["unschedulable"], json!(true));
    assert_eq!(mine, theirs);
    let left_mine = evictable_pods_on(t.executor.kube.clone(), "node-2").await;
    let left_theirs = evictable_pods_on(t.kubectl.client().await.unwrap(), "node-2").await;
    assert!(left_mine.is_empty(), "{left_mine:?}");
    assert!(left_theirs.is_empty(), "{left_theirs:?}");
    for (ns, name) in [
        ("production", "web"),
        ("production", "api"),
        ("production", "worker"),
    ] {
        let (mine, theirs) = t.deployments(ns, name).await;
        assert_eq!(mine, theirs, "{ns}/{name}");
    }
}
