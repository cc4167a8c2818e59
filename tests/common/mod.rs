//! Shared helpers for the end-to-end tests: locating the real client tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a real client tool (`kubectl`, `grpcurl`, `python`, `buf`) installed by
/// `scripts/install-tools` into `target/tools/bin`. Runs the installer once per test binary
/// when the tool is missing, so `cargo test` works on a fresh machine. Panics (fails the test)
/// when the tool cannot be had: a missing tool must never turn a test into a silent pass.
pub fn tool(name: &str) -> PathBuf {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let path = repo_root().join("target/tools/bin").join(name);
    if !path.exists() {
        INSTALLED.get_or_init(|| {
            let lock_path = repo_root().join("target/tools.lock");
            std::fs::create_dir_all(repo_root().join("target")).expect("target dir");
            let lock = std::fs::File::create(&lock_path).expect("tools lock file");
            lock.lock().expect("lock tools install");
            let status = Command::new("bash")
                .arg(repo_root().join("scripts/install-tools"))
                .status()
                .expect("run scripts/install-tools");
            assert!(status.success(), "scripts/install-tools failed");
        });
    }
    assert!(
        Path::new(&path).exists(),
        "{name} not installed at {}",
        path.display()
    );
    path
}

use std::net::SocketAddr;

use executor_service::{
    actions::Registry,
    api::{self, proto::executor_service_client::ExecutorServiceClient},
    cluster::Clusters,
    engine::{Engine, EngineConfig},
    sim::{Scenario, SimCluster, SimConfig},
};
use tonic::transport::Channel;

/// Simulated-cluster clock speed in tests: rollouts take a fraction of a second.
pub const TEST_SPEED: f64 = 20.0;

/// A simulated cluster and an executor serving gRPC on `127.0.0.1:0` in this process.
pub struct Harness {
    pub sim: SimCluster,
    pub kube: kube::Client,
    pub engine: Engine,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// `scenario` with deploy/'s identities for the actions: each action's ServiceAccount,
/// generated ClusterRole and binding, and `rotate_secrets`'s opt-in binding in `production`.
pub fn with_action_roles(scenario: Scenario) -> Scenario {
    use executor_service::actions::access;
    let generated = access::rbac_manifest(access::DEPLOY_NAMESPACE, &Registry::builtin().specs());
    let opt_in = std::fs::read_to_string(repo_root().join("deploy/rbac-rotate-secrets.yaml"))
        .expect("deploy/rbac-rotate-secrets.yaml");
    let mut namespaces: Vec<String> = scenario
        .objects()
        .iter()
        .filter(|o| o["kind"] == "Namespace")
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let mut scenario = scenario;
    for text in [generated, opt_in] {
        for document in serde_yaml::Deserializer::from_str(&text) {
            let object: serde_json::Value =
                serde::Deserialize::deserialize(document).expect("a YAML document");
            if object.is_null() {
                continue;
            }
            // The bindings' namespaces, where the scenario has none of its own.
            if let Some(ns) = object["metadata"]["namespace"].as_str() {
                if !namespaces.iter().any(|n| n == ns) {
                    namespaces.push(ns.to_string());
                    scenario = scenario.with(executor_service::sim::mk_namespace(ns));
                }
            }
            scenario = scenario.with(object);
        }
    }
    scenario
}

impl Harness {
    /// Every action runs as its own ServiceAccount with only its generated role (as
    /// `deploy/` sets it up), so every test of an action also proves its role grants enough.
    pub async fn start(mut config: EngineConfig, scenario: Scenario) -> Harness {
        if config.action_identities.is_none() {
            config.action_identities =
                Some(executor_service::actions::access::DEPLOY_NAMESPACE.to_string());
        }
        Harness::start_as_configured(config, scenario).await
    }

