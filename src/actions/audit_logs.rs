//! `audit_logs`: for a security incident, an audit report of a namespace (or of one workload
//! or pod in it) over a time window, read from the API server alone: who changed which object
//! and when (each object's `managedFields`: manager, operation, time), the events, and the
//! pods with their restarts and last log lines. Reads only; never reads Secrets, and copies no
//! object's data or environment, only names, managers and times.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Event as KubeEvent, Pod, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry,
};
use kube::{
    api::{ListParams, LogParams},
    Api, ResourceExt,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};
use crate::cluster::WorkloadKind;

#[derive(Debug, Deserialize)]
struct Params {
    since_minutes: i64,
    tail_lines: i64,
    max_pods: i64,
}

/// What `audit_logs` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // Who wrote these (their managedFields) and the pods' state, never the objects' data in the
    // report.
    Access::new(
        "",
        &["pods", "configmaps", "services", "serviceaccounts"],
        &["list"],
    ),
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["list"],
    ),
    Access::new("networking.k8s.io", &["networkpolicies"], &["list"]),
    // The namespace's events.
    Access::new("", &["events"], &["list"]),
    // The pods' last log lines.
    Access::new("", &["pods/log"], &["get"]),
];

pub struct AuditLogs {
    spec: ActionSpec,
}

impl AuditLogs {
    pub fn new() -> Self {
        AuditLogs {
            spec: ActionSpec {
                name: "audit_logs",
                description: "An audit report over a time window (security incident): who changed which object and \
                              when (managed fields), the events, the pods with restarts and last log lines, for a \
                              namespace or one workload or pod; reads only, never Secrets or data.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Namespace", "Deployment", "StatefulSet", "DaemonSet", "Pod"],
                params: vec![
                    ParamSpec::new("since_minutes", ParamType::Integer, "The window: the last N minutes.")
                        .bounds(1, 10_080)
                        .default(60),
                    ParamSpec::new("tail_lines", ParamType::Integer, "Log lines per container; 0 = no logs.")
                        .bounds(0, 500)
                        .default(20),
                    ParamSpec::new("max_pods", ParamType::Integer, "Pods reported at most (restarted ones first).")
                        .bounds(1, 50)
                        .default(10),
                ],
            },
        }
    }
}

/// The namespace reported on, and the one object the report is limited to (`None` for a
/// whole namespace).
fn scope(ctx: &ActionContext) -> (String, Option<(String, String)>) {
    if ctx.target.kind == "Namespace" {
        (ctx.target.name.clone(), None)
    } else {
        (
            ctx.target.namespace.clone(),
            Some((ctx.target.kind.clone(), ctx.target.name.clone())),
        )
    }
}

/// The writes `managedFields` records since `since`.
fn writes(
    kind: &str,
    namespace: &str,
    name: &str,
    fields: Option<&Vec<ManagedFieldsEntry>>,
    since: DateTime<Utc>,
) -> Vec<Value> {
    fields
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let time = instant(&f.time.as_ref()?.0)?;
            (time >= since).then(|| {
                json!({
                    "time": time,
                    "object": format!("{namespace}/{}/{name}", kind.to_lowercase()),
                    "manager": f.manager,
                    "operation": f.operation,
                    "subresource": f.subresource,
                })
            })
        })
        .collect()
}

