//! `rolling_restart_deployment`: `kubectl rollout restart` (the
//! `kubectl.kubernetes.io/restartedAt` template annotation, sent as kubectl sends it), then
//! `kubectl rollout status` until every replica runs the restarted template.

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk,
};
use crate::cluster::follow_deployment_rollout;

/// The annotation kubectl sets on the pod template to restart a workload.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The field manager kubectl uses for `rollout restart`.
const FIELD_MANAGER: &str = "kubectl-rollout";

#[derive(Debug, Deserialize)]
struct Params {
    wait_for_rollout: bool,
}

pub struct RollingRestartDeployment {
    spec: ActionSpec,
}

impl RollingRestartDeployment {
    pub fn new() -> Self {
        RollingRestartDeployment {
            spec: ActionSpec {
                name: "rolling_restart_deployment",
                description: "Restart every pod of a deployment by a rolling update \
                              (kubectl rollout restart), then follow it like kubectl rollout status.",
                risk: Risk::Medium,
                target_kinds: &["Deployment"],
                params: vec![ParamSpec::new(
                    "wait_for_rollout",
                    ParamType::Boolean,
                    "Follow the rollout until it completes (fails on ProgressDeadlineExceeded).",
                )
                .default(true)],
            },
        }
    }
}

fn restart_patch(at: &str) -> Patch<Value> {
    Patch::Strategic(json!({
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: at } } } }
    }))
}

fn patch_params(dry_run: bool) -> PatchParams {
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    if dry_run {
        pp.dry_run()
    } else {
        pp
    }
}

impl RollingRestartDeployment {
    async fn check(
        &self,
        ctx: &ActionContext,
    ) -> Result<k8s_openapi::api::apps::v1::Deployment, ActionError> {
        let before = ctx.deployments().get(&ctx.target.name).await.map_err(|e| {
            ActionError::from_kube(e, &format!("deployment {}", ctx.target.object_ref()))
        })?;
        if before.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            // kubectl's own refusal.
            return Err(ActionError::Precondition(format!(
                "can't restart paused deployment {} (run rollout resume first)",
                ctx.target.object_ref()
            )));
        }
        Ok(before)
    }
}

#[async_trait]
impl Remediation for RollingRestartDeployment {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let before = self.check(ctx).await?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let after = ctx
            .deployments()
            .patch(&ctx.target.name, &patch_params(true), &restart_patch(&at))
            .await?;
        let replicas = before.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let summary = format!(
            "{}: rolling restart of {replicas} replicas ({RESTARTED_AT} = {at})",
            ctx.target.object_ref()
        );
        Ok(Plan {
            summary: summary.clone(),
            changes: vec![Change {
                object: ctx.target.object_ref(),
                summary,
                before: super::comparable(&before),
                after: super::comparable(&after),
            }],
            warnings: Vec::new(),
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let before = self.check(ctx).await?;
        let previous = before
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTARTED_AT))
            .cloned();
        ctx.reporter.rollback_data(json!({
            "kind": "Deployment",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "revision": before.metadata.annotations.as_ref().and_then(|a| a.get("deployment.kubernetes.io/revision")),
            "restarted_at": previous,
        }));
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let api = ctx.deployments();
        api.patch(&ctx.target.name, &patch_params(false), &restart_patch(&at))
            .await?;
        ctx.reporter.progress(super::Update::new(format!(
            "restarted {} ({RESTARTED_AT} = {at})",
            ctx.target.object_ref()
        )));
        if !p.wait_for_rollout {
            return Ok(Outcome {
                message: format!("{} restarted", ctx.target.object_ref()),
                result: json!({ "restarted_at": at }),
            });
        }
        let done = follow_deployment_rollout(&api, &ctx.target.name, |s| {
            ctx.reporter
                .progress(super::rollout_update(s, s.updated.min(s.available)));
        })
        .await?;
        Ok(Outcome {
            message: done.message.clone(),
            result: json!({ "restarted_at": at, "replicas": done.desired }),
        })
    }
}
