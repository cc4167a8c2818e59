//! `cordon_node`: `kubectl cordon` — marks a node unschedulable with kubectl's strategic merge
//! patch (`{"spec":{"unschedulable":true}}`). Idempotent, and it never cordons the last node
//! that still accepts pods: an incident fix must not leave the cluster unable to schedule.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::json;

use super::{
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, Plan, Remediation, Risk,
    Update,
};
use crate::cluster::nodes::{
    is_cordoned, is_schedulable, schedulable_nodes, scheduling_change_lock, set_unschedulable,
};

/// What `cordon_node` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The node is read and cordoned (the plan as a dry run); the nodes are listed so the last
    // schedulable one is never cordoned (and by the engine for the policy's facts).
    Access::new("", &["nodes"], &["get", "list", "patch"]),
];

pub struct CordonNode {
    spec: ActionSpec,
}

impl CordonNode {
    pub fn new() -> Self {
        CordonNode {
            spec: ActionSpec {
                name: "cordon_node",
                description: "Mark a node unschedulable so that no new pod lands on it (kubectl \
                              cordon); refused for the last schedulable node.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Node"],
                params: vec![],
            },
        }
    }
}

/// The Node API of the context's cluster (nodes are cluster-scoped: the target's namespace,
/// which resolution defaults to `default`, means nothing here).
pub(super) fn nodes(ctx: &ActionContext) -> Api<Node> {
    Api::all(ctx.client.clone())
}

/// The node the context targets.
///
/// # Errors
/// [`ActionError::NotFound`] naming the node.
pub(super) async fn get_node(ctx: &ActionContext) -> Result<Node, ActionError> {
    let api = nodes(ctx);
    let what = format!("node {}", ctx.target.name);
    ctx.retry(&format!("read {what}"), || api.get(&ctx.target.name))
        .await
        .map_err(|e| ActionError::from_kube(e, &what))
}

/// Refuses to take `node` out of scheduling when no other node would accept new pods.
/// `verb` names what the caller is about to do (`cordon`, `drain`).
///
/// # Errors
/// [`ActionError::Precondition`] naming the node.
pub(super) async fn ensure_not_last_schedulable(
    api: &Api<Node>,
    node: &Node,
    verb: &str,
) -> Result<(), ActionError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    if !is_schedulable(node) {
        return Ok(());
    }
    let others: Vec<String> = schedulable_nodes(api)
        .await?
        .into_iter()
        .filter(|n| *n != name)
        .collect();
    if others.is_empty() {
        return Err(ActionError::Precondition(format!(
            "refusing to {verb} node {name}: it is the last schedulable node (no other node is Ready and uncordoned, so new pods could not be scheduled anywhere)"
        )));
    }
    Ok(())
}

/// Cordons the node unless it is the last schedulable one; the check and the patch hold
/// [`scheduling_change_lock`] so that concurrent cordons cannot race past the check.
/// Returns the node after the patch.
///
/// # Errors
/// [`ActionError::Precondition`] for the last schedulable node; API errors.
pub(super) async fn cordon_checked(
    api: &Api<Node>,
    node: &Node,
    verb: &str,
    dry_run: bool,
) -> Result<Node, ActionError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let _serialized = scheduling_change_lock().await;
    // Re-read under the lock: the state seen before may be stale.
    let fresh = api
        .get(&name)
        .await
        .map_err(|e| ActionError::from_kube(e, &format!("node {name}")))?;
    ensure_not_last_schedulable(api, &fresh, verb).await?;
    Ok(set_unschedulable(api, &name, true, dry_run).await?)
}

#[async_trait]
impl Remediation for CordonNode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let before = get_node(ctx).await?;
        let name = &ctx.target.name;
        if is_cordoned(&before) {
            return Ok(Plan {
                summary: format!("node {name} is already cordoned: nothing to do"),
                ..Default::default()
            });
        }
        let api = nodes(ctx);
        ensure_not_last_schedulable(&api, &before, "cordon").await?;
        // Server-side dry run: the API server validates the patch and persists nothing.
        let after = set_unschedulable(&api, name, true, true).await?;
        let summary = format!("node {name}: cordon (spec.unschedulable → true)");
        Ok(Plan::single(Change::update(
            format!("node/{name}"),
            summary,
            &before,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let before = get_node(ctx).await?;
        let name = &ctx.target.name;
        let was = is_cordoned(&before);
        ctx.reporter.rollback_data(json!({
            "kind": "Node",
            "name": name,
            "unschedulable": was,
        }));
        if was {
            return Ok(Outcome {
                message: format!("node {name} already cordoned"),
                result: json!({ "node": name, "unschedulable": true, "changed": false }),
            });
        }
        cordon_checked(&nodes(ctx), &before, "cordon", false).await?;
        ctx.reporter
            .progress(Update::new(format!("node {name} cordoned")).progress(1, 1));
        Ok(Outcome {
            message: format!("node {name} cordoned"),
            result: json!({ "node": name, "unschedulable": true, "changed": true }),
        })
    }
}
