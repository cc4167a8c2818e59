//! `rollback_deployment`: `kubectl rollout undo` — find the ReplicaSet of the wanted revision
//! among those the deployment controls, put its pod template back (without
//! `pod-template-hash`) with a JSON patch as kubectl does, then follow the rollout.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{ListParams, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    workload, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::{controller_ref, selector_string, WorkloadKind};

/// The annotation holding a deployment's (and its ReplicaSets') revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label the deployment controller adds to each ReplicaSet's template.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Deployment annotations kubectl keeps instead of copying them from the ReplicaSet.
const ANNOTATIONS_TO_SKIP: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

#[derive(Debug, Deserialize)]
struct Params {
    to_revision: i64,
    wait_for_rollout: bool,
}

/// What `rollback_deployment` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The deployment is read and its template patched back (the plan as a dry run); the rollout is
    // followed with a watch.
    Access::new("apps", &["deployments"], &["get", "list", "watch", "patch"]),
    // The previous revision's ReplicaSet is found among the deployment's.
    Access::new("apps", &["replicasets"], &["list"]),
];

pub struct RollbackDeployment {
    spec: ActionSpec,
}

impl RollbackDeployment {
    pub fn new() -> Self {
        RollbackDeployment {
            spec: ActionSpec {
                name: "rollback_deployment",
                description:
                    "Roll a deployment back to a previous revision (kubectl rollout undo), \
                              then follow the rollout.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Deployment"],
                params: vec![
                    ParamSpec::new(
                        "to_revision",
                        ParamType::Integer,
                        "Revision to roll back to; 0 = the previous one.",
                    )
                    .bounds(0, i64::from(i32::MAX))
                    .default(0),
                    ParamSpec::new(
                        "wait_for_rollout",
                        ParamType::Boolean,
                        "Follow the rollout until it completes.",
                    )
                    .default(true),
                ],
            },
        }
    }
}

/// What the undo will do.
struct Undo {
    deployment: Deployment,
    revision: i64,
    /// `None` when the current template already matches the revision.
    patch: Option<Value>,
}

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(REVISION)?
        .parse()
        .ok()
}

fn template_without_hash(rs: &ReplicaSet) -> Value {
    let mut template = serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.clone()))
        .unwrap_or(Value::Null);
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    template
}

impl RollbackDeployment {
    async fn undo(&self, ctx: &ActionContext) -> Result<Undo, ActionError> {
        let p: Params = ctx.params()?;
        let deployment: Deployment = ctx.get_target().await?;
        let spec = deployment.spec.clone().unwrap_or_default();
        if spec.paused == Some(true) {
            return Err(ActionError::Precondition(
                "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"
                    .into(),
            ));
        }
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let selector = selector_string(&spec.selector);
        let owned: Vec<ReplicaSet> =
            kube::Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ctx.target.namespace)
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .filter(|rs| controller_ref(&rs.metadata).is_some_and(|o| o.uid == uid))
                .collect();
        let name = &ctx.target.name;
        let wanted = if p.to_revision == 0 {
            // kubectl: the previous revision is the second highest.
            let mut revisions: Vec<i64> = owned.iter().filter_map(revision_of).collect();
            revisions.sort_unstable();
            revisions.dedup();
            match revisions.len() {
                0 | 1 => {
                    return Err(ActionError::Precondition(format!(
                        "no rollout history found for deployment {name:?}"
                    )))
                }
                n => revisions[n - 2],
            }
        } else {
            p.to_revision
        };
        let rs = owned
            .iter()
            .find(|rs| revision_of(rs) == Some(wanted))
            .ok_or_else(|| {
                let mut known: Vec<i64> = owned.iter().filter_map(revision_of).collect();
                known.sort_unstable();
                let known: Vec<String> = known.iter().map(i64::to_string).collect();
                ActionError::invalid(
                    "to_revision",
                    format!(
                        "unable to find specified revision {wanted} in history (revisions: {})",
                        known.join(", ")
                    ),
                )
            })?;
        let template = template_without_hash(rs);
        let mut current = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
        if let Some(labels) = current
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(POD_TEMPLATE_HASH);
        }
        if current == template {
            return Ok(Undo {
                deployment,
                revision: wanted,
                patch: None,
            });
        }
        // kubectl keeps the skip-listed annotations of the deployment and takes the rest from the
        // ReplicaSet.
        let mut annotations: BTreeMap<String, String> = BTreeMap::new();
        let current_annotations = deployment.metadata.annotations.clone().unwrap_or_default();
        for key in ANNOTATIONS_TO_SKIP {
            if let Some(v) = current_annotations.get(*key) {
                annotations.insert(key.to_string(), v.clone());
            }
        }
        for (k, v) in rs.metadata.annotations.iter().flatten() {
            if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        let patch = json!([
            { "op": "replace", "path": "/spec/template", "value": template },
            { "op": "replace", "path": "/metadata/annotations", "value": annotations },
        ]);
        Ok(Undo {
            deployment,
            revision: wanted,
            patch: Some(patch),
        })
    }
}

fn json_patch(value: &Value) -> Result<Patch<Value>, ActionError> {
    let patch: json_patch::Patch = serde_json::from_value(value.clone())
        .map_err(|e| ActionError::Internal(format!("rollback patch: {e}")))?;
    Ok(Patch::Json(patch))
}

#[async_trait]
impl Remediation for RollbackDeployment {
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
        let undo = self.undo(ctx).await?;
        let object = ctx.target.object_ref();
        let Some(patch) = &undo.patch else {
            let summary = format!(
                "{object}: skipped rollback (current template already matches revision {})",
                undo.revision
            );
            return Ok(Plan {
                summary,
                ..Default::default()
            });
        };
        let after = ctx
            .deployments()
            .patch(
                &ctx.target.name,
                &PatchParams::default().dry_run(),
                &json_patch(patch)?,
            )
            .await?;
        let summary = format!("{object}: roll back to revision {}", undo.revision);
        Ok(Plan::single(Change::update(
            object,
            summary,
            &undo.deployment,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let undo = self.undo(ctx).await?;
        let object = ctx.target.object_ref();
        let Some(patch) = &undo.patch else {
            let message = format!(
                "skipped rollback (current template already matches revision {})",
                undo.revision
            );
            return Ok(Outcome {
                message,
                result: json!({ "revision": undo.revision, "changed": false }),
            });
        };
        let spec = undo.deployment.spec.clone().unwrap_or_default();
        ctx.reporter.rollback_data(json!({
            "kind": "Deployment",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "revision": undo.deployment.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)),
            "template": spec.template,
            "annotations": undo.deployment.metadata.annotations,
        }));
        let api = ctx.deployments();
        let patch = json_patch(patch)?;
        let params = PatchParams::default();
        ctx.retry(&format!("roll back {object}"), || {
            api.patch(&ctx.target.name, &params, &patch)
        })
        .await?;
        ctx.reporter.progress(
            Update::new(format!(
                "{object}: rolled back to revision {}",
                undo.revision
            ))
            .details(json!({ "revision": undo.revision })),
        );
        if !p.wait_for_rollout {
            return Ok(Outcome {
                message: format!("{object}: rolled back to revision {}", undo.revision),
                result: json!({ "revision": undo.revision, "changed": true }),
            });
        }
        let done = workload::follow(ctx, WorkloadKind::Deployment, &ctx.target.name, |s| {
            s.updated.min(s.available)
        })
        .await?;
        Ok(Outcome {
            message: format!(
                "{object}: rolled back to revision {}; {}",
                undo.revision, done.message
            ),
            result: json!({ "revision": undo.revision, "changed": true }),
        })
    }
}
