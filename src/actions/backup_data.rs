//! `backup_data`: an emergency backup before something disruptive. Every PersistentVolumeClaim
//! of the target (the claim itself, a StatefulSet's claims from its templates, the claims a
//! Deployment's pods mount) gets a CSI `VolumeSnapshot` (the class named, or the cluster's
//! default), and the action waits until each is `readyToUse`, failing with the snapshot
//! controller's own error when one cannot be cut. The snapshots are the result and stay: a
//! backup is not undone (`kubectl delete volumesnapshot` removes one).

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::PersistentVolumeClaim,
};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
    Api, ResourceExt,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

/// How often the snapshots are read while they are cut.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    snapshot_class: Option<String>,
}

/// What `backup_data` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // A workload target is read for its claims.
    Access::new("apps", &["deployments", "statefulsets"], &["get"]),
    // Each claim is read before its snapshot is cut.
    Access::new("", &["persistentvolumeclaims"], &["get"]),
    // The snapshots are created (the plan as a dry run) and read until ready.
    Access::new(
        "snapshot.storage.k8s.io",
        &["volumesnapshots"],
        &["get", "create"],
    ),
];

pub struct BackupData {
    spec: ActionSpec,
}

impl BackupData {
    pub fn new() -> Self {
        BackupData {
            spec: ActionSpec {
                name: "backup_data",
                description: "Snapshot every PersistentVolumeClaim of the target (a claim, a StatefulSet's, a \
                              Deployment's) as a CSI VolumeSnapshot and wait until each is ready to use; the snapshots \
                              are the result and stay.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["PersistentVolumeClaim", "StatefulSet", "Deployment"],
                params: vec![ParamSpec::new(
                    "snapshot_class",
                    ParamType::String,
                    "The VolumeSnapshotClass; absent = the cluster's default.",
                )],
            },
        }
    }
}

fn snapshots(ctx: &ActionContext) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
    ));
    Api::namespaced_with(ctx.client.clone(), &ctx.target.namespace, &resource)
}

/// The claims to back up, each read (so a missing one is refused before anything is made).
async fn claims(ctx: &ActionContext) -> Result<Vec<PersistentVolumeClaim>, ActionError> {
    let names: Vec<String> = match ctx.target.kind.as_str() {
        "PersistentVolumeClaim" => vec![ctx.target.name.clone()],
        "StatefulSet" => {
            let sts: StatefulSet = ctx.get_target().await?;
            let spec = sts.spec.unwrap_or_default();
            let replicas = spec.replicas.unwrap_or(1).max(0);
            let mut names: Vec<String> = spec
                .volume_claim_templates
                .iter()
                .flatten()
                .flat_map(|t| {
                    let template = t.name_any();
                    (0..replicas).map(move |i| format!("{template}-{}-{i}", ctx.target.name))
                })
                .collect();
            names.extend(mounted(spec.template.spec.as_ref()));
            names
        }
        _ => {
            let d: Deployment = ctx.get_target().await?;
            mounted(d.spec.and_then(|s| s.template.spec).as_ref())
        }
    };
    if names.is_empty() {
        return Err(ActionError::Precondition(format!(
            "{} has no PersistentVolumeClaim to back up",
            ctx.target.object_ref()
        )));
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let mut out = Vec::new();
    for name in names {
        let what = format!("persistentvolumeclaim {}/{name}", ctx.target.namespace);
        let pvc = ctx
            .retry(&format!("read {what}"), || api.get(&name))
            .await
            .map_err(|e| ActionError::from_kube(e, &what))?;
        out.push(pvc);
    }
    Ok(out)
}

fn mounted(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Vec<String> {
    spec.and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .collect()
}

/// The VolumeSnapshot of `claim`, named for it and the time.
fn snapshot(claim: &str, class: Option<&str>, stamp: &str) -> Result<DynamicObject, ActionError> {
    let prefix: String = claim.chars().take(200).collect();
    let mut spec = json!({ "source": { "persistentVolumeClaimName": claim } });
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            // A suffix from the API server: two backups in one second never collide.
            "generateName": format!("{prefix}-backup-{stamp}-"),
            "labels": {
                "app.kubernetes.io/managed-by": super::FIELD_MANAGER,
                "executor-service.io/backup-of": claim,
            },
        },
        "spec": spec,
    }))
    .map_err(|e| ActionError::Internal(format!("volumesnapshot: {e}")))
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S").to_string()
}

#[async_trait]
impl Remediation for BackupData {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let claims = claims(ctx).await?;
        let api = snapshots(ctx);
        let stamp = stamp();
        let mut changes = Vec::new();
        for pvc in &claims {
            let vs = snapshot(&pvc.name_any(), p.snapshot_class.as_deref(), &stamp)?;
            let checked = api
                .create(
                    &PostParams {
                        dry_run: true,
                        ..Default::default()
                    },
                    &vs,
                )
                .await?;
            let object = format!(
                "{}/volumesnapshot/{}",
                ctx.target.namespace,
                checked.name_any()
            );
            changes.push(Change::create(
                &object,
                format!("snapshot claim {}", pvc.name_any()),
                &checked,
            ));
        }
        Ok(Plan {
            summary: format!(
                "{}: snapshot {} claim(s) and wait until ready",
                ctx.target.object_ref(),
                claims.len()
            ),
            changes,
            warnings: Vec::new(),
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let claims = claims(ctx).await?;
        let api = snapshots(ctx);
        let stamp = stamp();
        let mut names = Vec::new();
        for pvc in &claims {
            let vs = snapshot(&pvc.name_any(), p.snapshot_class.as_deref(), &stamp)?;
            let post = PostParams::default();
            let vs = ctx
                .retry(
                    &format!("create a volumesnapshot of {}", pvc.name_any()),
                    || api.create(&post, &vs),
                )
                .await?;
            ctx.reporter.progress(Update::new(format!(
                "volumesnapshot {}/{} of claim {} created",
                ctx.target.namespace,
                vs.name_any(),
                pvc.name_any()
            )));
            names.push((vs.name_any(), pvc.name_any()));
        }
        let total = names.len() as u64;
        let mut done: Vec<Value> = Vec::new();
        let mut pending = names;
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (name, claim) in pending {
                let vs = ctx
                    .retry(&format!("read volumesnapshot {name}"), || api.get(&name))
                    .await?;
                let status = vs.data.get("status").cloned().unwrap_or(Value::Null);
                if let Some(error) = status.pointer("/error/message").and_then(Value::as_str) {
                    return Err(ActionError::Precondition(format!(
                        "volumesnapshot {}/{name} of claim {claim} failed: {error}",
                        ctx.target.namespace
                    )));
                }
                if status.get("readyToUse") == Some(&Value::Bool(true)) {
                    ctx.reporter.progress(
                        Update::new(format!(
                            "volumesnapshot {name} ready ({})",
                            status["restoreSize"].as_str().unwrap_or("?")
                        ))
                        .progress(done.len() as u64 + 1, total),
                    );
                    done.push(json!({
                        "name": name,
                        "claim": claim,
                        "restore_size": status["restoreSize"],
                        "content": status["boundVolumeSnapshotContentName"],
                        "class": vs.data.pointer("/spec/volumeSnapshotClassName"),
                    }));
                } else {
                    still.push((name, claim));
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(Outcome {
            message: format!(
                "{}: {} snapshot(s) ready to use",
                ctx.target.object_ref(),
                done.len()
            ),
            result: json!({ "snapshots": done }),
        })
    }
}
