//! `migrate_workload`: move a workload's pods off a node or out of a zone (node pressure, a
//! zone failing). A required node-affinity term keeps the pod template away from the node
//! (`kubernetes.io/hostname NotIn [node]`) or zone (`topology.kubernetes.io/zone NotIn
//! [zone]`), added to every existing term (terms are alternatives, expressions within one
//! must all hold); the rollout this starts replaces the pods, and the scheduler places the new
//! ones elsewhere. Followed like `kubectl rollout status`, then checked: no pod of the
//! workload is left where it was. Undone by putting the recorded template back. Refused when
//! no schedulable node is left outside the node or zone.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, Patch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    executor_patch, workload, Access, ActionContext, ActionError, ActionSpec, Change, Outcome,
    ParamSpec, ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::{selector_string, WorkloadKind};

/// The node label naming the node.
const HOSTNAME: &str = "kubernetes.io/hostname";
/// The node label naming the zone.
const ZONE: &str = "topology.kubernetes.io/zone";

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    from_node: Option<String>,
    #[serde(default)]
    from_zone: Option<String>,
    wait_for_rollout: bool,
}

impl Params {
    /// The label and value the pods must leave.
    fn away_from(&self) -> (&'static str, &str) {
        match (&self.from_node, &self.from_zone) {
            (Some(node), _) => (HOSTNAME, node),
            (None, Some(zone)) => (ZONE, zone),
            (None, None) => (HOSTNAME, ""),
        }
    }
}

/// What `migrate_workload` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The nodes are listed to check where the workload may go.
    Access::new("", &["nodes"], &["list"]),
    // The workload's pods are listed to see where they run.
    Access::new("", &["pods"], &["list"]),
    // The workload is read and its affinity patched (the plan as a dry run); the rollout is
    // followed with a watch.
    Access::new(
        "apps",
        &["deployments", "statefulsets"],
        &["get", "list", "watch", "patch"],
    ),
];

pub struct MigrateWorkload {
    spec: ActionSpec,
}

impl MigrateWorkload {
    pub fn new() -> Self {
        MigrateWorkload {
            spec: ActionSpec {
                name: "migrate_workload",
                description: "Move a workload's pods off a node or out of a zone: a required node \
                              affinity keeps its pod template away, the rollout replaces the pods, \
                              and none is left there. Undone by restoring the template.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Deployment", "StatefulSet"],
                params: vec![
                    ParamSpec::new(
                        "from_node",
                        ParamType::String,
                        "Node to move the pods off (its kubernetes.io/hostname label); give this or from_zone.",
                    ),
                    ParamSpec::new(
                        "from_zone",
                        ParamType::String,
                        "Zone to move the pods out of (topology.kubernetes.io/zone); give this or from_node.",
                    ),
                    ParamSpec::new(
                        "wait_for_rollout",
                        ParamType::Boolean,
                        "Follow the rollout until every pod is replaced, then check none is left there.",
                    )
                    .default(true),
                ],
            },
        }
    }

    fn kind(ctx: &ActionContext) -> Result<WorkloadKind, ActionError> {
        WorkloadKind::from_kind(&ctx.target.kind)
            .filter(|k| matches!(k, WorkloadKind::Deployment | WorkloadKind::StatefulSet))
            .ok_or_else(|| ActionError::Internal(format!("{} cannot be migrated", ctx.target.kind)))
    }

    /// Refuses a migration with nowhere to go: a Ready, schedulable node outside the node or
    /// zone must exist. Returns how many there are.
    async fn destinations(
        ctx: &ActionContext,
        label: &str,
        value: &str,
    ) -> Result<usize, ActionError> {
        let nodes: kube::Api<Node> = kube::Api::all(ctx.client.clone());
        let schedulable = crate::cluster::nodes::schedulable_nodes(&nodes)
            .await
            .map_err(ActionError::Kube)?;
        let all = ListParams::default();
        let list = ctx.retry("list nodes", || nodes.list(&all)).await?;
        let known = list
            .items
            .iter()
            .any(|n| node_label(n, label) == Some(value));
        if !known {
            let field = if label == HOSTNAME {
                "from_node"
            } else {
                "from_zone"
            };
            return Err(ActionError::invalid(
                field,
                format!("no node has {label}={value}"),
            ));
        }
        let elsewhere = list
            .items
            .iter()
            .filter(|n| node_label(n, label) != Some(value))
            .filter(|n| {
                n.metadata
                    .name
                    .as_ref()
                    .is_some_and(|name| schedulable.contains(name))
            })
            .count();
        if elsewhere == 0 {
            return Err(ActionError::Precondition(format!(
                "no Ready, schedulable node outside {label}={value}: the pods would have nowhere to go"
            )));
        }
        Ok(elsewhere)
    }

    /// The workload's pods that are on the node or in the zone now: `namespace/name@node`.
    async fn left_there(
        ctx: &ActionContext,
        selector: &str,
        label: &str,
        value: &str,
    ) -> Result<Vec<String>, ActionError> {
        let nodes: kube::Api<Node> = kube::Api::all(ctx.client.clone());
        let all = ListParams::default();
        let there: Vec<String> = ctx
            .retry("list nodes", || nodes.list(&all))
            .await?
            .items
            .into_iter()
            .filter(|n| node_label(n, label) == Some(value))
            .filter_map(|n| n.metadata.name)
            .collect();
        let pods: kube::Api<Pod> = kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let params = ListParams::default().labels(selector);
        Ok(ctx
            .retry("list the workload's pods", || pods.list(&params))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                there
                    .contains(&node)
                    .then(|| format!("{}@{node}", p.metadata.name.unwrap_or_default()))
            })
            .collect())
    }
}

