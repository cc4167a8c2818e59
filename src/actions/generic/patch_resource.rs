//! `patch_resource`: `kubectl patch` of one object of any kind the cluster serves, custom
//! resources included: a merge patch (RFC 7386), a JSON patch (RFC 6902) or a strategic merge
//! patch (built-in kinds only). The diff comes from the API server's dry run; the object as it
//! was is the rollback data, put back over the patched one.

use async_trait::async_trait;
use kube::api::Patch;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{common_kinds, found, restorable, Found};
use crate::actions::{
    executor_patch, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};

const TYPES: &[&str] = &["merge", "json", "strategic"];

#[derive(Debug, Deserialize)]
struct Params {
    patch: String,
    patch_type: String,
    #[serde(default)]
    api_version: Option<String>,
}

/// What `patch_resource` calls in the cluster (see [`ActionSpec::access`]), on the common kinds.
// The object is read and patched (the plan as a dry run); the rollback puts the recorded object
// back (read, replace, or create when gone).
const ACCESS: &[Access] = &common_kinds(&["get", "create", "update", "patch"]);

pub struct PatchResource {
    spec: ActionSpec,
}

impl PatchResource {
    pub fn new() -> Self {
        PatchResource {
            spec: ActionSpec {
                name: "patch_resource",
                description: "Patch one object of any kind the cluster serves, custom resources included (kubectl \
                              patch: merge, json or strategic); undone by putting the recorded object back.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["*"],
                params: vec![
                    ParamSpec::new("patch", ParamType::String, "The patch as JSON: an object (merge, strategic) or a list of operations (json).")
                        .required(),
                    ParamSpec::new("patch_type", ParamType::String, "How to read it.")
                        .one_of(TYPES)
                        .default("merge"),
                    ParamSpec::new("api_version", ParamType::String, "The kind's group/version when several groups serve it."),
                ],
            },
        }
    }
}

fn parsed(p: &Params) -> Result<Patch<Value>, ActionError> {
    let value: Value = serde_json::from_str(&p.patch)
        .map_err(|e| ActionError::invalid("patch", format!("is not JSON: {e}")))?;
    match p.patch_type.as_str() {
        "json" => {
            let ops: json_patch::Patch = serde_json::from_value(value).map_err(|e| {
                ActionError::invalid(
                    "patch",
                    format!("is not a JSON patch (a list of operations): {e}"),
                )
            })?;
            Ok(Patch::Json(ops))
        }
        other if value.is_object() => Ok(if other == "strategic" {
            Patch::Strategic(value)
        } else {
            Patch::Merge(value)
        }),
        _ => Err(ActionError::invalid(
            "patch",
            "must be a JSON object for a merge or strategic patch",
        )),
    }
}

#[async_trait]
impl Remediation for PatchResource {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        let p: Params = serde_json::from_value(Value::Object(params.clone()))
            .map_err(|e| ActionError::Internal(format!("parameters do not fit the action: {e}")))?;
        parsed(&p).map(|_| ())
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let patch = parsed(&p)?;
        let Found {
            api,
            what,
            object: before,
            ..
        } = found(ctx, p.api_version.as_deref()).await?;
        let after = api
            .patch(&ctx.target.name, &executor_patch(true), &patch)
            .await?;
        Ok(Plan::single(Change::update(
            &what,
            format!("{} patch of {what}", p.patch_type),
            &before,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let patch = parsed(&p)?;
        let Found {
            r,
            api,
            what,
            object: before,
        } = found(ctx, p.api_version.as_deref()).await?;
        ctx.reporter
            .rollback_data(super::rollback_data(&r, restorable(&before)));
        let params = executor_patch(false);
        let after = ctx
            .retry(&format!("patch {what}"), || {
                api.patch(&ctx.target.name, &params, &patch)
            })
            .await?;
        ctx.reporter
            .progress(Update::new(format!("{what} patched ({})", p.patch_type)));
        Ok(Outcome {
            message: format!("{what} patched"),
            result: json!({
                "patched": what,
                "resource_version": after.metadata.resource_version,
                "generation": after.metadata.generation,
            }),
        })
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        super::restore(ctx, data).await
    }
}
