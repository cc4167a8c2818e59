//! `uncordon_node`: `kubectl uncordon` — makes a node schedulable again with kubectl's
//! strategic merge patch (`{"spec":{"unschedulable":null}}`). Idempotent.

use async_trait::async_trait;
use serde_json::json;

use super::{
    cordon_node::{get_node, nodes},
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, Plan, Remediation, Risk,
    Update,
};
use crate::cluster::nodes::{is_cordoned, set_unschedulable};

/// What `uncordon_node` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The node is read and uncordoned (the plan as a dry run). The engine lists the nodes for the
    // policy's facts about a Node target.
    Access::new("", &["nodes"], &["get", "list", "patch"]),
];

pub struct UncordonNode {
    spec: ActionSpec,
}

impl UncordonNode {
    pub fn new() -> Self {
        UncordonNode {
            spec: ActionSpec {
                name: "uncordon_node",
                description: "Mark a node schedulable again (kubectl uncordon).",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Node"],
                params: vec![],
            },
        }
    }
}

#[async_trait]
impl Remediation for UncordonNode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let before = get_node(ctx).await?;
        let name = &ctx.target.name;
        if !is_cordoned(&before) {
            return Ok(Plan {
                summary: format!("node {name} is already schedulable: nothing to do"),
                ..Default::default()
            });
        }
        let after = set_unschedulable(&nodes(ctx), name, false, true).await?;
        let summary = format!("node {name}: uncordon (spec.unschedulable removed)");
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
        if !was {
            return Ok(Outcome {
                message: format!("node {name} already uncordoned"),
                result: json!({ "node": name, "unschedulable": false, "changed": false }),
            });
        }
        set_unschedulable(&nodes(ctx), name, false, false).await?;
        ctx.reporter
            .progress(Update::new(format!("node {name} uncordoned")).progress(1, 1));
        Ok(Outcome {
            message: format!("node {name} uncordoned"),
            result: json!({ "node": name, "unschedulable": false, "changed": true }),
        })
    }
}
