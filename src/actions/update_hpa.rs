//! `update_hpa`: change a HorizontalPodAutoscaler's (autoscaling/v2) replica bounds with a merge
//! patch; `min_replicas` ≥ 1 and never above `max_replicas` (after merging with the current
//! values).

use async_trait::async_trait;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{
    api::{Patch, PatchParams},
    Api,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

/// Upper bound on autoscaler maxima, as for scaling.
const MAX_REPLICAS: i64 = super::scaling::MAX_REPLICAS;

#[derive(Debug, Deserialize)]
struct Params {
    min_replicas: Option<i64>,
    max_replicas: Option<i64>,
}

/// What `update_hpa` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The autoscaler is read and its bounds patched (the plan as a dry run).
    Access::new(
        "autoscaling",
        &["horizontalpodautoscalers"],
        &["get", "patch"],
    ),
];

pub struct UpdateHpa {
    spec: ActionSpec,
}

impl UpdateHpa {
    pub fn new() -> Self {
        UpdateHpa {
            spec: ActionSpec {
                name: "update_hpa",
                description:
                    "Change the minimum and/or maximum replicas of a HorizontalPodAutoscaler.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["HorizontalPodAutoscaler"],
                params: vec![
                    ParamSpec::new("min_replicas", ParamType::Integer, "New minimum (≥ 1).")
                        .bounds(1, MAX_REPLICAS),
                    ParamSpec::new("max_replicas", ParamType::Integer, "New maximum.")
                        .bounds(1, MAX_REPLICAS),
                ],
            },
        }
    }
}

struct Bounds {
    before: HorizontalPodAutoscaler,
    from: (i64, i64),
    to: (i64, i64),
}

impl UpdateHpa {
    fn api(ctx: &ActionContext) -> Api<HorizontalPodAutoscaler> {
        Api::namespaced(ctx.client.clone(), &ctx.target.namespace)
    }

    async fn bounds(&self, ctx: &ActionContext) -> Result<Bounds, ActionError> {
        let p: Params = ctx.params()?;
        let before: HorizontalPodAutoscaler = ctx.get_target().await?;
        let spec = before.spec.clone().unwrap_or_default();
        let from = (
            i64::from(spec.min_replicas.unwrap_or(1)),
            i64::from(spec.max_replicas),
        );
        let to = (
            p.min_replicas.unwrap_or(from.0),
            p.max_replicas.unwrap_or(from.1),
        );
        if to.0 > to.1 {
            let field = if p.min_replicas.is_some() {
                "min_replicas"
            } else {
                "max_replicas"
            };
            return Err(ActionError::invalid(
                field,
                format!("min_replicas {} would exceed max_replicas {}", to.0, to.1),
            ));
        }
        Ok(Bounds { before, from, to })
    }
}

fn bounds_patch(to: (i64, i64)) -> Patch<Value> {
    Patch::Merge(json!({ "spec": { "minReplicas": to.0, "maxReplicas": to.1 } }))
}

#[async_trait]
impl Remediation for UpdateHpa {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        match (
            params.get("min_replicas").and_then(Value::as_i64),
            params.get("max_replicas").and_then(Value::as_i64),
        ) {
            (None, None) => Err(ActionError::invalid(
                "min_replicas",
                "give min_replicas, max_replicas or both",
            )),
            (Some(min), Some(max)) if min > max => Err(ActionError::invalid(
                "min_replicas",
                format!("must not exceed max_replicas ({min} > {max})"),
            )),
            _ => Ok(()),
        }
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let b = self.bounds(ctx).await?;
        let after = Self::api(ctx)
            .patch(
                &ctx.target.name,
                &PatchParams::default().dry_run(),
                &bounds_patch(b.to),
            )
            .await?;
        let summary = format!(
            "{}: replicas {}..{} → {}..{}",
            ctx.target.object_ref(),
            b.from.0,
            b.from.1,
            b.to.0,
            b.to.1
        );
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            summary,
            &b.before,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let b = self.bounds(ctx).await?;
        ctx.reporter.rollback_data(json!({
            "kind": "HorizontalPodAutoscaler",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "min_replicas": b.from.0,
            "max_replicas": b.from.1,
        }));
        Self::api(ctx)
            .patch(
                &ctx.target.name,
                &PatchParams::default(),
                &bounds_patch(b.to),
            )
            .await?;
        let message = format!(
            "{}: replicas {}..{} → {}..{}",
            ctx.target.object_ref(),
            b.from.0,
            b.from.1,
            b.to.0,
            b.to.1
        );
        ctx.reporter.progress(Update::new(message.clone()));
        Ok(Outcome {
            message,
            result: json!({ "min_replicas": b.to.0, "max_replicas": b.to.1 }),
        })
    }
}
