#![forbid(unsafe_code)]
use std::process::ExitCode;

use clap::Parser;
use executor_service::{
    config::{Cli, Command},
    cli, run, sim, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => run::serve(args).await,
        Command::Sim(args) => sim::run_standalone(args).await,
        Command::Client(command) => return cli::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
