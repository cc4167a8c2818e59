//! `deploy_code`: runs an API's code (the platform's `POST /deploy`). Target: Deployment
//! `api-<uuid>`. The code is a bundle of files sent with the request (kept in an immutable
//! ConfigMap named by its digest) or a ConfigMap the caller names (default `api-<id>-code`);
//! it runs in the runtime's image (`python:3.11-slim`, `node:18-alpine`, `golang:1.21-alpine`)
//! with the runtime's start command or the caller's. Everything is applied server-side and
//! owned by the Deployment; the rollout is followed like `kubectl rollout status`, and a pod
//! that cannot run (CrashLoopBackOff, ImagePullBackOff…) ends it at once with the pod's reason
//! and last log lines. A first deploy then ends FAILED (its objects stay for inspection,
//! `remove_code` clears them); a redeploy is rolled back to the previous template, whose code
//! ConfigMap is kept.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::{DeleteParams, LogParams, Patch},
    Api, ResourceExt,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::apply::{apply_any, current, object_ref, prune_code, remove_autoscaler};
use super::{
    api_id, container_id, deployment, failure, objects::*, pods, pods_json, Runtime, CONTAINER,
    RUNTIME_NAMES, TEMPLATE_DIGEST,
};
use crate::actions::{
    executor_patch, update_network_policy::labels, workload, Access, ActionContext, ActionError,
    ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::{RolloutError, WorkloadKind};

/// Log lines of a failing pod shown in the events and the error.
const FAILURE_LOG_LINES: i64 = 20;
/// How often the pods are checked for one that cannot run while the rollout is followed.
const POD_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, Deserialize)]
pub(super) struct Params {
    runtime: String,
    #[serde(default)]
    files: Option<BTreeMap<String, String>>,
    #[serde(default)]
    config_map: Option<String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    image: Option<String>,
    port: i64,
    cpu: String,
    memory: String,
    replicas: i64,
    max_replicas: i64,
    ingress_from_namespace: String,
    #[serde(default)]
    ingress_from_labels: Option<String>,
}

/// What `deploy_code` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Deployment is read, applied server-side (a new object is authorized as a create; the
    // plan as a dry run), followed with a watch, and deleted or patched back by the rollback.
    Access::new(
        "apps",
        &["deployments"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // The code's ConfigMap is read and applied; the versions no longer used are listed and
    // deleted.
    Access::new(
        "",
        &["configmaps"],
        &["get", "list", "create", "patch", "delete"],
    ),
    // The Service and the NetworkPolicy in front of the code are read and applied.
    Access::new("", &["services"], &["get", "create", "patch"]),
    Access::new(
        "networking.k8s.io",
        &["networkpolicies"],
        &["get", "create", "patch"],
    ),
    // The optional autoscaler is read and applied, or listed and deleted when no longer wanted.
    Access::new(
        "autoscaling",
        &["horizontalpodautoscalers"],
        &["get", "list", "create", "patch", "delete"],
    ),
    // The pods are watched for a crash, whose log is reported.
    Access::new("", &["pods"], &["list"]),
    Access::new("", &["pods/log"], &["get"]),
];

pub struct DeployCode {
    spec: ActionSpec,
}

impl DeployCode {
    pub fn new() -> Self {
        DeployCode {
            spec: ActionSpec {
                name: "deploy_code",
                description: "Run an API's code (target deployment api-<uuid>): files uploaded with the request (or a \
                              ConfigMap) mounted read-only at /app/code, in the runtime's image, non-root, read-only \
                              root filesystem, CPU and memory limits, a Service, a NetworkPolicy letting in only the \
                              gateway, optionally an HPA; the rollout followed, a crashing pod reported with its logs; \
                              a redeploy is a rolling update, rolled back when it fails.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Deployment"],
                params: vec![
                    ParamSpec::new("runtime", ParamType::String, "The language runtime and its image: python (python:3.11-slim), node (node:18-alpine), go (golang:1.21-alpine).")
                        .one_of(RUNTIME_NAMES)
                        .default("python"),
                    ParamSpec::new("files", ParamType::Files, "The code: relative path to file content, at most 100 files and 256 KiB (main.py, index.js or main.go runs by default)."),
                    ParamSpec::new("config_map", ParamType::String, "A ConfigMap in the namespace holding the code instead of files; default api-<id>-code when no files are given."),
                    ParamSpec::new("command", ParamType::String, "The start command instead of the runtime's (split on spaces, no shell), e.g. \"python /app/code/app.py\"."),
                    ParamSpec::new("image", ParamType::String, "A custom image instead of the runtime's."),
                    ParamSpec::new("port", ParamType::Integer, "The port the code listens on (given to it as $PORT).")
                        .bounds(1024, 65535)
                        .default(8080),
                    ParamSpec::new("cpu", ParamType::Quantity, "CPU limit of each container.").default("1"),
                    ParamSpec::new("memory", ParamType::Quantity, "Memory limit of each container.").default("512Mi"),
                    ParamSpec::new("replicas", ParamType::Integer, "Pods running the code.")
                        .bounds(1, 20)
                        .default(1),
                    ParamSpec::new("max_replicas", ParamType::Integer, "Above replicas: an HPA scales up to this many on CPU; 0 = no autoscaling.")
                        .bounds(0, 50)
                        .default(0),
                    ParamSpec::new("ingress_from_namespace", ParamType::String, "The only namespace whose pods may reach the code (the gateway's).")
                        .default("api-gateway"),
                    ParamSpec::new("ingress_from_labels", ParamType::String, "And only its pods with these labels: app=gateway,tier=edge."),
                ],
            },
        }
    }
}

