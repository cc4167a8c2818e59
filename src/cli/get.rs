//! `executor-service get ID`: one execution and its events.

use std::process::ExitCode;

use super::{
    connect, emit, event_line, missing, state_name, struct_json, target_ref, timestamp, CliError,
    ServerArgs,
};
use crate::api::proto;

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The execution's id.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: GetArgs) -> Result<ExitCode, CliError> {
    let mut client = connect(&args.server).await?;
    let response = client
        .get_execution(proto::GetExecutionRequest {
            execution_id: args.id.clone(),
            include_events: true,
        })
        .await?
        .into_inner();
    let e = response.execution.ok_or_else(|| missing("execution"))?;
    emit(format!("id:          {}", e.id));
    emit(format!("action:      {}", e.action));
    emit(format!("target:      {}", target_ref(e.target.as_ref())));
    emit(format!(
        "parameters:  {}",
        struct_json(e.parameters.as_ref())
    ));
    emit(format!("requester:   {}", e.requester));
    emit(format!("state:       {}", state_name(e.state)));
    emit(format!("message:     {}", e.message));
    emit(format!("created:     {}", timestamp(e.created_at.as_ref())));
    emit(format!("started:     {}", timestamp(e.started_at.as_ref())));
    emit(format!(
        "finished:    {}",
        timestamp(e.finished_at.as_ref())
    ));
    if let Some(result) = e.result.as_ref() {
        emit(format!("result:      {}", struct_json(Some(result))));
    }
    emit("events:");
    for event in &response.events {
        emit(event_line(event));
    }
    Ok(ExitCode::SUCCESS)
}
