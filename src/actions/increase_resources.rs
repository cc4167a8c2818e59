//! `increase_resources`: raise CPU/memory requests and limits of a workload's containers (like
//! `kubectl set resources`, as a strategic merge patch keyed by container name), on the workload
//! itself or on the Deployment/StatefulSet/DaemonSet owning a pod; then follow the rollout.
//! Without values it applies the seed service's defaults (250m/500m CPU, 512Mi/1Gi memory), never
//! lowering what a container already has.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    parse_quantity, workload, Access, ActionContext, ActionError, ActionSpec, Change, Outcome,
    ParamSpec, ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::{owning_workload, WorkloadKind};

/// The seed service's defaults when no value is given.
const DEFAULTS: [(&str, &str); 4] = [
    ("cpu_request", "250m"),
    ("cpu_limit", "500m"),
    ("memory_request", "512Mi"),
    ("memory_limit", "1Gi"),
];

#[derive(Debug, Deserialize)]
struct Params {
    container: Option<String>,
    cpu_request: Option<String>,
    cpu_limit: Option<String>,
    memory_request: Option<String>,
    memory_limit: Option<String>,
    wait_for_rollout: bool,
}

impl Params {
    fn given(&self) -> Vec<(&'static str, String)> {
        [
            ("cpu_request", &self.cpu_request),
            ("cpu_limit", &self.cpu_limit),
            ("memory_request", &self.memory_request),
            ("memory_limit", &self.memory_limit),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// `cpu_request` → (`requests`, `cpu`).
fn location(field: &str) -> (&'static str, &'static str) {
    match field {
        "cpu_request" => ("requests", "cpu"),
        "cpu_limit" => ("limits", "cpu"),
        "memory_request" => ("requests", "memory"),
        _ => ("limits", "memory"),
    }
}

/// What `increase_resources` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // A pod target is read to find the workload that owns it.
    Access::new("", &["pods"], &["get"]),
    // ...through its ReplicaSet for a Deployment.
    Access::new("apps", &["replicasets"], &["get"]),
    // The workload is read and its resources patched (the plan as a dry run); the rollout is
    // followed with a watch.
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get", "list", "watch", "patch"],
    ),
];

pub struct IncreaseResources {
    spec: ActionSpec,
}

impl IncreaseResources {
    pub fn new() -> Self {
        let quantity = |name, description| ParamSpec::new(name, ParamType::Quantity, description);
        IncreaseResources {
            spec: ActionSpec {
                name: "increase_resources",
                description: "Raise CPU/memory requests and limits of a workload's containers (kubectl set \
                              resources); a pod target changes its owning workload. Never lowers a value.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Deployment", "StatefulSet", "DaemonSet", "Pod"],
                params: vec![
                    ParamSpec::new("container", ParamType::String, "Container to change; absent = every container."),
                    quantity("cpu_request", "CPU request, e.g. 250m."),
                    quantity("cpu_limit", "CPU limit, e.g. 500m."),
                    quantity("memory_request", "Memory request, e.g. 512Mi."),
                    quantity("memory_limit", "Memory limit, e.g. 1Gi."),
                    ParamSpec::new("wait_for_rollout", ParamType::Boolean, "Follow the rollout until it completes.")
                        .default(true),
                ],
            },
        }
    }
}

/// The change, computed from the workload as it is now.
struct Resizing {
    kind: WorkloadKind,
    name: String,
    /// The workload as `namespace/kind/name`.
    object: String,
    before: kube::api::DynamicObject,
    /// Per container: the resources it will have.
    containers: BTreeMap<String, Value>,
    /// Per container: the resources it had.
    previous: BTreeMap<String, Value>,
    changes: Vec<String>,
}

