//! Restarting a workload the way `kubectl rollout restart` does (the
//! `kubectl.kubernetes.io/restartedAt` template annotation, sent as kubectl sends it), then
//! following it with kubectl's rollout-status rules for its kind: shared by
//! `rolling_restart_deployment`, `restart_statefulset` and `restart_daemonset`.

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    workload, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Update,
};
use crate::cluster::WorkloadKind;

/// The annotation kubectl sets on the pod template to restart a workload.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The field manager kubectl uses for `rollout restart`.
const FIELD_MANAGER: &str = "kubectl-rollout";

#[derive(Debug, Deserialize)]
struct Params {
    wait_for_rollout: bool,
}

/// The parameters every restart action takes.
pub(super) fn params() -> Vec<ParamSpec> {
    vec![ParamSpec::new(
        "wait_for_rollout",
        ParamType::Boolean,
        "Follow the rollout until it completes (fails when the controller reports ProgressDeadlineExceeded).",
    )
    .default(true)]
}

/// Restarts one kind of workload.
pub struct Restart {
    pub(super) spec: ActionSpec,
    pub(super) kind: WorkloadKind,
}

pub(super) fn restart_patch(at: &str) -> Patch<Value> {
    Patch::Strategic(json!({
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: at } } } }
    }))
}

pub(super) fn patch_params(dry_run: bool) -> PatchParams {
    super::patch_params_as(FIELD_MANAGER, dry_run)
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Restart {
    async fn check(&self, ctx: &ActionContext) -> Result<kube::api::DynamicObject, ActionError> {
        let before = workload::get(ctx, self.kind, &ctx.target.name).await?;
        if before.data.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
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
impl Remediation for Restart {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        workload::restore_template(ctx, data).await
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let before = self.check(ctx).await?;
        let at = now();
        let after = self
            .kind
            .api(&ctx.client, &ctx.target.namespace)
            .patch(&ctx.target.name, &patch_params(true), &restart_patch(&at))
            .await?;
        let summary = format!(
            "{}: rolling restart ({RESTARTED_AT} = {at})",
            ctx.target.object_ref()
        );
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            summary,
            &before,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let before = self.check(ctx).await?;
        let annotations = before
            .data
            .pointer("/spec/template/metadata/annotations")
            .cloned();
        ctx.reporter.rollback_data(json!({
            "kind": self.kind.kind(),
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "template_annotations": annotations,
            "template": before.data.pointer("/spec/template"),
        }));
        let at = now();
        let api = self.kind.api(&ctx.client, &ctx.target.namespace);
        let (params, patch) = (patch_params(false), restart_patch(&at));
        ctx.retry(&format!("restart {}", ctx.target.object_ref()), || {
            api.patch(&ctx.target.name, &params, &patch)
        })
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "restarted {} ({RESTARTED_AT} = {at})",
            ctx.target.object_ref()
        )));
        if !p.wait_for_rollout {
            return Ok(Outcome {
                message: format!("{} restarted", ctx.target.object_ref()),
                result: json!({ "restarted_at": at }),
            });
        }
        let done =
            workload::follow(ctx, self.kind, &ctx.target.name, workload::updated_pods).await?;
        Ok(Outcome {
            message: done.message.clone(),
            result: json!({ "restarted_at": at, "replicas": done.desired }),
        })
    }
}
