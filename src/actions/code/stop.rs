//! `stop_code`: stops an API (the platform's `POST /stop/{api_id}`): its Deployment scaled to
//! zero, waited for until no pod is left; the code, the Service and the policy stay, so a
//! `deploy_code` (or the rollback, which scales back) starts it again.

use async_trait::async_trait;
use kube::api::Patch;
use serde_json::{json, Map, Value};

use super::{api_id, existing_deployment, pods};
use crate::actions::{
    executor_patch, workload, Access, ActionContext, ActionError, ActionSpec, Change, Outcome,
    Plan, Remediation, Risk, Update,
};
use crate::cluster::WorkloadKind;

/// How often the pods are counted while they stop.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// What `stop_code` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Deployment is read and scaled to zero (the plan as a dry run); the rollback scales it
    // back and follows the rollout with a watch.
    Access::new("apps", &["deployments"], &["get", "list", "watch", "patch"]),
    // The pods are listed until none is left.
    Access::new("", &["pods"], &["list"]),
];

pub struct StopCode {
    spec: ActionSpec,
}

impl StopCode {
    pub fn new() -> Self {
        StopCode {
            spec: ActionSpec {
                name: "stop_code",
                description: "Stop an API (target deployment api-<uuid>): scaled to zero and waited for until no pod \
                              is left; the code, Service and NetworkPolicy stay. Undone by scaling back.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Deployment"],
                params: vec![],
            },
        }
    }
}

async fn scale(ctx: &ActionContext, replicas: i64, dry_run: bool) -> Result<Value, ActionError> {
    let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    let params = executor_patch(dry_run);
    let deployments = ctx.deployments();
    let stored = ctx
        .retry(&format!("scale {}", ctx.target.object_ref()), || {
            deployments.patch(&ctx.target.name, &params, &patch)
        })
        .await?;
    Ok(json!(stored))
}

#[async_trait]
impl Remediation for StopCode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, _params: &Map<String, Value>) -> Result<(), ActionError> {
        Ok(())
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let id = api_id(ctx)?;
        let before = existing_deployment(ctx, &id).await?;
        let after = scale(ctx, 0, true).await?;
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            format!(
                "stop API {id}: scale {} to 0, keep its code",
                ctx.target.object_ref()
            ),
            &before,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let id = api_id(ctx)?;
        let before = existing_deployment(ctx, &id).await?;
        let replicas = before.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        ctx.reporter.rollback_data(json!({ "replicas": replicas }));
        scale(ctx, 0, false).await?;
        ctx.reporter.progress(Update::new(format!(
            "{} scaled from {replicas} to 0",
            ctx.target.object_ref()
        )));
        let mut last = usize::MAX;
        loop {
            let left = pods(ctx, &id).await?.len();
            if left == 0 {
                break;
            }
            if left == last {
                tokio::time::sleep(POLL).await;
                continue;
            }
            last = left;
            ctx.reporter.progress(
                Update::new(format!("{left} pod(s) of API {id} still stopping")).progress(
                    (replicas.max(0) as u64).saturating_sub(left as u64),
                    replicas.max(0) as u64,
                ),
            );
            tokio::time::sleep(POLL).await;
        }
        Ok(Outcome {
            message: format!("API {id} stopped: no pod left, its code kept"),
            result: json!({
                "api_id": id,
                "status": "stopped",
                "previous_replicas": replicas,
            }),
        })
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        let replicas = data["replicas"]
            .as_i64()
            .ok_or_else(|| ActionError::Internal("rollback data holds no replicas".into()))?;
        scale(ctx, replicas, false).await?;
        let done = workload::follow(
            ctx,
            WorkloadKind::Deployment,
            &ctx.target.name,
            workload::ready_pods,
        )
        .await?;
        Ok(Outcome {
            message: format!(
                "{} back to {replicas} replica(s): {}",
                ctx.target.object_ref(),
                done.message
            ),
            result: json!({ "replicas": replicas }),
        })
    }
}
