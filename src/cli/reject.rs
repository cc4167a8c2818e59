//! `executor-service reject ID [--reason TEXT]`: ends an execution WAITING_APPROVAL as
//! REJECTED.

use std::process::ExitCode;

use super::{approve, CliError};

pub async fn run(args: approve::ApproveArgs) -> Result<ExitCode, CliError> {
    approve::decide(args, false).await
}
