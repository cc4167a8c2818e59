//! `delete_resource`: deletes one object of any kind the cluster serves (`kubectl delete`),
//! with kubectl's propagation policies, and waits until it is gone. The object as it was is
//! the rollback data; a rollback creates it again (as `kubectl apply` of the saved object
//! would: a new uid, the same spec).

use std::time::Duration;

use async_trait::async_trait;
use kube::api::{DeleteParams, PropagationPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{common_kinds, found, restorable, Found};
use crate::actions::{
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

const POLICIES: &[&str] = &["Background", "Foreground", "Orphan"];
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    api_version: Option<String>,
    propagation: String,
    wait: bool,
}

/// What `delete_resource` calls in the cluster (see [`ActionSpec::access`]), on the common kinds.
// The object is read, deleted, and read until gone; the rollback creates it again from the
// recorded object (or replaces it when it came back).
const ACCESS: &[Access] = &common_kinds(&["get", "create", "update", "delete"]);

pub struct DeleteResource {
    spec: ActionSpec,
}

impl DeleteResource {
    pub fn new() -> Self {
        DeleteResource {
            spec: ActionSpec {
                name: "delete_resource",
                description: "Delete one object of any kind the cluster serves, custom resources included (kubectl \
                              delete), and wait until it is gone; undone by creating it again from the recorded object.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["*"],
                params: vec![
                    ParamSpec::new("api_version", ParamType::String, "The kind's group/version when several groups serve it (apps/v1, example.com/v1alpha1)."),
                    ParamSpec::new("propagation", ParamType::String, "What happens to what it owns.")
                        .one_of(POLICIES)
                        .default("Background"),
                    ParamSpec::new("wait", ParamType::Boolean, "Wait until the object is gone (finalizers done).")
                        .default(true),
                ],
            },
        }
    }
}

#[async_trait]
impl Remediation for DeleteResource {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let Found { what, object, .. } = found(ctx, p.api_version.as_deref()).await?;
        Ok(Plan::single(Change::delete(
            &what,
            format!("delete {what} (propagation {})", p.propagation),
            &object,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let Found {
            r,
            api,
            what,
            object,
        } = found(ctx, p.api_version.as_deref()).await?;
        ctx.reporter
            .rollback_data(super::rollback_data(&r, restorable(&object)));
        let params = DeleteParams {
            propagation_policy: Some(match p.propagation.as_str() {
                "Foreground" => PropagationPolicy::Foreground,
                "Orphan" => PropagationPolicy::Orphan,
                _ => PropagationPolicy::Background,
            }),
            ..Default::default()
        };
        ctx.retry(&format!("delete {what}"), || {
            api.delete(&ctx.target.name, &params)
        })
        .await?;
        ctx.reporter
            .progress(Update::new(format!("{what} deleted ({})", p.propagation)));
        if p.wait {
            while ctx
                .retry(&format!("read {what}"), || api.get_opt(&ctx.target.name))
                .await?
                .is_some()
            {
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(Outcome {
            message: format!("{what} deleted{}", if p.wait { " and gone" } else { "" }),
            result: json!({ "deleted": what, "uid": object.metadata.uid }),
        })
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        super::restore(ctx, data).await
    }
}
