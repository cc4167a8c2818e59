//! Actions on any kind, found at run time through the API server's discovery, custom
//! resources included: `apply_manifest` (server-side apply of manifests), `delete_resource`
//! and `patch_resource` (the target's kind is whatever the request names). The built-in
//! policy denies them on Secrets, RBAC, webhooks, CRDs, namespaces and nodes unless your
//! policy allows it.
//!
//! This file is what they share: resolving a kind to its API, and an object as a rollback
//! should restore it.

pub(super) mod apply_manifest;
pub(super) mod delete_resource;
pub(super) mod patch_resource;

use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    discovery::{Discovery, Scope},
    Api,
};
use serde_json::Value;

use super::{Access, ActionContext, ActionError};

/// A kind as the cluster serves it.
/// What the any-kind actions are granted. The kinds they work on are discovered at run time
/// (discovery itself needs no rule: every authenticated user may read it), so their roles name
/// the common kinds explicitly, never a wildcard, each with the verbs the action's code uses.
/// Secrets are not among them. Operators extend the list for their own kinds: a ClusterRole of
/// their own bound to the action's ServiceAccount (`action-apply-manifest`, …).
pub(super) const fn common_kinds(verbs: &'static [&'static str]) -> [Access; 8] {
    [
        Access::new("", &["configmaps", "services", "serviceaccounts"], verbs),
        Access::new(
            "apps",
            &["deployments", "statefulsets", "daemonsets"],
            verbs,
        ),
        Access::new("batch", &["jobs", "cronjobs"], verbs),
        Access::new("autoscaling", &["horizontalpodautoscalers"], verbs),
        Access::new(
            "networking.k8s.io",
            &["networkpolicies", "ingresses"],
            verbs,
        ),
        Access::new("policy", &["poddisruptionbudgets"], verbs),
        // CSI snapshots, the custom resource most clusters have.
        Access::new("snapshot.storage.k8s.io", &["volumesnapshots"], verbs),
        // The executor's own custom resource.
        Access::new("executor-service.io", &["kubernetesexecutions"], verbs),
    ]
}

#[derive(Clone)]
pub(super) struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl Resolved {
    /// Its API in `namespace` (ignored for cluster-scoped kinds).
    pub fn api(&self, client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), namespace, &self.resource)
        } else {
            Api::all_with(client.clone(), &self.resource)
        }
    }

    /// `namespace/kind/name`, or `kind/name` when cluster-scoped.
    pub fn object_ref(&self, namespace: &str, name: &str) -> String {
        let kind = self.resource.kind.to_lowercase();
        if self.namespaced {
            format!("{namespace}/{kind}/{name}")
        } else {
            format!("{kind}/{name}")
        }
    }
}

/// The cluster's resource for `kind` (a kind or plural, any case), in `api_version` when
/// given (`apps/v1`, `v1`, `example.com/v1alpha1`).
///
/// # Errors
/// [`ActionError::InvalidParameter`] naming `field` when the cluster serves no such kind.
pub(super) async fn resolve(
    ctx: &ActionContext,
    kind: &str,
    api_version: Option<&str>,
    field: &str,
) -> Result<Resolved, ActionError> {
    let discovery = Discovery::new(ctx.client.clone()).run().await?;
    let wanted = kind.to_ascii_lowercase();
    let (group, version) = match api_version.filter(|v| !v.is_empty()) {
        Some(v) => match v.split_once('/') {
            Some((g, v)) => (Some(g.to_string()), Some(v.to_string())),
            None => (Some(String::new()), Some(v.to_string())),
        },
        None => (None, None),
    };
    if let (Some(g), Some(v)) = (&group, &version) {
        // Exactly that group-version: the kind by name.
        for api_group in discovery.groups().filter(|ag| ag.name() == g) {
            for (resource, caps) in api_group.versioned_resources(v) {
                if resource.kind.to_ascii_lowercase() == wanted || resource.plural == wanted {
                    return Ok(Resolved {
                        namespaced: caps.scope == Scope::Namespaced,
                        resource,
                    });
                }
            }
        }
    } else {
        for api_group in discovery.groups() {
            for (resource, caps) in api_group.recommended_resources() {
                if resource.kind.to_ascii_lowercase() == wanted || resource.plural == wanted {
                    return Ok(Resolved {
                        namespaced: caps.scope == Scope::Namespaced,
                        resource,
                    });
                }
            }
        }
    }
    Err(ActionError::InvalidParameter {
        field: field.into(),
        message: format!(
            "the cluster serves no kind {kind:?}{}",
            api_version.map(|v| format!(" in {v}")).unwrap_or_default()
        ),
    })
}

