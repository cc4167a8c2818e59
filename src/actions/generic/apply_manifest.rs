//! `apply_manifest`: `kubectl apply --server-side` of one or more manifests (YAML or JSON,
//! several documents per file), each object of any kind the cluster serves, custom resources
//! included, in the target namespace unless it names its own. The diff is the API server's
//! dry run of each; the objects as they were (or that they did not exist) are the rollback
//! data: a failure part-way puts back what was applied, deleting what was created.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind, Patch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{common_kinds, put_back, recorded, resolve_gvk, restorable, rollback_data, Resolved};
use crate::actions::{
    executor_patch, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::RolloutError;

/// Objects in one apply at most.
const MAX_OBJECTS: usize = 50;

#[derive(Debug, Deserialize)]
struct Params {
    manifests: BTreeMap<String, String>,
}

/// What `apply_manifest` calls in the cluster (see [`ActionSpec::access`]), on the common kinds.
// Each object is read, then applied server-side (the plan as a dry run); applying an object that
// does not exist yet is authorized as a create. The rollback deletes the objects it created and
// puts back the ones it changed (read, replace, or create when gone).
const ACCESS: &[Access] = &common_kinds(&["get", "create", "update", "patch", "delete"]);

pub struct ApplyManifest {
    spec: ActionSpec,
}

impl ApplyManifest {
    pub fn new() -> Self {
        ApplyManifest {
            spec: ActionSpec {
                name: "apply_manifest",
                description: "Server-side apply of manifests (YAML or JSON, several documents per file) of any kind the \
                              cluster serves, custom resources included, into the target namespace unless they name \
                              one; undone by putting the previous objects back and deleting the new ones.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["Namespace"],
                params: vec![ParamSpec::new(
                    "manifests",
                    ParamType::Files,
                    "File name → manifest text (kubectl apply -f of each), at most 50 objects.",
                )
                .required()],
            },
        }
    }
}

/// Every object of every manifest, in file then document order.
fn objects(p: &Params) -> Result<Vec<Value>, ActionError> {
    let mut out = Vec::new();
    for (file, text) in &p.manifests {
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(document).map_err(|e| {
                ActionError::invalid("manifests", format!("{file}: document {}: {e}", i + 1))
            })?;
            if value.is_null() {
                continue;
            }
            let value: Value = serde_json::to_value(value).map_err(|e| {
                ActionError::invalid("manifests", format!("{file}: document {}: {e}", i + 1))
            })?;
            for key in ["apiVersion", "kind"] {
                if value[key].as_str().is_none_or(str::is_empty) {
                    return Err(ActionError::invalid(
                        "manifests",
                        format!("{file}: document {} has no {key}", i + 1),
                    ));
                }
            }
            if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                return Err(ActionError::invalid(
                    "manifests",
                    format!("{file}: document {} has no metadata.name", i + 1),
                ));
            }
            out.push(value);
        }
    }
    if out.is_empty() {
        return Err(ActionError::invalid("manifests", "hold no object"));
    }
    if out.len() > MAX_OBJECTS {
        return Err(ActionError::invalid(
            "manifests",
            format!(
                "hold {} objects, at most {MAX_OBJECTS} are applied at once",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// One object with its kind's API and namespace.
struct Item {
    r: Resolved,
    namespace: String,
    name: String,
    object: Value,
}

async fn items(ctx: &ActionContext, p: &Params) -> Result<Vec<Item>, ActionError> {
    let mut out = Vec::new();
    for mut object in objects(p)? {
        let (api_version, kind) = (
            object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            object["kind"].as_str().unwrap_or_default().to_string(),
        );
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let r = resolve_gvk(ctx, &gvk, "manifests").await?;
        let namespace = if r.namespaced {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(&ctx.target.name)
                .to_string();
            object["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push(Item {
            r,
            namespace,
            name,
            object,
        });
    }
    Ok(out)
}

async fn apply(
    ctx: &ActionContext,
    item: &Item,
    dry_run: bool,
) -> Result<DynamicObject, ActionError> {
    let api = item.r.api(&ctx.client, &item.namespace);
    let params = executor_patch(dry_run).force();
    let patch = Patch::Apply(&item.object);
    let what = item.r.object_ref(&item.namespace, &item.name);
    Ok(ctx
        .retry(&format!("apply {what}"), || {
            api.patch(&item.name, &params, &patch)
        })
        .await?)
}

#[async_trait]
impl Remediation for ApplyManifest {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        let p: Params = serde_json::from_value(Value::Object(params.clone()))
            .map_err(|e| ActionError::Internal(format!("parameters do not fit the action: {e}")))?;
        objects(&p).map(|_| ())
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let mut changes = Vec::new();
        for item in items(ctx, &p).await? {
            let api = item.r.api(&ctx.client, &item.namespace);
            let before = ctx
                .retry(&format!("read {}", item.name), || api.get_opt(&item.name))
                .await?;
            let after = apply(ctx, &item, true).await?;
            let what = item.r.object_ref(&item.namespace, &item.name);
            changes.push(match before {
                Some(before) => Change::update(&what, format!("apply {what}"), &before, &after),
                None => Change::create(&what, format!("create {what}"), &after),
            });
        }
        Ok(Plan {
            summary: format!("server-side apply of {} object(s)", changes.len()),
            changes,
            warnings: Vec::new(),
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let items = items(ctx, &p).await?;
        let mut previous = Vec::new();
        for item in &items {
            let api = item.r.api(&ctx.client, &item.namespace);
            let before = ctx
                .retry(&format!("read {}", item.name), || api.get_opt(&item.name))
                .await?;
            let mut data = rollback_data(&item.r, before.as_ref().map_or(Value::Null, restorable));
            data["namespace"] = json!(item.namespace);
            data["name"] = json!(item.name);
            previous.push(data);
        }
        ctx.reporter.rollback_data(json!({ "objects": previous }));
        let mut applied = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let what = item.r.object_ref(&item.namespace, &item.name);
            if let Err(e) = apply(ctx, item, false).await {
                // What was applied before it is put back by the rollback.
                return Err(ActionError::Rollout(RolloutError::Failed(format!(
                    "{what} was not applied ({e}); {} object(s) before it were",
                    applied.len()
                ))));
            }
            ctx.reporter.progress(
                Update::new(format!("{what} applied")).progress(i as u64 + 1, items.len() as u64),
            );
            applied.push(what);
        }
        Ok(Outcome {
            message: format!("{} object(s) applied", applied.len()),
            result: json!({ "applied": applied }),
        })
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        let mut restored = Vec::new();
        for one in data["objects"].as_array().into_iter().flatten() {
            let r = recorded(one);
            let namespace = one["namespace"].as_str().unwrap_or_default();
            let name = one["name"].as_str().unwrap_or_default();
            let api = r.api(&ctx.client, namespace);
            if one["object"].is_null() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                put_back(ctx, &api, &one["object"]).await?;
            }
            restored.push(r.object_ref(namespace, name));
        }
        Ok(Outcome {
            message: format!("{} object(s) put back", restored.len()),
            result: json!({ "restored": restored }),
        })
    }
}
