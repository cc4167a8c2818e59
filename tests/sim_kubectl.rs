//! Real kubectl (1.37) drives the simulated cluster unmodified. Each test starts its own
//! cluster on `127.0.0.1:0` at 20× speed and asserts on cluster state, not only exit codes.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use executor_service::sim::{
    mk_deployment, mk_namespace, mk_node, mk_pdb, mk_pvc, PdbLimit, Scenario, SimCluster, SimConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::Client;

/// Simulated delays run 20× faster: pods start in ~0.1 s, a 20 s deadline takes 1 s.
const SPEED: f64 = 20.0;
const SETTLE: Duration = Duration::from_secs(20);

struct Env {
    cluster: SimCluster,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(scenario: Scenario) -> Env {
        let cluster = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            scenario,
            speed: SPEED,
        })
        .await
        .expect("start sim");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig).unwrap();
        cluster
            .wait_settled(SETTLE)
            .await
            .expect("scenario settles");
        Env {
            cluster,
            kubeconfig,
            _dir: dir,
        }
    }

    async fn demo() -> Env {
        Env::start(Scenario::demo()).await
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        let out = tokio::process::Command::new(common::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .expect("run kubectl");
        eprintln!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs kubectl and insists it succeeded; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn client(&self) -> Client {
        self.cluster.client().await.unwrap()
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live_pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pods_all_namespaces_shows_running_demo_pods() {
    let env = Env::demo().await;
    let out = env.ok(&["get", "pods", "-A"]).await;
    let header = out.lines().next().unwrap_or_default();
    for col in ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "missing column {col}: {header}");
    }
    assert!(out.contains("production"));
    assert!(out.contains("kube-system"));
    assert!(out.contains("db-0"));
    let running = out
        .lines()
        .filter(|l| l.contains("Running") && l.contains("1/1"))
        .count();
    assert_eq!(
        running,
        3 + 2 + 2 + 2 + 2 + 3,
        "web, api, worker, db, staging web, node-exporter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_deployment_as_yaml_shows_the_defaulted_object() {
    let env = Env::demo().await;
    let out = env
        .ok(&["-n", "production", "get", "deploy", "web", "-o", "yaml"])
        .await;
    for needle in [
        "kind: Deployment",
        "apiVersion: apps/v1",
        "maxSurge: 25%",
        "progressDeadlineSeconds: 600",
        "deployment.kubernetes.io/revision: \"1\"",
        "image: nginx:1.25",
        "readyReplicas: 3",
        "reason: NewReplicaSetAvailable",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_then_rollout_status_completes_with_five_pods() {
    let env = Env::demo().await;
    let out = env
        .ok(&["-n", "production", "scale", "deploy/web", "--replicas=5"])
        .await;
    assert!(out.contains("scaled"));
    let out = env
        .ok(&[
            "-n",
            "production",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=30s",
        ])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let client = env.client().await;
    let ready: Vec<_> = live_pods(&client, "production", "app=web")
        .await
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    assert_eq!(ready.len(), 5);
    let d = Api::<Deployment>::namespaced(client, "production")
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().available_replicas, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_replaces_every_pod() {
    let env = Env::demo().await;
    let client = env.client().await;
    let before: Vec<String> = live_pods(&client, "production", "app=web")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    env.ok(&["-n", "production", "rollout", "restart", "deploy/web"])
        .await;
    let out = env
        .ok(&[
            "-n",
            "production",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=30s",
        ])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = Api::<Deployment>::namespaced(client.clone(), "production")
        .get("web")
        .await
        .unwrap();
    let annotations = d
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert!(annotations.contains_key("kubectl.kubernetes.io/restartedAt"));
    eventually(Duration::from_secs(10), "old pods gone", || async {
        let now = live_pods(&client, "production", "app=web").await;
        now.len() == 3
            && now
                .iter()
                .all(|p| !before.contains(p.metadata.name.as_ref().unwrap()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_image_makes_rollout_status_report_the_progress_deadline() {
    let env = Env::demo().await;
    env.ok(&[
        "-n",
        "production",
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":20}}"#,
    ])
    .await;
    env.ok(&[
        "-n",
        "production",
        "set",
        "image",
        "deploy/web",
        "web=nginx:crashloop",
    ])
    .await;
    let out = env
        .kubectl(&[
            "-n",
            "production",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=60s",
        ])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exceeded its progress deadline"),
        "{stderr}"
    );
    let client = env.client().await;
    let d = Api::<Deployment>::namespaced(client.clone(), "production")
        .get("web")
        .await
        .unwrap();
    let cond = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(cond.status, "False");
    assert_eq!(cond.reason.as_deref(), Some("ProgressDeadlineExceeded"));
    // The old pods keep serving: maxUnavailable 25% of 3 rounds down to 0.
    let pods = live_pods(&client, "production", "app=web").await;
    let crashing = pods
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            == Some("CrashLoopBackOff")
                    })
                })
        })
        .count();
    assert_eq!(crashing, 1, "one surge pod crash-loops");
    assert_eq!(pods.len(), 4, "3 old + 1 new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_undo_restores_the_previous_template() {
    let env = Env::demo().await;
    env.ok(&[
        "-n",
        "production",
        "set",
        "image",
        "deploy/web",
        "web=nginx:1.27",
    ])
    .await;
    env.ok(&[
        "-n",
        "production",
        "rollout",
        "status",
        "deploy/web",
        "--timeout=30s",
    ])
    .await;
    let client = env.client().await;
    let api = Api::<Deployment>::namespaced(client.clone(), "production");
    assert_eq!(image_of(&api.get("web").await.unwrap()), "nginx:1.27");
    let out = env
        .ok(&["-n", "production", "rollout", "undo", "deploy/web"])
        .await;
    assert!(out.contains("rolled back"), "{out}");
    env.ok(&[
        "-n",
        "production",
        "rollout",
        "status",
        "deploy/web",
        "--timeout=30s",
    ])
    .await;
    let d = api.get("web").await.unwrap();
    assert_eq!(image_of(&d), "nginx:1.25");
    let rev = d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"].clone();
    assert_eq!(rev, "3", "the first ReplicaSet becomes revision 3");
    let history = env
        .ok(&["-n", "production", "rollout", "history", "deploy/web"])
        .await;
    assert!(history.contains('2') && history.contains('3'), "{history}");
    for p in live_pods(&client, "production", "app=web").await {
        assert_eq!(
            p.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx:1.25")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon_toggle_unschedulable() {
    let env = Env::demo().await;
    let nodes = Api::<Node>::all(env.client().await);
    env.ok(&["cordon", "node-1"]).await;
    let n = nodes.get("node-1").await.unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
    let out = env.ok(&["get", "nodes"]).await;
    assert!(out.contains("Ready,SchedulingDisabled"), "{out}");
    env.ok(&["uncordon", "node-1"]).await;
    let n = nodes.get("node-1").await.unwrap();
    assert_ne!(n.spec.unwrap().unschedulable, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_everything_but_daemonsets_and_workloads_recover() {
    let env = Env::demo().await;
    let client = env.client().await;
    let out = env
        .ok(&[
            "drain",
            "node-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ])
        .await;
    assert!(out.contains("drained"), "{out}");
    let pods = Api::<Pod>::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap()
        .items;
    assert!(!on_node.is_empty(), "the daemonset pod stays");
    for p in &on_node {
        let owner = p.metadata.owner_references.as_ref().unwrap()[0]
            .kind
            .clone();
        assert_eq!(owner, "DaemonSet", "{:?} still on node-1", p.metadata.name);
    }
    let n = Api::<Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
    env.cluster
        .wait_settled(SETTLE)
        .await
        .expect("workloads reschedule elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_at_its_timeout_when_a_pdb_allows_no_disruption() {
    let scenario = Scenario::default()
        .with(mk_namespace("default"))
        .with(mk_node("node-1"))
        .with(mk_deployment("default", "web", 2, "nginx:1.25"))
        .with(mk_pdb(
            "default",
            "web-pdb",
            "web",
            PdbLimit::MinAvailable(2),
        ));
    let env = Env::start(scenario).await;
    let client = env.client().await;
    let before = live_pods(&client, "default", "app=web").await;
    let started = std::time::Instant::now();
    let out = env
        .kubectl(&[
            "drain",
            "node-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=3s",
        ])
        .await;
    assert!(!out.status.success(), "drain must fail");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("disruption budget"), "{stderr}");
    assert!(
        stderr.contains("global timeout reached") || stderr.contains("timed out"),
        "{stderr}"
    );
    let after = live_pods(&client, "default", "app=web").await;
    assert_eq!(
        before
            .iter()
            .map(|p| p.metadata.uid.clone())
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|p| p.metadata.uid.clone())
            .collect::<Vec<_>>(),
        "no pod was evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_brings_a_replacement() {
    let env = Env::demo().await;
    let client = env.client().await;
    let victim = live_pods(&client, "production", "app=web").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let out = env
        .ok(&["-n", "production", "delete", "pod", &victim])
        .await;
    assert!(out.contains("deleted"), "{out}");
    eventually(Duration::from_secs(10), "a Ready replacement", || async {
        let pods = live_pods(&client, "production", "app=web").await;
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(victim.as_str()))
            && pods.iter().all(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_print_the_container_output() {
    let env = Env::demo().await;
    let out = env.ok(&["-n", "production", "logs", "db-0"]).await;
    assert!(out.lines().count() >= 4, "{out}");
    assert!(out.contains("starting postgres:16 in pod db-0"), "{out}");
    let tail = env
        .ok(&["-n", "production", "logs", "db-0", "-c", "db", "--tail=2"])
        .await;
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let missing = env
        .kubectl(&["-n", "production", "logs", "db-0", "-c", "nope"])
        .await;
    assert!(!missing.status.success());
    // `logs -f` keeps streaming what the container writes.
    let mut follow = tokio::process::Command::new(common::tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["-n", "production", "logs", "-f", "db-0", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let mut buf = Vec::new();
    let ended = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut buf),
    )
    .await;
    assert!(ended.is_err(), "logs -f must keep the stream open");
    let _ = follow.kill().await;
    let streamed = String::from_utf8_lossy(&buf);
    assert!(
        streamed.lines().count() >= 3,
        "follow streamed:\n{streamed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_events_shows_what_the_controllers_did() {
    let env = Env::demo().await;
    let out = env.ok(&["-n", "production", "get", "events"]).await;
    for reason in [
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "Scheduled",
        "Started",
    ] {
        assert!(out.contains(reason), "missing {reason} in\n{out}");
    }
    assert!(out.contains("deployment/web"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_a_pvc_to_a_larger_size_grows_its_capacity() {
    let env = Env::demo().await;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(env.client().await, "production");
    env.ok(&[
        "-n",
        "production",
        "patch",
        "pvc",
        "data-db-0",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"20Gi"}}}}"#,
    ])
    .await;
    eventually(Duration::from_secs(10), "capacity 20Gi", || async {
        let p = pvcs.get("data-db-0").await.unwrap();
        p.status
            .and_then(|s| s.capacity)
            .and_then(|c| c.get("storage").map(|q| q.0.clone()))
            .as_deref()
            == Some("20Gi")
    })
    .await;
    // Shrinking is invalid.
    let out = env
        .kubectl(&[
            "-n",
            "production",
            "patch",
            "pvc",
            "data-db-0",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"5Gi"}}}}"#,
        ])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is invalid"));
    // A class without allowVolumeExpansion refuses to grow, as the real admission plugin.
    let scratch =
        serde_json::from_value(mk_pvc("production", "scratch", "1Gi", "standard")).unwrap();
    pvcs.create(&Default::default(), &scratch).await.unwrap();
    let out = env
        .kubectl(&[
            "-n",
            "production",
            "patch",
            "pvc",
            "scratch",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
        ])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only dynamically provisioned pvc can be resized"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dry_run_leaves_every_resource_version_unchanged() {
    let env = Env::demo().await;
    let client = env.client().await;
    let deploys = Api::<Deployment>::namespaced(client.clone(), "production");
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "production");
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "production");
    let rvs = || async {
        (
            deploys.get("web").await.unwrap().metadata.resource_version,
            nodes.get("node-2").await.unwrap().metadata.resource_version,
            pods.get("db-0").await.unwrap().metadata.resource_version,
            pvcs.get("data-db-1")
                .await
                .unwrap()
                .metadata
                .resource_version,
        )
    };
    let before = rvs().await;
    let ns = ["-n", "production"];
    for cmd in [
        vec!["scale", "deploy/web", "--replicas=7"],
        vec!["set", "image", "deploy/web", "web=nginx:1.27"],
        vec!["delete", "pod", "db-0"],
        vec![
            "patch",
            "pvc",
            "data-db-1",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"50Gi"}}}}"#,
        ],
        vec!["annotate", "deploy/web", "team=payments"],
    ] {
        let is_patch = cmd[0] == "patch";
        let mut args: Vec<&str> = ns.to_vec();
        args.extend(cmd);
        args.push("--dry-run=server");
        let out = env.ok(&args).await;
        // `kubectl patch` prints no dry-run suffix, the others do.
        assert!(is_patch || out.contains("(server dry run)"), "{out}");
    }
    env.ok(&["cordon", "node-2", "--dry-run=server"]).await;
    env.ok(&["drain", "node-2", "--ignore-daemonsets", "--dry-run=server"])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rvs().await, before);
    assert_eq!(image_of(&deploys.get("web").await.unwrap()), "nginx:1.25");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_then_updates_a_deployment_and_delete_collects_it() {
    let env = Env::demo().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("shop.yaml");
    let yaml = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n  namespace: staging\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: shop}}\n  template:\n    metadata:\n      labels: {{app: shop}}\n    spec:\n      containers:\n      - name: shop\n        image: {image}\n"
        )
    };
    let path = manifest.to_str().unwrap();
    std::fs::write(&manifest, yaml("nginx:1.25")).unwrap();
    assert!(env.ok(&["apply", "-f", path]).await.contains("created"));
    std::fs::write(&manifest, yaml("nginx:1.26")).unwrap();
    assert!(env.ok(&["apply", "-f", path]).await.contains("configured"));
    env.ok(&[
        "-n",
        "staging",
        "rollout",
        "status",
        "deploy/shop",
        "--timeout=30s",
    ])
    .await;
    let client = env.client().await;
    let d = Api::<Deployment>::namespaced(client.clone(), "staging")
        .get("shop")
        .await
        .unwrap();
    assert_eq!(image_of(&d), "nginx:1.26");
    env.ok(&["delete", "-f", path]).await;
    eventually(Duration::from_secs(10), "shop pods collected", || async {
        live_pods(&client, "staging", "app=shop").await.is_empty()
    })
    .await;
}
