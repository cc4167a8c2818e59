//! `enable_debug_mode`: a log level raised for `duration_seconds`, then put back by the
//! executor itself (see the module's documentation). Enabling it again while it is on moves
//! the end and keeps what to restore. The rollout is followed; a failed one restores the
//! template.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kube::api::Patch;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    env_patch, env_values, restore_data, EnvValues, DEBUG_LABEL, DEBUG_RESTORE, DEBUG_UNTIL,
};
use crate::actions::{
    executor_patch, workload, Access, ActionContext, ActionError, ActionSpec, Change, Outcome,
    ParamSpec, ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::WorkloadKind;

#[derive(Debug, Deserialize)]
struct Params {
    duration_seconds: i64,
    env_name: String,
    level: String,
    #[serde(default)]
    container: Option<String>,
}

/// What `enable_debug_mode` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read and patched (the plan as a dry run, the rollback restores the
    // template); the rollout is followed with a watch.
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get", "list", "watch", "patch"],
    ),
];

pub struct EnableDebugMode {
    spec: ActionSpec,
}

impl EnableDebugMode {
    pub fn new() -> Self {
        EnableDebugMode {
            spec: ActionSpec {
                name: "enable_debug_mode",
                description: "Raise a workload's log level for a while (an environment variable, LOG_LEVEL=debug by \
                              default); the executor puts it back when duration_seconds is over, also across its own \
                              restarts (the end is kept on the workload).",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Deployment", "StatefulSet", "DaemonSet"],
                params: vec![
                    ParamSpec::new("duration_seconds", ParamType::Integer, "How long debug mode lasts.")
                        .bounds(30, 86_400)
                        .default(900),
                    ParamSpec::new("env_name", ParamType::String, "The environment variable that sets the log level.")
                        .default("LOG_LEVEL"),
                    ParamSpec::new("level", ParamType::String, "Its value in debug mode.").default("debug"),
                    ParamSpec::new("container", ParamType::String, "Only this container; absent = every container."),
                ],
            },
        }
    }
}

fn check_env_name(name: &str) -> Result<(), ActionError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ActionError::invalid(
            "env_name",
            format!("{name:?} is not an environment variable name"),
        ))
    }
}

/// The workload now: its kind, object, annotations and pod template spec.
struct Now {
    kind: WorkloadKind,
    object: Value,
    restore: Option<Value>,
    template_spec: Value,
}

async fn read(ctx: &ActionContext) -> Result<Now, ActionError> {
    let kind = WorkloadKind::from_kind(&ctx.target.kind)
        .ok_or_else(|| ActionError::Internal(format!("not a workload: {}", ctx.target.kind)))?;
    let object = workload::get(ctx, kind, &ctx.target.name).await?;
    let annotations = object.metadata.annotations.clone().unwrap_or_default();
    let annotations: serde_json::Map<String, Value> = annotations
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let restore = restore_data(&annotations)?;
    let template_spec = object
        .data
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Now {
        kind,
        object: serde_json::to_value(&object).unwrap_or(Value::Null),
        restore,
        template_spec,
    })
}

