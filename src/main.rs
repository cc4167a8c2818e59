#![forbid(unsafe_code)]
use std::process::ExitCode;

use executor_service::{cli, config::Command, run, sim, telemetry};

/// mimalloc: the service allocates many small short-lived buffers from many tasks at once
/// (one HTTP/2 stream per watcher); glibc's arenas spent a sixth of P4's CPU in malloc/free
/// and their locks. The bench uses the same allocator as the binary it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = executor_service::config::parse();
    let _telemetry = match telemetry::init(cli.log_format, cli.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => run::serve(*args).await,
        Command::Sim(args) => sim::run_standalone(args).await,
        Command::Client(command) => return cli::run(command).await,
        Command::Manifests { which } => {
            print!("{}", run::manifest(&which));
            return ExitCode::SUCCESS;
        }
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
