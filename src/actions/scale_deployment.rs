//! `scale_deployment`: `kubectl scale deployment` (absolute `replicas` or relative
//! `replicas_increment`) through the `/scale` subresource, then follows the rollout until the
//! new replica count is available.

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};
use crate::cluster::follow_deployment_rollout;

/// Ceiling on replicas: a remediation that needs more is a capacity plan, not an incident fix.
/// The policy issue lets operators lower it per namespace.
pub const MAX_REPLICAS: i64 = 100;

#[derive(Debug, Deserialize)]
struct Params {
    replicas: Option<i64>,
    replicas_increment: Option<i64>,
    wait_for_rollout: bool,
}

pub struct ScaleDeployment {
    spec: ActionSpec,
}

impl ScaleDeployment {
    pub fn new() -> Self {
        ScaleDeployment {
            spec: ActionSpec {
                name: "scale_deployment",
                description: "Scale a deployment to an absolute replica count or by an increment, \
                              then wait until the replicas are available (kubectl scale + rollout status).",
                risk: Risk::Medium,
                target_kinds: &["Deployment"],
                params: vec![
                    ParamSpec::new("replicas", ParamType::Integer, "Absolute replica count.")
                        .bounds(0, MAX_REPLICAS),
                    ParamSpec::new(
                        "replicas_increment",
                        ParamType::Integer,
                        "Replicas to add (negative to remove); the result must stay within bounds.",
                    )
                    .bounds(-MAX_REPLICAS, MAX_REPLICAS),
                    ParamSpec::new(
                        "wait_for_rollout",
                        ParamType::Boolean,
                        "Wait until the new replica count is available.",
                    )
                    .default(true),
                ],
            },
        }
    }
}

/// What the scale will do, computed from the deployment as it is now.
struct Scaling {
    before: Deployment,
    from: i64,
    to: i64,
}

impl ScaleDeployment {
    async fn scaling(&self, ctx: &ActionContext) -> Result<Scaling, ActionError> {
        let p: Params = ctx.params()?;
        let api = ctx.deployments();
        let before = api.get(&ctx.target.name).await.map_err(|e| {
            ActionError::from_kube(e, &format!("deployment {}", ctx.target.object_ref()))
        })?;
        let from = i64::from(before.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1));
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
impl Remediation for ScaleDeployment {
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

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let Scaling { before, from, to } = self.scaling(ctx).await?;
        // Server-side dry run: the API server validates the change and persists nothing.
        ctx.deployments()
            .patch_scale(
                &ctx.target.name,
                &PatchParams::default().dry_run(),
                &scale_patch(to),
            )
            .await?;
        let mut after = before.clone();
        if let Some(spec) = after.spec.as_mut() {
            spec.replicas = Some(to as i32);
        }
        let summary = format!("{}: replicas {from} → {to}", ctx.target.object_ref());
        let mut warnings = Vec::new();
        if to == 0 {
            warnings.push(format!(
                "{} will have no replicas left",
                ctx.target.object_ref()
            ));
        }
        Ok(Plan {
            summary: summary.clone(),
            changes: vec![Change {
                object: ctx.target.object_ref(),
                summary,
                before: super::comparable(&before),
                after: super::comparable(&after),
            }],
            warnings,
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let Scaling { from, to, .. } = self.scaling(ctx).await?;
        ctx.reporter.rollback_data(json!({
            "kind": "Deployment",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "replicas": from,
        }));
        let api = ctx.deployments();
        if from != to {
            api.patch_scale(&ctx.target.name, &PatchParams::default(), &scale_patch(to))
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
        let done = follow_deployment_rollout(&api, &ctx.target.name, |s| {
            ctx.reporter.progress(super::rollout_update(s, s.available));
        })
        .await?;
        Ok(Outcome {
            message: format!(
                "{}: replicas {from} → {to}; {}",
                ctx.target.object_ref(),
                done.message
            ),
            result: json!({ "from": from, "to": to, "available": done.available }),
        })
    }
}
