//! `create_heap_dump`: a memory leak is suspected. An ephemeral debug container (`kubectl
//! debug --target`) joins the process namespace of the pod's container and has the process
//! dump its heap into the container's own `/tmp`: the JVM through `jcmd GC.heap_dump`, a Go
//! program from its pprof endpoint (`/debug/pprof/heap`). The debug container's log (what ran,
//! the file's size and digest) is the result, with the path and the `kubectl cp` that fetches
//! it. Ephemeral containers cannot be removed from a pod, and the dump is a file in the pod:
//! there is nothing to roll back; both go when the pod is replaced.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{ListParams, LogParams, Patch},
    ResourceExt,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    executor_patch, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::WorkloadKind;

const RUNTIMES: &[&str] = &["jvm", "go"];
/// The debug images, pinned: a JDK for `jcmd`, busybox for `wget`.
const JDK_IMAGE: &str = "eclipse-temurin:21.0.5_11-jdk";
const BUSYBOX_IMAGE: &str = "busybox:1.36.1";
const POLL: Duration = Duration::from_millis(250);
/// Waiting reasons that mean the debug container will not run.
const STUCK: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerError",
    "InvalidImageName",
];

#[derive(Debug, Deserialize)]
struct Params {
    runtime: String,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    image: Option<String>,
    pprof_port: i64,
}

/// What `create_heap_dump` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // A pod target is read; a workload's pods are listed; the pod is read again until the dump is
    // done.
    Access::new("", &["pods"], &["get", "list"]),
    // The debug container, added as kubectl debug does (the plan as a dry run).
    Access::new("", &["pods/ephemeralcontainers"], &["patch"]),
    // The debug container's log holds the dump's path, size and digest.
    Access::new("", &["pods/log"], &["get"]),
    // A workload target is read for its selector.
    Access::new("apps", &["deployments", "statefulsets"], &["get"]),
];

pub struct CreateHeapDump {
    spec: ActionSpec,
}

impl CreateHeapDump {
    pub fn new() -> Self {
        CreateHeapDump {
            spec: ActionSpec {
                name: "create_heap_dump",
                description: "Dump a process's heap (a memory leak) from an ephemeral debug container in its pod: \
                              jcmd GC.heap_dump for the JVM, the pprof heap profile for Go; the file stays in the \
                              container's /tmp, its path, size and digest are the result.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Pod", "Deployment", "StatefulSet"],
                params: vec![
                    ParamSpec::new("runtime", ParamType::String, "How to dump: jvm (jcmd) or go (pprof).")
                        .one_of(RUNTIMES)
                        .required(),
                    ParamSpec::new("container", ParamType::String, "The container whose process to dump; absent = the first."),
                    ParamSpec::new("image", ParamType::String, "The debug image instead of the built-in one."),
                    ParamSpec::new("pprof_port", ParamType::Integer, "go: the port of net/http/pprof.")
                        .bounds(1, 65535)
                        .default(6060),
                ],
            },
        }
    }
}

/// The pod to dump: the target, or the first Ready pod of the target workload.
async fn pod(ctx: &ActionContext) -> Result<Pod, ActionError> {
    if ctx.target.kind == "Pod" {
        return ctx.get_target().await;
    }
    let kind = WorkloadKind::from_kind(&ctx.target.kind)
        .ok_or_else(|| ActionError::Internal(format!("not a workload: {}", ctx.target.kind)))?;
    let object = super::workload::get(ctx, kind, &ctx.target.name).await?;
    let pods = ctx.pods();
    let of_workload = ListParams::default().labels(&super::workload::pod_selector(&object));
    let listed = ctx
        .retry("list the workload's pods", || pods.list(&of_workload))
        .await?;
    listed
        .items
        .into_iter()
        .find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .ok_or_else(|| {
            ActionError::Precondition(format!(
                "{} has no Ready pod to dump",
                ctx.target.object_ref()
            ))
        })
}