/// What to set (container and debug value) and what to restore later.
fn change(p: &Params, now: &Now) -> Result<(EnvValues, Value), ActionError> {
    let current = env_values(&now.template_spec, &p.env_name);
    let chosen: EnvValues = match &p.container {
        Some(name) => current.into_iter().filter(|(c, _)| c == name).collect(),
        None => current,
    };
    if chosen.is_empty() {
        return Err(ActionError::invalid(
            "container",
            format!(
                "no container {:?} in the pod template",
                p.container.clone().unwrap_or_default()
            ),
        ));
    }
    let restore = match &now.restore {
        // Already on: what to put back is what was there before the first enable.
        Some(restore) => restore.clone(),
        None => json!({
            "env": p.env_name,
            "previous": chosen.iter().map(|(c, v)| (c.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }),
    };
    let set = chosen
        .into_iter()
        .map(|(c, _)| (c, Some(p.level.clone())))
        .collect();
    Ok((set, restore))
}

fn metadata_patch(until: &DateTime<Utc>, restore: &Value) -> Patch<Value> {
    Patch::Merge(json!({ "metadata": {
        "labels": { DEBUG_LABEL: "on" },
        "annotations": {
            DEBUG_UNTIL: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            DEBUG_RESTORE: restore.to_string(),
        },
    }}))
}

#[async_trait]
impl Remediation for EnableDebugMode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    /// Debug mode ends on a schedule: a cooldown would hold its own revert back.
    fn cools_down(&self) -> bool {
        false
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        if let Some(name) = params.get("env_name").and_then(Value::as_str) {
            check_env_name(name)?;
        }
        Ok(())
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        let kind = WorkloadKind::from_kind(&ctx.target.kind)
            .ok_or_else(|| ActionError::Internal("not a workload".into()))?;
        let api = kind.api(&ctx.client, &ctx.target.namespace);
        let meta = Patch::Merge(json!({ "metadata": {
            "labels": { DEBUG_LABEL: data["label"] },
            "annotations": { DEBUG_UNTIL: data["until"], DEBUG_RESTORE: data["restore"] },
        }}));
        let params = executor_patch(false);
        ctx.retry("restore the debug-mode annotations", || {
            api.patch(&ctx.target.name, &params, &meta)
        })
        .await?;
        workload::restore_template(ctx, data).await
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let now = read(ctx).await?;
        let (set, restore) = change(&p, &now)?;
        let until = Utc::now() + chrono::Duration::seconds(p.duration_seconds);
        let api = now.kind.api(&ctx.client, &ctx.target.namespace);
        let dry = executor_patch(true);
        let patched = api
            .patch(
                &ctx.target.name,
                &dry,
                &Patch::Strategic(env_patch(&p.env_name, &set)),
            )
            .await?;
        let mut after = serde_json::to_value(&patched).unwrap_or(Value::Null);
        if let Patch::Merge(meta) = metadata_patch(&until, &restore) {
            json_patch::merge(&mut after, &meta);
        }
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            format!(
                "{}: {}={} in {} container(s) until {} (then put back by the executor)",
                ctx.target.object_ref(),
                p.env_name,
                p.level,
                set.len(),
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            &now.object,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let now = read(ctx).await?;
        let (set, restore) = change(&p, &now)?;
        let until = Utc::now() + chrono::Duration::seconds(p.duration_seconds);
        let annotations = &now.object["metadata"]["annotations"];
        ctx.reporter.rollback_data(json!({
            "kind": now.kind.kind(),
            "name": ctx.target.name,
            "template": now.object.pointer("/spec/template"),
            "label": now.object["metadata"]["labels"].get(DEBUG_LABEL),
            "until": annotations.get(DEBUG_UNTIL),
            "restore": annotations.get(DEBUG_RESTORE),
        }));
        let api = now.kind.api(&ctx.client, &ctx.target.namespace);
        let params = executor_patch(false);
        // The end first: from here on, whatever happens, the expiry loop puts it back.
        let meta = metadata_patch(&until, &restore);
        ctx.retry("record the end of debug mode", || {
            api.patch(&ctx.target.name, &params, &meta)
        })
        .await?;
        let env = Patch::Strategic(env_patch(&p.env_name, &set));
        ctx.retry(&format!("set {} in the pod template", p.env_name), || {
            api.patch(&ctx.target.name, &params, &env)
        })
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "{}={} set in {}; debug mode until {}",
            p.env_name,
            p.level,
            set.iter()
                .map(|(c, _)| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
        let done =
            workload::follow(ctx, now.kind, &ctx.target.name, workload::updated_pods).await?;
        Ok(Outcome {
            message: format!(
                "{}: debug mode on until {} ({})",
                ctx.target.object_ref(),
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                done.message
            ),
            result: json!({
                "until": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "env": p.env_name,
                "level": p.level,
                "containers": set.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(),
                "restore": restore,
            }),
        })
    }
}
