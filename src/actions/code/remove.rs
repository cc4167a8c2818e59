//! `remove_code`: removes an API: its Deployment deleted in the foreground, so the cluster's
//! garbage collector deletes what it owns (pods, the code's ConfigMaps, the Service, the
//! NetworkPolicy, the HPA); then anything else labelled with the API's id is deleted and the
//! action waits until nothing of it is left. A ConfigMap the caller made and named is not the
//! executor's, so it stays. It cannot be undone.

use async_trait::async_trait;
use k8s_openapi::{
    api::{
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Pod, Service},
        networking::v1::NetworkPolicy,
    },
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams},
    Api, ResourceExt,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{api_id, existing_deployment, selector};
use crate::actions::{
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, Plan, Remediation, Risk,
    Update,
};

const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// What `remove_code` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Deployment is read and deleted; what the API owns is listed until gone, and what no
    // owner reference reached is deleted.
    Access::new("apps", &["deployments"], &["get", "list", "delete"]),
    Access::new("", &["pods"], &["list"]),
    Access::new("", &["configmaps", "services"], &["list", "delete"]),
    Access::new(
        "networking.k8s.io",
        &["networkpolicies"],
        &["list", "delete"],
    ),
    Access::new(
        "autoscaling",
        &["horizontalpodautoscalers"],
        &["list", "delete"],
    ),
];

pub struct RemoveCode {
    spec: ActionSpec,
}

impl RemoveCode {
    pub fn new() -> Self {
        RemoveCode {
            spec: ActionSpec {
                name: "remove_code",
                description: "Remove an API (target deployment api-<uuid>) and everything deploy_code made for it \
                              (pods, code ConfigMaps, Service, NetworkPolicy, HPA), waited for until none is left; \
                              cannot be undone.",
                // The user's own API, and only what deploy_code made for it: the platform's
                // lifecycle, not a cluster change an approver must weigh.
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Deployment"],
                params: vec![],
            },
        }
    }
}

/// The API's objects of kind `K` (by its label).
async fn labelled<K>(ctx: &ActionContext, id: &str) -> Result<Vec<(String, String)>, ActionError>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let params = ListParams::default().labels(&selector(id));
    let kind = K::kind(&()).to_lowercase();
    Ok(ctx
        .retry(&format!("list {kind}s"), || api.list(&params))
        .await?
        .items
        .iter()
        .map(|o| (kind.clone(), o.name_any()))
        .collect())
}

/// Every object left of the API, deployment first, as `(kind, name)`.
async fn left(ctx: &ActionContext, id: &str) -> Result<Vec<(String, String)>, ActionError> {
    let mut all = labelled::<k8s_openapi::api::apps::v1::Deployment>(ctx, id).await?;
    all.extend(labelled::<Pod>(ctx, id).await?);
    all.extend(labelled::<ConfigMap>(ctx, id).await?);
    all.extend(labelled::<Service>(ctx, id).await?);
    all.extend(labelled::<NetworkPolicy>(ctx, id).await?);
    all.extend(labelled::<HorizontalPodAutoscaler>(ctx, id).await?);
    Ok(all)
}

async fn delete<K>(ctx: &ActionContext, name: &str) -> Result<(), ActionError>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let params = DeleteParams::background();
    match ctx
        .retry(&format!("delete {name}"), || api.delete(name, &params))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl Remediation for RemoveCode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let id = api_id(ctx)?;
        let d = existing_deployment(ctx, &id).await?;
        let objects = left(ctx, &id).await?;
        let mut plan = Plan::single(Change::delete(
            ctx.target.object_ref(),
            format!(
                "remove API {id}: {}",
                objects
                    .iter()
                    .map(|(k, n)| format!("{k}/{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &d,
        ));
        plan.warnings
            .push("the API's objects are deleted; this cannot be undone".into());
        Ok(plan)
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let id = api_id(ctx)?;
        existing_deployment(ctx, &id).await?;
        let before = left(ctx, &id).await?;
        let params = DeleteParams::foreground();
        let deployments = ctx.deployments();
        ctx.retry(&format!("delete {}", ctx.target.object_ref()), || {
            deployments.delete(&ctx.target.name, &params)
        })
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "{} deleted (foreground): its pods and owned objects follow",
            ctx.target.object_ref()
        )));
        let total = before.len() as u64;
        let mut swept = false;
        let mut last = usize::MAX;
        loop {
            let now = left(ctx, &id).await?;
            if now.is_empty() {
                break;
            }
            let deployment_gone = !now.iter().any(|(k, _)| k == "deployment");
            if deployment_gone && !swept {
                // What no owner reference reached (a deploy interrupted before it set them).
                for (kind, name) in &now {
                    match kind.as_str() {
                        "configmap" => delete::<ConfigMap>(ctx, name).await?,
                        "service" => delete::<Service>(ctx, name).await?,
                        "networkpolicy" => delete::<NetworkPolicy>(ctx, name).await?,
                        "horizontalpodautoscaler" => {
                            delete::<HorizontalPodAutoscaler>(ctx, name).await?
                        }
                        _ => {}
                    }
                }
                swept = true;
            }
            if now.len() != last {
                last = now.len();
                ctx.reporter.progress(
                    Update::new(format!("{last} object(s) of API {id} left"))
                        .progress(total.saturating_sub(last as u64), total),
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let removed: Vec<Value> = before
            .iter()
            .map(|(k, n)| json!(format!("{k}/{n}")))
            .collect();
        Ok(Outcome {
            message: format!("API {id} removed: {} object(s), none left", removed.len()),
            result: json!({ "api_id": id, "status": "removed", "removed": removed }),
        })
    }
}
