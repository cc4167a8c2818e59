//! Wiring for `serve`: clusters from the configuration (or the embedded simulated cluster),
//! the engine, the gRPC and HTTP servers, and the two-signal shutdown.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    actions::Registry,
    api,
    cluster::Clusters,
    config::ServeArgs,
    engine::{authz::Authorizer, Engine, EngineConfig},
    policy::{Policy, PolicyConfig},
    sim::{Scenario, SimCluster, SimConfig},
};

/// Runs `serve` until the process is signalled.
///
/// # Errors
/// Bad cluster configuration, an address that cannot be bound, a transport failure.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_config {
        use std::io::Write;
        let _ = std::io::stdout().write_all(args.effective_config.as_bytes());
        return Ok(());
    }
    crate::cluster::set_api_timeout(args.kube_timeout.into());
    crate::cluster::set_retries(args.kube_retries);
    let mut security = api::Security::load(
        args.security.tls_cert.as_deref(),
        args.security.tls_key.as_deref(),
        args.security.tls_client_ca.as_deref(),
        args.security.auth_tokens.as_deref(),
    )?;
    security.cors_origins = api::cors::origins(&args.security.cors_allow_origins)?;
    if args.security.authz.is_some() && !security.authenticator.is_enabled() {
        anyhow::bail!("--authz needs --auth-tokens or --tls-client-ca: without authentication every caller is anonymous");
    }
    // Kept alive for as long as the server runs.
    let mut embedded: Option<SimCluster> = None;
    let simulated =
        args.kubeconfig.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none();
    if !args.sim_faults.is_empty() && !simulated {
        anyhow::bail!("--sim-fault needs the embedded simulated cluster: drop --kubeconfig (and run outside a pod) to use it");
    }
    let clusters = if let Some(path) = &args.kubeconfig {
        Clusters::from_kubeconfig(path, args.context.as_deref()).await?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        Clusters::in_cluster()?
    } else {
        let sim = SimCluster::start(SimConfig {
            listen: args.sim_listen,
            scenario: embedded_scenario(args.action_identities.as_deref(), &args.code_namespace),
            speed: args.sim_speed,
        })
        .await?;
        sim.inject(&args.sim_faults);
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
        let clusters = Clusters::from_kubeconfig_value(sim.kubeconfig(), None).await?;
        embedded = Some(sim);
        clusters
    };
    let engine = Engine::new(engine_config(&args).await?, Registry::builtin(), clusters);
    let recovered = engine.recover().await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "executions left unfinished by a previous run are now INTERRUPTED"
        );
    }
    if let Some(brokers) = &args.kafka_brokers {
        crate::kafka::start(
            engine.clone(),
            crate::kafka::KafkaConfig {
                brokers: brokers.clone(),
                approved_topic: args.kafka_approved_topic.clone(),
                status_topic: args.kafka_status_topic.clone(),
                group: args.kafka_group.clone(),
                identity: args.kafka_identity.clone(),
                dead_letter_topic: args.kafka_dead_letter_topic.clone(),
                options: args.kafka_options.clone(),
                commit_delay: args.kafka_commit_delay,
            },
        )
        .await?;
    }
    if args.controller {
        let client = engine.clusters().client("")?;
        crate::controller::start(
            engine.clone(),
            client,
            crate::controller::ControllerConfig {
                identity: args.controller_identity.clone(),
                approver: args.controller_approver.clone(),
                namespace: args.controller_namespace.clone(),
            },
        );
    }
    spawn_reload(args.clone(), security.clone(), engine.clone());
    spawn_expiry(engine.clone());
    spawn_retention(
        engine.clone(),
        args.retention_max_age.into(),
        args.retention_max_count,
    );
    let listener = api::bind_with(args.listen, &security).await?;
    let addr = listener.local_addr()?;
    let http_listener = match args.http_listen.0 {
        Some(http_addr) => Some(api::bind_with(http_addr, &security).await?),
        None => None,
    };
    let health_listener = match args.security.health_listen {
        Some(health_addr) => Some(tokio::net::TcpListener::bind(health_addr).await?),
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
        if let Some(health) = &health_listener {
            lines.push_str(&format!(
                "executor-service health listening on {}\n",
                health.local_addr()?
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
                api::serve_http(
                    http_listener,
                    app,
                    &security,
                    stop.clone().cancelled_owned(),
                )
                .await
            }
            None => Ok(()),
        }
    };
    let health = async {
        match health_listener {
            Some(listener) => {
                let app = api::http::router(engine.clone());
                api::serve_health(listener, app, stop.clone().cancelled_owned()).await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(
        api::serve_with(
            listener,
            engine.clone(),
            security.clone(),
            stop.clone().cancelled_owned()
        ),
        http,
        health
    )?;
    if let Some(sim) = embedded {
        sim.shutdown().await;
    }
    Ok(())
}

/// The engine's configuration from flags: policy, store (recovered), cooldowns, limits.
async fn engine_config(args: &ServeArgs) -> anyhow::Result<EngineConfig> {
    let policy = policy(args)?;
    let store = crate::store::open(&args.store).await?;
    tracing::info!(store = %args.store, "execution history store opened");
    Ok(EngineConfig {
        workers: args.workers.max(1),
        queue_capacity: args.queue_capacity.max(1),
        default_timeout: args.default_timeout.into(),
        cooldown: args.cooldown.into(),
        action_cooldowns: args.action_cooldowns.iter().cloned().collect(),
        namespace_limit: args.namespace_limit,
        approval_timeout: args.approval_timeout.into(),
        policy: Some(policy),
        store: Some(store),
        finished_in_memory: args.finished_in_memory,
        authorizer: authorizer(args)?,
        approval_capacity: args.approval_capacity.max(1),
        dry_run_limit: args.dry_run_limit.max(1),
        rate_limit: args.rate_limit,
        rate_burst: args.rate_burst,
        lease: args.lease,
        shadow: args.shadow,
        require_approval: args.require_approval,
        code_namespace: args.code_namespace.clone(),
        action_identities: args.action_identities.clone(),
    })
}

/// `--policy` (or the built-in one) with the policy flags.
fn policy(args: &ServeArgs) -> anyhow::Result<Arc<Policy>> {
    let policy_config = PolicyConfig {
        protected_namespaces: args.protected_namespaces.clone(),
        max_replicas: args.max_replicas,
        ..Default::default()
    };
    let policy = match &args.policy {
        Some(path) => Policy::from_file(path, &policy_config)?,
        None => Policy::builtin(&policy_config)?,
    };
    tracing::info!(policy = %policy.origin(), "policy loaded");
    Ok(Arc::new(policy))
}

/// On SIGHUP, and when one of the files changes (checked every `--reload-interval`), reads
/// `--auth-tokens`, `--authz` and `--policy` again and puts them in force together, so that
/// rotated tokens and edited rules (a Secret or ConfigMap update) need no restart. If any of
/// them fails to load, nothing changes and the error is logged and counted.
fn spawn_reload(args: ServeArgs, security: api::Security, engine: Engine) {
    let interval: Duration = args.reload_interval.into();
    let mut seen = watched_files(&args);
    #[cfg(unix)]
    let mut hangups = {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before the listen lines are printed: a SIGHUP from then on reloads, never
        // kills (the default action).
        match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        }
    };
    tokio::spawn(async move {
        loop {
            let hangup = async {
                #[cfg(unix)]
                if let Some(hangups) = hangups.as_mut() {
                    hangups.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            let changed = async {
                if interval.is_zero() {
                    return std::future::pending::<()>().await;
                }
                loop {
                    tokio::time::sleep(interval).await;
                    let now = watched_files(&args);
                    if now != seen {
                        seen = now;
                        return;
                    }
                }
            };
            let why = tokio::select! {
                _ = hangup => "SIGHUP",
                _ = changed => "a configuration file changed",
            };
            // File reads and Rego compilation block: off the async workers.
            let outcome = {
                let (args, security, engine) = (args.clone(), security.clone(), engine.clone());
                tokio::task::spawn_blocking(move || reload(&args, &security, &engine))
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("reload task: {e}")))
            };
            crate::telemetry::metrics().reloaded(outcome.is_ok());
            match outcome {
                Ok(()) => tracing::info!(why, "tokens, authorization rules and policy reloaded"),
                Err(e) => tracing::error!(
                    why,
                    error = format!("{e:#}"),
                    "reload failed; the previous tokens, rules and policy stay in force"
                ),
            }
        }
    });
}

/// What identifies the current content of the reloadable files: modification time and size
/// (following symlinks, as a mounted Secret's `..data` swap changes the target).
fn watched_files(args: &ServeArgs) -> Vec<Option<(std::time::SystemTime, u64)>> {
    [
        args.security.auth_tokens.as_deref(),
        args.security.authz.as_deref(),
        args.policy.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

fn reload(args: &ServeArgs, security: &api::Security, engine: &Engine) -> anyhow::Result<()> {
    let tokens = args
        .security
        .auth_tokens
        .as_deref()
        .map(api::auth::Tokens::from_file)
        .transpose()?;
    let authorizer = authorizer(args)?;
    let policy = policy(args)?;
    if let Some(tokens) = tokens {
        security
            .authenticator
            .replace_tokens(tokens)
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    engine.replace_rules(Some(policy), authorizer);
    Ok(())
}

/// `--authz`, its action names checked against the registry.
fn authorizer(args: &ServeArgs) -> anyhow::Result<Option<Arc<Authorizer>>> {
    let Some(path) = &args.security.authz else {
        return Ok(None);
    };
    let known: Vec<&str> = Registry::builtin().specs().iter().map(|s| s.name).collect();
    let authz = Authorizer::from_file(path, &known)?;
    tracing::info!(rules = authz.len(), authz = %authz.origin(), "authorization rules loaded");
    Ok(Some(Arc::new(authz)))
}

/// Ends debug modes whose time is up, every [`engine::EXPIRY_CHECK`], until the process ends.
fn spawn_expiry(engine: Engine) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::engine::EXPIRY_CHECK).await;
            if let Err(e) = engine.end_expired_debug_modes().await {
                tracing::debug!(error = %e, "looking for ended debug modes");
            }
        }
    });
}

