//! Shadow mode (`serve --shadow`): an Execute goes through all of admission — validation,
//! authorization, the plan checked by the API server's dry run, the policy — and is recorded
//! with its full diff, then ends SHADOWED at once. It takes no place in the queue, no lock and
//! no cooldown, and nothing reaches the cluster: what the automation *would* have done, for
//! people deciding whether to trust it.

use serde_json::json;

use super::{admission::Validated, Engine, EngineError};
use crate::{
    actions::Plan,
    domain::{ExecutionRequest, ExecutionState, ExecutionView},
    policy::Decision,
};

impl Engine {
    /// Records the shadow run of an admitted request and returns it, ended.
    pub(super) async fn shadow(
        &self,
        request: &ExecutionRequest,
        v: &Validated,
        requester: String,
        decision: &Decision,
        plan: &Plan,
        fingerprint: &str,
    ) -> Result<ExecutionView, EngineError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (mut execution, _) = self.new_execution(id, request, v, requester, decision, plan);
        let diff = plan.to_json();
        let approval = if decision.require_approval {
            "; it would have waited for an approval first"
        } else {
            ""
        };
        execution.update(|p| {
            p.result = json!({
                "shadow": true,
                "plan": diff,
                "would_require_approval": decision.require_approval,
            });
        });
        execution.record(
            ExecutionState::Shadowed,
            format!(
                "shadow mode: nothing was changed; the plan: {}{approval}",
                plan.summary
            ),
            None,
            json!({ "plan": diff }),
        );
        if let Some(existing) = self
            .insert_new(&execution, &request.request_id, fingerprint)
            .await?
        {
            return Ok(existing);
        }
        execution.persister = self.inner.persister.clone();
        let execution = self.remember(execution, fingerprint);
        let view = execution.view();
        self.retire(execution).await;
        Ok(view)
    }
}