/// The API's timestamp as chrono's.
fn instant(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

impl AuditLogs {
    /// Every recorded write since `since` to the objects in scope, oldest first.
    async fn changes(
        ctx: &ActionContext,
        namespace: &str,
        only: Option<&(String, String)>,
        since: DateTime<Utc>,
    ) -> Result<Vec<Value>, ActionError> {
        let wanted = |kind: &str, name: &str| only.is_none_or(|(k, n)| k == kind && n == name);
        let all = ListParams::default();
        let mut found = Vec::new();
        for kind in [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
        ] {
            let api = kind.api(&ctx.client, namespace);
            for o in ctx.retry("list workloads", || api.list(&all)).await?.items {
                let name = o.name_any();
                if wanted(kind.kind(), &name) {
                    found.extend(writes(
                        kind.kind(),
                        namespace,
                        &name,
                        o.metadata.managed_fields.as_ref(),
                        since,
                    ));
                }
            }
        }
        macro_rules! typed {
            ($type:ty, $kind:literal) => {
                let api: Api<$type> = Api::namespaced(ctx.client.clone(), namespace);
                for o in ctx
                    .retry(concat!("list ", $kind), || api.list(&all))
                    .await?
                    .items
                {
                    let name = o.name_any();
                    if wanted($kind, &name) {
                        found.extend(writes(
                            $kind,
                            namespace,
                            &name,
                            o.metadata.managed_fields.as_ref(),
                            since,
                        ));
                    }
                }
            };
        }
        typed!(Pod, "Pod");
        typed!(ConfigMap, "ConfigMap");
        typed!(Service, "Service");
        typed!(ServiceAccount, "ServiceAccount");
        typed!(NetworkPolicy, "NetworkPolicy");
        found.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
        Ok(found)
    }
}

#[async_trait]
impl Remediation for AuditLogs {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let (namespace, only) = scope(ctx);
        Ok(Plan {
            summary: format!(
                "audit {} over the last {} minute(s): writes, events, pods; nothing changes",
                only.map_or(format!("namespace {namespace}"), |(kind, name)| format!(
                    "{namespace}/{}/{name}",
                    kind.to_lowercase()
                )),
                p.since_minutes
            ),
            ..Default::default()
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let (namespace, only) = scope(ctx);
        let until = Utc::now();
        let since = until - Duration::minutes(p.since_minutes);
        let changes = Self::changes(ctx, &namespace, only.as_ref(), since).await?;
        ctx.reporter.progress(Update::new(format!(
            "{} write(s) to objects in {namespace} since {since}",
            changes.len()
        )));
        let events_api: Api<KubeEvent> = Api::namespaced(ctx.client.clone(), &namespace);
        let all = ListParams::default();
        let mut events: Vec<Value> = ctx
            .retry("list events", || events_api.list(&all))
            .await?
            .items
            .into_iter()
            .filter_map(|e| {
                let time = e
                    .last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or_else(|| e.event_time.as_ref().map(|t| t.0))
                    .as_ref()
                    .and_then(instant)?;
                let kind = e.involved_object.kind.clone().unwrap_or_default();
                let name = e.involved_object.name.clone().unwrap_or_default();
                let in_scope = only.as_ref().is_none_or(|(k, n)| {
                    (k == &kind && n == &name) || name.starts_with(&format!("{n}-"))
                });
                (time >= since && in_scope).then(|| {
                    json!({
                        "time": time,
                        "type": e.type_,
                        "reason": e.reason,
                        "object": format!("{}/{name}", kind.to_lowercase()),
                        "message": e.message,
                        "count": e.count,
                    })
                })
            })
            .collect();
        events.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
        let warnings = events.iter().filter(|e| e["type"] == "Warning").count();
        let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let mut pods: Vec<Pod> = ctx
            .retry("list pods", || pods_api.list(&all))
            .await?
            .items
            .into_iter()
            .filter(|pod| match &only {
                None => true,
                Some((kind, name)) if kind == "Pod" => &pod.name_any() == name,
                Some((_, name)) => pod.name_any().starts_with(&format!("{name}-")),
            })
            .collect();
        pods.sort_by_key(|pod| (-restarts(pod), pod.name_any()));
        pods.truncate(p.max_pods as usize);
        let mut reported = Vec::new();
        for pod in &pods {
            let name = pod.name_any();
            let mut logs = serde_json::Map::new();
            if p.tail_lines > 0 {
                for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                    let params = LogParams {
                        container: Some(container.name.clone()),
                        tail_lines: Some(p.tail_lines),
                        ..Default::default()
                    };
                    let text = match pods_api.logs(&name, &params).await {
                        Ok(text) => text,
                        Err(e) => format!("(logs unavailable: {e})"),
                    };
                    logs.insert(container.name.clone(), Value::String(text));
                }
            }
            reported.push(json!({
                "name": name,
                "node": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                "phase": pod.status.as_ref().and_then(|s| s.phase.clone()),
                "restarts": restarts(pod),
                "logs": logs,
            }));
        }
        let managers: std::collections::BTreeSet<&str> = changes
            .iter()
            .filter_map(|c| c["manager"].as_str())
            .collect();
        let summary = format!(
            "{} write(s) by {} manager(s) ({}), {} event(s) ({warnings} warning), {} pod(s)",
            changes.len(),
            managers.len(),
            managers.iter().copied().collect::<Vec<_>>().join(", "),
            events.len(),
            reported.len()
        );
        Ok(Outcome {
            message: summary.clone(),
            result: json!({ "audit": {
                "scope": only.as_ref().map_or(namespace.clone(), |(k, n)| format!("{namespace}/{}/{n}", k.to_lowercase())),
                "since": since,
                "until": until,
                "summary": summary,
                "changes": changes,
                "events": events,
                "pods": reported,
            }}),
        })
    }
}
