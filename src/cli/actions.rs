//! `executor-service actions`: the server's catalog as a table.

use std::process::ExitCode;

use super::{connect, emit, CliError, ServerArgs};
use crate::api::{convert, proto};

#[derive(Debug, clap::Args)]
pub struct ActionsArgs {
    /// Add each action's description.
    #[arg(long)]
    pub wide: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: ActionsArgs) -> Result<ExitCode, CliError> {
    let mut client = connect(&args.server).await?;
    let actions = client
        .list_actions(proto::ListActionsRequest {})
        .await?
        .into_inner()
        .actions;
    let mut rows = vec![[
        "NAME".to_string(),
        "RISK".to_string(),
        "TARGETS".to_string(),
        "PARAMETERS".to_string(),
        "DESCRIPTION".to_string(),
    ]];
    for a in &actions {
        let risk = proto::RiskLevel::try_from(a.risk)
            .map(|r| r.as_str_name().trim_start_matches("RISK_LEVEL_"))
            .unwrap_or("UNKNOWN")
            .to_lowercase();
        let params: Vec<String> = a.parameters.iter().map(parameter).collect();
        rows.push([
            a.name.clone(),
            risk,
            a.target_kinds.join(","),
            if params.is_empty() {
                "-".to_string()
            } else {
                params.join(" ")
            },
            a.description.clone(),
        ]);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line = if args.wide {
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            )
        } else {
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            )
        };
        emit(line.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// `replicas:integer[0..100]`, `force:boolean=false`, `*` after a required name.
fn parameter(p: &proto::ParameterDescriptor) -> String {
    let ty = proto::ParameterType::try_from(p.r#type)
        .map(|t| t.as_str_name().trim_start_matches("PARAMETER_TYPE_"))
        .unwrap_or("UNKNOWN")
        .to_lowercase();
    let mut s = format!("{}{}:{ty}", p.name, if p.required { "*" } else { "" });
    match (p.minimum, p.maximum) {
        (Some(min), Some(max)) => s.push_str(&format!("[{min}..{max}]")),
        (Some(min), None) => s.push_str(&format!("[{min}..]")),
        (None, Some(max)) => s.push_str(&format!("[..{max}]")),
        (None, None) => {}
    }
    if !p.allowed_values.is_empty() {
        s.push_str(&format!("({})", p.allowed_values.join("|")));
    }
    if let Some(default) = p.default_value.clone() {
        s.push_str(&format!("={}", convert::value_to_json(default)));
    }
    s
}
