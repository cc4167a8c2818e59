//! `quarantine_pod`: isolate a pod for investigation without killing it. The pod gets the
//! quarantine label, and one NetworkPolicy per namespace selects every quarantined pod, denying
//! all ingress and all egress except DNS. Idempotent: a second run changes nothing.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

/// The label that marks a quarantined pod, and that the NetworkPolicy selects.
pub const QUARANTINE_LABEL: &str = "executor-service.io/quarantine";
/// The annotation holding why the pod was quarantined.
const REASON_ANNOTATION: &str = "executor-service.io/quarantine-reason";
/// The namespace's quarantine NetworkPolicy.
pub const POLICY_NAME: &str = "executor-service-quarantine";

#[derive(Debug, Deserialize)]
struct Params {
    reason: Option<String>,
}

/// What `quarantine_pod` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The pod is read and labelled (the plan as a dry run).
    Access::new("", &["pods"], &["get", "patch"]),
    // The namespace's quarantine NetworkPolicy is looked up and created when missing.
    Access::new(
        "networking.k8s.io",
        &["networkpolicies"],
        &["get", "create"],
    ),
];

pub struct QuarantinePod {
    spec: ActionSpec,
}

impl QuarantinePod {
    pub fn new() -> Self {
        QuarantinePod {
            spec: ActionSpec {
                name: "quarantine_pod",
                description: "Isolate a pod: label it and apply a NetworkPolicy denying its ingress and egress \
                              except DNS. The pod keeps running for investigation.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Pod"],
                params: vec![ParamSpec::new(
                    "reason",
                    ParamType::String,
                    "Why, recorded as an annotation on the pod.",
                )],
            },
        }
    }
}

/// The policy: ingress denied entirely, egress only to DNS.
fn quarantine_policy(namespace: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": POLICY_NAME,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": "executor-service" }
        },
        "spec": {
            "podSelector": { "matchLabels": { QUARANTINE_LABEL: "true" } },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{
                "to": [{ "namespaceSelector": {}, "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } } }],
                "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }]
            }]
        }
    }))
    .unwrap_or_default()
}

struct Quarantine {
    pod: Pod,
    labelled: bool,
    policy: Option<NetworkPolicy>,
}

impl QuarantinePod {
    async fn state(&self, ctx: &ActionContext) -> Result<Quarantine, ActionError> {
        let pod: Pod = ctx.get_target().await?;
        let labelled = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(QUARANTINE_LABEL))
            .map(String::as_str)
            == Some("true");
        let policies: Api<NetworkPolicy> =
            Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let policy = policies.get_opt(POLICY_NAME).await?;
        Ok(Quarantine {
            pod,
            labelled,
            policy,
        })
    }

    fn label_patch(reason: Option<&str>) -> Patch<Value> {
        let mut annotations = BTreeMap::new();
        if let Some(reason) = reason {
            annotations.insert(REASON_ANNOTATION, reason);
        }
        Patch::Merge(
            json!({ "metadata": { "labels": { QUARANTINE_LABEL: "true" }, "annotations": annotations } }),
        )
    }
}

#[async_trait]
impl Remediation for QuarantinePod {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let q = self.state(ctx).await?;
        let mut changes = Vec::new();
        if !q.labelled {
            let after = ctx
                .pods()
                .patch(
                    &ctx.target.name,
                    &PatchParams::default().dry_run(),
                    &Self::label_patch(p.reason.as_deref()),
                )
                .await?;
            changes.push(Change::update(
                ctx.target.object_ref(),
                format!("{}: label {QUARANTINE_LABEL}=true", ctx.target.object_ref()),
                &q.pod,
                &after,
            ));
        }
        if q.policy.is_none() {
            let policies: Api<NetworkPolicy> =
                Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
            let created = policies
                .create(
                    &PostParams {
                        dry_run: true,
                        ..Default::default()
                    },
                    &quarantine_policy(&ctx.target.namespace),
                )
                .await?;
            changes.push(Change::create(
                format!("{}/networkpolicy/{POLICY_NAME}", ctx.target.namespace),
                format!(
                    "{}/networkpolicy/{POLICY_NAME}: create (deny ingress, egress only DNS)",
                    ctx.target.namespace
                ),
                &created,
            ));
        }
        let summary = if changes.is_empty() {
            format!("{} is already quarantined", ctx.target.object_ref())
        } else {
            changes
                .iter()
                .map(|c| c.summary.clone())
                .collect::<Vec<_>>()
                .join("; ")
        };
        Ok(Plan {
            summary,
            changes,
            warnings: Vec::new(),
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let q = self.state(ctx).await?;
        ctx.reporter.rollback_data(json!({
            "kind": "Pod",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "labelled_before": q.labelled,
            "policy_existed": q.policy.is_some(),
        }));
        // The policy first: a labelled pod is isolated from the moment it is labelled.
        if q.policy.is_none() {
            let policies: Api<NetworkPolicy> =
                Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
            match policies
                .create(
                    &PostParams::default(),
                    &quarantine_policy(&ctx.target.namespace),
                )
                .await
            {
                Ok(_) => ctx.reporter.progress(Update::new(format!(
                    "created NetworkPolicy {}/{POLICY_NAME} (deny ingress, egress only DNS)",
                    ctx.target.namespace
                ))),
                // Created meanwhile by a quarantine of another pod: same policy.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !q.labelled {
            ctx.pods()
                .patch(
                    &ctx.target.name,
                    &PatchParams::default(),
                    &Self::label_patch(p.reason.as_deref()),
                )
                .await?;
            ctx.reporter.progress(Update::new(format!(
                "labelled {} {QUARANTINE_LABEL}=true",
                ctx.target.object_ref()
            )));
        }
        let changed = !q.labelled || q.policy.is_none();
        Ok(Outcome {
            message: if changed {
                format!("{} quarantined", ctx.target.object_ref())
            } else {
                format!("{} was already quarantined", ctx.target.object_ref())
            },
            result: json!({ "changed": changed, "network_policy": POLICY_NAME, "label": QUARANTINE_LABEL }),
        })
    }
}
