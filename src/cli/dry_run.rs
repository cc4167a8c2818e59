//! `executor-service dry-run ACTION [-n NS] [KIND/NAME] [--set k=v]…`: what the action would
//! change (summary, each object's JSON patch, warnings); nothing changes.

use std::process::ExitCode;

use super::{connect, emit, missing, struct_json, target_ref, CliError, ServerArgs, TargetArgs};
use crate::api::{convert, proto};

#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    /// The action (`executor-service actions` lists them).
    pub action: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: DryRunArgs) -> Result<ExitCode, CliError> {
    let mut client = connect(&args.server).await?;
    let report = client
        .dry_run(proto::DryRunRequest {
            action: args.action.clone(),
            target: args.target.target(),
            parameters: args.target.parameters(),
            alert: None,
        })
        .await?
        .into_inner();
    let target = report.target.as_ref().ok_or_else(|| missing("target"))?;
    emit(format!("summary:    {}", report.summary));
    emit(format!("target:     {}", target_ref(Some(target))));
    emit(format!(
        "parameters: {}",
        struct_json(report.parameters.as_ref())
    ));
    if report.changes.is_empty() {
        emit("changes:    none");
    }
    for change in &report.changes {
        // Summaries usually start with the object already.
        if change.summary.starts_with(&change.object) {
            emit(format!("\n{}", change.summary));
        } else {
            emit(format!("\n{}: {}", change.object, change.summary));
        }
        let patch = change
            .patch
            .clone()
            .map(convert::value_to_json)
            .unwrap_or_default();
        let patch = serde_json::to_string_pretty(&patch).unwrap_or_default();
        emit(format!("  patch:\n{}", indent(&patch, "    ")));
    }
    if !report.warnings.is_empty() {
        emit("\nwarnings:");
        for warning in &report.warnings {
            emit(format!("  - {warning}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
