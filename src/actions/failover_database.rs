//! `failover_database`: the primary of a replicated database failed. For a StatefulSet whose
//! pods carry a role label (`role=primary` / `role=replica`, the convention of Patroni,
//! Spilo and most operators), a healthy replica is promoted: the old primary (if any) is
//! labelled a replica first, then the new one the primary, so the Service that selects
//! `role=primary` moves its endpoints to it. Verified before (the replica is Ready, the Service
//! exists) and after (the Service selects exactly the new primary, and it is Ready); a failed
//! check puts the labels back. The promotion inside the database is left to what watches the
//! label (the operator or the pod's own agent), as those conventions do.

use async_trait::async_trait;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Service},
};
use kube::{
    api::{ListParams, Patch},
    Api, ResourceExt,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    executor_patch, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::{selector_string, RolloutError};

#[derive(Debug, Deserialize)]
struct Params {
    role_label: String,
    primary_value: String,
    replica_value: String,
    #[serde(default)]
    to_pod: Option<String>,
    #[serde(default)]
    service: Option<String>,
}

/// What `failover_database` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The StatefulSet is read for its selector.
    Access::new("apps", &["statefulsets"], &["get"]),
    // Its pods are listed and relabelled (the plan as a dry run, the rollback too).
    Access::new("", &["pods"], &["list", "patch"]),
    // The Service selecting the primary is read by name or found among the namespace's.
    Access::new("", &["services"], &["get", "list"]),
];

pub struct FailoverDatabase {
    spec: ActionSpec,
}

impl FailoverDatabase {
    pub fn new() -> Self {
        FailoverDatabase {
            spec: ActionSpec {
                name: "failover_database",
                description: "Promote a healthy replica of a StatefulSet database: the role label moved from the old \
                              primary to it, so the Service selecting the primary follows; verified before and after, \
                              labels restored when the check fails.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["StatefulSet"],
                params: vec![
                    ParamSpec::new("role_label", ParamType::String, "The label that tells primary from replica.")
                        .default("role"),
                    ParamSpec::new("primary_value", ParamType::String, "Its value on the primary.").default("primary"),
                    ParamSpec::new("replica_value", ParamType::String, "Its value on a replica.").default("replica"),
                    ParamSpec::new("to_pod", ParamType::String, "The replica to promote; absent = the first Ready one by ordinal."),
                    ParamSpec::new(
                        "service",
                        ParamType::String,
                        "The Service that routes to the primary; absent = the one whose selector has role_label=primary_value.",
                    ),
                ],
            },
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn ordinal(pod: &Pod) -> i64 {
    pod.name_any()
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(i64::MAX)
}

fn label_value(field: &str, text: &str) -> Result<(), ActionError> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ActionError::invalid(
            field,
            format!("{text:?} is not a label value"),
        ))
    }
}

/// What a failover would do: from which pod to which, through which Service.
struct Move {
    from: Option<Pod>,
    to: Pod,
    service: Service,
}

impl FailoverDatabase {
    async fn find(ctx: &ActionContext, p: &Params) -> Result<Move, ActionError> {
        let sts: StatefulSet = ctx.get_target().await?;
        let selector = sts
            .spec
            .as_ref()
            .map(|s| selector_string(&s.selector))
            .unwrap_or_default();
        let pods = ctx.pods();
        let of_sts = ListParams::default().labels(&selector);
        let listed = ctx
            .retry("list the database's pods", || pods.list(&of_sts))
            .await?;
        let mut pods: Vec<Pod> = listed.items;
        pods.sort_by_key(ordinal);
        let role = |pod: &Pod| pod.labels().get(&p.role_label).cloned().unwrap_or_default();
        let from = pods
            .iter()
            .find(|pod| role(pod) == p.primary_value)
            .cloned();
        let to = match &p.to_pod {
            Some(name) => {
                let pod = pods
                    .iter()
                    .find(|pod| &pod.name_any() == name)
                    .ok_or_else(|| {
                        ActionError::invalid(
                            "to_pod",
                            format!("{name:?} is not a pod of {}", ctx.target.object_ref()),
                        )
                    })?;
                if role(pod) == p.primary_value {
                    return Err(ActionError::invalid(
                        "to_pod",
                        format!("{name} is already the primary"),
                    ));
                }
                if !is_ready(pod) {
                    return Err(ActionError::Precondition(format!(
                        "{name} is not Ready: a failover needs a healthy replica"
                    )));
                }
                pod.clone()
            }
            None => pods
                .iter()
                .find(|pod| role(pod) == p.replica_value && is_ready(pod))
                .cloned()
                .ok_or_else(|| {
                    ActionError::Precondition(format!(
                        "no Ready pod of {} is labelled {}={}: nothing to promote",
                        ctx.target.object_ref(),
                        p.role_label,
                        p.replica_value
                    ))
                })?,
        };
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let all = ListParams::default();
        let service = match &p.service {
            Some(name) => ctx
                .retry(&format!("read service {name}"), || services.get_opt(name))
                .await?
                .ok_or_else(|| {
                    ActionError::invalid("service", format!("service {name} not found"))
                })?,
            None => ctx
                .retry("list services", || services.list(&all))
                .await?
                .items
                .into_iter()
                .find(|s| {
                    s.spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|sel| sel.get(&p.role_label) == Some(&p.primary_value))
                })
                .ok_or_else(|| {
                    ActionError::Precondition(format!(
                        "no Service in {} selects {}={}: name it with service",
                        ctx.target.namespace, p.role_label, p.primary_value
                    ))
                })?,
        };
        Ok(Move { from, to, service })
    }

    async fn label(
        ctx: &ActionContext,
        pod: &str,
        key: &str,
        value: &str,
        dry_run: bool,
    ) -> Result<Pod, ActionError> {
        let pods = ctx.pods();
        let patch = Patch::Merge(json!({ "metadata": { "labels": { key: value } } }));
        let params = executor_patch(dry_run);
        Ok(ctx
            .retry(&format!("label pod {pod} {key}={value}"), || {
                pods.patch(pod, &params, &patch)
            })
            .await?)
    }

    /// The pods the Service selects now.
    async fn selected(ctx: &ActionContext, service: &Service) -> Result<Vec<Pod>, ActionError> {
        let selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let pods = ctx.pods();
        let selected = ListParams::default().labels(&selector);
        Ok(ctx
            .retry("list the Service's pods", || pods.list(&selected))
            .await?
            .items)
    }
}

