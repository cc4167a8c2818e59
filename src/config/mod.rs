//! Command line and environment: one clap struct per command. Doc comments are the `--help`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

mod effective;
pub mod file;

pub use effective::{mask_secrets, parse, try_parse};

pub use crate::telemetry::LogFormat;

use crate::engine::{DEFAULT_QUEUE_CAPACITY, DEFAULT_WORKERS};

/// Runs Kubernetes remediation actions with kubectl's semantics, over gRPC.
#[derive(Debug, Parser)]
#[command(name = "executor-service", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "EXECUTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this endpoint (e.g. `http://127.0.0.1:4317`); off
    /// when absent.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API. Without a kubeconfig (and outside a pod) it starts the embedded
    /// simulated cluster and logs where its kubeconfig is, so kubectl can watch.
    Serve(Box<ServeArgs>),
    /// Run the simulated Kubernetes API server alone.
    Sim(crate::sim::SimArgs),
    /// Print a manifest generated from the code: `crd` (the KubernetesExecution
    /// CustomResourceDefinition) or `action-rbac` (each action's ServiceAccount and role).
    Manifests {
        #[arg(value_parser = ["crd", "action-rbac"])]
        which: String,
    },
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (YAML): the incident platform's `executor:` block and our own
    /// `serve:` block, whose keys are these flags' long names; `${VAR}` is expanded. Flags and
    /// environment variables override it. Read at start: a change needs a restart (the
    /// token, authz and policy files it names are reloaded as always).
    #[arg(long, env = "EXECUTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (each value with where it came from, secrets
    /// masked) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The effective configuration, as `--print-config` shows it.
    #[arg(skip)]
    pub effective_config: String,
    /// gRPC listen address.
    #[arg(long, env = "EXECUTOR_LISTEN", default_value = "127.0.0.1:8084")]
    pub listen: SocketAddr,
    /// HTTP/JSON API listen address (`/api/v1/…`, `/health`); `off` or empty disables it.
    #[arg(long, env = "EXECUTOR_HTTP_LISTEN", default_value = "127.0.0.1:8085")]
    pub http_listen: OptionalAddr,
    /// Kubeconfig file; every context becomes a cluster that `target.cluster` can name. Without
    /// it: in-cluster config inside a pod, else the embedded simulated cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Default kubeconfig context (default: the file's current context).
    #[arg(long, env = "EXECUTOR_CONTEXT")]
    pub context: Option<String>,
    /// Connect and write timeout of Kubernetes API calls (reads keep kube's 295 s, long
    /// enough for a watch).
    #[arg(long, env = "EXECUTOR_KUBE_TIMEOUT", default_value = "30s")]
    pub kube_timeout: humantime::Duration,
    /// Times a Kubernetes API call that failed transiently (409, 429, 5xx, a dropped
    /// connection) is tried again, with backoff; at most 20.
    #[arg(long, env = "EXECUTOR_KUBE_RETRIES", default_value_t = crate::cluster::MAX_ATTEMPTS - 1, value_parser = clap::value_parser!(u32).range(0..=crate::cluster::MAX_RETRIES as i64))]
    pub kube_retries: u32,
    /// Executions running at once.
    #[arg(long, env = "EXECUTOR_WORKERS", default_value_t = DEFAULT_WORKERS)]
    pub workers: usize,
    /// Executions waiting to run before Execute answers RESOURCE_EXHAUSTED.
    #[arg(long, env = "EXECUTOR_QUEUE_CAPACITY", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,
    /// Timeout of an execution whose request gives none.
    #[arg(long, env = "EXECUTOR_DEFAULT_TIMEOUT", default_value = "120s")]
    pub default_timeout: humantime::Duration,
    /// On the first SIGINT/SIGTERM, how long running executions may finish before they are
    /// interrupted; a second signal interrupts at once.
    #[arg(long, env = "EXECUTOR_SHUTDOWN_GRACE", default_value = "30s")]
    pub shutdown_grace: humantime::Duration,
    /// Embedded simulated cluster: where to write its kubeconfig (default: a file in the temp
    /// directory, logged at start).
    #[arg(long, env = "EXECUTOR_SIM_KUBECONFIG")]
    pub sim_kubeconfig_out: Option<PathBuf>,
    /// Embedded simulated cluster: its listen address.
    #[arg(long, env = "EXECUTOR_SIM_LISTEN", default_value = "127.0.0.1:0")]
    pub sim_listen: SocketAddr,
    /// Embedded simulated cluster: speed of its clock (2 = everything twice as fast).
    #[arg(long, env = "EXECUTOR_SIM_SPEED", default_value_t = 1.0)]
    pub sim_speed: f64,
    /// Embedded simulated cluster: inject a fault (repeatable), as `sim --fault`:
    /// `verb=patch,resource=deployments,probability=0.2,code=503`, `verb=watch,latency=200ms`.
    /// Refused with a kubeconfig or in a pod: faults exist only in the simulated cluster. In
    /// the environment, `;` separates rules.
    #[arg(
        long = "sim-fault",
        value_name = "RULE",
        env = "EXECUTOR_SIM_FAULTS",
        value_delimiter = ';'
    )]
    pub sim_faults: Vec<crate::sim::FaultRule>,
    /// Execution history: a SQLite file path (or `sqlite://PATH`), `postgres://…` to share one
    /// history between replicas, or `memory:` to keep nothing.
    #[arg(long, env = "EXECUTOR_STORE", default_value = "executor-service.db")]
    pub store: String,
    /// Delete finished executions older than this.
    #[arg(long, env = "EXECUTOR_RETENTION_MAX_AGE", default_value = "30days")]
    pub retention_max_age: humantime::Duration,
    /// Keep at most this many finished executions; 0 = no count limit.
    #[arg(long, env = "EXECUTOR_RETENTION_MAX_COUNT", default_value_t = 100_000)]
    pub retention_max_count: usize,
    /// Rego policy file defining `data.executor.decision` (default: the built-in policy).
    #[arg(long, env = "EXECUTOR_POLICY")]
    pub policy: Option<PathBuf>,
    /// Namespaces the built-in policy protects (comma-separated).
    #[arg(
        long,
        env = "EXECUTOR_PROTECTED_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,kube-public"
    )]
    pub protected_namespaces: Vec<String>,
    /// Replica ceiling the policy enforces.
    #[arg(long, env = "EXECUTOR_MAX_REPLICAS", default_value_t = crate::actions::MAX_REPLICAS)]
    pub max_replicas: i64,
    /// Cooldown per target after an execution ends; `0s` disables.
    #[arg(long, env = "EXECUTOR_COOLDOWN", default_value = "5m")]
    pub cooldown: humantime::Duration,
    /// Per-action cooldown, `ACTION=DURATION` (repeatable), e.g. `restart_pod=1m`.
    #[arg(long = "action-cooldown", env = "EXECUTOR_ACTION_COOLDOWNS", value_delimiter = ',', value_parser = parse_action_cooldown)]
    pub action_cooldowns: Vec<(String, std::time::Duration)>,
    /// Executions running at once in one namespace; 0 = no limit beyond `--workers`.
    #[arg(long, env = "EXECUTOR_NAMESPACE_LIMIT", default_value_t = 5)]
    pub namespace_limit: usize,
    /// Finished executions kept in memory (the newest) for fast reads; older ones are read
    /// back from the store. Bounds the service's memory however long it runs.
    #[arg(long, env = "EXECUTOR_FINISHED_IN_MEMORY", default_value_t = 1000)]
    pub finished_in_memory: usize,
    /// How often `--auth-tokens`, `--authz` and `--policy` are checked for changes (a rotated
    /// Secret, an edited ConfigMap) and reloaded together, as on SIGHUP; 0 = only on SIGHUP.
    #[arg(long, env = "EXECUTOR_RELOAD_INTERVAL", default_value = "10s")]
    pub reload_interval: humantime::Duration,
    /// How long an execution waits for an approval before it is rejected.
    #[arg(long, env = "EXECUTOR_APPROVAL_TIMEOUT", default_value = "1h")]
    pub approval_timeout: humantime::Duration,
    /// Executions waiting for an approval at once (outside the queue); beyond, Execute is
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "EXECUTOR_APPROVAL_CAPACITY", default_value_t = crate::engine::DEFAULT_APPROVAL_CAPACITY)]
    pub approval_capacity: usize,
    /// Dry runs at once; beyond, DryRun is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "EXECUTOR_DRY_RUN_LIMIT", default_value_t = crate::engine::DEFAULT_DRY_RUN_LIMIT)]
    pub dry_run_limit: usize,
    /// Execute and DryRun requests per second per identity (token bucket); 0 = no limit.
    /// Beyond, RESOURCE_EXHAUSTED (HTTP 429) with a retry-after.
    #[arg(long, env = "EXECUTOR_RATE_LIMIT", default_value_t = crate::engine::DEFAULT_RATE_LIMIT)]
    pub rate_limit: f64,
    /// Requests one identity may send in a burst before `--rate-limit` applies.
    #[arg(long, env = "EXECUTOR_RATE_BURST", default_value_t = crate::engine::DEFAULT_RATE_BURST)]
    pub rate_burst: u32,
    /// Kafka brokers (`HOST:PORT[,…]`): consume approved actions and publish their statuses;
    /// off when unset.
    #[arg(long, env = "KAFKA_BROKER")]
    pub kafka_brokers: Option<String>,
    /// The topic approved actions are consumed from.
    #[arg(
        long,
        env = "EXECUTOR_KAFKA_APPROVED_TOPIC",
        default_value = "actions.approved"
    )]
    pub kafka_approved_topic: String,
    /// The topic status messages are published to (keyed by action id).
    #[arg(
        long,
        env = "EXECUTOR_KAFKA_STATUS_TOPIC",
        default_value = "actions.status"
    )]
    pub kafka_status_topic: String,
    /// The consumer group (every replica joins it).
    #[arg(long, env = "EXECUTOR_KAFKA_GROUP", default_value = "executor-service")]
    pub kafka_group: String,
    /// The requester of executions from Kafka, for the authorization rules.
    #[arg(long, env = "EXECUTOR_KAFKA_IDENTITY", default_value = "kafka")]
    pub kafka_identity: String,
    /// Where refused messages are copied (besides their `rejected` status); none by default.
    #[arg(long, env = "EXECUTOR_KAFKA_DEAD_LETTER_TOPIC")]
    pub kafka_dead_letter_topic: Option<String>,
    /// A librdkafka property, repeatable: `security.protocol=SSL`,
    /// `ssl.ca.location=/ca.pem`, `sasl.mechanisms=SCRAM-SHA-256`, `sasl.username=…`.
    #[arg(long = "kafka-option", env = "EXECUTOR_KAFKA_OPTIONS", value_delimiter = ';', value_parser = parse_kafka_option)]
    pub kafka_options: Vec<(String, String)>,
    /// Test aid: wait this long between recording a message's execution and committing its
    /// offset.
    #[arg(long, env = "EXECUTOR_KAFKA_COMMIT_DELAY", default_value = "0s", value_parser = humantime::parse_duration, hide = true)]
    pub kafka_commit_delay: std::time::Duration,
    /// Reconcile `KubernetesExecution` custom resources (install `deploy/crd.yaml` first):
    /// each becomes an execution, its status mirrors it. Every replica may run it.
    #[arg(long, env = "EXECUTOR_CONTROLLER")]
    pub controller: bool,
    /// The requester of executions from KubernetesExecutions, for the authorization rules;
    /// by default `kubernetesexecution:<the object's namespace>`.
    #[arg(long, env = "EXECUTOR_CONTROLLER_IDENTITY")]
    pub controller_identity: Option<String>,
    /// The approver of approvals given by annotating a KubernetesExecution (whose value is
    /// kept in the reason); by default `kubernetesexecution-approver:<the object's namespace>`.
    #[arg(long, env = "EXECUTOR_CONTROLLER_APPROVER")]
    pub controller_approver: Option<String>,
    /// Reconcile KubernetesExecutions of this namespace only; all namespaces by default.
    #[arg(long, env = "EXECUTOR_CONTROLLER_NAMESPACE")]
    pub controller_namespace: Option<String>,
    /// Run each action as its own ServiceAccount, `action-<name>` in this namespace, by
    /// Kubernetes impersonation (`deploy/rbac-actions.yaml` grants each only what it calls;
    /// the service's own role then needs `impersonate`). Off when unset: every action then
    /// runs with the service's own credentials, for clusters that forbid impersonation.
    #[arg(long, env = "EXECUTOR_ACTION_IDENTITIES")]
    pub action_identities: Option<String>,
    /// With a PostgreSQL store (several replicas): how long a replica holds a running
    /// execution without renewing it; then another replica ends it as INTERRUPTED.
    #[arg(long, env = "EXECUTOR_LEASE", default_value = "15s", value_parser = parse_lease)]
    pub lease: std::time::Duration,
    /// Shadow mode: every Execute is validated, planned, checked by the policy and recorded
    /// with its full diff, then ends SHADOWED without changing anything in the cluster.
    #[arg(long, env = "EXECUTOR_SHADOW")]
    pub shadow: bool,
    /// Every mutating action waits for an approval, whatever the policy decides.
    #[arg(long, env = "EXECUTOR_REQUIRE_APPROVAL")]
    pub require_approval: bool,
    /// The namespace the API platform's door (`POST /deploy`, `/stop/{api_id}`,
    /// `GET /status/{api_id}`) deploys user code into.
    #[arg(long, env = "EXECUTOR_CODE_NAMESPACE", default_value = crate::domain::DEFAULT_CODE_NAMESPACE)]
    pub code_namespace: String,
    /// TLS, authentication and authorization (boxed: they are rarely set and would make
    /// every `Command` as large as `serve`).
    #[command(flatten)]
    pub security: Box<SecurityArgs>,
}

