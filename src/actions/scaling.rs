//! Scaling a workload through its `/scale` subresource, as `kubectl scale` does, then following
//! its rollout: shared by `scale_deployment` and `scale_statefulset`.

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    workload, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Update,
};
use crate::cluster::WorkloadKind;

/// Ceiling on replicas: a remediation that needs more is a capacity plan, not an incident fix.
/// The default policy (`--max-replicas`, `data.config.max_replicas`) can set it lower.
pub const MAX_REPLICAS: i64 = 100;

#[derive(Debug, Deserialize)]
struct Params {
    replicas: Option<i64>,
    replicas_increment: Option<i64>,
    wait_for_rollout: bool,
}

/// The parameters every scale action takes.
pub(super) fn params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("replicas", ParamType::Integer, "Absolute replica count.")
            .bounds(0, MAX_REPLICAS),
        ParamSpec::new(
            "replicas_increment",
            ParamType::Integer,
            "Replicas to add (negative to remove); the result must stay within 0 and the ceiling.",
        )
        .bounds(-MAX_REPLICAS, MAX_REPLICAS),
        ParamSpec::new(
            "wait_for_rollout",
            ParamType::Boolean,
            "Wait until the new replica count is ready, by kubectl's rollout-status rules.",
        )
        .default(true),
    ]
}

/// Scales one kind of workload.
pub struct Scale {
    pub(super) spec: ActionSpec,
    pub(super) kind: WorkloadKind,
}

/// What the scale will do, computed from the workload as it is now.
struct Scaling {
    before: kube::api::DynamicObject,
    from: i64,
    to: i64,
}

impl Scale {
    async fn scaling(&self, ctx: &ActionContext) -> Result<Scaling, ActionError> {
        let p: Params = ctx.params()?;
        let api = self.kind.api(&ctx.client, &ctx.target.namespace);
        let before = ctx
            .retry(&format!("read {}", ctx.target.object_ref()), || {
                api.get(&ctx.target.name)
            })
            .await
            .map_err(|e| {
                ActionError::from_kube(
                    e,
                    &format!(
                        "{} {}",
                        self.kind.kind().to_lowercase(),
                        ctx.target.object_ref()
                    ),
                )
            })?;
        let from = before
            .data
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let (to, field) = match (p.replicas, p.replicas_increment) {
            (Some(n), _) => (n, "replicas"),
            (None, Some(inc)) => (from + inc, "replicas_increment"),
            (None, None) => {
                return Err(ActionError::invalid(
                    "replicas",
                    "one of replicas or replicas_increment is required",
                ))
            }
        };
        if !(0..=MAX_REPLICAS).contains(&to) {
            return Err(ActionError::invalid(
                field,
                format!(
                    "would scale {} from {from} to {to} replicas; the result must be between 0 and {MAX_REPLICAS}",
                    ctx.target.object_ref()
                ),
            ));
        }
        Ok(Scaling { before, from, to })
    }
}

fn scale_patch(to: i64) -> Patch<Value> {
    Patch::Merge(json!({ "spec": { "replicas": to } }))
}

#[async_trait]
impl Remediation for Scale {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        match (params.get("replicas"), params.get("replicas_increment")) {
            (Some(_), Some(_)) => Err(ActionError::invalid(
                "replicas_increment",
                "give either replicas or replicas_increment, not both",
            )),
            (None, None) => Err(ActionError::invalid(
                "replicas",
                "one of replicas or replicas_increment is required",
            )),
            _ => Ok(()),
        }
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        let replicas = data
            .get("replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ActionError::Internal("rollback data holds no replica count".into()))?;
        let api = self.kind.api(&ctx.client, &ctx.target.namespace);
        let (params, patch) = (PatchParams::default(), scale_patch(replicas));
        ctx.retry(&format!("scale {} back", ctx.target.object_ref()), || {
            api.patch_scale(&ctx.target.name, &params, &patch)
        })
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "scaled {} back to {replicas} replicas",
            ctx.target.object_ref()
        )));
        let done = workload::follow(ctx, self.kind, &ctx.target.name, workload::ready_pods).await?;
        Ok(Outcome {
            message: format!(
                "{} back at {replicas} replicas; {}",
                ctx.target.object_ref(),
                done.message
            ),
            result: json!({ "replicas": replicas }),
        })
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let Scaling { before, from, to } = self.scaling(ctx).await?;
        // Server-side dry run: the API server validates the change and persists nothing.
        let api = self.kind.api(&ctx.client, &ctx.target.namespace);
        let (params, patch) = (PatchParams::default().dry_run(), scale_patch(to));
        ctx.retry(
            &format!("dry-run scale {}", ctx.target.object_ref()),
            || api.patch_scale(&ctx.target.name, &params, &patch),
        )
        .await?;
        let mut after = before.clone();
        if let Some(spec) = after.data.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(to));
        }
        let summary = format!("{}: replicas {from} → {to}", ctx.target.object_ref());
        let mut warnings = Vec::new();
        if to == 0 {
            warnings.push(format!(
                "{} will have no replicas left",
                ctx.target.object_ref()
            ));
        }
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            summary,
            &before,
            &after,
        ))
        .with_warnings(warnings))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let Scaling { from, to, .. } = self.scaling(ctx).await?;
        ctx.reporter.rollback_data(json!({
            "kind": self.kind.kind(),
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "replicas": from,
        }));
        if from != to {
            let api = self.kind.api(&ctx.client, &ctx.target.namespace);
            let (params, patch) = (PatchParams::default(), scale_patch(to));
            ctx.retry(&format!("scale {}", ctx.target.object_ref()), || {
                api.patch_scale(&ctx.target.name, &params, &patch)
            })
            .await?;
        }
        ctx.reporter.progress(
            Update::new(format!(
                "scaled {} from {from} to {to} replicas",
                ctx.target.object_ref()
            ))
            .details(json!({ "from": from, "to": to })),
        );
        if !p.wait_for_rollout {
            return Ok(Outcome {
                message: format!("{}: replicas {from} → {to}", ctx.target.object_ref()),
                result: json!({ "from": from, "to": to }),
            });
        }
        let done = workload::follow(ctx, self.kind, &ctx.target.name, workload::ready_pods).await?;
        Ok(Outcome {
            message: format!(
                "{}: replicas {from} → {to}; {}",
                ctx.target.object_ref(),
                done.message
            ),
            result: json!({ "from": from, "to": to, "ready": done.ready }),
        })
    }
}