impl IncreaseResources {
    async fn resizing(&self, ctx: &ActionContext) -> Result<Resizing, ActionError> {
        let p: Params = ctx.params()?;
        let (kind, name) = match WorkloadKind::from_kind(&ctx.target.kind) {
            Some(kind) => (kind, ctx.target.name.clone()),
            None => {
                let pod: Pod = ctx.get_target().await?;
                owning_workload(&ctx.client, &pod).await?.ok_or_else(|| {
                    ActionError::Precondition(format!(
                        "pod {} is not managed by a Deployment, StatefulSet or DaemonSet: its resources cannot be changed through a workload",
                        ctx.target.object_ref()
                    ))
                })?
            }
        };
        let object = workload::object_ref(&ctx.target.namespace, kind, &name);
        let before = workload::get(ctx, kind, &name).await?;
        let all: Vec<(String, Value)> = before
            .data
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.get("name")?.as_str()?.to_string(),
                    c.get("resources").cloned().unwrap_or(json!({})),
                ))
            })
            .collect();
        let chosen: Vec<&(String, Value)> = match &p.container {
            Some(wanted) => {
                let found: Vec<_> = all.iter().filter(|(n, _)| n == wanted).collect();
                if found.is_empty() {
                    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(ActionError::invalid(
                        "container",
                        format!(
                            "no container {wanted:?} in {object} (containers: {})",
                            names.join(", ")
                        ),
                    ));
                }
                found
            }
            None => all.iter().collect(),
        };
        let given = p.given();
        let defaulted = given.is_empty();
        let values: Vec<(&str, String)> = if defaulted {
            DEFAULTS.iter().map(|(k, v)| (*k, v.to_string())).collect()
        } else {
            given
        };
        let mut containers = BTreeMap::new();
        let mut previous = BTreeMap::new();
        let mut changes = Vec::new();
        for (container, resources) in chosen {
            let mut next = resources.clone();
            for (field, value) in &values {
                let (section, resource) = location(field);
                let current = resources
                    .pointer(&format!("/{section}/{resource}"))
                    .and_then(Value::as_str);
                let lower = current.is_some_and(|c| parse_quantity(value) < parse_quantity(c));
                if lower && defaulted {
                    continue;
                }
                if lower {
                    return Err(ActionError::invalid(
                        field,
                        format!(
                            "would lower {resource} {section} of container {container} from {} to {value}; increase_resources only raises",
                            current.unwrap_or_default()
                        ),
                    ));
                }
                if current == Some(value.as_str()) {
                    continue;
                }
                changes.push(format!(
                    "{container} {resource} {section} {} → {value}",
                    current.unwrap_or("unset")
                ));
                next[section][resource] = json!(value);
            }
            for resource in ["cpu", "memory"] {
                let request = next
                    .pointer(&format!("/requests/{resource}"))
                    .and_then(Value::as_str);
                let limit = next
                    .pointer(&format!("/limits/{resource}"))
                    .and_then(Value::as_str);
                if let (Some(r), Some(l)) = (request, limit) {
                    if parse_quantity(r) > parse_quantity(l) {
                        return Err(ActionError::invalid(
                            &format!("{resource}_request"),
                            format!("{resource} request {r} of container {container} would exceed its limit {l}"),
                        ));
                    }
                }
            }
            previous.insert(container.clone(), resources.clone());
            containers.insert(container.clone(), next);
        }
        Ok(Resizing {
            kind,
            name,
            object,
            before,
            containers,
            previous,
            changes,
        })
    }
}

fn resources_patch(containers: &BTreeMap<String, Value>) -> Patch<Value> {
    let list: Vec<Value> = containers
        .iter()
        .map(|(name, resources)| json!({ "name": name, "resources": resources }))
        .collect();
    Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": list } } } }))
}

#[async_trait]
impl Remediation for IncreaseResources {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        for resource in ["cpu", "memory"] {
            let request = params
                .get(&format!("{resource}_request"))
                .and_then(Value::as_str);
            let limit = params
                .get(&format!("{resource}_limit"))
                .and_then(Value::as_str);
            if let (Some(r), Some(l)) = (request, limit) {
                if parse_quantity(r) > parse_quantity(l) {
                    return Err(ActionError::invalid(
                        &format!("{resource}_request"),
                        format!("{r} exceeds the {resource} limit {l}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        workload::restore_template(ctx, data).await
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let r = self.resizing(ctx).await?;
        let object = &r.object;
        if r.changes.is_empty() {
            return Ok(Plan {
                summary: format!("{object}: resources already at or above the requested values"),
                ..Default::default()
            });
        }
        let after = r
            .kind
            .api(&ctx.client, &ctx.target.namespace)
            .patch(
                &r.name,
                &PatchParams::default().dry_run(),
                &resources_patch(&r.containers),
            )
            .await?;
        let summary = format!("{object}: {}", r.changes.join(", "));
        Ok(
            Plan::single(Change::update(object, summary, &r.before, &after)).with_warnings(vec![
                format!("{} restarts its pods to apply new resources", r.name),
            ]),
        )
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let r = self.resizing(ctx).await?;
        let object = &r.object;
        if r.changes.is_empty() {
            return Ok(Outcome {
                message: format!("{object}: resources already at or above the requested values"),
                result: json!({ "changed": false }),
            });
        }
        ctx.reporter.rollback_data(json!({
            "kind": r.kind.kind(),
            "namespace": ctx.target.namespace,
            "name": r.name,
            "resources": r.previous,
            "template": r.before.data.pointer("/spec/template"),
        }));
        let api = r.kind.api(&ctx.client, &ctx.target.namespace);
        let patch = resources_patch(&r.containers);
        let params = PatchParams::default();
        ctx.retry(&format!("set resources of {object}"), || {
            api.patch(&r.name, &params, &patch)
        })
        .await?;
        ctx.reporter.progress(
            Update::new(format!("{object}: {}", r.changes.join(", ")))
                .details(json!({ "resources": r.containers })),
        );
        if p.wait_for_rollout {
            workload::follow(ctx, r.kind, &r.name, workload::updated_pods).await?;
        }
        Ok(Outcome {
            message: format!("{object}: {}", r.changes.join(", ")),
            result: json!({ "changed": true, "workload": object, "resources": r.containers }),
        })
    }
}