/// The command from `command`: words split on spaces.
fn command_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn check(params: &Map<String, Value>) -> Result<(), ActionError> {
    let p: Params = serde_json::from_value(Value::Object(params.clone()))
        .map_err(|e| ActionError::Internal(format!("parameters do not fit the action: {e}")))?;
    if p.files.is_some() && p.config_map.is_some() {
        return Err(ActionError::invalid(
            "config_map",
            "give files or config_map, not both",
        ));
    }
    if let Some(files) = &p.files {
        let mut keys = BTreeMap::new();
        for path in files.keys() {
            if path.starts_with("..") || path.contains("/..") {
                return Err(ActionError::invalid(
                    "files",
                    format!("{path:?}: a path segment may not start with \"..\""),
                ));
            }
            if let Some(other) = keys.insert(key_of(path), path) {
                return Err(ActionError::invalid(
                    "files",
                    format!("{other:?} and {path:?} map to the same ConfigMap key"),
                ));
            }
        }
    }
    if let Some(name) = &p.config_map {
        crate::actions::check_object_name("config_map", name)?;
    }
    if let Some(command) = &p.command {
        if command_words(command).is_empty() {
            return Err(ActionError::invalid("command", "must not be empty"));
        }
    }
    if p.max_replicas != 0 && p.max_replicas <= p.replicas {
        return Err(ActionError::invalid(
            "max_replicas",
            format!("must be above replicas ({}) to autoscale, or 0", p.replicas),
        ));
    }
    if let Some(text) = &p.ingress_from_labels {
        labels("ingress_from_labels", text)?;
    }
    if !is_label_value(&p.ingress_from_namespace) {
        return Err(ActionError::invalid(
            "ingress_from_namespace",
            format!("{:?} is not a namespace name", p.ingress_from_namespace),
        ));
    }
    Ok(())
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What the parameters ask for, and where the code comes from.
fn code_spec(ctx: &ActionContext, p: &Params) -> Result<(CodeSpec, Source), ActionError> {
    let api_id = api_id(ctx)?;
    let runtime = Runtime::named(&p.runtime).ok_or_else(|| {
        ActionError::invalid("runtime", format!("unknown runtime {:?}", p.runtime))
    })?;
    let ingress_from_labels = match &p.ingress_from_labels {
        Some(text) => labels("ingress_from_labels", text)?,
        None => Map::new(),
    };
    let source = match (&p.files, &p.config_map) {
        (Some(files), _) => Source::Files(files.clone()),
        (None, Some(name)) => Source::ConfigMap(name.clone()),
        (None, None) => Source::ConfigMap(format!("{}-code", ctx.target.name)),
    };
    let spec = CodeSpec {
        name: ctx.target.name.clone(),
        namespace: ctx.target.namespace.clone(),
        runtime,
        image: p.image.clone().unwrap_or_else(|| runtime.image.to_string()),
        command: p
            .command
            .as_deref()
            .map(command_words)
            .unwrap_or_else(|| runtime.default_command()),
        port: p.port,
        cpu: p.cpu.clone(),
        memory: p.memory.clone(),
        replicas: p.replicas,
        max_replicas: p.max_replicas,
        ingress_from_namespace: p.ingress_from_namespace.clone(),
        ingress_from_labels,
        api_id,
    };
    Ok((spec, source))
}

/// The objects to apply, in order: the code's ConfigMap (when uploaded), the Deployment, the
/// Service, the NetworkPolicy, the HPA (when asked for). Also the ConfigMap's name and the
/// files the code holds, when known.
struct Objects {
    config_map: Option<Value>,
    code: String,
    files: Vec<String>,
    deployment: Value,
    dependents: Vec<Value>,
}

async fn objects(
    ctx: &ActionContext,
    spec: &CodeSpec,
    source: &Source,
) -> Result<Objects, ActionError> {
    let (config_map, code, files, deployment) = match source {
        Source::Files(files) => {
            let name = bundle_name(&spec.name, &bundle_digest(files));
            (
                Some(spec.config_map(&name, files)),
                name,
                files.keys().cloned().collect(),
                spec.deployment(&bundle_name(&spec.name, &bundle_digest(files)), Some(files)),
            )
        }
        Source::ConfigMap(name) => {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &spec.namespace);
            let what = format!("configmap {}/{name} (the code)", spec.namespace);
            let found = ctx
                .retry(&format!("read {what}"), || api.get_opt(name))
                .await?
                .ok_or_else(|| {
                    ActionError::Precondition(format!(
                        "{what} not found: send the code as files, or create the ConfigMap first"
                    ))
                })?;
            let mut deployment = spec.deployment(name, None);
            // A change of the caller's ConfigMap is a new version: it rolls the pods.
            deployment["spec"]["template"]["metadata"]["annotations"]
                ["executor-service.io/code-version"] = json!(found.resource_version());
            let files = found
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect();
            (None, name.clone(), files, deployment)
        }
    };
    let mut dependents = vec![spec.service(), spec.network_policy()];
    if spec.max_replicas > spec.replicas {
        dependents.push(spec.autoscaler());
    }
    Ok(Objects {
        config_map,
        code,
        files,
        deployment,
        dependents,
    })
}

