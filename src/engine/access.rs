//! Who may do what: the checks the engine applies with the authorization rules in force
//! ([`super::authz`]) before it runs, approves, shows or cancels an execution.

use super::{
    admission::requester_of, authz::Permission, execution::Execution, Engine, EngineError,
};
use crate::domain::{ExecutionRequest, ExecutionView, Target};

impl Engine {
    /// Refuses a run or dry run that the requester may not do on the resolved target.
    pub(super) fn authorize_run(
        &self,
        request: &ExecutionRequest,
        action: &str,
        target: &Target,
    ) -> Result<(), EngineError> {
        match self.authorizer() {
            Some(authz) => authz.check(&requester_of(request), Permission::Run, action, target),
            None => Ok(()),
        }
    }

    /// Refuses an approval or rejection by someone who may not approve that execution.
    pub(super) fn authorize_approval(
        &self,
        approver: &str,
        execution: &Execution,
    ) -> Result<(), EngineError> {
        match self.authorizer() {
            Some(authz) => authz.check(
                approver,
                Permission::Approve,
                &execution.action,
                &execution.target,
            ),
            None => Ok(()),
        }
    }

    /// Refuses `caller` an execution they neither requested nor may run or approve.
    pub(super) fn authorize_read(
        &self,
        caller: &str,
        view: &ExecutionView,
    ) -> Result<(), EngineError> {
        match self.authorizer() {
            Some(authz) if view.requester != caller => {
                authz.check(caller, Permission::Read, &view.action, &view.target)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn may_read(&self, caller: &str, view: &ExecutionView) -> bool {
        self.authorize_read(caller, view).is_ok()
    }
}
