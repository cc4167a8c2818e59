//! The policy's say on a validated, planned request: the Rego decision with the facts about
//! the cluster it needs, and `require_approval`, which sends every mutating action to an
//! approval whatever the policy decides.

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use super::{admission::Validated, Engine, EngineError};
use crate::{actions::Plan, policy::Decision};

impl Engine {
    /// The facts about the cluster the policy needs: schedulable nodes, for node targets.
    async fn cluster_facts(&self, v: &Validated) -> Result<Value, EngineError> {
        if v.target.kind != "Node" {
            return Ok(json!({}));
        }
        // The same notion of "schedulable" the node actions use (Ready, not cordoned, not
        // being deleted), so policy and actions never disagree about the last node.
        let schedulable =
            crate::cluster::nodes::schedulable_nodes(&kube::Api::<Node>::all(v.client.clone()))
                .await
                .map_err(|e| EngineError::Unavailable(format!("listing nodes: {e}")))?;
        Ok(json!({
            "schedulable_nodes": schedulable.len(),
            "target_node_schedulable": schedulable.contains(&v.target.name),
        }))
    }

    /// The policy's decision on a validated, planned request; allow-all without a policy.
    pub(super) async fn decide(
        &self,
        v: &Validated,
        plan: &Plan,
        requester: &str,
    ) -> Result<Decision, EngineError> {
        let mut decision = self.policy_decision(v, plan, requester).await?;
        if self.inner.config.require_approval && !v.action.read_only() && !decision.require_approval
        {
            decision.require_approval = true;
            decision
                .reasons
                .push("every mutating action needs an approval (require_approval)".into());
        }
        Ok(decision)
    }

    async fn policy_decision(
        &self,
        v: &Validated,
        plan: &Plan,
        requester: &str,
    ) -> Result<Decision, EngineError> {
        let Some(policy) = self.policy() else {
            return Ok(Decision {
                allow: true,
                require_approval: false,
                reasons: Vec::new(),
            });
        };
        let spec = v.action.spec();
        let input = json!({
            "action": spec.name,
            "risk": spec.risk,
            "read_only": v.action.read_only(),
            "target": v.target,
            "parameters": v.parameters,
            "requester": requester,
            "changes": plan.changes.iter().map(|c| json!({
                "object": c.object, "summary": c.summary, "before": c.before, "after": c.after,
            })).collect::<Vec<_>>(),
            "cluster": self.cluster_facts(v).await?,
        });
        policy
            .evaluate(&input)
            .map_err(|e| EngineError::Internal(e.to_string()))
    }
}
