//! `expand_pvc`: grow a PersistentVolumeClaim's storage request (`kubectl patch pvc`), only when
//! its StorageClass allows expansion, then wait until the new capacity shows in its status.

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::{core::v1::PersistentVolumeClaim, storage::v1::StorageClass};
use kube::{
    api::{Patch, PatchParams},
    runtime::{watcher, WatchStreamExt},
    Api,
};
use serde::Deserialize;
use serde_json::json;

use super::{
    parse_quantity, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};

#[derive(Debug, Deserialize)]
struct Params {
    size: String,
    wait_for_capacity: bool,
}

/// What `expand_pvc` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The claim is read and its request patched (the plan as a dry run); the resize is followed
    // with a watch.
    Access::new(
        "",
        &["persistentvolumeclaims"],
        &["get", "list", "watch", "patch"],
    ),
    // The claim's class must allow expansion.
    Access::new("storage.k8s.io", &["storageclasses"], &["get"]),
];

pub struct ExpandPvc {
    spec: ActionSpec,
}

impl ExpandPvc {
    pub fn new() -> Self {
        ExpandPvc {
            spec: ActionSpec {
                name: "expand_pvc",
                description:
                    "Grow a PersistentVolumeClaim to a larger size when its StorageClass allows \
                              volume expansion, and wait until the new capacity shows.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["PersistentVolumeClaim"],
                params: vec![
                    ParamSpec::new(
                        "size",
                        ParamType::Quantity,
                        "New storage size, e.g. 20Gi; must be larger.",
                    )
                    .required(),
                    ParamSpec::new(
                        "wait_for_capacity",
                        ParamType::Boolean,
                        "Wait until status.capacity shows the new size.",
                    )
                    .default(true),
                ],
            },
        }
    }
}

fn storage_of(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

fn capacity_of(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.status
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

fn size_patch(size: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "spec": { "resources": { "requests": { "storage": size } } } }))
}

impl ExpandPvc {
    async fn check(
        &self,
        ctx: &ActionContext,
    ) -> Result<(PersistentVolumeClaim, String), ActionError> {
        let p: Params = ctx.params()?;
        let pvc: PersistentVolumeClaim = ctx.get_target().await?;
        let current = storage_of(&pvc).unwrap_or_default();
        if parse_quantity(&p.size) <= parse_quantity(&current) {
            return Err(ActionError::invalid(
                "size",
                format!(
                    "must be larger than the current size {current} of {}",
                    ctx.target.object_ref()
                ),
            ));
        }
        let class = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .ok_or_else(|| {
                ActionError::Precondition(format!(
                    "{} has no StorageClass: only dynamically provisioned claims can be expanded",
                    ctx.target.object_ref()
                ))
            })?;
        let sc = Api::<StorageClass>::all(ctx.client.clone())
            .get(&class)
            .await
            .map_err(|e| ActionError::from_kube(e, &format!("storageclass {class}")))?;
        if sc.allow_volume_expansion != Some(true) {
            return Err(ActionError::Precondition(format!(
                "StorageClass {class} of {} does not allow volume expansion (allowVolumeExpansion is not true)",
                ctx.target.object_ref()
            )));
        }
        Ok((pvc, current))
    }
}

#[async_trait]
impl Remediation for ExpandPvc {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let (before, current) = self.check(ctx).await?;
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let after = api
            .patch(
                &ctx.target.name,
                &PatchParams::default().dry_run(),
                &size_patch(&p.size),
            )
            .await?;
        let summary = format!(
            "{}: storage {current} → {}",
            ctx.target.object_ref(),
            p.size
        );
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            summary,
            &before,
            &after,
        ))
        .with_warnings(vec!["a volume cannot be shrunk again once expanded".into()]))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let (_, current) = self.check(ctx).await?;
        ctx.reporter.rollback_data(json!({
            "kind": "PersistentVolumeClaim",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "storage": current,
            "note": "volumes cannot shrink: this records the size for audit only",
        }));
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        api.patch(
            &ctx.target.name,
            &PatchParams::default(),
            &size_patch(&p.size),
        )
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "{}: requested {current} → {}",
            ctx.target.object_ref(),
            p.size
        )));
        if p.wait_for_capacity {
            let wanted = parse_quantity(&p.size);
            let config =
                watcher::Config::default().fields(&format!("metadata.name={}", ctx.target.name));
            let mut claims = watcher(api, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            let mut last = None;
            loop {
                match claims.next().await {
                    Some(Ok(pvc)) => {
                        let capacity = capacity_of(&pvc);
                        if capacity != last {
                            ctx.reporter.progress(Update::new(format!(
                                "{}: capacity {}",
                                ctx.target.object_ref(),
                                capacity.as_deref().unwrap_or("unknown")
                            )));
                            last = capacity.clone();
                        }
                        if capacity.as_deref().and_then(parse_quantity) >= wanted {
                            break;
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "pvc watch error, retrying"),
                    None => return Err(ActionError::Internal("pvc watch ended".into())),
                }
            }
        }
        Ok(Outcome {
            message: format!(
                "{}: storage {current} → {}",
                ctx.target.object_ref(),
                p.size
            ),
            result: json!({ "from": current, "to": p.size }),
        })
    }
}