    /// [`Harness::start`] with `config`'s `action_identities` as given: `None` runs every
    /// action with the service's own (here: the cluster admin's) credentials.
    pub async fn start_as_configured(config: EngineConfig, scenario: Scenario) -> Harness {
        let sim = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            scenario: with_action_roles(scenario),
            speed: TEST_SPEED,
        })
        .await
        .expect("start simulated cluster");
        let kube = sim.client().await.expect("kube client");
        // The executor's clients are built the way `serve` builds them (no silent retries).
        let clusters = Clusters::from_kubeconfig_value(sim.kubeconfig(), None)
            .await
            .expect("clusters from the sim's kubeconfig");
        let engine = Engine::new(config, Registry::builtin(), clusters);
        let listener = api::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, engine.clone(), async {
            let _ = stopped.await;
        }));
        Harness {
            sim,
            kube,
            engine,
            addr,
            stop: Some(stop),
        }
    }

    pub async fn demo() -> Harness {
        Harness::start(EngineConfig::default(), Scenario::demo()).await
    }

    pub async fn grpc(&self) -> ExecutorServiceClient<Channel> {
        let endpoint = format!("http://{}", self.addr);
        for _ in 0..50 {
            if let Ok(client) = ExecutorServiceClient::connect(endpoint.clone()).await {
                return client;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("gRPC server at {endpoint} did not come up");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A `serve` process of the real binary on the embedded simulated cluster, on a port the OS
/// chose; killed on drop.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: String,
    /// The HTTP/JSON API's address; empty when `extra` switched it off.
    pub http_addr: String,
    /// The plain health/metrics address when `extra` has `--health-listen`, else empty.
    pub health_addr: String,
    pub kubeconfig: PathBuf,
    /// The temporary directory of the embedded cluster's kubeconfig and the history; none when
    /// the caller gave both.
    _dir: Option<tempfile::TempDir>,
}

impl ServeProcess {
    pub fn start(extra: &[&str]) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("sim.kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_executor-service"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--sim-speed",
                "20",
                "--sim-kubeconfig-out",
            ])
            .arg(&kubeconfig)
            // Never the fixed default port: tests run in parallel.
            .args(if extra.contains(&"--http-listen") {
                &[][..]
            } else {
                &["--http-listen", "127.0.0.1:0"][..]
            })
            // History in the test's own directory, never in the working tree.
            .args(if extra.contains(&"--store") {
                vec![]
            } else {
                vec![
                    "--store".to_string(),
                    dir.path().join("history.db").display().to_string(),
                ]
            })
            // Tests run many executions on the demo's few targets; cooldowns get their own test.
            .args(if extra.contains(&"--cooldown") {
                &[][..]
            } else {
                &["--cooldown", "0s"][..]
            })
            // Each action as its own account with its generated role, as deploy/ runs it.
            .args(if extra.contains(&"--action-identities") {
                &[][..]
            } else {
                &["--action-identities", "executor-service"][..]
            })
            .args(extra)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn executor-service serve");
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listen line");
        let addr = line
            .trim()
            .strip_prefix("executor-service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
            .to_string();
        let http_addr = if extra.windows(2).any(|w| w == ["--http-listen", "off"]) {
            String::new()
        } else {
            line.clear();
            stdout.read_line(&mut line).expect("read http listen line");
            line.trim()
                .strip_prefix("executor-service http listening on ")
                .unwrap_or_else(|| panic!("unexpected second line from serve: {line:?}"))
                .to_string()
        };
        let health_addr = if extra.contains(&"--health-listen") {
            line.clear();
            stdout
                .read_line(&mut line)
                .expect("read health listen line");
            line.trim()
                .strip_prefix("executor-service health listening on ")
                .unwrap_or_else(|| panic!("unexpected health line from serve: {line:?}"))
                .to_string()
        } else {
            String::new()
        };
        ServeProcess {
            child,
            addr,
            http_addr,
            health_addr,
            kubeconfig,
            _dir: Some(dir),
        }
    }

    /// `serve` on the cluster of `kubeconfig` (no embedded one) with its history in `store`,
    /// gRPC only, no cooldown; `extra` flags last. Returns once it listens, so recovery of a
    /// previous run's executions is done.
    pub fn on_cluster(kubeconfig: &Path, store: &Path, extra: &[&str]) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_executor-service"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--store")
            .arg(store)
            .args(if extra.contains(&"--cooldown") {
                &[][..]
            } else {
                &["--cooldown", "0s"][..]
            })
            .args(extra)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn executor-service serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read listen line");
        let addr = line
            .trim()
            .strip_prefix("executor-service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
            .to_string();
        ServeProcess {
            child,
            addr,
            http_addr: String::new(),
            health_addr: String::new(),
            kubeconfig: kubeconfig.to_path_buf(),
            _dir: None,
        }
    }
}

