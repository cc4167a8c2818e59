//! `delete_pod`: delete a pod (`kubectl delete pod`, with a grace period) and wait until it is
//! gone. Like `restart_pod` it refuses a pod no controller manages unless `force` is set.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{DeleteParams, Preconditions},
    runtime::{conditions, wait::await_condition},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};
use crate::cluster::controller_ref;

#[derive(Debug, Deserialize)]
struct Params {
    grace_period_seconds: Option<i64>,
    force: bool,
}

/// What `delete_pod` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The pod is read, deleted (the plan as a dry run), and awaited gone with a watch.
    Access::new("", &["pods"], &["get", "list", "watch", "delete"]),
];

pub struct DeletePod {
    spec: ActionSpec,
}

impl DeletePod {
    pub fn new() -> Self {
        DeletePod {
            spec: ActionSpec {
                name: "delete_pod",
                description: "Delete a pod with a grace period and wait until it is gone.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Pod"],
                params: vec![
                    ParamSpec::new(
                        "grace_period_seconds",
                        ParamType::Integer,
                        "Termination grace period; absent = the pod's own.",
                    )
                    .bounds(0, 3600),
                    ParamSpec::new(
                        "force",
                        ParamType::Boolean,
                        "Also delete a pod no controller manages (it will not come back).",
                    )
                    .default(false),
                ],
            },
        }
    }
}

impl DeletePod {
    async fn check(&self, ctx: &ActionContext) -> Result<Pod, ActionError> {
        let p: Params = ctx.params()?;
        let pod: Pod = ctx.get_target().await?;
        if controller_ref(&pod.metadata).is_none() && !p.force {
            return Err(ActionError::Precondition(format!(
                "pod {} is not managed by a controller: it would be gone for good (set force to delete it anyway)",
                ctx.target.object_ref()
            )));
        }
        Ok(pod)
    }
}

/// Options to delete exactly the pod with `uid`, never a namesake created since, with a
/// termination grace period (`None`: the pod's own).
pub(super) fn delete_exactly(
    uid: Option<String>,
    grace_period_seconds: Option<i64>,
    dry_run: bool,
) -> DeleteParams {
    DeleteParams {
        dry_run,
        grace_period_seconds: grace_period_seconds.map(|g| g as u32),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    }
}

#[async_trait]
impl Remediation for DeletePod {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let pod = self.check(ctx).await?;
        ctx.pods()
            .delete(
                &ctx.target.name,
                &delete_exactly(pod.metadata.uid.clone(), p.grace_period_seconds, true),
            )
            .await?;
        let summary = format!("{}: delete", ctx.target.object_ref());
        Ok(Plan::single(Change::delete(
            ctx.target.object_ref(),
            summary,
            &pod,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let pod = self.check(ctx).await?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        ctx.reporter.rollback_data(json!({
            "kind": "Pod",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "uid": uid,
            "note": "a deleted pod cannot be restored; its controller may replace it",
        }));
        ctx.pods()
            .delete(
                &ctx.target.name,
                &delete_exactly(Some(uid.clone()), p.grace_period_seconds, false),
            )
            .await?;
        ctx.reporter.progress(
            Update::new(format!("deleting pod {}", ctx.target.object_ref())).progress(1, 2),
        );
        await_condition(ctx.pods(), &ctx.target.name, conditions::is_deleted(&uid))
            .await
            .map_err(|e| ActionError::Internal(format!("waiting for the pod to go: {e}")))?;
        ctx.reporter.progress(
            Update::new(format!("pod {} is gone", ctx.target.object_ref())).progress(2, 2),
        );
        Ok(Outcome {
            message: format!("deleted pod {}", ctx.target.object_ref()),
            result: json!({ "deleted_pod": ctx.target.name }),
        })
    }
}
