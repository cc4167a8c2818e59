//! The client commands of the binary: `exec`, `watch`, `dry-run`, `actions`, `get`,
//! `cancel`, `approve` and `reject`, one file each, speaking gRPC to a running server
//! through the generated client.
//!
//! Exit codes: 0 when the command did what was asked (for `exec --watch`/`--wait` and `watch`:
//! the execution SUCCEEDED), [`EXIT_NOT_SUCCEEDED`] when an execution ended otherwise or the
//! server could not be reached or refused, [`EXIT_USAGE`] for bad usage and requests refused
//! as INVALID_ARGUMENT (clap's own usage errors exit 2 too).

mod actions;
mod approve;
mod cancel;
mod dry_run;
mod exec;
mod get;
mod reject;
mod watch;

use std::{fmt::Display, io::Write, path::PathBuf, process::ExitCode, time::Duration};

use serde_json::Value;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Status,
};

use crate::api::{
    convert,
    proto::{self, executor_service_client::ExecutorServiceClient},
};

/// Where the client commands look for the server when neither `--server` nor
/// `EXECUTOR_SERVER` says: `serve`'s default gRPC address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8084";
/// Exit code of an execution that ended in any state but SUCCEEDED, and of server errors.
pub const EXIT_NOT_SUCCEEDED: u8 = 1;
/// Exit code of bad usage and INVALID_ARGUMENT refusals, as clap uses for usage errors.
pub const EXIT_USAGE: u8 = 2;
/// How long to try to reach the server before giving up: long enough for a server that is
/// starting, short enough that a wrong address is reported promptly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client commands, flattened into the binary's command list.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Run an action on a server, e.g.
    /// `exec scale_deployment -n production deployment/web --set replicas=5 --watch`.
    Exec(exec::ExecArgs),
    /// Follow an execution's events (replayed, then live) until it ends; exits 0 only if it
    /// SUCCEEDED.
    Watch(watch::WatchArgs),
    /// Show what an action would change (summary, per-object JSON patch, warnings); nothing
    /// changes.
    DryRun(dry_run::DryRunArgs),
    /// List the server's actions with their risk, targets and parameters.
    Actions(actions::ActionsArgs),
    /// Show one execution and its events.
    Get(get::GetArgs),
    /// Cancel a queued or running execution.
    Cancel(cancel::CancelArgs),
    /// Let an execution waiting for approval run.
    Approve(approve::ApproveArgs),
    /// End an execution waiting for approval as REJECTED.
    Reject(approve::ApproveArgs),
}

/// The server a client command talks to, and how to prove who is calling.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The executor's gRPC address (`http://` is assumed without a scheme; `https://` needs
    /// `--ca-cert`).
    #[arg(long, env = "EXECUTOR_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token sent as `authorization: Bearer TOKEN` (servers with `--auth-tokens`).
    #[arg(long, env = "EXECUTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the server's certificate, for `https://` servers.
    #[arg(long, env = "EXECUTOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require mutual TLS; needs `--client-key`.
    #[arg(long, env = "EXECUTOR_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of `--client-cert`.
    #[arg(long, env = "EXECUTOR_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// The target and parameters of `exec` and `dry-run`.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// `KIND/NAME` (`deployment/web`, `pod/web-1`, `node/node-1`, kubectl's short names work)
    /// or just `NAME` of the action's first target kind; may be omitted for actions without
    /// a target object.
    #[arg(value_name = "KIND/NAME")]
    pub target: Option<String>,
    /// Namespace of the target (the server defaults to `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Kubeconfig context on the server to run in (default: the server's default cluster).
    #[arg(long)]
    pub cluster: Option<String>,
    /// A parameter as `KEY=VALUE`, repeatable. A value that parses as JSON (`5`, `true`,
    /// `"5"`) is taken as such, anything else as a string.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, Value)>,
}

impl TargetArgs {
    fn target(&self) -> Option<proto::Target> {
        let (kind, name) = match self.target.as_deref().map(str::trim) {
            None | Some("") => (String::new(), String::new()),
            Some(t) => match t.split_once('/') {
                Some((kind, name)) => (kind.to_string(), name.to_string()),
                None => (String::new(), t.to_string()),
            },
        };
        Some(proto::Target {
            cluster: self.cluster.clone().unwrap_or_default(),
            namespace: self.namespace.clone().unwrap_or_default(),
            kind,
            name,
        })
    }

    fn parameters(&self) -> Option<prost_types::Struct> {
        let map = self.set.iter().cloned().collect();
        Some(convert::json_to_struct(&map))
    }
}

/// `key=value`, the value typed when it is JSON.
fn parse_set(s: &str) -> Result<(String, Value), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("{s:?} has no key"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// Why a client command stopped.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is unusable (e.g. a bad `--server`).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The server refused or failed the call.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(#[from] tonic::Status),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Rpc(status) if status.code() == tonic::Code::InvalidArgument => EXIT_USAGE,
            CliError::Unreachable(_) | CliError::Rpc(_) => EXIT_NOT_SUCCEEDED,
        }
    }
}

/// gRPC's upper-case code names, as grpcurl and the HTTP API's `error.code` show them.
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Runs one client command and returns the process's exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Exec(args) => exec::run(args).await,
        ClientCommand::Watch(args) => watch::run(args).await,
        ClientCommand::DryRun(args) => dry_run::run(args).await,
        ClientCommand::Actions(args) => actions::run(args).await,
        ClientCommand::Get(args) => get::run(args).await,
        ClientCommand::Cancel(args) => cancel::run(args).await,
        ClientCommand::Approve(args) => approve::run(args).await,
        ClientCommand::Reject(args) => reject::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

