//! Wiring for `serve`: clusters from the configuration (or the embedded simulated cluster),
//! the engine, the gRPC and HTTP servers, and the two-signal shutdown.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::{
    actions::Registry,
    api,
    cluster::Clusters,
    config::ServeArgs,
    engine::{Engine, EngineConfig},
    sim::{Scenario, SimCluster, SimConfig},
};

/// Runs `serve` until the process is signalled.
///
/// # Errors
/// Bad cluster configuration, an address that cannot be bound, a transport failure.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Kept alive for as long as the server runs.
    let mut embedded: Option<SimCluster> = None;
    let clusters = if let Some(path) = &args.kubeconfig {
        Clusters::from_kubeconfig(path, args.context.as_deref()).await?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        Clusters::in_cluster()?
    } else {
        let sim = SimCluster::start(SimConfig {
            listen: args.sim_listen,
            scenario: Scenario::demo(),
            speed: args.sim_speed,
        })
        .await?;
        let path = args
            .sim_kubeconfig_out
            .clone()
            .unwrap_or_else(default_sim_kubeconfig);
        sim.write_kubeconfig(&path)?;
        tracing::info!(
            url = %sim.url(),
            kubeconfig = %path.display(),
            "no kubeconfig given: started the embedded simulated cluster (scenario demo); watch it with: kubectl --kubeconfig {}",
            path.display()
        );
        let clusters = Clusters::single("sim", sim.client().await?);
        embedded = Some(sim);
        clusters
    };
    let engine = Engine::new(
        EngineConfig {
            workers: args.workers.max(1),
            queue_capacity: args.queue_capacity.max(1),
            default_timeout: args.default_timeout.into(),
        },
        Registry::builtin(),
        clusters,
    );
    let listener = api::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let http_listener = match args.http_listen.0 {
        Some(http_addr) => Some(api::bind(http_addr).await?),
        None => None,
    };
    // Tests and scripts read these lines to find ports chosen by the OS; the gRPC line comes
    // first. Written without `println!`: a reader that has gone away must not kill the server.
    {
        use std::io::Write;
        let mut lines = format!("executor-service listening on {addr}\n");
        if let Some(http) = &http_listener {
            lines.push_str(&format!(
                "executor-service http listening on {}\n",
                http.local_addr()?
            ));
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(lines.as_bytes());
        let _ = stdout.flush();
    }
    tracing::info!(%addr, "gRPC listening");
    let stop = CancellationToken::new();
    let stop_tx = stop.clone();
    let grace = args.shutdown_grace.into();
    let draining = engine.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!(
            ?grace,
            "signal received: draining executions (signal again to abort)"
        );
        tokio::select! {
            _ = draining.shutdown(grace) => {}
            _ = signal() => {
                tracing::warn!("second signal: interrupting running executions");
                draining.abort();
            }
        }
        stop_tx.cancel();
    });
    let http = async {
        match http_listener {
            Some(http_listener) => {
                tracing::info!(addr = %http_listener.local_addr()?, "HTTP listening");
                let app = api::http::router(engine.clone());
                api::http::serve(http_listener, app, stop.clone().cancelled_owned()).await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(
        api::serve(listener, engine.clone(), stop.clone().cancelled_owned()),
        http
    )?;
    if let Some(sim) = embedded {
        sim.shutdown().await;
    }
    Ok(())
}

/// SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where the embedded cluster's kubeconfig goes when no path is given.
pub fn default_sim_kubeconfig() -> PathBuf {
    std::env::temp_dir().join("executor-service-sim.kubeconfig")
}