/// A simulated cluster of the real binary (`executor-service sim`, demo scenario, clock at
/// [`TEST_SPEED`]) on a port the OS chose, in its own process so it outlives the executors
/// that use it; killed on drop.
pub struct SimProcess {
    pub child: std::process::Child,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl SimProcess {
    /// Starts it with `faults` as `--fault` flags; returns once it is ready (listening, its
    /// kubeconfig written, every fault logged).
    pub fn start(faults: &[&str]) -> SimProcess {
        SimProcess::start_at(TEST_SPEED, faults)
    }

    /// [`SimProcess::start`] with the cluster's clock at `speed`.
    pub fn start_at(speed: f64, faults: &[&str]) -> SimProcess {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("sim.kubeconfig");
        let mut command = Command::new(env!("CARGO_BIN_EXE_executor-service"));
        command
            .args(["sim", "--listen", "127.0.0.1:0", "--speed"])
            .arg(speed.to_string())
            .arg("--kubeconfig-out")
            .arg(&kubeconfig);
        for fault in faults {
            command.args(["--fault", fault]);
        }
        let mut child = command
            .env_remove("SIM_FAULTS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn executor-service sim");
        // The kubeconfig is written before the ready line: wait for that line, then keep
        // draining the log so the simulator never blocks on a full pipe.
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let read = log.read_line(&mut line).expect("read the sim's log");
            assert!(read > 0, "sim exited before it was ready:\n{seen}");
            seen.push_str(&line);
            if line.contains("simulated cluster ready") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        assert!(
            seen.contains("fault injection: ") || faults.is_empty(),
            "the active faults are not logged:\n{seen}"
        );
        let url = kube::config::Kubeconfig::read_from(&kubeconfig)
            .ok()
            .and_then(|c| c.clusters.first()?.cluster.as_ref()?.server.clone())
            .expect("the sim's URL in its kubeconfig");
        SimProcess {
            child,
            kubeconfig,
            url,
            _dir: dir,
        }
    }

    /// The cluster's record of client writes, as `GET /sim/v1/writes` serves it.
    pub async fn writes(&self) -> serde_json::Value {
        sim_writes(&self.url).await
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a tool and returns stdout; panics with stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn tool");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A JSON object as a protobuf Struct (what grpcurl and generated clients send).
pub fn to_struct(v: &serde_json::Value) -> prost_types::Struct {
    fn value(v: &serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(value).collect(),
            }),
            serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: v
            .as_object()
            .expect("a JSON object")
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    }
}

/// A protobuf Struct (a result, parameters) as JSON, the inverse of [`to_struct`].
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    fn value(v: &prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match &v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => serde_json::json!(b),
            Some(Kind::NumberValue(n)) => serde_json::json!(n),
            Some(Kind::StringValue(s)) => serde_json::json!(s),
            Some(Kind::ListValue(l)) => l.values.iter().map(value).collect(),
            Some(Kind::StructValue(s)) => struct_to_json(s),
        }
    }
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// `kind` `namespace`/`name` as a request target.
pub fn mk_target(
    namespace: &str,
    kind: &str,
    name: &str,
) -> Option<executor_service::api::proto::Target> {
    Some(executor_service::api::proto::Target {
        namespace: namespace.into(),
        kind: kind.into(),
        name: name.into(),
        ..Default::default()
    })
}

