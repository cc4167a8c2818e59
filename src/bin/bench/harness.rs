//! What every part measures: the simulated cluster with every part's targets, the executor
//! serving on 127.0.0.1, the clients on both sides; and the gRPC helpers the parts share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use executor_service::{
    actions::Registry,
    api::{
        self,
        proto::{self, executor_service_client::ExecutorServiceClient},
    },
    cluster::Clusters,
    engine::{Engine, EngineConfig},
    policy::{Policy, PolicyConfig},
    sim::{self, Scenario, SimCluster, SimConfig},
    store::{self, Store},
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use crate::report::Row;
use crate::{Args, Sizes};

/// Namespace of every benchmark target.
pub(crate) const NS: &str = "bench";
/// Concurrency levels of P2.
pub(crate) const P2_LEVELS: [usize; 3] = [1, 16, 64];
/// Nodes that only P4's drains use, with bare pods bound to them.
pub(crate) const FANOUT_NODES: [&str; 2] = ["node-11", "node-12"];

/// Everything the parts share.
pub(crate) struct Bench {
    pub(crate) sizes: Sizes,
    /// Kept alive for the whole run.
    _sim: SimCluster,
    /// A client of the executor's own kind (same client stack), for the direct baselines.
    pub(crate) kube: kube::Client,
    pub(crate) addr: SocketAddr,
    pub(crate) clusters: Clusters,
    pub(crate) grpc: ExecutorServiceClient<Channel>,
    pub(crate) dir: PathBuf,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) kubectl: PathBuf,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
    /// Events lost in P4, over all runs.
    pub(crate) lost: u64,
    /// `--speed`, for the parts that start a simulated cluster of their own.
    pub(crate) speed: f64,
    /// `--engine-store` and `--no-policy`, for the parts that start an engine of their own.
    engine_store: String,
    no_policy: bool,
    /// `--postgres`, for P6.
    pub(crate) postgres: Option<String>,
}

