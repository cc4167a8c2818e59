//! Applying and reading the objects of an API by kind: server-side apply under the
//! executor's field manager (a dry run for plans), the current object for a diff, and the
//! clean-up of what a deploy no longer uses.

use k8s_openapi::{
    api::{
        apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::ConfigMap,
        core::v1::Service, networking::v1::NetworkPolicy,
    },
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams, Patch},
    Api, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use super::{selector, API_ID_LABEL};
use crate::actions::{executor_patch, ActionContext, ActionError};

/// Server-side apply of `object` as a `K` under the executor's field manager.
pub(super) async fn apply<K>(
    ctx: &ActionContext,
    object: &Value,
    dry_run: bool,
) -> Result<K, ActionError>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let params = executor_patch(dry_run).force();
    let patch = Patch::Apply(object);
    let what = format!(
        "{}/{}/{name}",
        ctx.target.namespace,
        K::kind(&()).to_lowercase()
    );
    ctx.retry(&format!("apply {what}"), || {
        api.patch(name, &params, &patch)
    })
    .await
    .map_err(ActionError::from)
}

/// Applies `object` by its kind; returns it as stored (or as the dry run answers).
pub(super) async fn apply_any(
    ctx: &ActionContext,
    object: &Value,
    dry_run: bool,
) -> Result<Value, ActionError> {
    let stored = match object["kind"].as_str().unwrap_or_default() {
        "ConfigMap" => json!(apply::<ConfigMap>(ctx, object, dry_run).await?),
        "Deployment" => json!(apply::<Deployment>(ctx, object, dry_run).await?),
        "Service" => json!(apply::<Service>(ctx, object, dry_run).await?),
        "NetworkPolicy" => json!(apply::<NetworkPolicy>(ctx, object, dry_run).await?),
        "HorizontalPodAutoscaler" => {
            json!(apply::<HorizontalPodAutoscaler>(ctx, object, dry_run).await?)
        }
        other => return Err(ActionError::Internal(format!("cannot apply a {other}"))),
    };
    Ok(stored)
}

/// The object as it is now, if it exists.
pub(super) async fn current(
    ctx: &ActionContext,
    object: &Value,
) -> Result<Option<Value>, ActionError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let ns = &ctx.target.namespace;
    macro_rules! get {
        ($k:ty) => {{
            let api: Api<$k> = Api::namespaced(ctx.client.clone(), ns);
            ctx.retry(&format!("read {name}"), || api.get_opt(name))
                .await?
                .map(|o| json!(o))
        }};
    }
    Ok(match object["kind"].as_str().unwrap_or_default() {
        "ConfigMap" => get!(ConfigMap),
        "Deployment" => get!(Deployment),
        "Service" => get!(Service),
        "NetworkPolicy" => get!(NetworkPolicy),
        "HorizontalPodAutoscaler" => get!(HorizontalPodAutoscaler),
        _ => None,
    })
}

pub(super) fn object_ref(ns: &str, object: &Value) -> String {
    format!(
        "{ns}/{}/{}",
        object["kind"].as_str().unwrap_or_default().to_lowercase(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Deletes the API's HPA, if there is one: autoscaling was not asked for this time.
pub(super) async fn remove_autoscaler(
    ctx: &ActionContext,
    api_id: &str,
) -> Result<(), ActionError> {
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let ours = ListParams::default().labels(&selector(api_id));
    for hpa in ctx
        .retry("list autoscalers", || api.list(&ours))
        .await?
        .items
    {
        let params = DeleteParams::default();
        let name = hpa.name_any();
        ctx.retry("delete the autoscaler", || api.delete(&name, &params))
            .await?;
    }
    Ok(())
}

/// Deletes the API's code ConfigMaps other than `keep` (the current and previous versions);
/// best effort: a leftover only costs space and goes with the Deployment.
pub(super) async fn prune_code(ctx: &ActionContext, api_id: &str, keep: &[Option<String>]) {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let ours = ListParams::default().labels(&selector(api_id));
    let Ok(listed) = api.list(&ours).await else {
        return;
    };
    for cm in listed.items {
        let name = cm.name_any();
        let owned = cm.labels().contains_key(API_ID_LABEL);
        if owned && !keep.iter().flatten().any(|k| *k == name) {
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    }
}