/// An Execute request for `action` on `target` with JSON parameters.
pub fn mk_request(
    action: &str,
    target: Option<executor_service::api::proto::Target>,
    params: serde_json::Value,
) -> executor_service::api::proto::ExecuteRequest {
    executor_service::api::proto::ExecuteRequest {
        action: action.into(),
        target,
        parameters: Some(to_struct(&params)),
        ..Default::default()
    }
}

/// Executes `action` with `wait: true`: the execution as it ended.
pub async fn run_to_end(
    client: &mut ExecutorServiceClient<Channel>,
    action: &str,
    target: Option<executor_service::api::proto::Target>,
    params: serde_json::Value,
) -> executor_service::api::proto::Execution {
    let mut request = mk_request(action, target, params);
    request.wait = true;
    client
        .execute(request)
        .await
        .expect("execute")
        .into_inner()
        .execution
        .expect("an execution")
}

/// Every event of an execution, replayed then live, until the stream ends.
pub async fn watch_all(
    client: &mut ExecutorServiceClient<Channel>,
    id: &str,
    from: u64,
) -> Vec<executor_service::api::proto::ExecutionEvent> {
    use futures::StreamExt;
    let mut stream = client
        .watch_execution(executor_service::api::proto::WatchExecutionRequest {
            execution_id: id.into(),
            from_sequence: from,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        events.push(item.expect("stream item").event.expect("event"));
    }
    events
}

/// The cluster's resourceVersion once the controllers went quiet (any write anywhere moves it).
pub async fn quiet_version(kube: &kube::Client) -> String {
    async fn current(kube: &kube::Client) -> String {
        kube::Api::<k8s_openapi::api::core::v1::Node>::all(kube.clone())
            .list(&Default::default())
            .await
            .expect("list nodes")
            .metadata
            .resource_version
            .unwrap_or_default()
    }
    let mut last = current(kube).await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = current(kube).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// A plain-HTTP client. reqwest is built without a default TLS crypto provider (the tree has
/// only ring), even for plain HTTP, so the process-wide one is installed first.
pub fn plain_http() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A kube client from the kubeconfig at `path`.
pub async fn kube_client_from(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

/// The simulated cluster's record of client writes at `url`, as `GET /sim/v1/writes` serves it.
pub async fn sim_writes(url: &str) -> serde_json::Value {
    plain_http()
        .get(format!("{url}/sim/v1/writes"))
        .send()
        .await
        .expect("GET /sim/v1/writes")
        .error_for_status()
        .expect("GET /sim/v1/writes")
        .json()
        .await
        .expect("the record as JSON")
}

/// The simulated cluster's URL, from the kubeconfig it wrote.
pub fn sim_url(kubeconfig: &Path) -> String {
    kube::config::Kubeconfig::read_from(kubeconfig)
        .expect("the sim's kubeconfig")
        .clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("the sim's URL")
}

/// The writes of a record that changed something: not dry runs, answered 2xx. The record
/// must be whole (nothing dropped) to be judged.
pub fn applied_writes(record: &serde_json::Value) -> Vec<serde_json::Value> {
    assert_eq!(
        record["dropped"],
        serde_json::json!(0),
        "the record must be whole to judge it"
    );
    record["writes"]
        .as_array()
        .expect("writes")
        .iter()
        .filter(|w| {
            w["dryRun"] == serde_json::json!(false)
                && w["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
        })
        .cloned()
        .collect()
}

/// The test server's URL: `EXECUTOR_TEST_POSTGRES_URL`, else `target/pg/url` from
/// `scripts/start-postgres`, which outside CI is run here (once per test binary).
pub fn postgres_url() -> String {
    if let Some(url) = std::env::var("EXECUTOR_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return url;
    }
    let file = repo_root().join("target/pg/url");
    let read = || {
        std::fs::read_to_string(&file)
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
    };
    if std::env::var_os("CI").is_some() {
        return read().unwrap_or_else(|| {
            panic!(
                "the PostgreSQL store tests need a server: run scripts/start-postgres before \
                 `cargo test` (it writes {}), or set EXECUTOR_TEST_POSTGRES_URL",
                file.display()
            )
        });
    }
    static STARTED: OnceLock<String> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            std::fs::create_dir_all(repo_root().join("target")).expect("target dir");
            let lock = std::fs::File::create(repo_root().join("target/pg.lock")).expect("lock");
            lock.lock().expect("lock pg start");
            let status = Command::new("bash")
                .arg(repo_root().join("scripts/start-postgres"))
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run scripts/start-postgres");
            assert!(status.success(), "scripts/start-postgres failed");
            read().expect("scripts/start-postgres wrote no target/pg/url")
        })
        .clone()
}

/// A new, empty PostgreSQL database on the test server, of this test alone (replicas share
/// their queue through it); its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let base = postgres_url();
    let name = format!("executor_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {base}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE (the role needs CREATEDB: run scripts/start-postgres)");
    let _ = conn.close().await;
    let (server, _) = base.rsplit_once('/').expect("a database in the URL");
    format!("{server}/{name}")
}

/// A TCP proxy on 127.0.0.1 to `upstream` that a test can cut (bytes stop flowing both ways,
/// connections stay open, as in a network partition) and heal.
pub struct Partition {
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    pub async fn start(upstream: std::net::SocketAddr) -> Partition {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(server_read) as _, Box::new(client_write) as _),
                ] {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Partition { addr, cut }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Execution `id` as the server has it now (without its events).
pub async fn get_execution(
    client: &mut ExecutorServiceClient<Channel>,
    id: &str,
) -> executor_service::api::proto::Execution {
    client
        .get_execution(executor_service::api::proto::GetExecutionRequest {
            execution_id: id.into(),
            include_events: false,
        })
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e:?}"))
        .into_inner()
        .execution
        .expect("an execution")
}

/// Polls until execution `id` is in one of `states`, for up to `within`; fails the test with
/// where it stands otherwise.
pub async fn until_state(
    client: &mut ExecutorServiceClient<Channel>,
    id: &str,
    states: &[executor_service::api::proto::ExecutionState],
    within: std::time::Duration,
) -> executor_service::api::proto::Execution {
    let start = std::time::Instant::now();
    loop {
        let execution = get_execution(client, id).await;
        if states.contains(&execution.state()) {
            return execution;
        }
        assert!(
            start.elapsed() < within,
            "execution {id} still {:?} after {within:?}: {}",
            execution.state(),
            execution.message
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The name of a pod of `app` in `namespace`.
pub async fn first_pod(kube: &kube::Client, namespace: &str, app: &str) -> String {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(kube.clone(), namespace);
    pods.list(&kube::api::ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .first()
        .and_then(|p| p.metadata.name.clone())
        .unwrap_or_else(|| panic!("no pod of {namespace}/{app}"))
}

/// Labels `db-0` the primary and `db-1` a replica of the demo's StatefulSet `db`, and makes
/// the Service `db-primary` that selects the primary.
pub async fn primary_and_replica(kube: &kube::Client) {
    use k8s_openapi::api::core::v1::Service;
    let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(kube.clone(), "production");
    for (pod, role) in [("db-0", "primary"), ("db-1", "replica")] {
        let patch = serde_json::json!({"metadata": {"labels": {"role": role}}});
        pods.patch(pod, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db-primary", "namespace": "production"},
        "spec": {"selector": {"app": "db", "role": "primary"}, "ports": [{"port": 5432}]},
    }))
    .unwrap();
    kube::Api::<Service>::namespaced(kube.clone(), "production")
        .create(&Default::default(), &service)
        .await
        .unwrap();
}
