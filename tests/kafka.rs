//! The Kafka door against a real Kafka-protocol broker (tansu, built by
//! `scripts/install-tansu` and cached outside the clone) and a producer from another
//! ecosystem (Python's confluent-kafka, `tests/python/kafka_orchestrator.py`) playing the
//! incident orchestrator. Judged by the cluster (the embedded one's objects, or the write
//! record of one in its own process) and by what the status topic carries.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{kube_client_from, tool, ServeProcess, SimProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ListExecutionsRequest,
};
use serde_json::{json, Value};

const APPROVED: &str = "actions.approved";
const STATUS: &str = "actions.status";
const DEAD_LETTERS: &str = "actions.dead";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The broker binary, built or linked once per test binary by `scripts/install-tansu`.
fn tansu() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/install-tansu"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/install-tansu");
        assert!(out.status.success(), "scripts/install-tansu failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// A tansu broker on a free port of 127.0.0.1, in memory, with the two topics (one partition
/// each); killed on drop.
struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(1)
    }

    /// With the approved topic in `partitions` partitions.
    fn start_with(partitions: u32) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "tansu never listened on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let broker = Broker { child, addr };
        for topic in [APPROVED, STATUS, DEAD_LETTERS] {
            let count = if topic == APPROVED { partitions } else { 1 }.to_string();
            let out = Command::new(tansu())
                .args([
                    "topic",
                    "create",
                    topic,
                    "--broker",
                    &url,
                    "--partitions",
                    &count,
                ])
                .output()
                .expect("tansu topic create");
            assert!(
                out.status.success(),
                "tansu topic create {topic}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        broker
    }

    /// Produces `messages` (`(key, value)`; a string value is sent as is) with confluent-kafka.
    fn produce(&self, messages: &[(&str, Value)]) {
        let mut child = Command::new(tool("python"))
            .arg(repo_root().join("tests/python/kafka_orchestrator.py"))
            .args(["produce", &self.addr, APPROVED])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run the orchestrator");
        {
            let stdin = child.stdin.as_mut().unwrap();
            for (key, value) in messages {
                writeln!(stdin, "{}", json!({ "key": key, "value": value })).unwrap();
            }
        }
        assert!(child.wait().unwrap().success(), "producing failed");
    }

    /// Every status message, in order, until each of `keys` has a final one.
    fn statuses(&self, keys: &[&str]) -> Vec<(String, Value)> {
        let mut args = vec!["statuses", self.addr.as_str(), STATUS, "60"];
        args.extend_from_slice(keys);
        orchestrator(&args)
            .into_iter()
            .map(|v| {
                (
                    v["key"].as_str().unwrap_or_default().to_string(),
                    v["value"].clone(),
                )
            })
            .collect()
    }

    /// The first `count` messages of `topic` (key, payload as text).
    fn messages(&self, topic: &str, count: usize) -> Vec<(String, String)> {
        let count = count.to_string();
        orchestrator(&["messages", &self.addr, topic, &count, "30"])
            .into_iter()
            .map(|v| {
                (
                    v["key"].as_str().unwrap_or_default().to_string(),
                    v["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The consumer group's lag on the approved topic, whose last message has offset
    /// `end - 1`.
    fn lag(&self, end: usize) -> i64 {
        let end = end.to_string();
        let out = orchestrator(&["lag", &self.addr, APPROVED, "executor-service", &end]);
        out[0].as_i64().expect("a lag")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/python/kafka_orchestrator.py` with `args`; its output, one JSON value a line.
fn orchestrator(args: &[&str]) -> Vec<Value> {
    let out = Command::new(tool("python"))
        .arg(repo_root().join("tests/python/kafka_orchestrator.py"))
        .args(args)
        .output()
        .expect("run the orchestrator");
    assert!(
        out.status.success(),
        "kafka_orchestrator.py {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Each key's statuses, in the order the topic holds them.
fn by_key(statuses: &[(String, Value)]) -> BTreeMap<String, Vec<Value>> {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, value) in statuses {
        map.entry(key.clone()).or_default().push(value.clone());
    }
    map
}

fn plain(statuses: &[Value]) -> Vec<&str> {
    statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap_or_default())
        .collect()
}

async fn executions_with_request_id(server: &ServeProcess, request_id: &str) -> usize {
    let mut client = ExecutorServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let page = client
        .list_executions(ListExecutionsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.executions
        .iter()
        .filter(|e| e.request_id == request_id)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_orchestrators_three_actions_change_the_cluster_and_each_story_is_on_the_status_topic()
{
    let broker = Broker::start();
    let server = ServeProcess::start(&["--kafka-brokers", &broker.addr]);
    let kube = kube_client_from(&server.kubeconfig).await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(kube.clone(), "production");
    let pod = common::first_pod(&kube, "production", "worker").await;
    broker.produce(&[
        (
            "k-scale",
            json!({"action_id": "k-scale", "action_type": "scale-deployment",
                   "namespace": "production", "resource": "deployment/web",
                   "parameters": {"replicas": 5}, "incident_id": "INC-1", "approved_by": "alice"}),
        ),
        (
            "k-restart",
            json!({"action_id": "k-restart", "action_type": "restart-pod",
                   "resource": format!("pod/{pod}"), "parameters": {"namespace": "production"}}),
        ),
        (
            "k-rollout",
            json!({"action_id": "k-rollout", "action_type": "rolling_restart_deployment",
                   "namespace": "production", "resource": "deployment/api"}),
        ),
    ]);
    let stories = by_key(&broker.statuses(&["k-scale", "k-restart", "k-rollout"]));
    for key in ["k-scale", "k-restart", "k-rollout"] {
        let story = &stories[key];
        assert_eq!(
            plain(story),
            ["accepted", "running", "success"],
            "{key}: {story:#?}"
        );
        let ids: Vec<&Value> = story.iter().map(|s| &s["execution_id"]).collect();
        assert!(
            ids.iter().all(|id| *id == ids[0] && id.is_string()),
            "{key}"
        );
        let sequences: Vec<u64> = story
            .iter()
            .map(|s| s["sequence"].as_u64().unwrap())
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key}: {sequences:?}"
        );
    }
    assert_eq!(stories["k-scale"][0]["incident_id"], "INC-1");
    // The cluster changed.
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube.clone(), "production");
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(5));
    let api = deployments.get("api").await.unwrap();
    let annotations = api
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap_or_default();
    assert!(
        annotations.contains_key("kubectl.kubernetes.io/restartedAt"),
        "{annotations:?}"
    );
    let old = pods.get_opt(&pod).await.unwrap();
    assert!(
        old.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the pod was not restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_action_id_delivered_twice_runs_once_and_ten_bad_messages_are_rejected_naming_the_problem(
) {
    let broker = Broker::start();
    let server = ServeProcess::start(&[
        "--kafka-brokers",
        &broker.addr,
        "--kafka-dead-letter-topic",
        DEAD_LETTERS,
    ]);
    let scale = |id: &str, replicas: u32| {
        json!({"action_id": id, "action_type": "scale-deployment", "namespace": "staging",
               "resource": "deployment/web", "parameters": {"replicas": replicas}})
    };
    // Offsets 0…: the bad ones without an action id are keyed by topic/partition/offset.
    let messages: Vec<(&str, Value)> = vec![
        ("k-twice", scale("k-twice", 3)),
        ("", json!("this is not JSON")),
        ("k-twice", scale("k-twice", 3)),
        ("", json!([1, 2])),
        (
            "bad-action",
            json!({"action_id": "bad-action", "action_type": "explode", "resource": "deployment/web"}),
        ),
        ("good-1", scale("good-1", 4)),
        (
            "bad-param",
            json!({"action_id": "bad-param", "action_type": "scale-deployment", "namespace": "staging", "resource": "deployment/web", "parameters": {"replicas": "five"}}),
        ),
        (
            "bad-resource",
            json!({"action_id": "bad-resource", "action_type": "scale-deployment", "resource": "web"}),
        ),
        (
            "bad-target",
            json!({"action_id": "bad-target", "action_type": "scale-deployment", "namespace": "staging", "resource": "deployment/nope", "parameters": {"replicas": 1}}),
        ),
        ("good-2", scale("good-2", 2)),
        (
            "",
            json!({"action_id": 5, "action_type": "scale-deployment"}),
        ),
        (
            "bad-name",
            json!({"action_id": "bad-name", "action_type": "restart-pod", "namespace": "production"}),
        ),
        (
            "bad-params",
            json!({"action_id": "bad-params", "action_type": "scale-deployment", "resource": "deployment/web", "parameters": [1]}),
        ),
        (
            "bad-timeout",
            json!({"action_id": "bad-timeout", "action_type": "scale-deployment", "namespace": "staging", "resource": "deployment/web", "parameters": {"replicas": 1}, "timeout_seconds": "soon"}),
        ),
        ("good-3", scale("good-3", 1)),
    ];
    broker.produce(&messages);
    let expected_rejections: [(&str, &str); 10] = [
        ("actions.approved/0/1", "message: is not JSON"),
        ("actions.approved/0/3", "message: must be a JSON object"),
        ("bad-action", "action: unknown action \"explode\""),
        ("bad-param", "parameters.replicas"),
        ("bad-resource", "resource: must be KIND/NAME"),
        ("bad-target", "not found"),
        ("actions.approved/0/10", "action_id: must be a string"),
        ("bad-name", "target.name"),
        ("bad-params", "parameters: must be a JSON object"),
        ("bad-timeout", "timeout_seconds"),
    ];
    let mut keys: Vec<&str> = expected_rejections.iter().map(|(k, _)| *k).collect();
    keys.extend(["k-twice", "good-1", "good-2", "good-3"]);
    let stories = by_key(&broker.statuses(&keys));
    for (key, reason) in expected_rejections {
        let story = stories
            .get(key)
            .unwrap_or_else(|| panic!("no status for {key}: {stories:#?}"));
        assert_eq!(plain(story), ["rejected"], "{key}: {story:#?}");
        let message = story[0]["message"].as_str().unwrap();
        assert!(
            message.contains(reason),
            "{key}: {message:?} does not say {reason:?}"
        );
    }
    for key in ["good-1", "good-2", "good-3"] {
        assert_eq!(
            plain(&stories[key]),
            ["accepted", "running", "success"],
            "{key}"
        );
    }
    // The refused messages, as they came, on the dead-letter topic.
    let dead = broker.messages(DEAD_LETTERS, 10);
    let dead_keys: Vec<&str> = dead.iter().map(|(k, _)| k.as_str()).collect();
    let expected_keys: Vec<&str> = expected_rejections.iter().map(|(k, _)| *k).collect();
    assert_eq!(dead_keys, expected_keys);
    assert_eq!(dead[0].1, "this is not JSON");
    // Delivered twice, ran once, told once.
    assert_eq!(
        plain(&stories["k-twice"]),
        ["accepted", "running", "success"]
    );
    assert_eq!(executions_with_request_id(&server, "k-twice").await, 1);
    // Every offset committed: the partition never stalled.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lag = broker.lag(messages.len());
        if lag == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "lag stays at {lag}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_between_recording_and_committing_nothing_runs_twice_and_every_status_is_published_once(
) {
    let broker = Broker::start();
    let sim = SimProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("history.db");
    // A dead member's partitions move on when its session times out (librdkafka's default
    // is 45 s; shorter here, through --kafka-option).
    let session = "session.timeout.ms=6000";
    // A window between the execution's record and the offset's commit, for the kill.
    let mut first = ServeProcess::on_cluster(
        &sim.kubeconfig,
        &store,
        &[
            "--kafka-brokers",
            &broker.addr,
            "--kafka-option",
            session,
            "--kafka-commit-delay",
            "60s",
        ],
    );
    broker.produce(&[(
        "k-crash",
        json!({"action_id": "k-crash", "action_type": "scale-deployment", "namespace": "staging",
               "resource": "deployment/web", "parameters": {"replicas": 4}}),
    )]);
    // Its story told, its offset not committed yet: SIGKILL.
    let told = by_key(&broker.statuses(&["k-crash"]));
    assert_eq!(plain(&told["k-crash"]), ["accepted", "running", "success"]);
    assert_eq!(broker.lag(1), 1, "committed before the kill");
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // The restarted executor gets the message again, finds its execution, and commits.
    let second = ServeProcess::on_cluster(
        &sim.kubeconfig,
        &store,
        &["--kafka-brokers", &broker.addr, "--kafka-option", session],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.lag(1) != 0 {
        assert!(
            Instant::now() < deadline,
            "the redelivered message was never committed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let story = by_key(&broker.statuses(&["k-crash"]))
        .remove("k-crash")
        .expect("statuses of k-crash");
    assert_eq!(
        plain(&story),
        ["accepted", "running", "success"],
        "told again: {story:#?}"
    );
    assert_eq!(executions_with_request_id(&second, "k-crash").await, 1);
    // The cluster saw one scale of staging/web.
    let scales = common::applied_writes(&sim.writes().await)
        .iter()
        .filter(|w| {
            w["resource"] == "deployments/scale"
                && w["name"] == "web"
                && w["namespace"] == "staging"
        })
        .count();
    assert_eq!(scales, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgresql_consume_one_group_and_tell_each_story_once() {
    let broker = Broker::start_with(2);
    let sim = SimProcess::start(&[]);
    let database = common::fresh_postgres_database().await;
    let store = std::path::Path::new(&database);
    let flags = ["--kafka-brokers", &broker.addr, "--rate-limit", "0"];
    let replicas = [
        ServeProcess::on_cluster(&sim.kubeconfig, store, &flags),
        ServeProcess::on_cluster(&sim.kubeconfig, store, &flags),
    ];
    let deployments = [
        ("production", "web"),
        ("production", "api"),
        ("production", "worker"),
        ("staging", "web"),
    ];
    let ids: Vec<String> = (0..20).map(|i| format!("rep-{i:02}")).collect();
    let messages: Vec<(&str, Value)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (namespace, name) = deployments[i % deployments.len()];
            (
                id.as_str(),
                json!({"action_id": id, "action_type": "scale-deployment",
                       "namespace": namespace, "resource": format!("deployment/{name}"),
                       "parameters": {"replicas_increment": 1}}),
            )
        })
        .collect();
    broker.produce(&messages);
    let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
    let stories = by_key(&broker.statuses(&keys));
    for id in &ids {
        let story = stories
            .get(id)
            .unwrap_or_else(|| panic!("no statuses for {id}"));
        assert_eq!(
            plain(story),
            ["accepted", "running", "success"],
            "{id}: {story:#?}"
        );
        assert_eq!(
            executions_with_request_id(&replicas[0], id).await,
            1,
            "{id}"
        );
    }
    // Each ran once: 5 increments per deployment in the cluster's record.
    let applied = common::applied_writes(&sim.writes().await);
    for (namespace, name) in deployments {
        let scales = applied
            .iter()
            .filter(|w| {
                w["resource"] == "deployments/scale"
                    && w["name"] == name
                    && w["namespace"] == namespace
            })
            .count();
        assert_eq!(scales, 5, "{namespace}/{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_replica_telling_a_story_dies_another_tells_the_rest_once() {
    let broker = Broker::start();
    // Real speed: a rolling restart of three pods takes seconds.
    let sim = SimProcess::start_at(1.0, &[]);
    let database = common::fresh_postgres_database().await;
    let store = std::path::Path::new(&database);
    let flags = ["--kafka-brokers", &broker.addr, "--lease", "2s"];
    let mut first = ServeProcess::on_cluster(&sim.kubeconfig, store, &flags);
    broker.produce(&[(
        "k-handover",
        json!({"action_id": "k-handover", "action_type": "rolling-restart-deployment",
               "namespace": "production", "resource": "deployment/web"}),
    )]);
    // Taken in by the first replica, which holds the story.
    let deadline = Instant::now() + Duration::from_secs(30);
    while executions_with_request_id(&first, "k-handover").await == 0 {
        assert!(Instant::now() < deadline, "never taken in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = ServeProcess::on_cluster(&sim.kubeconfig, store, &flags);
    let killed_at = chrono::Utc::now();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // The second takes the story over once the first's hold lapses (30 s), and ends it: the
    // execution itself ended (or was ended INTERRUPTED by the second, if it ran on the first).
    let statuses = broker.statuses(&["k-handover"]);
    let story = by_key(&statuses).remove("k-handover").expect("a story");
    let sequences: Vec<u64> = story
        .iter()
        .map(|s| s["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "a status told twice or out of order: {story:#?}"
    );
    assert_eq!(plain(&story)[0], "accepted");
    let last = plain(&story)
        .last()
        .copied()
        .unwrap_or_default()
        .to_string();
    assert!(
        ["success", "interrupted"].contains(&last.as_str()),
        "{story:#?}"
    );
    assert_eq!(executions_with_request_id(&second, "k-handover").await, 1);
    // The end came after the kill: the second replica told it.
    let ended: chrono::DateTime<chrono::Utc> = story
        .last()
        .and_then(|s| s["timestamp"].as_str())
        .and_then(|t| t.parse().ok())
        .expect("a timestamp");
    assert!(
        ended > killed_at,
        "ended {ended} before the kill at {killed_at}"
    );
}
