//! `executor-service cancel ID [--reason TEXT]`: stops a queued or running execution.

use std::process::ExitCode;

use super::{connect, emit, execution_line, missing, CliError, ServerArgs};
use crate::api::proto;

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The execution's id.
    pub id: String,
    /// Why, recorded in the execution's final message.
    #[arg(long, default_value = "")]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: CancelArgs) -> Result<ExitCode, CliError> {
    let mut client = connect(&args.server).await?;
    let execution = client
        .cancel_execution(proto::CancelExecutionRequest {
            execution_id: args.id.clone(),
            reason: args.reason.clone(),
        })
        .await?
        .into_inner()
        .execution
        .ok_or_else(|| missing("execution"))?;
    emit(execution_line(&execution));
    Ok(ExitCode::SUCCESS)
}
