//! `restart_pod`: delete a pod so its controller replaces it, then report the replacement once
//! it exists and (by default) once it is Ready. An unmanaged pod would be gone for good, so it
//! is refused unless `force` is set.

use std::collections::BTreeSet;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::runtime::{conditions, wait::await_condition, watcher, WatchStreamExt};
use serde::Deserialize;
use serde_json::json;

use super::{
    delete_pod::delete_exactly, Access, ActionContext, ActionError, ActionSpec, Change, Outcome,
    ParamSpec, ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::controller_ref;

#[derive(Debug, Deserialize)]
struct Params {
    grace_period_seconds: Option<i64>,
    force: bool,
    wait_ready: bool,
}

/// What `restart_pod` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The pod is read, then deleted with its UID as precondition (the plan as a dry run); the
    // replacement is found by a list and a watch on the pod's labels, its readiness awaited by a
    // watch.
    Access::new("", &["pods"], &["get", "list", "watch", "delete"]),
];

pub struct RestartPod {
    spec: ActionSpec,
}

impl RestartPod {
    pub fn new() -> Self {
        RestartPod {
            spec: ActionSpec {
                name: "restart_pod",
                description:
                    "Delete a pod so that its controller replaces it; reports the replacement pod \
                              and waits until it is Ready.",
                risk: Risk::Low,
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
                    ParamSpec::new(
                        "wait_ready",
                        ParamType::Boolean,
                        "Wait until the replacement is Ready.",
                    )
                    .default(true),
                ],
            },
        }
    }
}

fn label_selector(pod: &Pod) -> String {
    pod.metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl RestartPod {
    /// The pod and the reference to its controller.
    async fn check(
        &self,
        ctx: &ActionContext,
    ) -> Result<(Pod, Option<OwnerReference>), ActionError> {
        let p: Params = ctx.params()?;
        let pod: Pod = ctx.get_target().await?;
        let controller = controller_ref(&pod.metadata).cloned();
        if controller.is_none() && !p.force {
            return Err(ActionError::Precondition(format!(
                "pod {} is not managed by a controller: deleting it would not bring it back (set force to delete it anyway)",
                ctx.target.object_ref()
            )));
        }
        Ok((pod, controller))
    }
}

#[async_trait]
impl Remediation for RestartPod {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let (pod, controller) = self.check(ctx).await?;
        ctx.pods()
            .delete(
                &ctx.target.name,
                &delete_exactly(pod.metadata.uid.clone(), p.grace_period_seconds, true),
            )
            .await?;
        let summary = match &controller {
            Some(c) => format!(
                "{}: delete; {} {} creates a replacement",
                ctx.target.object_ref(),
                c.kind,
                c.name
            ),
            None => format!(
                "{}: delete (unmanaged: no replacement)",
                ctx.target.object_ref()
            ),
        };
        let mut warnings = Vec::new();
        if controller.is_none() {
            warnings.push(format!(
                "{} is not managed by a controller and will not come back",
                ctx.target.object_ref()
            ));
        }
        Ok(
            Plan::single(Change::delete(ctx.target.object_ref(), summary, &pod))
                .with_warnings(warnings),
        )
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let (pod, controller) = self.check(ctx).await?;
        let api = ctx.pods();
        let old_uid = pod.metadata.uid.clone().unwrap_or_default();
        ctx.reporter.rollback_data(json!({
            "kind": "Pod",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "uid": old_uid,
            "node": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "controller": controller.as_ref().map(|c| format!("{}/{}", c.kind, c.name)),
        }));
        // Watch before deleting so that a replacement created at once cannot be missed.
        let selector = label_selector(&pod);
        let existing: BTreeSet<String> = api
            .list(&kube::api::ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let mut pods = watcher(api.clone(), watcher::Config::default().labels(&selector))
            .default_backoff()
            .applied_objects()
            .boxed();
        api.delete(
            &ctx.target.name,
            &delete_exactly(pod.metadata.uid.clone(), p.grace_period_seconds, false),
        )
        .await?;
        let total = if p.wait_ready { 3 } else { 2 };
        ctx.reporter.progress(
            Update::new(format!("deleted pod {}", ctx.target.object_ref())).progress(1, total),
        );
        let Some(controller) = controller else {
            return Ok(Outcome {
                message: format!("deleted unmanaged pod {}", ctx.target.object_ref()),
                result: json!({ "deleted_pod": ctx.target.name }),
            });
        };
        let replacement = loop {
            match pods.next().await {
                Some(Ok(candidate)) => {
                    let uid = candidate.metadata.uid.clone().unwrap_or_default();
                    let owned = controller_ref(&candidate.metadata)
                        .is_some_and(|c| c.uid == controller.uid);
                    let fresh = uid != old_uid && !existing.contains(&uid);
                    if owned && fresh && candidate.metadata.deletion_timestamp.is_none() {
                        break candidate;
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "pod watch error, retrying"),
                None => return Err(ActionError::Internal("pod watch ended".into())),
            }
        };
        let name = replacement.metadata.name.clone().unwrap_or_default();
        ctx.reporter.progress(
            Update::new(format!(
                "{} {} created replacement pod {name}",
                controller.kind, controller.name
            ))
            .progress(2, total)
            .details(json!({ "replacement_pod": name })),
        );
        if p.wait_ready {
            await_condition(api.clone(), &name, conditions::is_pod_running())
                .await
                .map_err(|e| ActionError::Internal(format!("waiting for pod {name}: {e}")))?;
            await_condition(api, &name, pod_ready())
                .await
                .map_err(|e| ActionError::Internal(format!("waiting for pod {name}: {e}")))?;
            ctx.reporter
                .progress(Update::new(format!("replacement pod {name} is Ready")).progress(3, 3));
        }
        Ok(Outcome {
            message: format!("pod {} replaced by {name}", ctx.target.object_ref()),
            result: json!({
                "deleted_pod": ctx.target.name,
                "replacement_pod": name,
                "controller": format!("{}/{}", controller.kind, controller.name),
            }),
        })
    }
}

/// The pod's Ready condition is True.
fn pod_ready() -> impl kube::runtime::wait::Condition<Pod> {
    |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }
}
