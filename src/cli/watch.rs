//! `executor-service watch ID`: every event of an execution, replayed then live, under a
//! progress bar driven by the events' `progress`; exits 0 only if it SUCCEEDED.

use std::{process::ExitCode, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

use super::{
    connect, emit, event_line, execution_line, exit_for_state, is_terminal, missing, CliError,
    Client, ServerArgs, EXIT_NOT_SUCCEEDED,
};
use crate::api::proto;

/// How often the spinner moves while no event arrives: shows the watch is alive.
const SPINNER_TICK: Duration = Duration::from_millis(120);

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The execution's id (printed by `exec`).
    pub id: String,
    /// Show only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: WatchArgs) -> Result<ExitCode, CliError> {
    let mut client = connect(&args.server).await?;
    follow(&mut client, &args.id, args.from).await
}

/// Prints every event after `from` until the execution ends, then its final line; the exit
/// code says whether it SUCCEEDED.
pub(super) async fn follow(client: &mut Client, id: &str, from: u64) -> Result<ExitCode, CliError> {
    let mut stream = client
        .watch_execution(proto::WatchExecutionRequest {
            execution_id: id.to_string(),
            from_sequence: from,
        })
        .await?
        .into_inner();
    // Drawn on stderr, and not at all when stderr is not a terminal; event lines go to stdout.
    let bar = ProgressBar::new_spinner();
    bar.set_style(spinner_style());
    bar.enable_steady_tick(SPINNER_TICK);
    let mut counting = false;
    let outcome = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                let Some(event) = message.event else { continue };
                bar.suspend(|| emit(event_line(&event)));
                if let Some(p) = &event.progress {
                    if !counting {
                        bar.set_style(bar_style());
                        counting = true;
                    }
                    bar.set_length(p.total);
                    bar.set_position(p.current);
                }
                bar.set_message(event.message.clone());
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    bar.finish_and_clear();
    outcome?;
    let execution = client
        .get_execution(proto::GetExecutionRequest {
            execution_id: id.to_string(),
            include_events: false,
        })
        .await?
        .into_inner()
        .execution
        .ok_or_else(|| missing("execution"))?;
    emit(execution_line(&execution));
    if !is_terminal(execution.state) {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"error: the event stream ended before the execution did\n",
        );
        return Ok(ExitCode::from(EXIT_NOT_SUCCEEDED));
    }
    Ok(exit_for_state(execution.state))
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}
