//! Wiring for `serve`: clusters from the configuration (or the embedded simulated cluster),
//! the engine, the gRPC server, and the two-signal shutdown.

use std::path::PathBuf;

use tokio::sync::oneshot;

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
    // Tests and scripts read this line to find a port chosen by the OS.
    println!("executor-service listening on {addr}");
    tracing::info!(%addr, "gRPC listening");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
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
        let _ = stop_tx.send(());
    });
    api::serve(listener, engine, async {
        let _ = stop_rx.await;
    })
    .await?;
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
