//! `optimize_resources`: requests and limits set from what the workload's pods use. The
//! resource metrics API (`metrics.k8s.io` PodMetrics, what `kubectl top` reads) is sampled
//! over a window; each container's new request is its observed peak plus `headroom_percent`
//! (never below the floors), its limit `limit_ratio` times that. Unlike `increase_resources`
//! it may lower them, but never below a peak it saw. The change is a rollout, followed; undone
//! by restoring the recorded template. Refused when the metrics API does not answer or saw no
//! pod.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    executor_patch, parse_quantity, workload, Access, ActionContext, ActionError, ActionSpec,
    Change, Outcome, ParamSpec, ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::WorkloadKind;

#[derive(Debug, Deserialize)]
struct Params {
    window_seconds: i64,
    samples: i64,
    headroom_percent: i64,
    limit_ratio: i64,
    min_cpu: String,
    min_memory: String,
    #[serde(default)]
    container: Option<String>,
}

/// What `optimize_resources` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The workload is read and its resources patched (the plan as a dry run, the rollback restores
    // the template); the rollout is followed with a watch.
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get", "list", "watch", "patch"],
    ),
    // What the pods use (metrics-server's API), sampled by a list.
    Access::new("metrics.k8s.io", &["pods"], &["list"]),
];

pub struct OptimizeResources {
    spec: ActionSpec,
}

impl OptimizeResources {
    pub fn new() -> Self {
        OptimizeResources {
            spec: ActionSpec {
                name: "optimize_resources",
                description: "Set a workload's CPU and memory requests from the metrics API: the peak seen over a \
                              window plus headroom (never below it, may lower), limits a ratio above; the rollout \
                              followed, undone by restoring the template.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Deployment", "StatefulSet", "DaemonSet"],
                params: vec![
                    ParamSpec::new("window_seconds", ParamType::Integer, "How long to observe usage.")
                        .bounds(5, 3600)
                        .default(60),
                    ParamSpec::new("samples", ParamType::Integer, "Readings of the metrics API over the window.")
                        .bounds(1, 120)
                        .default(6),
                    ParamSpec::new("headroom_percent", ParamType::Integer, "Added to the observed peak.")
                        .bounds(0, 500)
                        .default(30),
                    ParamSpec::new("limit_ratio", ParamType::Integer, "Limit = this many times the request.")
                        .bounds(1, 10)
                        .default(2),
                    ParamSpec::new("min_cpu", ParamType::Quantity, "No CPU request below this.").default("10m"),
                    ParamSpec::new("min_memory", ParamType::Quantity, "No memory request below this.").default("32Mi"),
                    ParamSpec::new("container", ParamType::String, "Only this container; absent = every container."),
                ],
            },
        }
    }
}

/// Peak `(cpu cores, memory bytes)` per container name.
type Peaks = BTreeMap<String, (f64, f64)>;

fn metrics_api(ctx: &ActionContext) -> kube::Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    );
    kube::Api::namespaced_with(ctx.client.clone(), &ctx.target.namespace, &resource)
}

/// Reads PodMetrics of the workload's pods `samples` times over the window; the peaks.
async fn observe(
    ctx: &ActionContext,
    p: &Params,
    selector: &str,
    samples: i64,
) -> Result<(Peaks, usize), ActionError> {
    let api = metrics_api(ctx);
    let pause = Duration::from_millis((p.window_seconds * 1000 / samples.max(1)) as u64);
    let mut peaks = Peaks::new();
    let mut readings = 0;
    let of_workload = ListParams::default().labels(selector);
    for i in 0..samples {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let listed = api.list(&of_workload).await.map_err(|e| {
            ActionError::Precondition(format!(
                "the metrics API (metrics.k8s.io, e.g. metrics-server) does not answer: {e}"
            ))
        })?;
        for pod in listed.items {
            readings += 1;
            for c in pod.data["containers"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let cpu = parse_quantity(c["usage"]["cpu"].as_str().unwrap_or("0")).unwrap_or(0.0);
                let memory =
                    parse_quantity(c["usage"]["memory"].as_str().unwrap_or("0")).unwrap_or(0.0);
                let peak = peaks.entry(name).or_insert((0.0, 0.0));
                peak.0 = peak.0.max(cpu);
                peak.1 = peak.1.max(memory);
            }
        }
        if samples > 1 {
            ctx.reporter.progress(
                Update::new(format!("usage sample {} of {samples}", i + 1))
                    .progress(i as u64 + 1, samples as u64),
            );
        }
    }
    if readings == 0 {
        return Err(ActionError::Precondition(format!(
            "the metrics API has no reading of a pod of {}: nothing to size from",
            ctx.target.object_ref()
        )));
    }
    Ok((peaks, readings))
}

