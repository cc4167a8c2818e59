//! `run_job`: an operator-defined task as a Kubernetes Job. Templates live in a ConfigMap of
//! the target namespace (`executor-job-templates` unless `templates_config_map` names
//! another), one key per template, each YAML: `image` (required), `command`,
//! `serviceAccount`, `resources`, `ttlSecondsAfterFinished`, `activeDeadlineSeconds`. The
//! request picks a template and gives its environment; the Job (hardened as every Job the
//! executor runs) is followed to its end and its pod's last log lines are the result; a Job
//! that fails fails the execution with them; a cancelled or timed-out execution deletes its
//! Job.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    job_run::{self, JobRun},
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk,
};

/// The Job's deadline unless its template sets one.
const DEFAULT_DEADLINE: i64 = 600;

#[derive(Debug, Deserialize)]
struct Params {
    template: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    templates_config_map: String,
}

/// One template, as its ConfigMap key holds it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Template {
    image: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    resources: Option<Value>,
    #[serde(default)]
    ttl_seconds_after_finished: Option<i64>,
    #[serde(default)]
    active_deadline_seconds: Option<i64>,
}

/// What `run_job` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Job templates are read from a ConfigMap of the target namespace.
    Access::new("", &["configmaps"], &["get"]),
    // The command runs as a Job (the plan as a dry run), awaited with a watch, deleted when the
    // execution is cancelled or times out.
    Access::new("batch", &["jobs"], &["list", "watch", "create", "delete"]),
    // The Job's pod is found by its labels and its log read.
    Access::new("", &["pods"], &["list"]),
    Access::new("", &["pods/log"], &["get"]),
];

pub struct RunJob {
    spec: ActionSpec,
}

impl RunJob {
    pub fn new() -> Self {
        RunJob {
            spec: ActionSpec {
                name: "run_job",
                description: "Run a Job from a named template (a ConfigMap of templates: image, command, \
                              ServiceAccount, resources, TTL) with the given environment, followed to its end; its \
                              log is the result; cancelling deletes it.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Namespace"],
                params: vec![
                    ParamSpec::new("template", ParamType::String, "The template's key in the templates ConfigMap.")
                        .required(),
                    ParamSpec::new("env", ParamType::Files, "The Job's environment: variable name → value."),
                    ParamSpec::new("templates_config_map", ParamType::String, "The ConfigMap of templates in the target namespace.")
                        .default("executor-job-templates"),
                ],
            },
        }
    }
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), ActionError> {
    for name in env.keys() {
        let valid = !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(ActionError::invalid(
                "env",
                format!("{name:?} is not an environment variable name"),
            ));
        }
    }
    Ok(())
}

impl RunJob {
    async fn job(ctx: &ActionContext, p: &Params) -> Result<JobRun, ActionError> {
        let namespace = &ctx.target.name;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(ctx.client.clone(), namespace);
        let what = format!(
            "configmap {namespace}/{} (the Job templates)",
            p.templates_config_map
        );
        let templates = ctx
            .retry(&format!("read {what}"), || {
                api.get_opt(&p.templates_config_map)
            })
            .await?
            .ok_or_else(|| ActionError::Precondition(format!("{what} not found")))?
            .data
            .unwrap_or_default();
        let text = templates.get(&p.template).ok_or_else(|| {
            ActionError::invalid(
                "template",
                format!(
                    "no template {:?} in {what} (it has: {})",
                    p.template,
                    templates.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let t: Template = serde_yaml::from_str(text).map_err(|e| {
            ActionError::Precondition(format!(
                "template {:?} in {what} is not valid: {e}",
                p.template
            ))
        })?;
        let env = p
            .env
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        Ok(JobRun {
            prefix: format!("job-{}", p.template.to_lowercase().replace(['_', '.'], "-")),
            image: t.image,
            command: t.command,
            deadline_seconds: t.active_deadline_seconds.unwrap_or(DEFAULT_DEADLINE),
            env,
            service_account: t.service_account,
            resources: t.resources,
            ttl_seconds: t.ttl_seconds_after_finished,
            ..Default::default()
        })
    }

    /// The context with the target namespace as the Job's namespace (the target is the
    /// Namespace itself).
    fn in_namespace(ctx: &ActionContext) -> ActionContext {
        let mut ctx = ctx.clone();
        ctx.target.namespace = ctx.target.name.clone();
        ctx
    }
}

#[async_trait]
impl Remediation for RunJob {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        if let Some(name) = params.get("templates_config_map").and_then(Value::as_str) {
            super::check_object_name("templates_config_map", name)?;
        }
        if let Some(key) = params.get("template").and_then(Value::as_str) {
            let valid = key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return Err(ActionError::invalid(
                    "template",
                    "must be a ConfigMap key (letters, digits, '-', '_' and '.')",
                ));
            }
        }
        if let Some(env) = params.get("env").and_then(Value::as_object) {
            let env: BTreeMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            check_env(&env)?;
        }
        Ok(())
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let ctx = Self::in_namespace(ctx);
        let job = Self::job(&ctx, &p).await?;
        let summary = format!(
            "run template {} as a Job in {} ({})",
            p.template, ctx.target.namespace, job.image
        );
        let change = job.plan(&ctx, summary.clone()).await?;
        Ok(Plan {
            summary,
            changes: vec![change],
            warnings: Vec::new(),
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let ctx = Self::in_namespace(ctx);
        let job = Self::job(&ctx, &p).await?;
        let (name, log) = job.run(&ctx).await?;
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        Ok(Outcome {
            message: format!(
                "job {}/{name} ({}) completed",
                ctx.target.namespace, p.template
            ),
            result: job_run::result(
                &name,
                &log,
                json!({
                    "template": p.template,
                    "last_lines": tail.into_iter().rev().collect::<Vec<_>>(),
                }),
            ),
        })
    }
}