/// `serve`'s TLS, authentication and authorization flags; see the README's Security section.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// TLS certificate chain (PEM) for gRPC and HTTP; needs `--tls-key`.
    #[arg(long, env = "EXECUTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "EXECUTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) client certificates must chain to: mutual TLS, every client needs a
    /// certificate, whose subject CN (or first DNS name) is its identity.
    #[arg(long, env = "EXECUTOR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Bearer tokens (YAML/JSON `tokens: [{identity, sha256 | token}]`): every API call then
    /// needs `authorization: Bearer TOKEN`; health, reflection and /metrics stay open.
    #[arg(long, env = "EXECUTOR_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,
    /// Authorization rules (YAML/JSON `rules: [{identity, actions, namespaces, approve}]`),
    /// checked on the resolved target before the policy; needs `--auth-tokens` or
    /// `--tls-client-ca`. Without it every caller may do everything.
    #[arg(long, env = "EXECUTOR_AUTHZ")]
    pub authz: Option<PathBuf>,
    /// An origin whose pages may call the API from a browser (HTTP/JSON, event streams,
    /// gRPC-Web), exactly as the browser sends it: `https://dashboard.example.com`;
    /// repeatable. None by default: only the dashboard served here can.
    #[arg(
        long = "cors-allow-origin",
        env = "EXECUTOR_CORS_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,
    /// Plain-HTTP address serving only `/health`, `/livez` and `/metrics`, without TLS or
    /// authentication: for kubelet probes (which cannot present client certificates, and
    /// whose gRPC probes speak no TLS) and Prometheus. Off when absent.
    #[arg(long, env = "EXECUTOR_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

fn parse_action_cooldown(text: &str) -> Result<(String, std::time::Duration), String> {
    let (action, duration) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected ACTION=DURATION"))?;
    let duration = humantime::parse_duration(duration).map_err(|e| format!("{text:?}: {e}"))?;
    Ok((action.trim().to_string(), duration))
}

/// A listen address that may be switched off with `off` or an empty string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" => Ok(OptionalAddr(None)),
            addr => addr.parse().map(|a| OptionalAddr(Some(a))),
        }
    }
}

/// A lease of at least a second (renewed every third of it) and at most ten minutes.
fn parse_lease(value: &str) -> Result<std::time::Duration, String> {
    let lease = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if lease < std::time::Duration::from_secs(1) || lease > std::time::Duration::from_secs(600) {
        return Err("must be between 1s and 10m".into());
    }
    Ok(lease)
}

/// `KEY=VALUE` of a librdkafka property.
fn parse_kafka_option(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, v)) if !key.trim().is_empty() => Ok((key.trim().to_string(), v.to_string())),
        _ => Err(format!("must be KEY=VALUE, got {value:?}")),
    }
}
