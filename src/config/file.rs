//! The configuration file (`serve --config FILE`, env `EXECUTOR_CONFIG`): the incident
//! platform's `executor:` block as its service reads it, and our own `serve:` block, whose keys
//! are `serve`'s long flag names. `${VAR}` (or `${VAR:-default}`) is replaced by the
//! environment's value before the YAML is read. Every key becomes a `serve` setting; flags
//! and environment variables override the file, and `serve:` overrides `executor:`.

use std::path::Path;

use serde::Deserialize;

/// A setting from the file: `serve`'s long flag name, its values, and the key it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub flag: String,
    pub values: Vec<String>,
    pub key: String,
}

/// Why the file could not be used; the message names the key or variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration file {path}: {message}")]
pub struct FileError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    executor: Option<Platform>,
    serve: Option<serde_yaml::Mapping>,
}

/// The platform's block, key for key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    service_port: Option<u16>,
    kubernetes: Option<Kubernetes>,
    actions: Option<Actions>,
    database: Option<Database>,
    safety: Option<Safety>,
    monitoring: Option<Monitoring>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kubernetes {
    config_path: Option<String>,
    timeout: Option<String>,
    retry_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Actions {
    dry_run: Option<bool>,
    max_concurrent: Option<usize>,
    cooldown_period: Option<String>,
    execution_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Database {
    host: Option<String>,
    port: Option<u16>,
    name: Option<String>,
    user: Option<String>,
    password: Option<String>,
    sslmode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Safety {
    enable_cooldown: Option<bool>,
    enable_validation: Option<bool>,
    require_confirmation: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Monitoring {
    enable_metrics: Option<bool>,
    metrics_port: Option<u16>,
    enable_tracing: Option<bool>,
}

/// Reads `path` and returns its settings, the platform's first, then ours (later ones win).
/// `known` says whether a long flag name is a `serve` setting.
///
/// # Errors
/// An unreadable file, an unset variable, bad YAML, an unknown key or a value of the wrong
/// type, each named.
pub fn read(path: &Path, known: impl Fn(&str) -> bool) -> Result<Vec<Setting>, FileError> {
    let fail = |message: String| FileError {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let text = expand(&text, |name| std::env::var(name).ok()).map_err(fail)?;
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?
    };
    let mut settings = match file.executor {
        Some(platform) => platform_settings(platform).map_err(fail)?,
        None => Vec::new(),
    };
    for (key, value) in file.serve.unwrap_or_default() {
        let Some(flag) = key.as_str() else {
            return Err(fail(format!("serve: key {key:?} must be a string")));
        };
        if !known(flag) {
            return Err(fail(format!(
                "serve.{flag}: unknown setting (the keys of `serve:` are the long flags of `executor-service serve --help`, without `--`)"
            )));
        }
        let values = scalars(&value).map_err(|e| fail(format!("serve.{flag}: {e}")))?;
        settings.push(Setting {
            flag: flag.to_string(),
            values,
            key: format!("serve.{flag}"),
        });
    }
    Ok(settings)
}

/// A YAML value as flag values: a scalar is one, a list is one each.
fn scalars(value: &serde_yaml::Value) -> Result<Vec<String>, String> {
    use serde_yaml::Value as Y;
    let one = |v: &Y| match v {
        Y::String(s) => Ok(s.clone()),
        Y::Bool(b) => Ok(b.to_string()),
        Y::Number(n) => Ok(n.to_string()),
        Y::Null => Ok(String::new()),
        _ => Err("must be a string, a number, a boolean or a list of them".to_string()),
    };
    match value {
        Y::Sequence(items) => items.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

fn platform_settings(p: Platform) -> Result<Vec<Setting>, String> {
    let mut out = Vec::new();
    let mut set = |flag: &str, value: String, key: &str| {
        out.push(Setting {
            flag: flag.into(),
            values: vec![value],
            key: format!("executor.{key}"),
        })
    };
    if let Some(port) = p.service_port {
        set("listen", format!("127.0.0.1:{port}"), "service_port");
    }
    let k = p.kubernetes.unwrap_or_default();
    if let Some(path) = k.config_path.filter(|p| !p.is_empty()) {
        set("kubeconfig", path, "kubernetes.config_path");
    }
    if let Some(timeout) = k.timeout {
        set("kube-timeout", timeout, "kubernetes.timeout");
    }
    if let Some(retries) = k.retry_attempts {
        set(
            "kube-retries",
            retries.to_string(),
            "kubernetes.retry_attempts",
        );
    }
    let a = p.actions.unwrap_or_default();
    if a.dry_run == Some(true) {
        set("shadow", "true".into(), "actions.dry_run");
    }
    if let Some(n) = a.max_concurrent {
        set("workers", n.to_string(), "actions.max_concurrent");
    }
    if let Some(cooldown) = a.cooldown_period {
        set("cooldown", cooldown, "actions.cooldown_period");
    }
    if let Some(timeout) = a.execution_timeout {
        set("default-timeout", timeout, "actions.execution_timeout");
    }
    if let Some(db) = p.database {
        set("store", postgres_url(&db)?, "database");
    }
    let s = p.safety.unwrap_or_default();
    if s.enable_cooldown == Some(false) {
        set("cooldown", "0s".into(), "safety.enable_cooldown");
    }
    if s.enable_validation == Some(false) {
        return Err(
            "executor.safety.enable_validation: validation cannot be switched off (every request is checked against the action's parameters and the cluster); remove the key or set it to true"
                .into(),
        );
    }
    if s.require_confirmation == Some(true) {
        set(
            "require-approval",
            "true".into(),
            "safety.require_confirmation",
        );
    }
    let m = p.monitoring.unwrap_or_default();
    if m.enable_metrics != Some(false) {
        if let Some(port) = m.metrics_port {
            set(
                "health-listen",
                format!("127.0.0.1:{port}"),
                "monitoring.metrics_port",
            );
        }
    }
    // enable_tracing: traces are exported when an OTLP endpoint is configured; nothing to map.
    let _ = m.enable_tracing;
    Ok(out)
}

/// The database block as a PostgreSQL URL.
fn postgres_url(db: &Database) -> Result<String, String> {
    let host = db
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .ok_or("executor.database.host: required when `database` is given")?;
    let mut url = String::from("postgres://");
    if let Some(user) = db.user.as_deref().filter(|u| !u.is_empty()) {
        url.push_str(&percent_encode(user));
        if let Some(password) = db.password.as_deref().filter(|p| !p.is_empty()) {
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        url.push('@');
    }
    url.push_str(host);
    url.push_str(&format!(":{}", db.port.unwrap_or(5432)));
    if let Some(name) = db.name.as_deref().filter(|n| !n.is_empty()) {
        url.push('/');
        url.push_str(&percent_encode(name));
    }
    if let Some(mode) = db.sslmode.as_deref().filter(|m| !m.is_empty()) {
        url.push_str(&format!("?sslmode={}", percent_encode(mode)));
    }
    Ok(url)
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `${NAME}` and `${NAME:-default}` replaced by `lookup(NAME)`; an unset name without a
/// default is an error naming it and its line.
fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            format!(
                "line {}: `${{` without a closing `}}`",
                line_of(text, rest, start)
            )
        })?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "line {}: `${{{inner}}}` is not a variable name",
                line_of(text, rest, start)
            ));
        }
        match lookup(name).or_else(|| default.map(str::to_string)) {
            Some(value) => out.push_str(&value),
            None => {
                return Err(format!(
                    "line {}: environment variable {name} is not set (write ${{{name}:-default}} for a default)",
                    line_of(text, rest, start)
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The 1-based line of `rest[offset]` within `text`, `rest` being a tail of `text`.
fn line_of(text: &str, rest: &str, offset: usize) -> usize {
    let position = text.len() - rest.len() + offset;
    text[..position].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_expanded_and_an_unset_one_is_named_with_its_line() {
        let env = |name: &str| (name == "DB_PASSWORD").then(|| "p@ss".to_string());
        assert_eq!(
            expand("a: ${DB_PASSWORD}\nb: ${MISSING:-x}", env).unwrap(),
            "a: p@ss\nb: x"
        );
        let err = expand("a: 1\nb: \"${KUBECONFIG}\"", env).unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("KUBECONFIG"),
            "{err}"
        );
        assert!(expand("a: ${bad name}", env).is_err());
    }

    #[test]
    fn the_database_block_becomes_a_url_with_its_credentials_encoded() {
        let db = Database {
            host: Some("localhost".into()),
            port: Some(5432),
            name: Some("action_history".into()),
            user: Some("executor_user".into()),
            password: Some("p@ss:/word".into()),
            sslmode: None,
        };
        assert_eq!(
            postgres_url(&db).unwrap(),
            "postgres://executor_user:p%40ss%3A%2Fword@localhost:5432/action_history"
        );
    }
}
