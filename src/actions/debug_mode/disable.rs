//! `disable_debug_mode`: what `enable_debug_mode` changed put back — each container's earlier
//! value of the variable (or none), the annotations and label removed — and the rollout
//! followed. The engine's expiry loop runs it when the time is up; anyone may run it earlier.
//! A workload not in debug mode is left alone (nothing to do is a success).

use async_trait::async_trait;
use kube::api::Patch;
use serde_json::{json, Value};

use super::{env_patch, previous_values, restore_data, DEBUG_LABEL, DEBUG_RESTORE, DEBUG_UNTIL};
use crate::actions::{
    executor_patch, workload, Access, ActionContext, ActionError, ActionSpec, Change, Outcome,
    Plan, Remediation, Risk, Update,
};
use crate::cluster::WorkloadKind;

/// What `disable_debug_mode` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read and patched (the plan as a dry run, the rollback restores the
    // template); the rollout is followed with a watch.
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get", "list", "watch", "patch"],
    ),
];

pub struct DisableDebugMode {
    spec: ActionSpec,
}

impl DisableDebugMode {
    pub fn new() -> Self {
        DisableDebugMode {
            spec: ActionSpec {
                name: "disable_debug_mode",
                description: "End enable_debug_mode early (the executor also does when its time is up): the log level \
                              variable put back as it was, the rollout followed.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Deployment", "StatefulSet", "DaemonSet"],
                params: vec![],
            },
        }
    }
}

/// The workload's kind, object and restore data (`None`: not in debug mode).
async fn read(ctx: &ActionContext) -> Result<(WorkloadKind, Value, Option<Value>), ActionError> {
    let kind = WorkloadKind::from_kind(&ctx.target.kind)
        .ok_or_else(|| ActionError::Internal(format!("not a workload: {}", ctx.target.kind)))?;
    let object = workload::get(ctx, kind, &ctx.target.name).await?;
    let annotations: serde_json::Map<String, Value> = object
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let restore = restore_data(&annotations)?;
    Ok((
        kind,
        serde_json::to_value(&object).unwrap_or(Value::Null),
        restore,
    ))
}

fn clear_metadata() -> Patch<Value> {
    Patch::Merge(json!({ "metadata": {
        "labels": { DEBUG_LABEL: null },
        "annotations": { DEBUG_UNTIL: null, DEBUG_RESTORE: null },
    }}))
}

#[async_trait]
impl Remediation for DisableDebugMode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    /// Debug mode ends on a schedule: a cooldown would hold its own revert back.
    fn cools_down(&self) -> bool {
        false
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let (kind, object, restore) = read(ctx).await?;
        let Some(restore) = restore else {
            return Ok(Plan {
                summary: format!(
                    "{}: not in debug mode; nothing to do",
                    ctx.target.object_ref()
                ),
                ..Default::default()
            });
        };
        let env = restore["env"].as_str().unwrap_or("LOG_LEVEL").to_string();
        let api = kind.api(&ctx.client, &ctx.target.namespace);
        let dry = executor_patch(true);
        let patched = api
            .patch(
                &ctx.target.name,
                &dry,
                &Patch::Strategic(env_patch(&env, &previous_values(&restore))),
            )
            .await?;
        let mut after = serde_json::to_value(&patched).unwrap_or(Value::Null);
        if let Patch::Merge(meta) = clear_metadata() {
            json_patch::merge(&mut after, &meta);
        }
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            format!(
                "{}: {env} put back, debug mode off",
                ctx.target.object_ref()
            ),
            &object,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let (kind, _, restore) = read(ctx).await?;
        let Some(restore) = restore else {
            return Ok(Outcome {
                message: format!(
                    "{}: not in debug mode; nothing to do",
                    ctx.target.object_ref()
                ),
                result: json!({ "reverted": false }),
            });
        };
        let env = restore["env"].as_str().unwrap_or("LOG_LEVEL").to_string();
        let previous = previous_values(&restore);
        let api = kind.api(&ctx.client, &ctx.target.namespace);
        let params = executor_patch(false);
        let patch = Patch::Strategic(env_patch(&env, &previous));
        ctx.retry(&format!("put {env} back"), || {
            api.patch(&ctx.target.name, &params, &patch)
        })
        .await?;
        let meta = clear_metadata();
        ctx.retry("clear the debug-mode annotations", || {
            api.patch(&ctx.target.name, &params, &meta)
        })
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "{env} put back in {}; following the rollout",
            previous
                .iter()
                .map(|(c, _)| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
        let done = workload::follow(ctx, kind, &ctx.target.name, workload::updated_pods).await?;
        Ok(Outcome {
            message: format!(
                "{}: debug mode off ({})",
                ctx.target.object_ref(),
                done.message
            ),
            result: json!({ "reverted": true, "env": env, "restored": restore["previous"] }),
        })
    }
}
