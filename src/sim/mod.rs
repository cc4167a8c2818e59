//! The simulated Kubernetes cluster: an in-process HTTP server speaking the Kubernetes REST
//! API (JSON) that real `kubectl` and kube-rs drive unmodified, with controllers that make
//! it behave — rollouts progress or stall, pods crash, evictions respect budgets.
//!
//! Nothing outside `main` and the tests imports this module; the engine talks to it only
//! through a `kube::Client`, exactly as to a real cluster.
//!
//! # Model
//! - One [`store::State`] behind a mutex holds every object as JSON, a global monotonic
//!   `resourceVersion` and the watch history; see `store.rs` for why one lock suffices.
//! - [`server`] parses REST paths and serves get/list/watch/create/update/patch/delete,
//!   `/status`, `/scale`, `pods/eviction`, `pods/log`, with real `Status` errors.
//! - [`controllers`] run on a clock divided by [`SimConfig::speed`]: deployment,
//!   replicaset, statefulset, daemonset, job (with `ttlSecondsAfterFinished`), scheduler,
//!   kubelet, disruption (PDB), PVC, HPA status, snapshots, garbage collection.
//! - Types: the built-ins are a static table ([`resources`]); CustomResourceDefinitions
//!   register more at run time, in that cluster only ([`crd`]): their `ResourceDef`s are
//!   leaked once per distinct definition in a process-wide intern table (so every verb keeps
//!   taking `&'static ResourceDef`, reinstalling a CRD leaks nothing) and each cluster keeps
//!   its own list in [`store::State::custom`]; lookup, discovery, tables and garbage
//!   collection read built-ins plus that list.
//! - Every request is authenticated ([`auth`]), impersonation applied, then authorized
//!   ([`rbac`]) before anything else, as by the API server's filters.
//!
//! # Conventions
//! - Image tag `:crashloop` makes a container crash forever (`CrashLoopBackOff`, never
//!   Ready), so a rollout really stalls and hits its progress deadline; `:badimage` never
//!   pulls (`ImagePullBackOff`). Any other image runs and is Ready ~2 s (simulated) after
//!   scheduling.
//! - Pods with `restartPolicy` Never/OnFailure succeed ~5 s (simulated) after starting.
//! - Deleted pods stop within 2 simulated seconds (well inside any grace period).
//! - Only nodes whose `Ready` condition is True start pods; pods bound to a node that no
//!   longer exists are removed (pod GC), so their controllers replace them elsewhere.
//! - PVC resize needs a StorageClass with `allowVolumeExpansion: true` (else `403
//!   Forbidden`, as the real admission plugin); capacity follows after ~5 s (simulated).
//! - There are no metrics: HPAs report status but never scale.
//! - Users: no `Authorization` header (the sim's own kubeconfig) is `admin` in
//!   `system:masters` — allowed everything. `Bearer T` with a token from the TokenRequest
//!   subresource (`kubectl create token SA -n NS`, [`SimCluster::issue_token`]) is
//!   `system:serviceaccount:NS:SA` (groups `system:serviceaccounts`,
//!   `system:serviceaccounts:NS`, `system:authenticated`) until it expires or the
//!   ServiceAccount is deleted; any other token is `401 Unauthorized`. At most 10 000 tokens
//!   are kept (oldest dropped). `Impersonate-User`/`-Group`/`-Uid` need the `impersonate`
//!   verb on `users` (a ServiceAccount user: `serviceaccounts` NAME in NS), `groups`, `uids`.
//! - Authorization: `system:masters` may do anything; every authenticated user may read
//!   discovery, `/version`, `/openapi/*`, health and `/sim/*` and create self reviews;
//!   the rest is RBAC (Roles, ClusterRoles, RoleBindings, ClusterRoleBindings with User,
//!   Group and ServiceAccount subjects; `*`, `res/sub`, `*/sub`, `resourceNames`). Refusals
//!   are the API server's `403 Forbidden` Status, word for word. Every cluster starts with
//!   the `cluster-admin` ClusterRole bound to `system:masters`. The record of writes names
//!   the acting user ([`Write::user`]).
//! - Custom objects: unknown fields pruned by the version's schema (a `400` under
//!   `fieldValidation=Strict`, what kubectl sends by default), `type`/`required`/`enum`
//!   violations `422 Invalid` naming the field; `generation` counts every change outside
//!   metadata and status; with a `status` subresource the main resource ignores status and
//!   `/status` everything else. Printer columns as declared (NAME first; AGE only when the
//!   version declares no columns, as the real server).
//!
//! # Caveats
//! - JSON (and YAML) only. kubectl's generated clients send protobuf bodies for
//!   `kubectl create <kind> NAME ...`, `run` and `expose`; those get `415
//!   UnsupportedMediaType`. `kubectl create -f`, `apply` (client- and server-side), `patch`,
//!   `scale`, `rollout`, `set`, `drain`, `delete`, `label`, `annotate` all speak JSON.
//! - OpenAPI v3 documents are skeletal (enough for `kubectl apply` validation, not for
//!   `kubectl explain`); there is no `/openapi/v2`.
//! - kubectl sends bearer tokens only over TLS: [`SimCluster::serve_tls`] adds an HTTPS
//!   port and [`SimCluster::write_kubeconfig_tls`] a kubeconfig for it. kube-rs and the
//!   Python client send tokens over plain HTTP too ([`SimCluster::kubeconfig_with_token`]).
//! - Protobuf bodies are read only for TokenRequest and the access reviews (what `kubectl
//!   create token`, `auth can-i` and `auth whoami` send); answers are always JSON.
//! - CRDs: no conversion (webhooks or otherwise; every served version is the same object,
//!   its `apiVersion` the request's), no `scale` subresource, no defaults, formats, bounds
//!   or CEL rules from the schema; a custom plural a built-in (or another CRD of the
//!   cluster) already uses is refused (objects are stored by plural); deleting a CRD
//!   removes its objects at once, finalizers notwithstanding; fault rules name built-in
//!   plurals only. No aggregated discovery (kubectl falls back to the legacy documents).
//! - RBAC: no escalation or bind checks on writing roles and bindings, no aggregated
//!   ClusterRoles, no default roles beyond `cluster-admin`, no `selfsubjectrulesreviews`
//!   (`kubectl auth can-i --list`).
//! - kube-rs retries 429/503 by default, also a PDB-blocked eviction's 429 (the real server
//!   answers the same way); build the client with `default_retry = false` to see them.
//!
//! # Layout
//! - `mod.rs` — public API: [`SimConfig`], [`SimCluster`], [`SimArgs`], [`run_standalone`].
//! - `resources.rs` — the table of served types; `discovery.rs` — discovery documents.
//! - `server.rs` — HTTP routing and watch streaming; `api.rs` — the verbs.
//! - `store.rs` — objects, resourceVersions, watch fan-out.
//! - `admission.rs` — defaulting and validation; `patch.rs` — the four patch types;
//!   `selectors.rs` — label and field selectors; `table.rs` — `kubectl get` columns.
//! - `controllers/` — one file per controller; `scenario.rs` — seeds and `mk_*` builders;
//!   `faults.rs` — fault injection; `errors.rs` — `Status` errors.
//! - `crd.rs` — CRD validation/status, custom types per cluster, their tables;
//!   `schema.rs` — `openAPIV3Schema` pruning and validation.
//! - `auth.rs` — users, tokens, impersonation; `rbac.rs` — request attributes, the RBAC
//!   authorizer, 403s, access reviews; `proto.rs` — the protobuf bodies read.

