//! What the actions that run a database's own tools in a Job share (`repair_database`,
//! `compact_storage`): names checked so no shell or SQL syntax passes, credentials given to
//! the Job from a Secret (never read by the executor), and the address of the Service in front
//! of the database.

use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use super::{job_run::JobRun, ActionContext, ActionError, ParamSpec, ParamType};

/// The engines the database actions know.
const ENGINES: &[&str] = &["postgres", "mysql"];
/// Their client images, pinned.
const POSTGRES_IMAGE: &str = "postgres:16.4";
const MYSQL_IMAGE: &str = "mysql:8.4.2";

/// What a database Job runs and how long it may take.
pub(super) struct DbJob<'a> {
    /// `repair`, `compact`: the Job's name starts with it and the Service's name.
    pub verb: &'a str,
    pub engine: &'a str,
    pub credentials_secret: &'a str,
    /// The Service's port unless given.
    pub port: Option<i64>,
    pub deadline_seconds: i64,
}

impl DbJob<'_> {
    /// The Job against the target Service: the engine's client image, `command(host, port)`,
    /// the credentials from the Secret in its environment.
    pub async fn job(
        &self,
        ctx: &ActionContext,
        command: impl FnOnce(&str, i64) -> Result<Vec<String>, ActionError>,
    ) -> Result<JobRun, ActionError> {
        let secret = name("credentials_secret", self.credentials_secret)?;
        let (host, port) = service_address(ctx, self.port).await?;
        Ok(JobRun {
            prefix: format!("{}-{}", self.verb, ctx.target.name),
            image: if self.engine == "postgres" {
                POSTGRES_IMAGE
            } else {
                MYSQL_IMAGE
            }
            .into(),
            command: command(&host, port)?,
            claim: None,
            read_only: true,
            deadline_seconds: self.deadline_seconds,
            env: secret_env(&secret),
            ..Default::default()
        })
    }
}

/// The parameters that say which database and how to log in to it.
pub(super) fn connection_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("engine", ParamType::String, "The database engine.")
            .one_of(ENGINES)
            .required(),
        ParamSpec::new(
            "credentials_secret",
            ParamType::String,
            "Secret in the Service's namespace with keys username and password (read by the Job only).",
        )
        .required(),
        ParamSpec::new("database", ParamType::String, "One database; absent = all."),
        ParamSpec::new("port", ParamType::Integer, "Port; absent = the Service's first.")
            .bounds(1, 65535),
    ]
}

/// Checks the names a database action takes (`credentials_secret`, `database`).
///
/// # Errors
/// [`ActionError::InvalidParameter`] naming the first that could carry syntax.
pub(super) fn check_names(params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
    if let Some(secret) = params.get("credentials_secret").and_then(Value::as_str) {
        name("credentials_secret", secret)?;
    }
    if let Some(database) = params.get("database").and_then(Value::as_str) {
        if !database.trim().is_empty() {
            name("database", database)?;
        }
    }
    Ok(())
}

/// A database or Secret name: what Kubernetes and the engines accept, nothing a shell or SQL
/// could read as syntax.
pub(super) fn name(field: &str, text: &str) -> Result<String, ActionError> {
    let text = text.trim();
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid {
        return Err(ActionError::invalid(
            field,
            "must be 1 to 63 letters, digits, - _ or .",
        ));
    }
    Ok(text.to_string())
}

pub(super) fn secret_env(secret: &str) -> Vec<Value> {
    ["username", "password"]
        .iter()
        .map(|key| {
            json!({
                "name": format!("DB_{}", key.to_uppercase()),
                "valueFrom": { "secretKeyRef": { "name": secret, "key": key } },
            })
        })
        .collect()
}

/// `host` and `port` of the target Service (`port` when given, else its first).
pub(super) async fn service_address(
    ctx: &ActionContext,
    port: Option<i64>,
) -> Result<(String, i64), ActionError> {
    let services: kube::Api<Service> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let what = format!("service {}", ctx.target.object_ref());
    let service = ctx
        .retry(&format!("read {what}"), || services.get(&ctx.target.name))
        .await
        .map_err(|e| ActionError::from_kube(e, &what))?;
    let port = match port {
        Some(port) => port,
        None => service
            .spec
            .and_then(|s| s.ports)
            .and_then(|ports| ports.first().map(|p| i64::from(p.port)))
            .ok_or_else(|| ActionError::invalid("port", "the Service has no port: give one"))?,
    };
    Ok((
        format!("{}.{}.svc", ctx.target.name, ctx.target.namespace),
        port,
    ))
}
