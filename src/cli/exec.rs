//! `executor-service exec ACTION [-n NS] [KIND/NAME] [--set k=v]… [--watch | --wait]`: runs an
//! action. Without `--watch` or `--wait` it prints the QUEUED execution and exits 0.

use std::process::ExitCode;

use super::{
    connect, emit, execution_line, exit_for_state, missing, state_name, watch, CliError,
    ServerArgs, TargetArgs,
};
use crate::api::proto;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The action (`executor-service actions` lists them).
    pub action: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Follow the execution live (events and a progress bar) until it ends; exit 0 only if it
    /// SUCCEEDED.
    #[arg(long)]
    pub watch: bool,
    /// Wait quietly until the execution ends; exit 0 only if it SUCCEEDED.
    #[arg(long)]
    pub wait: bool,
    /// The execution's timeout on the server (`60s`, `5m`; default: the server's).
    #[arg(long)]
    pub timeout: Option<humantime::Duration>,
    /// Leave the target as the failed execution left it, instead of restoring the recorded
    /// pre-state (the server's default).
    #[arg(long)]
    pub no_rollback: bool,
    /// The caller's idempotency key, recorded on the execution.
    #[arg(long, default_value = "")]
    pub request_id: String,
    /// Higher runs first among executions waiting for a worker (-1000 to 1000).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: ExecArgs) -> Result<ExitCode, CliError> {
    let mut client = connect(&args.server).await?;
    let timeout = args.timeout.map(|t| {
        let t: std::time::Duration = t.into();
        prost_types::Duration {
            seconds: t.as_secs().min(i64::MAX as u64) as i64,
            nanos: t.subsec_nanos() as i32,
        }
    });
    let execution = client
        .execute(proto::ExecuteRequest {
            action: args.action.clone(),
            target: args.target.target(),
            parameters: args.target.parameters(),
            request_id: args.request_id.clone(),
            timeout,
            alert: None,
            // With --watch the stream shows the way to the end; --wait alone asks the server.
            wait: args.wait && !args.watch,
            rollback_on_failure: args.no_rollback.then_some(false),
            priority: args.priority,
            recommendation: None,
        })
        .await?
        .into_inner()
        .execution
        .ok_or_else(|| missing("execution"))?;
    if args.watch {
        emit(format!(
            "execution {} {}",
            execution.id,
            state_name(execution.state)
        ));
        return watch::follow(&mut client, &execution.id, 0).await;
    }
    emit(execution_line(&execution));
    if args.wait {
        return Ok(exit_for_state(execution.state));
    }
    emit(format!(
        "follow it with: executor-service watch {}",
        execution.id
    ));
    Ok(ExitCode::SUCCESS)
}