/// Rounded up, but not for floating-point noise (0.2 × 1.5 is 0.30000000000000004).
fn up(x: f64) -> i64 {
    (x - 1e-6).ceil().max(1.0) as i64
}

fn millicores(cores: f64) -> String {
    format!("{}m", up(cores * 1000.0))
}

fn mebibytes(bytes: f64) -> String {
    format!("{}Mi", up(bytes / 1048576.0))
}

/// The new resources of each container: `{name: {requests, limits}}`.
fn sized(p: &Params, peaks: &Peaks) -> Result<BTreeMap<String, Value>, ActionError> {
    let floor = |field: &str, text: &str| {
        parse_quantity(text).ok_or_else(|| ActionError::invalid(field, "is not a quantity"))
    };
    let (min_cpu, min_memory) = (
        floor("min_cpu", &p.min_cpu)?,
        floor("min_memory", &p.min_memory)?,
    );
    let grow = 1.0 + p.headroom_percent as f64 / 100.0;
    let ratio = p.limit_ratio as f64;
    Ok(peaks
        .iter()
        .filter(|(name, _)| p.container.as_ref().is_none_or(|c| c == *name))
        .map(|(name, (cpu, memory))| {
            let cpu = (cpu * grow).max(min_cpu);
            let memory = (memory * grow).max(min_memory);
            let resources = json!({
                "requests": {"cpu": millicores(cpu), "memory": mebibytes(memory)},
                "limits": {"cpu": millicores(cpu * ratio), "memory": mebibytes(memory * ratio)},
            });
            (name.clone(), resources)
        })
        .collect())
}

fn resources_patch(sized: &BTreeMap<String, Value>) -> Patch<Value> {
    let containers: Vec<Value> = sized
        .iter()
        .map(|(name, resources)| json!({ "name": name, "resources": resources }))
        .collect();
    Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": containers } } } }))
}

impl OptimizeResources {
    async fn measure(
        ctx: &ActionContext,
        p: &Params,
        samples: i64,
    ) -> Result<(WorkloadKind, Value, BTreeMap<String, Value>, Peaks), ActionError> {
        let kind = WorkloadKind::from_kind(&ctx.target.kind)
            .ok_or_else(|| ActionError::Internal(format!("not a workload: {}", ctx.target.kind)))?;
        let object = workload::get(ctx, kind, &ctx.target.name).await?;
        let (peaks, _) = observe(ctx, p, &workload::pod_selector(&object), samples).await?;
        let sized = sized(p, &peaks)?;
        if sized.is_empty() {
            return Err(ActionError::invalid(
                "container",
                format!(
                    "no container {:?} was measured",
                    p.container.clone().unwrap_or_default()
                ),
            ));
        }
        Ok((
            kind,
            serde_json::to_value(&object).unwrap_or(Value::Null),
            sized,
            peaks,
        ))
    }
}

#[async_trait]
impl Remediation for OptimizeResources {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        workload::restore_template(ctx, data).await
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        // A plan reads the metrics once; the run observes the whole window.
        let (kind, before, sized, _) = Self::measure(ctx, &p, 1).await?;
        let after = kind
            .api(&ctx.client, &ctx.target.namespace)
            .patch(
                &ctx.target.name,
                &executor_patch(true),
                &resources_patch(&sized),
            )
            .await?;
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            format!(
                "{}: resources from current usage (the run observes {} s): {}",
                ctx.target.object_ref(),
                p.window_seconds,
                serde_json::to_string(&sized).unwrap_or_default()
            ),
            &before,
            &after,
        ))
        .with_warnings(vec![
            "requests may go down: the pods are replaced with the new sizes".into(),
        ]))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let (kind, before, sized, peaks) = Self::measure(ctx, &p, p.samples).await?;
        ctx.reporter.rollback_data(json!({
            "kind": kind.kind(),
            "name": ctx.target.name,
            "template": before.pointer("/spec/template"),
        }));
        let api = kind.api(&ctx.client, &ctx.target.namespace);
        let (params, patch) = (executor_patch(false), resources_patch(&sized));
        ctx.retry(
            &format!("set the resources of {}", ctx.target.object_ref()),
            || api.patch(&ctx.target.name, &params, &patch),
        )
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "resources set from the peaks seen: {}",
            serde_json::to_string(&sized).unwrap_or_default()
        )));
        let done = workload::follow(ctx, kind, &ctx.target.name, workload::updated_pods).await?;
        let observed: BTreeMap<&String, Value> = peaks
            .iter()
            .map(|(name, (cpu, memory))| {
                (
                    name,
                    json!({"cpu": millicores(*cpu), "memory": mebibytes(*memory)}),
                )
            })
            .collect();
        Ok(Outcome {
            message: format!(
                "{}: resources set from usage ({})",
                ctx.target.object_ref(),
                done.message
            ),
            result: json!({ "observed_peaks": observed, "resources": sized }),
        })
    }
}