/// The warnings of a plan: the entry file the default command runs is missing.
fn warnings(spec: &CodeSpec, files: &[String], custom_command: bool) -> Vec<String> {
    let entry = spec.runtime.entry;
    if custom_command || files.is_empty() || files.iter().any(|f| f == entry) {
        return Vec::new();
    }
    vec![format!(
        "the code has no {entry}, which the {} runtime starts ({}): the container will fail \
         to start unless command names another file",
        spec.runtime.name,
        spec.runtime.default_command().join(" ")
    )]
}

/// A pod of this deploy that cannot run: its name, reason and last log lines.
async fn failing_pod(
    ctx: &ActionContext,
    api_id: &str,
    digest: &str,
) -> Result<Option<(String, String, String)>, ActionError> {
    for pod in pods(ctx, api_id).await? {
        let ours = pod.annotations().get(TEMPLATE_DIGEST).map(String::as_str) == Some(digest);
        let Some((reason, message)) = failure(&pod).filter(|_| ours) else {
            continue;
        };
        let api = ctx.pods();
        let mut log = String::new();
        for previous in [true, false] {
            let params = LogParams {
                container: Some(CONTAINER.into()),
                previous,
                tail_lines: Some(FAILURE_LOG_LINES),
                ..Default::default()
            };
            if let Ok(text) = api.logs(&pod.name_any(), &params).await {
                log = text;
                break;
            }
        }
        let reason = if message.is_empty() {
            reason
        } else {
            format!("{reason}: {message}")
        };
        return Ok(Some((pod.name_any(), reason, log)));
    }
    Ok(None)
}

/// Follows the rollout until it completes, or until a pod of this deploy cannot run.
async fn follow(ctx: &ActionContext, api_id: &str, digest: &str) -> Result<(), ActionError> {
    let rollout = workload::follow(
        ctx,
        WorkloadKind::Deployment,
        &ctx.target.name,
        workload::updated_pods,
    );
    let watch_pods = async {
        loop {
            tokio::time::sleep(POD_CHECK).await;
            if let Some(found) = failing_pod(ctx, api_id, digest).await? {
                return Ok::<_, ActionError>(found);
            }
        }
    };
    tokio::select! {
        done = rollout => done.map(|_| ()),
        failing = watch_pods => {
            let (pod, reason, log) = failing?;
            let tail: Vec<&str> = log.lines().collect();
            ctx.reporter.progress(
                Update::new(format!("pod {pod} cannot run the code: {reason}")).details(json!({
                    "pod": pod,
                    "reason": reason,
                    "log": tail,
                })),
            );
            let last: Vec<&str> = tail.iter().rev().take(5).rev().copied().collect();
            Err(ActionError::Rollout(RolloutError::Failed(format!(
                "pod {pod} cannot run the code: {reason}; last log lines: {}",
                last.join(" | ")
            ))))
        }
    }
}