impl Bench {
    pub(crate) async fn start(args: &Args, sizes: Sizes) -> anyhow::Result<Bench> {
        let dir = std::env::temp_dir().join(format!("executor-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut scenario = Scenario::empty()
            .with(sim::mk_namespace(NS))
            .with(sim::mk_node("node-2"))
            .with(sim::mk_node("node-3"));
        for node in FANOUT_NODES {
            scenario = scenario.with(sim::mk_node(node));
        }
        for name in p1_targets() {
            scenario = scenario.with(sim::mk_deployment(NS, &name, 1, "nginx:1.25"));
        }
        for i in 0..P2_LEVELS[P2_LEVELS.len() - 1] {
            scenario = scenario.with(sim::mk_deployment(NS, &format!("p2-{i}"), 1, "nginx:1.25"));
        }
        scenario = scenario.with(sim::mk_deployment(NS, "p3", 1, "nginx:1.25"));
        for node in FANOUT_NODES {
            for k in 0..sizes.p4_pods {
                scenario = scenario.with(sim::mk_pod(
                    NS,
                    &format!("{node}-pod-{k}"),
                    Some(node),
                    "nginx:1.25",
                ));
            }
        }
        let sim = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse()?,
            scenario,
            speed: args.speed,
        })
        .await?;
        sim.wait_settled(Duration::from_secs(60)).await?;
        let kubeconfig = dir.join("sim.kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        // The engine and the direct baseline get separate clients built the same way.
        let clusters = Clusters::from_kubeconfig_value(sim.kubeconfig(), None).await?;
        let kube = Clusters::from_kubeconfig_value(sim.kubeconfig(), None)
            .await?
            .client("")?;
        let config = configure(&args.engine_store, args.no_policy, &dir.join("engine.db")).await?;
        let engine = Engine::new(config, Registry::builtin(), clusters.clone());
        let addr = serve(engine).await?;
        let grpc = ExecutorServiceClient::new(connect(addr).await?);
        Ok(Bench {
            sizes,
            _sim: sim,
            kube,
            addr,
            clusters,
            grpc,
            dir,
            kubeconfig,
            kubectl: args.kubectl.clone(),
            rows: Vec::new(),
            notes: Vec::new(),
            lost: 0,
            speed: args.speed,
            engine_store: args.engine_store.clone(),
            no_policy: args.no_policy,
            postgres: args.postgres.clone(),
        })
    }

    /// The configuration of the engine P1–P4 measure, for another engine: with `--engine-store
    /// sqlite`, its history in `file` of the run's directory.
    pub(crate) async fn engine_config(&self, file: &str) -> anyhow::Result<EngineConfig> {
        configure(&self.engine_store, self.no_policy, &self.dir.join(file)).await
    }

    /// The current pod of deployment `app` (not terminating).
    pub(crate) async fn pod_of(&self, app: &str) -> anyhow::Result<String> {
        let api: Api<Pod> = Api::namespaced(self.kube.clone(), NS);
        for _ in 0..500 {
            let pods = api
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await?;
            if let Some(p) = pods
                .items
                .iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
            {
                return Ok(p.metadata.name.clone().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("deployment {app} has no pod")
    }
}

/// The deployments P1 restarts: one for the executor, one for the direct calls.
pub(crate) fn p1_targets() -> [String; 2] {
    ["p1-executor".to_string(), "p1-direct".to_string()]
}

/// The engine as `serve` configures it by default, except the limits the benchmark is about:
/// enough workers for P2's 64 clients, no per-namespace limit, no cooldown.
pub(crate) fn engine_config(store: Option<Arc<dyn Store>>) -> anyhow::Result<EngineConfig> {
    Ok(EngineConfig {
        workers: P2_LEVELS[P2_LEVELS.len() - 1],
        namespace_limit: 0,
        policy: Some(Arc::new(Policy::builtin(&PolicyConfig::default())?)),
        store,
        ..EngineConfig::default()
    })
}

/// [`engine_config`] with the history `--engine-store` names (`sqlite`: a file at `sqlite`) and
/// the policy unless `--no-policy`.
async fn configure(
    engine_store: &str,
    no_policy: bool,
    sqlite: &std::path::Path,
) -> anyhow::Result<EngineConfig> {
    let store = match engine_store {
        "none" => None,
        "sqlite" => Some(store::open(&sqlite.display().to_string()).await?),
        url => Some(store::open(url).await?),
    };
    let mut config = engine_config(store)?;
    if no_policy {
        config.policy = None;
    }
    Ok(config)
}

/// Serves `engine` on 127.0.0.1:0 for the rest of the process.
pub(crate) async fn serve(engine: Engine) -> anyhow::Result<SocketAddr> {
    let listener = api::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(api::serve(listener, engine, futures::future::pending()));
    Ok(addr)
}

/// A gRPC channel (one HTTP/2 connection) to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return Ok(channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("gRPC server at {addr} did not come up")
}

pub(crate) fn mk_request(
    action: &str,
    namespace: &str,
    kind: &str,
    name: &str,
    params: Value,
) -> proto::ExecuteRequest {
    proto::ExecuteRequest {
        action: action.into(),
        target: Some(proto::Target {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        }),
        parameters: Some(to_struct(&params)),
        ..Default::default()
    }
}

/// A JSON object as a protobuf Struct.
fn to_struct(v: &Value) -> prost_types::Struct {
    fn value(v: &Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(value).collect(),
            }),
            Value::Object(_) => Kind::StructValue(to_struct(v)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            .unwrap_or_default(),
    }
}

/// An execution and its events, through GetExecution.
pub(crate) async fn execution_with_events(
    grpc: &mut ExecutorServiceClient<Channel>,
    id: &str,
) -> anyhow::Result<(proto::Execution, Vec<proto::ExecutionEvent>)> {
    let r = grpc
        .get_execution(proto::GetExecutionRequest {
            execution_id: id.to_string(),
            include_events: true,
        })
        .await?
        .into_inner();
    Ok((r.execution.unwrap_or_default(), r.events))
}
