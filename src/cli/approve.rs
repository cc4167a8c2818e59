//! `executor-service approve ID [--reason TEXT]`: lets an execution WAITING_APPROVAL run.

use std::process::ExitCode;

use super::{connect, emit, execution_line, missing, CliError, ServerArgs};
use crate::api::proto;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The execution's id.
    pub id: String,
    /// Who answers; ignored by a server that authenticates callers (the token's identity
    /// is the approver there). Must differ from the requester.
    #[arg(long, env = "USER", default_value = "")]
    pub approver: String,
    /// Why, recorded with the approval.
    #[arg(long, default_value = "")]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: ApproveArgs) -> Result<ExitCode, CliError> {
    decide(args, true).await
}

/// Approves or rejects, and prints the execution as it stands after the answer.
pub(super) async fn decide(args: ApproveArgs, approve: bool) -> Result<ExitCode, CliError> {
    let mut client = connect(&args.server).await?;
    let execution = if approve {
        client
            .approve_execution(proto::ApproveExecutionRequest {
                execution_id: args.id.clone(),
                approver: args.approver.clone(),
                reason: args.reason.clone(),
            })
            .await?
            .into_inner()
            .execution
    } else {
        client
            .reject_execution(proto::RejectExecutionRequest {
                execution_id: args.id.clone(),
                approver: args.approver.clone(),
                reason: args.reason.clone(),
            })
            .await?
            .into_inner()
            .execution
    }
    .ok_or_else(|| missing("execution"))?;
    emit(execution_line(&execution));
    Ok(ExitCode::SUCCESS)
}
