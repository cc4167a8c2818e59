//! `collect_diagnostics`: for a pod or a workload's pods, the status, container states and
//! restarts, the last log lines and the events about them, stored on the execution as a
//! structured artifact and summarized in events. Reads only; never reads Secrets and never
//! copies environment values out of pod specs.

use async_trait::async_trait;
use k8s_openapi::{
    api::core::v1::{ContainerStatus, Event as KubeEvent, Pod},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    api::{ListParams, LogParams},
    Api, ResourceExt,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    workload, Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};
use crate::cluster::{selector_string, WorkloadKind};

#[derive(Debug, Deserialize)]
struct Params {
    tail_lines: i64,
    max_pods: i64,
}

/// What `collect_diagnostics` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // A pod target is read; a workload's pods are listed by its selector.
    Access::new("", &["pods"], &["get", "list"]),
    // The last log lines of each container.
    Access::new("", &["pods/log"], &["get"]),
    // The namespace's events, matched to the pods and the target.
    Access::new("", &["events"], &["list"]),
    // A workload target is read for its selector.
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get"],
    ),
];

pub struct CollectDiagnostics {
    spec: ActionSpec,
}

impl CollectDiagnostics {
    pub fn new() -> Self {
        CollectDiagnostics {
            spec: ActionSpec {
                name: "collect_diagnostics",
                description: "Collect status, container states, restarts, recent logs and events of a pod or of \
                              a workload's pods; changes nothing.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Pod", "Deployment", "StatefulSet", "DaemonSet"],
                params: vec![
                    ParamSpec::new("tail_lines", ParamType::Integer, "Log lines per container.")
                        .bounds(1, 1000)
                        .default(50),
                    ParamSpec::new("max_pods", ParamType::Integer, "Pods of a workload to examine.")
                        .bounds(1, 20)
                        .default(5),
                ],
            },
        }
    }
}

fn container_state(s: &ContainerStatus) -> Value {
    let state = s.state.as_ref();
    let current = if let Some(w) = state.and_then(|st| st.waiting.as_ref()) {
        json!({ "waiting": { "reason": w.reason, "message": w.message } })
    } else if let Some(t) = state.and_then(|st| st.terminated.as_ref()) {
        json!({ "terminated": { "reason": t.reason, "exit_code": t.exit_code } })
    } else if let Some(r) = state.and_then(|st| st.running.as_ref()) {
        json!({ "running": { "started_at": r.started_at.as_ref().map(|t| t.0.to_string()) } })
    } else {
        Value::Null
    };
    let last = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(|t| {
        json!({ "terminated": { "reason": t.reason, "exit_code": t.exit_code, "finished_at": t.finished_at.as_ref().map(|f| f.0.to_string()) } })
    });
    json!({
        "name": s.name,
        "image": s.image,
        "ready": s.ready,
        "restart_count": s.restart_count,
        "state": current,
        "last_state": last,
    })
}

fn events_about(events: &[KubeEvent], kind: &str, name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
        .map(|e| {
            json!({
                "type": e.type_,
                "reason": e.reason,
                "message": e.message,
                "count": e.count,
                "last_seen": e.last_timestamp.as_ref().map(|t| t.0.to_string()),
            })
        })
        .collect()
}

impl CollectDiagnostics {
    /// The pods to examine, and the workload's own events when the target is a workload.
    async fn pods(&self, ctx: &ActionContext, max: usize) -> Result<Vec<Pod>, ActionError> {
        let Some(kind) = WorkloadKind::from_kind(&ctx.target.kind) else {
            return Ok(vec![ctx.get_target::<Pod>().await?]);
        };
        let workload = workload::get(ctx, kind, &ctx.target.name).await?;
        let selector: LabelSelector = workload
            .data
            .pointer("/spec/selector")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let mut pods = ctx
            .pods()
            .list(&ListParams::default().labels(&selector_string(&selector)))
            .await?
            .items;
        // The unhealthy ones first: they are what an operator wants to see.
        pods.sort_by_key(|p| {
            let restarts: i32 = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| cs.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (ready, -restarts, p.name_any())
        });
        pods.truncate(max);
        Ok(pods)
    }
}

#[async_trait]
impl Remediation for CollectDiagnostics {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let pods = self.pods(ctx, p.max_pods as usize).await?;
        Ok(Plan {
            summary: format!(
                "{}: read status, logs ({} lines) and events of {} pod(s); nothing changes",
                ctx.target.object_ref(),
                p.tail_lines,
                pods.len()
            ),
            ..Default::default()
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let pods = self.pods(ctx, p.max_pods as usize).await?;
        let events: Vec<KubeEvent> =
            Api::<KubeEvent>::namespaced(ctx.client.clone(), &ctx.target.namespace)
                .list(&ListParams::default())
                .await?
                .items;
        let total = pods.len() as u64;
        let mut collected = Vec::new();
        let mut unhealthy = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let name = pod.name_any();
            let status = pod.status.clone().unwrap_or_default();
            let containers: Vec<Value> = status
                .container_statuses
                .iter()
                .flatten()
                .map(container_state)
                .collect();
            let restarts: i32 = status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| c.restart_count)
                .sum();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready || restarts > 0 {
                unhealthy.push(format!("{name} (ready: {ready}, restarts: {restarts})"));
            }
            let mut logs = serde_json::Map::new();
            for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                let params = LogParams {
                    container: Some(container.name.clone()),
                    tail_lines: Some(p.tail_lines),
                    ..Default::default()
                };
                let text = match ctx.pods().logs(&name, &params).await {
                    Ok(text) => Value::String(text),
                    Err(e) => Value::String(format!("(logs unavailable: {e})")),
                };
                logs.insert(container.name.clone(), text);
            }
            collected.push(json!({
                "name": name,
                "node": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                "phase": status.phase,
                "conditions": status.conditions.iter().flatten().map(|c| json!({"type": c.type_, "status": c.status, "reason": c.reason})).collect::<Vec<_>>(),
                "containers": containers,
                "restarts": restarts,
                "logs": logs,
                "events": events_about(&events, "Pod", &name),
            }));
            ctx.reporter.progress(
                Update::new(format!(
                    "collected pod {name}: ready {ready}, {restarts} restarts"
                ))
                .progress(i as u64 + 1, total),
            );
        }
        let summary = if unhealthy.is_empty() {
            format!("{} pod(s) examined, all ready without restarts", pods.len())
        } else {
            format!(
                "{} pod(s) examined; unhealthy: {}",
                pods.len(),
                unhealthy.join(", ")
            )
        };
        let artifact = json!({
            "target": ctx.target.object_ref(),
            "summary": summary,
            "pods": collected,
            "events": events_about(&events, &ctx.target.kind, &ctx.target.name),
        });
        Ok(Outcome {
            message: summary,
            result: json!({ "diagnostics": artifact }),
        })
    }
}