#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod auth;
pub mod controllers;
pub mod crd;
pub mod discovery;
pub mod errors;
pub mod faults;
pub mod metrics;
pub mod patch;
pub mod proto;
pub mod rbac;
pub mod resources;
pub mod scenario;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;
pub mod writes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{FaultRule, FaultStats, Faults};
pub use scenario::{
    mk_configmap, mk_daemonset, mk_deployment, mk_hpa, mk_namespace, mk_node, mk_pdb, mk_pod,
    mk_pvc, mk_secret, mk_service, mk_service_account, mk_statefulset, mk_storage_class, PdbLimit,
    Scenario,
};
pub use writes::{Write, Writes};

use resources::by_kind;
use server::Sim;
use store::{int_at, str_at, State};

/// Default listen address of the standalone simulator (the usual API server port).
const DEFAULT_LISTEN: &str = "127.0.0.1:6443";
/// Name of the cluster, user and context in the written kubeconfig.
const CONTEXT: &str = "sim";

/// How to start a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; must be a loopback address. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Objects to create at start.
    pub scenario: Scenario,
    /// Divisor of every simulated delay (kubelet start, termination, progress deadlines,
    /// controller ticks): 1.0 is demo pace, tests use e.g. 20.0.
    pub speed: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scenario: Scenario::demo(),
            speed: 1.0,
        }
    }
}