/// How often old history is pruned.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Prunes history by age and count now and every [`RETENTION_INTERVAL`].
fn spawn_retention(engine: Engine, max_age: Duration, keep: usize) {
    tokio::spawn(async move {
        loop {
            match engine.prune(max_age, keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned old executions"),
                Err(e) => tracing::warn!(error = %e, "pruning history"),
            }
            if engine.is_closing() {
                break;
            }
            tokio::time::sleep(RETENTION_INTERVAL).await;
        }
    });
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

/// A manifest generated from the code, as `deploy/` holds it: `crd` or `action-rbac`.
pub fn manifest(which: &str) -> String {
    match which {
        "crd" => crate::controller::crd_yaml(),
        "action-rbac" => crate::actions::access::rbac_manifest(
            crate::actions::access::DEPLOY_NAMESPACE,
            &Registry::builtin().specs(),
        ),
        other => format!("# unknown manifest {other:?}\n"),
    }
}

/// The embedded cluster's scenario: the demo, and with action identities the actions'
/// accounts, roles and bindings as `deploy/rbac-actions.yaml` installs them, so every action
/// runs under its own role there too.
fn embedded_scenario(action_identities: Option<&str>, code_namespace: &str) -> Scenario {
    let mut scenario = Scenario::demo();
    let Some(namespace) = action_identities else {
        return scenario;
    };
    scenario = scenario.with(crate::sim::mk_namespace(namespace));
    let manifest = crate::actions::access::rbac_manifest_for_code_in(
        namespace,
        code_namespace,
        &Registry::builtin().specs(),
    );
    for document in serde_yaml::Deserializer::from_str(&manifest) {
        if let Ok(object) = <serde_json::Value as serde::Deserialize>::deserialize(document) {
            if !object.is_null() {
                scenario = scenario.with(object);
            }
        }
    }
    // The demo's Secrets may be rotated, as deploy/rbac-rotate-secrets.yaml allows it.
    scenario.with(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "executor-service-rotate-secrets", "namespace": "production"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": crate::actions::access::cluster_role("rotate_secrets"),
        },
        "subjects": [{
            "kind": "ServiceAccount",
            "name": crate::actions::access::service_account("rotate_secrets"),
            "namespace": namespace,
        }],
    }))
}