/// The request's target of any kind: its kind's API, `namespace/kind/name`, and the object.
pub(super) struct Found {
    pub r: Resolved,
    pub api: Api<DynamicObject>,
    pub what: String,
    pub object: DynamicObject,
}

/// Reads the target (a kind or plural the cluster serves, in `api_version` when given).
///
/// # Errors
/// `target.kind` for a kind the cluster does not serve; NotFound for a missing object.
pub(super) async fn found(
    ctx: &ActionContext,
    api_version: Option<&str>,
) -> Result<Found, ActionError> {
    let r = resolve(ctx, &ctx.target.kind, api_version, "target.kind").await?;
    let api = r.api(&ctx.client, &ctx.target.namespace);
    let what = r.object_ref(&ctx.target.namespace, &ctx.target.name);
    let object = ctx
        .retry(&format!("read {what}"), || api.get(&ctx.target.name))
        .await
        .map_err(|e| ActionError::from_kube(e, &what))?;
    Ok(Found {
        r,
        api,
        what,
        object,
    })
}

/// The resource for an object's `apiVersion` and `kind` (manifests).
pub(super) async fn resolve_gvk(
    ctx: &ActionContext,
    gvk: &GroupVersionKind,
    field: &str,
) -> Result<Resolved, ActionError> {
    let api_version = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    resolve(ctx, &gvk.kind, Some(&api_version), field).await
}

/// An object as it can be written back: no status, no server bookkeeping.
pub(super) fn restorable(object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in [
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(key);
            }
        }
    }
    value
}

/// Puts `previous` back over what is there now (its current resourceVersion, so a writer in
/// between is a conflict, not overwritten), or creates it when it is gone.
pub(super) async fn put_back(
    ctx: &ActionContext,
    api: &Api<DynamicObject>,
    previous: &Value,
) -> Result<(), ActionError> {
    let name = previous["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut object: DynamicObject = serde_json::from_value(previous.clone())
        .map_err(|e| ActionError::Internal(format!("rollback data: {e}")))?;
    // A controller may write the object (its status) between the read and the write: read
    // again and write again on a conflict.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = ctx
            .retry(&format!("read {name}"), || api.get_opt(&name))
            .await?;
        let params = kube::api::PostParams::default();
        let written = match current {
            Some(now) => {
                object.metadata.resource_version = now.metadata.resource_version;
                api.replace(&name, &params, &object).await
            }
            None => {
                object.metadata.resource_version = None;
                api.create(&params, &object).await
            }
        };
        match written {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The rollback data of one object: its kind's API and the object as it was.
pub(super) fn rollback_data(r: &Resolved, object: Value) -> Value {
    serde_json::json!({
        "group": r.resource.group, "version": r.resource.version, "kind": r.resource.kind,
        "plural": r.resource.plural, "namespaced": r.namespaced, "object": object,
    })
}

/// The kind's API from [`rollback_data`].
pub(super) fn recorded(data: &Value) -> Resolved {
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_string();
    let (group, version) = (text("group"), text("version"));
    let api_version = if group.is_empty() {
        version.clone()
    } else {
        format!("{group}/{version}")
    };
    Resolved {
        resource: ApiResource {
            group,
            version,
            api_version,
            kind: text("kind"),
            plural: text("plural"),
        },
        namespaced: data["namespaced"] == serde_json::json!(true),
    }
}

/// Puts one recorded object back (created again when it is gone).
pub(super) async fn restore(
    ctx: &ActionContext,
    data: &Value,
) -> Result<super::Outcome, ActionError> {
    let r = recorded(data);
    let namespace = data["object"]["metadata"]["namespace"]
        .as_str()
        .unwrap_or(&ctx.target.namespace)
        .to_string();
    let name = data["object"]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    put_back(ctx, &r.api(&ctx.client, &namespace), &data["object"]).await?;
    Ok(super::Outcome {
        message: format!("{} restored", r.object_ref(&namespace, &name)),
        result: serde_json::json!({ "restored": r.object_ref(&namespace, &name) }),
    })
}
