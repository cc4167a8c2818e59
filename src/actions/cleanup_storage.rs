//! `cleanup_storage`: a disk-space alert on a volume. A Job mounts the claim and either
//! compresses (`gzip`) or deletes the files under `path` matching `pattern` and older than
//! `older_than_days`, printing each file it touched; the log is the result. `find`'s own
//! arguments carry the caller's values (never a shell), and `path` cannot leave the volume.
//! Deleted files cannot be brought back: the action has no rollback, and `compress` (the
//! default) keeps every byte.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    job_run::{self, JobRun},
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk,
};

/// The image the Job runs: `find` and `gzip`, pinned.
const IMAGE: &str = "busybox:1.36.1";
const MODES: &[&str] = &["compress", "delete"];

#[derive(Debug, Deserialize)]
struct Params {
    path: String,
    pattern: String,
    older_than_days: i64,
    mode: String,
    timeout_seconds: i64,
}

/// What `cleanup_storage` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The claim is read.
    Access::new("", &["persistentvolumeclaims"], &["get"]),
    // The Job's pod is found by its labels and its log read; the pods are listed for the node that
    // mounts the claim.
    Access::new("", &["pods"], &["list"]),
    // The command runs as a Job (the plan as a dry run), awaited with a watch, deleted when the
    // execution is cancelled or times out.
    Access::new("batch", &["jobs"], &["list", "watch", "create", "delete"]),
    Access::new("", &["pods/log"], &["get"]),
];

pub struct CleanupStorage {
    spec: ActionSpec,
}

impl CleanupStorage {
    pub fn new() -> Self {
        CleanupStorage {
            spec: ActionSpec {
                name: "cleanup_storage",
                description: "Free space on a volume: a Job mounts the claim and compresses (or deletes) the files \
                              under path matching pattern older than older_than_days, listing each; no rollback \
                              for deletions.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["PersistentVolumeClaim"],
                params: vec![
                    ParamSpec::new("path", ParamType::String, "Directory inside the volume, e.g. logs/app.")
                        .default("."),
                    ParamSpec::new("pattern", ParamType::String, "File name pattern (find -name), e.g. *.log.")
                        .default("*.log"),
                    ParamSpec::new("older_than_days", ParamType::Integer, "Only files last modified longer ago.")
                        .bounds(0, 3650)
                        .default(7),
                    ParamSpec::new("mode", ParamType::String, "compress (gzip, keeps the data) or delete.")
                        .one_of(MODES)
                        .default("compress"),
                    ParamSpec::new("timeout_seconds", ParamType::Integer, "The Job's deadline.")
                        .bounds(30, 7200)
                        .default(600),
                ],
            },
        }
    }
}

/// `path` as a directory under `/data`; errors name the parameter.
fn directory(path: &str) -> Result<String, ActionError> {
    let trimmed = path.trim().trim_start_matches('/');
    let parts: Vec<&str> = trimmed
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(ActionError::invalid(
            "path",
            "must stay inside the volume (no ..)",
        ));
    }
    if parts
        .iter()
        .any(|p| p.chars().any(|c| c.is_control() || c == '\\'))
    {
        return Err(ActionError::invalid("path", "holds a control character"));
    }
    Ok(format!("/data/{}", parts.join("/"))
        .trim_end_matches('/')
        .to_string())
}

/// `pattern`: a file-name glob, no directory separator.
fn pattern(text: &str) -> Result<String, ActionError> {
    let text = text.trim();
    let valid = !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "*?[]-_.+".contains(c));
    if !valid {
        return Err(ActionError::invalid(
            "pattern",
            "must be a file name pattern of letters, digits and * ? [ ] - _ . +",
        ));
    }
    Ok(text.to_string())
}

impl CleanupStorage {
    fn job(ctx: &ActionContext, p: &Params) -> Result<JobRun, ActionError> {
        let dir = directory(&p.path)?;
        let glob = pattern(&p.pattern)?;
        let action: &[&str] = match p.mode.as_str() {
            "delete" => &["-print", "-delete"],
            _ => &["-print", "-exec", "gzip", "-9", "{}", ";"],
        };
        let mut command: Vec<String> = vec![
            "find".into(),
            dir,
            "-xdev".into(),
            "-type".into(),
            "f".into(),
            "-name".into(),
            glob,
        ];
        if p.mode == "compress" {
            // Already compressed files stay as they are.
            command.extend(["!".into(), "-name".into(), "*.gz".into()]);
        }
        command.extend(["-mtime".into(), format!("+{}", p.older_than_days)]);
        command.extend(action.iter().map(|s| s.to_string()));
        Ok(JobRun {
            prefix: format!("cleanup-{}", ctx.target.name),
            image: IMAGE.into(),
            command,
            claim: Some(ctx.target.name.clone()),
            read_only: false,
            deadline_seconds: p.timeout_seconds,
            env: Vec::new(),
            ..Default::default()
        })
    }

    /// The claim must exist and be bound.
    async fn check(ctx: &ActionContext) -> Result<(), ActionError> {
        let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let what = format!("persistentvolumeclaim {}", ctx.target.object_ref());
        let claim = ctx
            .retry(&format!("read {what}"), || claims.get(&ctx.target.name))
            .await
            .map_err(|e| ActionError::from_kube(e, &what))?;
        let phase = claim.status.and_then(|s| s.phase).unwrap_or_default();
        if phase != "Bound" {
            return Err(ActionError::Precondition(format!(
                "{} is {phase}, not Bound: there is no volume to clean",
                ctx.target.object_ref()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Remediation for CleanupStorage {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        if let Some(path) = params.get("path").and_then(Value::as_str) {
            directory(path)?;
        }
        if let Some(glob) = params.get("pattern").and_then(Value::as_str) {
            pattern(glob)?;
        }
        Ok(())
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        Self::check(ctx).await?;
        let job = Self::job(ctx, &p)?;
        let summary = format!(
            "{}: {} files {} under {} older than {} day(s), in a Job",
            ctx.target.object_ref(),
            p.mode,
            p.pattern,
            directory(&p.path)?,
            p.older_than_days
        );
        let change = job.plan(ctx, summary.clone()).await?;
        let warnings = if p.mode == "delete" {
            vec!["deleted files cannot be restored: there is no rollback".to_string()]
        } else {
            Vec::new()
        };
        Ok(Plan {
            summary,
            changes: vec![change],
            warnings,
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        Self::check(ctx).await?;
        let job = Self::job(ctx, &p)?;
        let (name, log) = job.run(ctx).await?;
        let touched = log.lines().filter(|l| l.starts_with("/data/")).count();
        Ok(Outcome {
            message: format!(
                "{}: job {name} done, {touched} file(s) {}",
                ctx.target.object_ref(),
                if p.mode == "delete" {
                    "deleted"
                } else {
                    "compressed"
                }
            ),
            result: job_run::result(&name, &log, json!({ "mode": p.mode, "files": touched })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{directory, pattern};

    #[test]
    fn paths_stay_in_the_volume_and_patterns_are_names() {
        assert_eq!(directory(".").unwrap(), "/data");
        assert_eq!(directory("/logs/app/").unwrap(), "/data/logs/app");
        assert!(directory("../etc").is_err());
        assert!(directory("logs/../../x").is_err());
        assert_eq!(pattern("*.log").unwrap(), "*.log");
        assert!(pattern("a/b").is_err());
        assert!(pattern("$(rm -rf)").is_err());
    }
}