#[async_trait]
impl Remediation for FailoverDatabase {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        for field in ["primary_value", "replica_value"] {
            if let Some(text) = params.get(field).and_then(Value::as_str) {
                label_value(field, text)?;
            }
        }
        for field in ["service", "to_pod"] {
            if let Some(name) = params.get(field).and_then(Value::as_str) {
                super::check_object_name(field, name)?;
            }
        }
        if params.get("primary_value") == params.get("replica_value") {
            return Err(ActionError::invalid(
                "replica_value",
                "must differ from primary_value",
            ));
        }
        Ok(())
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let m = Self::find(ctx, &p).await?;
        let mut changes = Vec::new();
        let mut warnings = Vec::new();
        if let Some(from) = &m.from {
            let after =
                Self::label(ctx, &from.name_any(), &p.role_label, &p.replica_value, true).await?;
            changes.push(Change::update(
                format!("{}/pod/{}", ctx.target.namespace, from.name_any()),
                format!("demote {} to {}", from.name_any(), p.replica_value),
                from,
                &after,
            ));
            if is_ready(from) {
                warnings.push(format!(
                    "the primary {} is Ready: this is a switchover, not a failover",
                    from.name_any()
                ));
            }
        } else {
            warnings.push(format!(
                "no pod is labelled {}={} now",
                p.role_label, p.primary_value
            ));
        }
        let after =
            Self::label(ctx, &m.to.name_any(), &p.role_label, &p.primary_value, true).await?;
        changes.push(Change::update(
            format!("{}/pod/{}", ctx.target.namespace, m.to.name_any()),
            format!("promote {} to {}", m.to.name_any(), p.primary_value),
            &m.to,
            &after,
        ));
        Ok(Plan {
            summary: format!(
                "{}: primary {} → {}; service {} follows",
                ctx.target.object_ref(),
                m.from.as_ref().map_or("(none)".into(), |f| f.name_any()),
                m.to.name_any(),
                m.service.name_any()
            ),
            changes,
            warnings,
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let m = Self::find(ctx, &p).await?;
        let (from, to) = (m.from.as_ref().map(|f| f.name_any()), m.to.name_any());
        ctx.reporter.rollback_data(json!({
            "role_label": p.role_label,
            "primary": from,
            "primary_value": p.primary_value,
            "promoted": to,
            "promoted_was": m.to.labels().get(&p.role_label),
        }));
        ctx.reporter.progress(Update::new(format!(
            "verified: {to} is Ready; service {} routes to the primary",
            m.service.name_any()
        )));
        if let Some(from) = &from {
            Self::label(ctx, from, &p.role_label, &p.replica_value, false).await?;
            ctx.reporter.progress(Update::new(format!(
                "{from} demoted to {}",
                p.replica_value
            )));
        }
        Self::label(ctx, &to, &p.role_label, &p.primary_value, false).await?;
        ctx.reporter
            .progress(Update::new(format!("{to} promoted to {}", p.primary_value)));
        // The check: the Service now selects exactly the new primary, and it is Ready.
        let selected = Self::selected(ctx, &m.service).await?;
        let names: Vec<String> = selected.iter().map(|pod| pod.name_any()).collect();
        if names != [to.clone()] || !selected.iter().all(is_ready) {
            return Err(ActionError::Rollout(RolloutError::Failed(format!(
                "after the failover service {} selects {names:?}, not the Ready primary {to}",
                m.service.name_any()
            ))));
        }
        let ip = selected[0].status.as_ref().and_then(|s| s.pod_ip.clone());
        Ok(Outcome {
            message: format!(
                "{}: {to} is the primary (was {}); service {} → {to} ({})",
                ctx.target.object_ref(),
                from.clone().unwrap_or_else(|| "none".into()),
                m.service.name_any(),
                ip.clone().unwrap_or_default()
            ),
            result: json!({
                "from": from,
                "to": to,
                "service": m.service.name_any(),
                "endpoints": [ip],
            }),
        })
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        let key = data["role_label"].as_str().unwrap_or("role");
        let promoted = data["promoted"].as_str().unwrap_or_default();
        let was = data["promoted_was"].as_str();
        let pods = ctx.pods();
        let patch = Patch::Merge(json!({ "metadata": { "labels": { key: was } } }));
        let params = executor_patch(false);
        ctx.retry("restore the promoted pod's label", || {
            pods.patch(promoted, &params, &patch)
        })
        .await?;
        if let (Some(primary), Some(value)) =
            (data["primary"].as_str(), data["primary_value"].as_str())
        {
            Self::label(ctx, primary, key, value, false).await?;
        }
        Ok(Outcome {
            message: format!("labels restored: {} primary again", data["primary"]),
            result: json!({ "restored": true }),
        })
    }
}
