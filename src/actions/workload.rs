//! What the workload actions (scale, restart, resources, rollback) share on top of
//! [`crate::cluster::WorkloadKind`]: reading the workload, following its rollout while
//! reporting each step, and putting a recorded pod template back.

use kube::api::DynamicObject;
use serde_json::Value;

use super::{ActionContext, ActionError, Outcome, Update};
use crate::cluster::{RolloutStatus, WorkloadKind};

/// `namespace/kind/name` of a workload, lower-case kind, as [`super::Target::object_ref`]
/// writes it.
pub(crate) fn object_ref(namespace: &str, kind: WorkloadKind, name: &str) -> String {
    format!("{namespace}/{}/{name}", kind.kind().to_lowercase())
}

/// Reads workload `name` of `kind` in the target's namespace.
///
/// # Errors
/// [`ActionError::NotFound`] naming it (`deployment prod/deployment/web`) on a 404; other API
/// errors.
pub(crate) async fn get(
    ctx: &ActionContext,
    kind: WorkloadKind,
    name: &str,
) -> Result<DynamicObject, ActionError> {
    let api = kind.api(&ctx.client, &ctx.target.namespace);
    let what = format!(
        "{} {}",
        kind.kind().to_lowercase(),
        object_ref(&ctx.target.namespace, kind, name)
    );
    ctx.retry(&format!("read {what}"), || api.get(name))
        .await
        .map_err(|e| ActionError::from_kube(e, &what))
}

/// Pods of a template change that are done: updated, and available (ready, for a kind that
/// reports no availability).
pub(crate) fn updated_pods(status: &RolloutStatus) -> u64 {
    status.updated.min(status.available.max(status.ready))
}

/// Pods of a scale that are done: ready, up to the desired count.
pub(crate) fn ready_pods(status: &RolloutStatus) -> u64 {
    status.ready.min(status.desired)
}

/// Follows the rollout of workload `name` of `kind` in the target's namespace with kubectl's
/// status viewer for the kind, reporting each step as progress with `done` pods of the
/// desired count.
///
/// # Errors
/// [`ActionError::Rollout`] when the rollout fails or the watch ends;
/// [`ActionError::TargetLost`] when the workload goes away or the API server answers 403 or
/// 404 to the watch.
pub(crate) async fn follow(
    ctx: &ActionContext,
    kind: WorkloadKind,
    name: &str,
    done: fn(&RolloutStatus) -> u64,
) -> Result<RolloutStatus, ActionError> {
    let status = kind
        .follow(&ctx.client, &ctx.target.namespace, name, |s| {
            ctx.reporter.progress(rollout_update(s, done(s)));
        })
        .await?;
    Ok(status)
}

/// A progress event for a rollout step, kubectl's message with counts.
fn rollout_update(status: &RolloutStatus, current: u64) -> Update {
    Update::new(status.message.clone())
        .progress(current, status.desired)
        .details(serde_json::json!({
            "desired": status.desired,
            "updated": status.updated,
            "ready": status.ready,
            "available": status.available,
        }))
}

/// Puts a workload's pod template back as recorded (kubectl `rollout undo` does the same with
/// a ReplicaSet's template) and follows the rollout that starts.
///
/// # Errors
/// When the recorded data has no template, the patch fails, or the rollout does not complete.
pub(crate) async fn restore_template(
    ctx: &ActionContext,
    data: &Value,
) -> Result<Outcome, ActionError> {
    let kind = data
        .get("kind")
        .and_then(Value::as_str)
        .and_then(WorkloadKind::from_kind)
        .ok_or_else(|| ActionError::Internal("rollback data names no workload kind".into()))?;
    let name = data
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&ctx.target.name)
        .to_string();
    let template = data
        .get("template")
        .filter(|t| !t.is_null())
        .ok_or_else(|| ActionError::Internal("rollback data holds no pod template".into()))?;
    let patch: json_patch::Patch = serde_json::from_value(
        serde_json::json!([{ "op": "replace", "path": "/spec/template", "value": template }]),
    )
    .map_err(|e| ActionError::Internal(format!("rollback patch: {e}")))?;
    let object = object_ref(&ctx.target.namespace, kind, &name);
    let api = kind.api(&ctx.client, &ctx.target.namespace);
    let patch = kube::api::Patch::<Value>::Json(patch);
    let params = kube::api::PatchParams::default();
    ctx.retry(&format!("restore the pod template of {object}"), || {
        api.patch(&name, &params, &patch)
    })
    .await?;
    ctx.reporter.progress(Update::new(format!(
        "restored the recorded pod template of {object}"
    )));
    let done = follow(ctx, kind, &name, updated_pods).await?;
    Ok(Outcome {
        message: format!("{object} restored: {}", done.message),
        result: serde_json::json!({ "restored": object }),
    })
}

/// `app=web,tier=front`: the label selector of a workload's pods, from its `spec.selector`.
pub(crate) fn pod_selector(object: &kube::api::DynamicObject) -> String {
    let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector = object
        .data
        .pointer("/spec/selector")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    crate::cluster::selector_string(&selector)
}
