//! `code_status`: the platform's `GET /status/{api_id}`, read from the cluster: `running`,
//! `deploying`, `failed` or `stopped`, the code container's id, the pods with their restarts
//! and what stops them. Reads only.

use async_trait::async_trait;
use kube::ResourceExt;
use serde_json::json;

use super::{
    api_id, code_of_deployment, container_id, existing_deployment, platform_status, pods,
    pods_json, RUNTIME_LABEL,
};
use crate::actions::{
    Access, ActionContext, ActionError, ActionSpec, Outcome, Plan, Remediation, Risk,
};

/// What `code_status` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Deployment is read and its pods listed.
    Access::new("apps", &["deployments"], &["get"]),
    Access::new("", &["pods"], &["list"]),
];

pub struct CodeStatus {
    spec: ActionSpec,
}

impl CodeStatus {
    pub fn new() -> Self {
        CodeStatus {
            spec: ActionSpec {
                name: "code_status",
                description: "The status of an API (target deployment api-<uuid>): running, deploying, failed or \
                              stopped, the code container's id, replicas and pods with restarts and reasons; reads only.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Deployment"],
                params: vec![],
            },
        }
    }
}

#[async_trait]
impl Remediation for CodeStatus {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let id = api_id(ctx)?;
        Ok(Plan {
            summary: format!("read the status of API {id}; nothing changes"),
            ..Default::default()
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let id = api_id(ctx)?;
        let d = existing_deployment(ctx, &id).await?;
        let pods = pods(ctx, &id).await?;
        let status = platform_status(&d, &pods);
        let spec = d.spec.as_ref();
        let container = spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first());
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        Ok(Outcome {
            message: format!("API {id} is {status} ({ready} ready pod(s))"),
            result: json!({
                "api_id": id,
                "status": status,
                "container_id": container_id(&pods),
                "replicas": spec.and_then(|s| s.replicas),
                "ready_replicas": ready,
                "runtime": d.labels().get(RUNTIME_LABEL),
                "image": container.and_then(|c| c.image.clone()),
                "config_map": code_of_deployment(&d),
                "pods": pods_json(&pods),
            }),
        })
    }
}