fn node_label<'a>(node: &'a Node, label: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label))
        .map(String::as_str)
}

/// The pod template's affinity with `label NotIn [value]` required in every node-selector
/// term (or in a new one), and whether it was already there.
fn keep_away(template_spec: &Value, label: &str, value: &str) -> (Value, bool) {
    let mut affinity = template_spec
        .get("affinity")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let expression = json!({ "key": label, "operator": "NotIn", "values": [value] });
    let terms = affinity
        .pointer_mut(
            "/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
        )
        .and_then(Value::as_array_mut);
    let mut present = true;
    match terms {
        Some(terms) if !terms.is_empty() => {
            for term in terms.iter_mut() {
                let expressions = term
                    .as_object_mut()
                    .map(|t| t.entry("matchExpressions").or_insert_with(|| json!([])));
                if let Some(Value::Array(list)) = expressions {
                    if !list.contains(&expression) {
                        list.push(expression.clone());
                        present = false;
                    }
                }
            }
        }
        _ => {
            present = false;
            let node_affinity = affinity
                .as_object_mut()
                .map(|a| a.entry("nodeAffinity").or_insert_with(|| json!({})));
            if let Some(Value::Object(node_affinity)) = node_affinity {
                node_affinity.insert(
                    "requiredDuringSchedulingIgnoredDuringExecution".into(),
                    json!({ "nodeSelectorTerms": [{ "matchExpressions": [expression] }] }),
                );
            }
        }
    }
    (affinity, present)
}

/// The merge patch setting the template's affinity.
fn affinity_patch(affinity: &Value) -> Patch<Value> {
    Patch::Merge(json!({ "spec": { "template": { "spec": { "affinity": affinity } } } }))
}

/// `app=web,tier=front` from the workload's selector.
fn selector_of(object: &Value) -> String {
    let selector: LabelSelector = object
        .pointer("/spec/selector")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    selector_string(&selector)
}

#[async_trait]
impl Remediation for MigrateWorkload {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        let given = |name: &str| {
            params
                .get(name)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        match (given("from_node"), given("from_zone")) {
            (true, true) => Err(ActionError::invalid(
                "from_zone",
                "give from_node or from_zone, not both",
            )),
            (false, false) => Err(ActionError::invalid("from_node", "required (or from_zone)")),
            _ => Ok(()),
        }
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        workload::restore_template(ctx, data).await
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let kind = Self::kind(ctx)?;
        let (label, value) = p.away_from();
        let before = workload::get(ctx, kind, &ctx.target.name).await?;
        let elsewhere = Self::destinations(ctx, label, value).await?;
        let template_spec = before
            .data
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(Value::Null);
        let (affinity, present) = keep_away(&template_spec, label, value);
        let after = kind
            .api(&ctx.client, &ctx.target.namespace)
            .patch(
                &ctx.target.name,
                &executor_patch(true),
                &affinity_patch(&affinity),
            )
            .await?;
        let there = Self::left_there(ctx, &selector_of(&before.data), label, value).await?;
        let summary = if present {
            format!(
                "{}: already kept away from {label}={value}",
                ctx.target.object_ref()
            )
        } else {
            format!(
                "{}: keep pods away from {label}={value} ({} there now, {elsewhere} node(s) to go to)",
                ctx.target.object_ref(),
                there.len()
            )
        };
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            summary,
            &before,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let kind = Self::kind(ctx)?;
        let (label, value) = p.away_from();
        let before = workload::get(ctx, kind, &ctx.target.name).await?;
        Self::destinations(ctx, label, value).await?;
        ctx.reporter.rollback_data(json!({
            "kind": kind.kind(),
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "template": before.data.pointer("/spec/template"),
        }));
        let template_spec = before
            .data
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(Value::Null);
        let (affinity, present) = keep_away(&template_spec, label, value);
        let selector = selector_of(&before.data);
        if !present {
            let api = kind.api(&ctx.client, &ctx.target.namespace);
            let (params, patch) = (executor_patch(false), affinity_patch(&affinity));
            ctx.retry(&format!("patch {}", ctx.target.object_ref()), || {
                api.patch(&ctx.target.name, &params, &patch)
            })
            .await?;
            ctx.reporter.progress(Update::new(format!(
                "{}: pods kept away from {label}={value}",
                ctx.target.object_ref()
            )));
        }
        if !p.wait_for_rollout {
            return Ok(Outcome {
                message: format!("{} kept away from {label}={value}", ctx.target.object_ref()),
                result: json!({ "away_from": { label: value } }),
            });
        }
        if !present {
            workload::follow(ctx, kind, &ctx.target.name, workload::updated_pods).await?;
        }
        let left = Self::left_there(ctx, &selector, label, value).await?;
        if !left.is_empty() {
            return Err(ActionError::Rollout(crate::cluster::RolloutError::Failed(
                format!(
                    "pods still on {label}={value} after the rollout: {}",
                    left.join(", ")
                ),
            )));
        }
        Ok(Outcome {
            message: format!(
                "{}: no pod left on {label}={value}",
                ctx.target.object_ref()
            ),
            result: json!({ "away_from": { label: value }, "already": present }),
        })
    }
}