/// A running simulated cluster. Dropping it stops the server and the controllers.
pub struct SimCluster {
    sim: Arc<Sim>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimCluster {
    /// Binds, seeds the scenario and starts the server and the controllers.
    ///
    /// # Errors
    /// A non-loopback address, a bind failure, or a scenario object the API rejects.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<SimCluster> {
        if !cfg.listen.ip().is_loopback() {
            bail!(
                "the simulated cluster only listens on loopback, not {}",
                cfg.listen
            );
        }
        if !(cfg.speed.is_finite() && cfg.speed > 0.0) {
            bail!("speed must be a positive number, got {}", cfg.speed);
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let mut state = State::new(cfg.speed);
        bootstrap(&mut state)?;
        seed(&mut state, &cfg.scenario)?;
        let sim = Arc::new(Sim {
            state: Mutex::new(state),
            faults: Faults::default(),
            writes: Writes::default(),
            shutdown: CancellationToken::new(),
            addr,
        });
        let router = server::router(sim.clone());
        let token = sim.shutdown.clone();
        let server = tokio::spawn(async move {
            use axum::serve::ListenerExt;
            // Responses must not wait for the client's delayed ACK (Nagle).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulated API server stopped");
            }
        });
        let controllers = tokio::spawn(controllers::run(sim.clone()));
        tracing::debug!(%addr, "simulated cluster started");
        Ok(SimCluster {
            sim,
            tasks: vec![server, controllers],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.sim.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.sim.addr)
    }

    /// A kubeconfig whose cluster, user and context are all named `sim`, namespace
    /// `default`, pointing at [`url`](Self::url) without TLS or credentials.
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        serde_json::from_value(self.kubeconfig_json()).unwrap_or_default()
    }