#[async_trait]
impl Remediation for DeployCode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        check(params)
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let (spec, source) = code_spec(ctx, &p)?;
        let existing = deployment(ctx, &spec.api_id).await?;
        let objects = objects(ctx, &spec, &source).await?;
        let ns = &ctx.target.namespace;
        let mut changes = Vec::new();
        let owner = existing
            .as_ref()
            .map(|d| (d.name_any(), d.uid().unwrap_or_default()));
        let all = objects
            .config_map
            .iter()
            .cloned()
            .chain([objects.deployment.clone()])
            .chain(objects.dependents.iter().cloned());
        for object in all {
            let object = match (&owner, object["kind"] == "Deployment") {
                (Some((name, uid)), false) => owned_by(object, name, uid),
                _ => object,
            };
            let before = current(ctx, &object).await?;
            let after = apply_any(ctx, &object, true).await?;
            let what = object_ref(ns, &object);
            changes.push(match before {
                Some(before) => Change::update(&what, format!("update {what}"), &before, &after),
                None => Change::create(&what, format!("create {what}"), &after),
            });
        }
        let verb = if existing.is_some() {
            "redeploy"
        } else {
            "deploy"
        };
        Ok(Plan {
            summary: format!(
                "{verb} API {} ({}, {}) from {}: {} object(s)",
                spec.api_id,
                spec.runtime.name,
                spec.image,
                objects.code,
                changes.len()
            ),
            changes,
            warnings: warnings(&spec, &objects.files, p.command.is_some()),
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let (spec, source) = code_spec(ctx, &p)?;
        let existing = deployment(ctx, &spec.api_id).await?;
        let objects = objects(ctx, &spec, &source).await?;
        let previous_code = existing.as_ref().and_then(super::code_of_deployment);
        ctx.reporter.rollback_data(match &existing {
            Some(d) => json!({
                "kind": "Deployment",
                "name": d.name_any(),
                "created": false,
                "template": d.spec.as_ref().map(|s| &s.template),
                "replicas": d.spec.as_ref().and_then(|s| s.replicas),
                "code": previous_code,
            }),
            None => json!({ "kind": "Deployment", "name": spec.name, "created": true }),
        });
        let stored = apply_any(ctx, &objects.deployment, false).await?;
        let uid = stored["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ctx.reporter.progress(Update::new(format!(
            "{} {}: {} running {}",
            if existing.is_some() {
                "updated"
            } else {
                "created"
            },
            object_ref(&ctx.target.namespace, &objects.deployment),
            spec.image,
            spec.command.join(" ")
        )));
        let mut applied = vec![object_ref(&ctx.target.namespace, &objects.deployment)];
        for object in objects.config_map.iter().chain(&objects.dependents) {
            let object = owned_by(object.clone(), &spec.name, &uid);
            apply_any(ctx, &object, false).await?;
            applied.push(object_ref(&ctx.target.namespace, &object));
        }
        if spec.max_replicas <= spec.replicas {
            remove_autoscaler(ctx, &spec.api_id).await?;
        }
        ctx.reporter.progress(Update::new(format!(
            "applied {}; following the rollout",
            applied.join(", ")
        )));
        let digest = objects.deployment["spec"]["template"]["metadata"]["annotations"]
            [TEMPLATE_DIGEST]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match follow(ctx, &spec.api_id, &digest).await {
            Ok(()) => {}
            // A first deploy has nothing to go back to: it fails, its objects stay to look at.
            Err(ActionError::Rollout(e)) if existing.is_none() => {
                return Err(ActionError::Precondition(e.to_string()))
            }
            Err(e) => return Err(e),
        }
        prune_code(
            ctx,
            &spec.api_id,
            &[Some(objects.code.clone()), previous_code],
        )
        .await;
        let pods = pods(ctx, &spec.api_id).await?;
        let container = container_id(&pods);
        Ok(Outcome {
            message: format!(
                "API {} running: deployment {} ({} replica(s)), service {}:80",
                spec.api_id,
                ctx.target.object_ref(),
                spec.replicas,
                spec.name
            ),
            result: json!({
                "api_id": spec.api_id,
                "status": "running",
                "container_id": container,
                "deployment": spec.name,
                "service": format!("{}.{}.svc", spec.name, spec.namespace),
                "url": format!("http://{}.{}.svc", spec.name, spec.namespace),
                "config_map": objects.code,
                "files": objects.files,
                "runtime": spec.runtime.name,
                "image": spec.image,
                "command": spec.command,
                "objects": applied,
                "pods": pods_json(&pods),
            }),
        })
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        if data["created"] == json!(true) {
            let params = DeleteParams::foreground();
            let deployments = ctx.deployments();
            ctx.retry(&format!("delete {}", ctx.target.object_ref()), || {
                deployments.delete(&ctx.target.name, &params)
            })
            .await?;
            return Ok(Outcome {
                message: format!("{} deleted with what it owns", ctx.target.object_ref()),
                result: json!({ "deleted": ctx.target.object_ref() }),
            });
        }
        let restored = workload::restore_template(ctx, data).await?;
        if let Some(replicas) = data["replicas"].as_i64() {
            let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
            let params = executor_patch(false);
            let deployments = ctx.deployments();
            ctx.retry("restore the replicas", || {
                deployments.patch(&ctx.target.name, &params, &patch)
            })
            .await?;
        }
        Ok(restored)
    }
}