/// The debug container: its name, the dump's path, and the container spec.
fn debug_container(p: &Params, target: &str) -> (String, String, Value) {
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    // Ephemeral containers stay in the pod: every dump needs a name of its own.
    let unique = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let id = format!("{stamp}-{unique}");
    let name = format!("heapdump-{id}");
    let (image, path, script) = match p.runtime.as_str() {
        "jvm" => {
            let path = format!("/tmp/heap-{id}.hprof");
            (
                JDK_IMAGE,
                path.clone(),
                format!(
                    "PID=$(pgrep -o java || echo 1); jcmd \"$PID\" GC.heap_dump {path} && \
                     ls -l /proc/$PID/root{path} && sha256sum /proc/$PID/root{path}"
                ),
            )
        }
        _ => {
            let path = format!("/tmp/heap-{id}.pprof");
            (
                BUSYBOX_IMAGE,
                path.clone(),
                format!(
                    "wget -q -O /proc/1/root{path} http://127.0.0.1:{}/debug/pprof/heap && \
                     ls -l /proc/1/root{path} && sha256sum /proc/1/root{path}",
                    p.pprof_port
                ),
            )
        }
    };
    let spec = json!({
        "name": name,
        "image": p.image.clone().unwrap_or_else(|| image.to_string()),
        "command": ["sh", "-c", script],
        "targetContainerName": target,
        "stdin": false,
        "tty": false,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    (name, path, spec)
}

fn target_container(pod: &Pod, wanted: Option<&str>) -> Result<String, ActionError> {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    match wanted {
        Some(w) if names.iter().any(|n| n == w) => Ok(w.to_string()),
        Some(w) => Err(ActionError::invalid(
            "container",
            format!(
                "pod {} has no container {w:?} (it has {})",
                pod.name_any(),
                names.join(", ")
            ),
        )),
        None => names
            .into_iter()
            .next()
            .ok_or_else(|| ActionError::Internal("a pod without containers".into())),
    }
}

#[async_trait]
impl Remediation for CreateHeapDump {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let pod = pod(ctx).await?;
        let container = target_container(&pod, p.container.as_deref())?;
        let (name, path, spec) = debug_container(&p, &container);
        let pods = ctx.pods();
        let patch = Patch::Strategic(json!({ "spec": { "ephemeralContainers": [spec] } }));
        let after = pods
            .patch_ephemeral_containers(&pod.name_any(), &executor_patch(true), &patch)
            .await?;
        Ok(Plan::single(Change::update(
            format!("{}/pod/{}", ctx.target.namespace, pod.name_any()),
            format!(
                "add debug container {name} to pod {} to dump the {} heap of {container} into {path}",
                pod.name_any(),
                p.runtime
            ),
            &pod,
            &after,
        ))
        .with_warnings(vec![
            "an ephemeral container cannot be removed from the pod; the dump stays in its /tmp until the pod is replaced"
                .into(),
            "dumping pauses the process while it runs".into(),
        ]))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let pod = pod(ctx).await?;
        let pod_name = pod.name_any();
        let container = target_container(&pod, p.container.as_deref())?;
        let (name, path, spec) = debug_container(&p, &container);
        let pods = ctx.pods();
        let patch = Patch::Strategic(json!({ "spec": { "ephemeralContainers": [spec] } }));
        let params = executor_patch(false);
        ctx.retry(
            &format!("add debug container {name} to pod {pod_name}"),
            || pods.patch_ephemeral_containers(&pod_name, &params, &patch),
        )
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "debug container {name} added to pod {pod_name}, targeting {container}"
        )));
        let exit_code = loop {
            let now = ctx
                .retry(&format!("read pod {pod_name}"), || pods.get(&pod_name))
                .await?;
            let status = now
                .status
                .and_then(|s| s.ephemeral_container_statuses)
                .unwrap_or_default()
                .into_iter()
                .find(|s| s.name == name);
            let state = status.and_then(|s| s.state);
            if let Some(t) = state.as_ref().and_then(|s| s.terminated.as_ref()) {
                break t.exit_code;
            }
            if let Some(w) = state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.clone().unwrap_or_default();
                if STUCK.contains(&reason.as_str()) {
                    return Err(ActionError::Precondition(format!(
                        "debug container {name} in pod {pod_name} cannot start: {reason}: {}",
                        w.message.clone().unwrap_or_default()
                    )));
                }
            }
            tokio::time::sleep(POLL).await;
        };
        let log_params = LogParams {
            container: Some(name.clone()),
            ..Default::default()
        };
        let log = pods.logs(&pod_name, &log_params).await.unwrap_or_default();
        if exit_code != 0 {
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(ActionError::Precondition(format!(
                "the heap dump failed (exit code {exit_code}): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(Outcome {
            message: format!("heap of {pod_name}/{container} dumped to {path}"),
            result: json!({
                "pod": pod_name,
                "container": container,
                "debug_container": name,
                "runtime": p.runtime,
                "path": path,
                "fetch": format!("kubectl cp {}/{pod_name}:{path} ./{} -c {container}", ctx.target.namespace,
                    path.rsplit('/').next().unwrap_or("heap")),
                "log": log,
            }),
        })
    }
}