    fn kubeconfig_json(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url()}}],
            "users": [{"name": CONTEXT, "user": {}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
            "current-context": CONTEXT,
            "preferences": {},
        })
    }

    /// Writes [`kubeconfig`](Self::kubeconfig) as YAML to `path`.
    ///
    /// # Errors
    /// I/O errors writing the file.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        let yaml = serde_yaml::to_string(&self.kubeconfig_json())?;
        std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// [`kubeconfig`](Self::kubeconfig) whose user authenticates with `Authorization:
    /// Bearer TOKEN` (a token from [`issue_token`](Self::issue_token) or `kubectl create
    /// token`), so its requests are authorized by RBAC. For kube-rs and other clients that
    /// send tokens over plain HTTP; kubectl does not (use
    /// [`write_kubeconfig_tls`](Self::write_kubeconfig_tls)).
    pub fn kubeconfig_with_token(&self, token: &str) -> kube::config::Kubeconfig {
        let mut v = self.kubeconfig_json();
        v["users"][0]["user"] = json!({ "token": token });
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Writes [`kubeconfig_with_token`](Self::kubeconfig_with_token) as YAML to `path`.
    ///
    /// # Errors
    /// I/O errors writing the file.
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        let mut v = self.kubeconfig_json();
        v["users"][0]["user"] = json!({ "token": token });
        std::fs::write(path, serde_yaml::to_string(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Also serves the API over TLS, on a free port of the same loopback address, with the
    /// certificate chain and key in the PEM files `cert` and `key` (the files the service's
    /// own `--tls-cert`/`--tls-key` take). Returns `https://127.0.0.1:PORT`. kubectl sends
    /// bearer tokens only over TLS, so this is how a test drives kubectl with a
    /// ServiceAccount token (see [`write_kubeconfig_tls`](Self::write_kubeconfig_tls)).
    ///
    /// # Errors
    /// Unreadable or unusable PEM files, or a bind failure.
    pub async fn serve_tls(&mut self, cert: &Path, key: &Path) -> anyhow::Result<String> {
        let tls = crate::api::tls::Tls::load(cert, key, None)?;
        let listener = tokio::net::TcpListener::bind((self.sim.addr.ip(), 0))
            .await
            .context("binding the TLS port")?;
        let addr = listener.local_addr()?;
        let router = server::router(self.sim.clone());
        let token = self.sim.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            let stop = async move { token.cancelled().await };
            if let Err(e) = tls.serve_http(listener, router, stop).await {
                tracing::warn!(error = %e, "simulated API server (TLS) stopped");
            }
        }));
        Ok(format!("https://{addr}"))
    }

    /// Writes a kubeconfig for `server` (an `https://` URL from
    /// [`serve_tls`](Self::serve_tls)) trusting `ca_pem`, whose user sends `token` (none:
    /// no credentials, the `admin` user).
    ///
    /// # Errors
    /// I/O errors writing the file.
    pub fn write_kubeconfig_tls(
        &self,
        path: &Path,
        server: &str,
        ca_pem: &str,
        token: Option<&str>,
    ) -> anyhow::Result<()> {
        use base64::Engine as _;
        let mut v = self.kubeconfig_json();
        v["clusters"][0]["cluster"] = json!({
            "server": server,
            "certificate-authority-data":
                base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes()),
        });
        if let Some(t) = token {
            v["users"][0]["user"] = json!({ "token": t });
        }
        std::fs::write(path, serde_yaml::to_string(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Issues a token for ServiceAccount `ns`/`name`, valid `ttl` (at least ten minutes), as
    /// `kubectl create token` does through the TokenRequest subresource.
    ///
    /// # Errors
    /// The API's error: a missing ServiceAccount, a too short `ttl`.
    pub fn issue_token(&self, ns: &str, name: &str, ttl: Duration) -> anyhow::Result<String> {
        let mut st = self.sim.lock();
        let body = json!({"spec": {"expirationSeconds": ttl.as_secs()}});
        let answer = auth::token_request(&mut st, ns, name, &body, false)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(str_at(&answer, "/status/token").to_string())
    }

    /// A kube-rs client for this cluster (default namespace `default`).
    ///
    /// # Errors
    /// Client construction errors (not expected for a plain-HTTP loopback URL).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.url().parse()?);
        config.default_namespace = "default".into();
        Ok(kube::Client::try_from(config)?)
    }

    /// The fault-injection handle (cloneable; rules apply to subsequent requests).
    pub fn faults(&self) -> Faults {
        self.sim.faults.clone()
    }

    /// Adds fault rules given on the command line, logging each: a cluster that fails on
    /// purpose must say so where its operator looks.
    pub fn inject(&self, rules: &[FaultRule]) {
        for rule in rules {
            tracing::warn!("fault injection: {rule}");
            self.sim.faults.add(rule.clone());
        }
    }

    /// The cluster's record of the writes clients made through its API.
    pub fn writes(&self) -> Writes {
        self.sim.writes.clone()
    }

    /// Waits until every Deployment, StatefulSet and DaemonSet has all its replicas
    /// updated and available — the demo scenario settles in ~3 s simulated time.
    ///
    /// # Errors
    /// The names of the workloads still unsettled when `timeout` passes.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending = {
                let st = self.sim.lock();
                unsettled(&st)
            };
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "workloads not settled after {timeout:?}: {}",
                    pending.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Number of objects of a plural resource (`pods`, `deployments`), for benches/tests.
    pub fn count(&self, plural: &str) -> usize {
        self.sim.lock().count(plural)
    }

    /// How long the last controller tick held the state lock (a load figure for benches).
    pub fn controller_tick_cost(&self) -> Duration {
        self.sim.lock().rt.last_tick_cost
    }

    /// Stops the server and controllers and waits for them.
    pub async fn shutdown(mut self) {
        self.sim.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.sim.shutdown.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn unsettled(st: &State) -> Vec<String> {
    let mut out = Vec::new();
    for d in st
        .list("deployments", None)
        .into_iter()
        .chain(st.list("statefulsets", None))
    {
        let want = int_at(&d, "/spec/replicas", 1);
        let ok = int_at(&d, "/status/observedGeneration", 0)
            >= int_at(&d, "/metadata/generation", 1)
            && int_at(&d, "/status/updatedReplicas", 0) == want
            && int_at(&d, "/status/readyReplicas", 0) == want
            && int_at(&d, "/status/replicas", 0) == want;
        if !ok {
            out.push(format!(
                "{}/{}",
                str_at(&d, "/metadata/namespace"),
                str_at(&d, "/metadata/name")
            ));
        }
    }
    for d in st.list("daemonsets", None) {
        let want = int_at(&d, "/status/desiredNumberScheduled", -1);
        if want < 0
            || int_at(&d, "/status/numberReady", 0) != want
            || int_at(&d, "/status/updatedNumberScheduled", 0) != want
        {
            out.push(format!(
                "{}/{}",
                str_at(&d, "/metadata/namespace"),
                str_at(&d, "/metadata/name")
            ));
        }
    }
    out
}

/// What every cluster has before any scenario: the `cluster-admin` ClusterRole bound to
/// `system:masters`.
fn bootstrap(st: &mut State) -> anyhow::Result<()> {
    for obj in rbac::bootstrap_objects() {
        let def = by_kind(str_at(&obj, "/kind")).context("bootstrap kind")?;
        api::create(st, def, None, obj, false)
            .map_err(|e| anyhow::anyhow!("bootstrapping RBAC: {}", e.message))?;
    }
    Ok(())
}

fn seed(st: &mut State, scenario: &Scenario) -> anyhow::Result<()> {
    for obj in scenario.objects() {
        let kind = str_at(obj, "/kind");
        let def =
            by_kind(kind).with_context(|| format!("scenario object of unknown kind {kind:?}"))?;
        let ns = str_at(obj, "/metadata/namespace").to_string();
        let ns = if def.namespaced {
            Some(if ns.is_empty() {
                "default".to_string()
            } else {
                ns
            })
        } else {
            None
        };
        if def.kind == "Namespace"
            && st
                .get("namespaces", "", str_at(obj, "/metadata/name"))
                .is_some()
        {
            continue;
        }
        api::create(st, def, ns.as_deref(), obj.clone(), false).map_err(|e| {
            anyhow::anyhow!(
                "seeding {kind} {}: {}",
                str_at(obj, "/metadata/name"),
                e.message
            )
        })?;
    }
    Ok(())
}

/// `executor-service sim`: run a simulated cluster until Ctrl-C.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Scenario to seed the cluster with: `demo` (3 nodes, production/staging workloads)
    /// or `empty`.
    #[arg(long, env = "SIM_SCENARIO", default_value = "demo")]
    pub scenario: String,
    /// Address to serve the Kubernetes API on (loopback only).
    #[arg(long, env = "SIM_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where to write a kubeconfig for kubectl (default: a file in the temp directory).
    #[arg(long, env = "SIM_KUBECONFIG_OUT")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Speed-up of all simulated delays (1.0 = demo pace).
    #[arg(long, env = "SIM_SPEED", default_value_t = 1.0)]
    pub speed: f64,
    /// Inject a fault (repeatable): `verb=patch,resource=deployments,probability=0.2,code=503`
    /// or `verb=watch,latency=200ms`. Keys: verb, resource (plural, optionally /subresource),
    /// probability (0–1, default 1), code (403, 404, 409, 429, 500, 503), latency (200ms, 2s),
    /// count (how many requests, default unlimited). In the environment, `;` separates rules.
    #[arg(
        long = "fault",
        value_name = "RULE",
        env = "SIM_FAULTS",
        value_delimiter = ';'
    )]
    pub faults: Vec<FaultRule>,
}

/// Default kubeconfig path of the standalone and embedded simulator.
pub fn default_kubeconfig_path() -> PathBuf {
    std::env::temp_dir().join("executor-service-sim.kubeconfig")
}

/// Serves a simulated cluster until Ctrl-C, logging its URL and kubeconfig path.
///
/// # Errors
/// An unknown scenario, start-up failures, or failing to write the kubeconfig.
pub async fn run_standalone(args: SimArgs) -> anyhow::Result<()> {
    let scenario = Scenario::by_name(&args.scenario)
        .with_context(|| format!("unknown scenario {:?} (try demo or empty)", args.scenario))?;
    let cluster = SimCluster::start(SimConfig {
        listen: args.listen,
        scenario,
        speed: args.speed,
    })
    .await?;
    cluster.inject(&args.faults);
    let path = args.kubeconfig_out.unwrap_or_else(default_kubeconfig_path);
    cluster.write_kubeconfig(&path)?;
    tracing::info!(
        url = %cluster.url(),
        kubeconfig = %path.display(),
        "simulated cluster ready; try: kubectl --kubeconfig {} get pods -A",
        path.display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    cluster.shutdown().await;
    Ok(())
}
