//! User code of the API platform on Kubernetes: `deploy_code`, `stop_code`, `remove_code`,
//! `code_status` and `code_logs`, one file each. API `ID` runs as Deployment `api-ID` (the
//! platform's container name) in the target's namespace; its code is a ConfigMap mounted
//! read-only at `/app/code`; a Service, a NetworkPolicy and optionally an HPA come with it,
//! all owned by the Deployment, so deleting it deletes them.
//!
//! This file is what they share: the runtimes, the labels that find an API's objects, the API
//! id of a target, and its pods' state as the platform reports it.

mod apply;
pub(super) mod deploy;
mod objects;
pub(super) mod remove;
pub(super) mod status;
pub(super) mod stop;
pub(super) mod tail;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{api::ListParams, Api, ResourceExt};
use serde_json::{json, Value};

use super::{ActionContext, ActionError};
use crate::domain::api_id_of;

/// Where the code is mounted in the container.
pub(crate) const MOUNT_PATH: &str = "/app/code";
/// Every object of an API carries its id under this label.
pub(crate) const API_ID_LABEL: &str = "executor-service.io/api-id";
pub(crate) const RUNTIME_LABEL: &str = "executor-service.io/runtime";
/// The pod template's digest: tells this deploy's pods from the previous ones.
pub(crate) const TEMPLATE_DIGEST: &str = "executor-service.io/template-digest";
/// The container that runs the code.
pub(crate) const CONTAINER: &str = "api";

/// A language runtime: its image and how it starts the code by default.
pub(crate) struct Runtime {
    pub name: &'static str,
    pub image: &'static str,
    /// The file the default command runs.
    pub entry: &'static str,
    pub program: &'static [&'static str],
}

/// The runtimes of the platform, with the images it uses.
pub(crate) const RUNTIMES: &[Runtime] = &[
    Runtime {
        name: "python",
        image: "python:3.11-slim",
        entry: "main.py",
        program: &["python"],
    },
    Runtime {
        name: "node",
        image: "node:18-alpine",
        entry: "index.js",
        program: &["node"],
    },
    Runtime {
        name: "go",
        image: "golang:1.21-alpine",
        entry: "main.go",
        program: &["go", "run"],
    },
];

pub(crate) const RUNTIME_NAMES: &[&str] = &["python", "node", "go"];

impl Runtime {
    pub fn named(name: &str) -> Option<&'static Runtime> {
        RUNTIMES.iter().find(|r| r.name == name)
    }

    /// `python /app/code/main.py`, `node /app/code/index.js`, `go run /app/code/main.go`.
    pub fn default_command(&self) -> Vec<String> {
        let mut command: Vec<String> = self.program.iter().map(|s| s.to_string()).collect();
        command.push(format!("{MOUNT_PATH}/{}", self.entry));
        command
    }
}

/// The API id the target names (`api-<uuid>`).
///
/// # Errors
/// [`ActionError::InvalidParameter`] naming `target.name` when it is not `api-<uuid>`.
pub(super) fn api_id(ctx: &ActionContext) -> Result<String, ActionError> {
    api_id_of(&ctx.target.name)
        .map(str::to_string)
        .ok_or_else(|| ActionError::InvalidParameter {
            field: "target.name".into(),
            message: format!(
                "{:?} does not name deployed code: expected api-<uuid> (the API id, lower case)",
                ctx.target.name
            ),
        })
}

/// `api-executor-service.io/api-id=<id>`: the selector of every object of the API.
pub(super) fn selector(api_id: &str) -> String {
    format!("{API_ID_LABEL}={api_id}")
}

/// The API's Deployment, if it exists; refused when a Deployment of that name exists that
/// `deploy_code` did not create (the actions never take over someone else's workload).
pub(super) async fn deployment(
    ctx: &ActionContext,
    api_id: &str,
) -> Result<Option<Deployment>, ActionError> {
    let what = format!("deployment {}", ctx.target.object_ref());
    let deployments = ctx.deployments();
    let found = ctx
        .retry(&format!("read {what}"), || {
            deployments.get_opt(&ctx.target.name)
        })
        .await?;
    if let Some(d) = &found {
        if d.labels().get(API_ID_LABEL).map(String::as_str) != Some(api_id) {
            return Err(ActionError::Precondition(format!(
                "{what} exists but was not created by deploy_code (no {API_ID_LABEL}={api_id} label); \
                 it is left alone"
            )));
        }
    }
    Ok(found)
}

/// The API's Deployment, which must exist.
pub(super) async fn existing_deployment(
    ctx: &ActionContext,
    api_id: &str,
) -> Result<Deployment, ActionError> {
    deployment(ctx, api_id).await?.ok_or_else(|| {
        ActionError::NotFound(format!(
            "deployed code {api_id} (deployment {})",
            ctx.target.object_ref()
        ))
    })
}

/// The API's pods.
pub(super) async fn pods(ctx: &ActionContext, api_id: &str) -> Result<Vec<Pod>, ActionError> {
    let api: Api<Pod> = ctx.pods();
    let params = ListParams::default().labels(&selector(api_id));
    Ok(ctx
        .retry("list the API's pods", || api.list(&params))
        .await?
        .items)
}

/// Why a pod's code container cannot run (`CrashLoopBackOff`, `ImagePullBackOff`…), with
/// the container's message; `None` while it runs or starts normally.
pub(super) fn failure(pod: &Pod) -> Option<(String, String)> {
    const FAILING: &[&str] = &[
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "RunContainerError",
    ];
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.clone().unwrap_or_default();
    if !FAILING.contains(&reason.as_str()) {
        return None;
    }
    let terminated = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            format!(
                "exit code {}{}",
                t.exit_code,
                t.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        });
    let message = [waiting.message.clone(), terminated]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
    Some((reason, message))
}

/// The code container's id in a ready pod (`containerd://…`), as the platform reports it.
pub(super) fn container_id(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .find(|c| c.name == CONTAINER && c.ready)
        .and_then(|c| c.container_id.clone())
}

/// The pods as the status shows them: name, phase, ready, restarts, what stops them.
pub(super) fn pods_json(pods: &[Pod]) -> Value {
    Value::Array(
        pods.iter()
            .map(|p| {
                let container = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER));
                json!({
                    "name": p.name_any(),
                    "phase": p.status.as_ref().and_then(|s| s.phase.clone()),
                    "ready": container.is_some_and(|c| c.ready),
                    "restarts": container.map_or(0, |c| c.restart_count),
                    "reason": failure(p).map(|(reason, _)| reason),
                })
            })
            .collect(),
    )
}

/// The platform's status of an API: `stopped` at zero replicas, `failed` when a pod cannot
/// run, `running` once the rollout is complete with a ready pod, `deploying` before.
pub(super) fn platform_status(d: &Deployment, pods: &[Pod]) -> &'static str {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if replicas == 0 {
        return "stopped";
    }
    if pods.iter().any(|p| failure(p).is_some()) {
        return "failed";
    }
    let rollout = crate::cluster::deployment_rollout_status(d);
    if rollout.done && container_id(pods).is_some() {
        "running"
    } else {
        "deploying"
    }
}

/// The code ConfigMap a Deployment mounts.
pub(super) fn code_of_deployment(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "code")?
        .config_map
        .as_ref()
        .map(|c| c.name.clone())
}