type Client = ExecutorServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer TOKEN` to every call when a token is given.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn connect(args: &ServerArgs) -> Result<Client, CliError> {
    let server = args.server.trim();
    let uri = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| CliError::Usage(format!("--server {server:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    if uri.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(args)?)
            .map_err(|e| CliError::Usage(format!("TLS: {e}")))?;
    } else if args.ca_cert.is_some() || args.client_cert.is_some() {
        return Err(CliError::Usage(format!(
            "--ca-cert and --client-cert need an https:// --server, not {server:?}"
        )));
    }
    let bearer = match args.token.as_deref().map(str::trim) {
        None | Some("") => Bearer(None),
        Some(token) => Bearer(Some(format!("Bearer {token}").parse().map_err(|_| {
            CliError::Usage("--token: not a valid header value".to_string())
        })?)),
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| CliError::Unreachable(format!("cannot reach the server at {server}: {e}")))?;
    Ok(ExecutorServiceClient::with_interceptor(channel, bearer))
}

fn tls_config(args: &ServerArgs) -> Result<ClientTlsConfig, CliError> {
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))
    };
    let ca = args.ca_cert.as_ref().ok_or_else(|| {
        CliError::Usage("an https:// --server needs --ca-cert (the CA of its certificate)".into())
    })?;
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca-cert", ca)?));
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(Identity::from_pem(
            read("--client-cert", cert)?,
            read("--client-key", key)?,
        ));
    }
    Ok(tls)
}

/// Writes a line to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(line: impl Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `SUCCEEDED` for the proto's `EXECUTION_STATE_SUCCEEDED`.
fn state_name(raw: i32) -> &'static str {
    proto::ExecutionState::try_from(raw)
        .map(|s| {
            s.as_str_name()
                .strip_prefix("EXECUTION_STATE_")
                .unwrap_or("UNSPECIFIED")
        })
        .unwrap_or("UNKNOWN")
}

fn is_terminal(raw: i32) -> bool {
    matches!(crate::api::convert::state_from(raw), Ok(Some(state)) if state.is_terminal())
}

/// 0 for SUCCEEDED, [`EXIT_NOT_SUCCEEDED`] for anything else.
fn exit_for_state(raw: i32) -> ExitCode {
    if raw == proto::ExecutionState::Succeeded as i32 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_SUCCEEDED)
    }
}

/// `production/deployment/web`.
fn target_ref(target: Option<&proto::Target>) -> String {
    match target {
        None => "-".to_string(),
        Some(t) => {
            let object = format!("{}/{}/{}", t.namespace, t.kind.to_lowercase(), t.name);
            if t.cluster.is_empty() {
                object
            } else {
                format!("{}:{object}", t.cluster)
            }
        }
    }
}

fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".to_string())
}

fn struct_json(s: Option<&prost_types::Struct>) -> Value {
    s.map(|s| Value::Object(convert::struct_to_json(s.clone())))
        .unwrap_or(Value::Null)
}

/// One event as a line: sequence, time, state, progress, message.
fn event_line(e: &proto::ExecutionEvent) -> String {
    let time = e
        .timestamp
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let progress = e
        .progress
        .as_ref()
        .map(|p| format!("[{}/{}] ", p.current, p.total))
        .unwrap_or_default();
    format!(
        "{:>4} {time} {:<9} {progress}{}",
        e.sequence,
        state_name(e.state),
        e.message
    )
}

/// A summary line of an execution: `execution ID STATE: message`.
fn execution_line(e: &proto::Execution) -> String {
    let message = if e.message.is_empty() {
        format!("{} on {}", e.action, target_ref(e.target.as_ref()))
    } else {
        e.message.clone()
    };
    format!("execution {} {}: {message}", e.id, state_name(e.state))
}

fn missing(what: &str) -> CliError {
    CliError::Rpc(tonic::Status::internal(format!(
        "the server's answer has no {what}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_typed_when_they_are_json() {
        assert_eq!(
            parse_set("replicas=5").unwrap(),
            ("replicas".into(), Value::from(5))
        );
        assert_eq!(
            parse_set("force=true").unwrap(),
            ("force".into(), Value::Bool(true))
        );
        assert_eq!(
            parse_set("cpu=500m").unwrap(),
            ("cpu".into(), Value::from("500m"))
        );
        assert_eq!(
            parse_set("key=a=b").unwrap(),
            ("key".into(), Value::from("a=b"))
        );
        assert_eq!(
            parse_set("replicas=\"5\"").unwrap(),
            ("replicas".into(), Value::from("5"))
        );
        assert!(parse_set("replicas").is_err());
        assert!(parse_set("=5").is_err());
    }

    #[test]
    fn targets_are_kind_slash_name_or_a_bare_name() {
        let args = |t: Option<&str>| TargetArgs {
            target: t.map(str::to_string),
            namespace: Some("production".into()),
            cluster: None,
            set: vec![],
        };
        let t = args(Some("deployment/web")).target().unwrap();
        assert_eq!((t.kind.as_str(), t.name.as_str()), ("deployment", "web"));
        assert_eq!(t.namespace, "production");
        let t = args(Some("web")).target().unwrap();
        assert_eq!((t.kind.as_str(), t.name.as_str()), ("", "web"));
        let t = args(None).target().unwrap();
        assert!(t.name.is_empty());
    }

    #[test]
    fn code_names_are_grpc_upper_case() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
    }
}
