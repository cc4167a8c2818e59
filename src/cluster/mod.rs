//! Cluster access: kube clients by kubeconfig context (multi-cluster), and the shared helpers
//! actions use to follow what they started (kubectl's rollout-status conditions).

pub mod nodes;
mod retry;
mod rollout;
mod workload;

use std::{collections::BTreeMap, path::Path};

use kube::config::{KubeConfigOptions, Kubeconfig};

pub use nodes::selector_matches;
pub use retry::{
    attempts, is_permanent, is_transient, set_retries, with_retries, MAX_ATTEMPTS, MAX_RETRIES,
};

/// Connect and write timeout of every Kubernetes client made after it is set (`serve
/// --kube-timeout`), in milliseconds; 0 keeps kube's defaults. Reads keep kube's own timeout,
/// long enough for a watch.
static API_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the connect and write timeout of the Kubernetes clients made from now on.
pub fn set_api_timeout(timeout: std::time::Duration) {
    API_TIMEOUT_MS.store(
        timeout.as_millis().min(u128::from(u64::MAX)) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}
pub use rollout::{
    daemonset_rollout_status, deployment_rollout_status, follow_deployment_rollout, follow_rollout,
    statefulset_rollout_status, RolloutError, RolloutStatus,
};
pub use workload::{controller_ref, owning_workload, selector_string, WorkloadKind};

/// Why a cluster could not be configured or named.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The request named a kubeconfig context that is not configured.
    #[error("unknown cluster {name:?} (configured: {known})")]
    Unknown { name: String, known: String },
    /// The kubeconfig could not be read or has no usable context.
    #[error("cluster configuration: {0}")]
    Config(String),
}

/// A client without kube's built-in silent retries: the executor retries transient errors
/// itself (`with_retries`), visibly, and must see a PodDisruptionBudget's 429 at once.
///
/// Every failed call is counted in the `executor_kubernetes_api_errors` metric.
fn client_for(mut config: kube::Config) -> Result<kube::Client, String> {
    config.default_retry = false;
    let timeout = API_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed);
    if timeout > 0 {
        let timeout = std::time::Duration::from_millis(timeout);
        config.connect_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
    }
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| e.to_string())?;
    let count_errors = tower::util::MapResponseLayer::new(
        |response: http::Response<Box<kube::client::DynBody>>| {
            if response.status().as_u16() >= 400 {
                crate::telemetry::metrics().kube_error(response.status().as_str());
            }
            response
        },
    );
    let count_transport = tower::util::MapErrLayer::new(|error: tower::BoxError| {
        crate::telemetry::metrics().kube_error("transport");
        error
    });
    Ok(builder
        .with_layer(&count_errors)
        .with_layer(&count_transport)
        .build())
}

/// Says whether a write may be sent now.
pub type WriteGate = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// `client`, refusing every write (anything but GET, HEAD, OPTIONS) that `may_write` does not
/// allow at the moment it would be sent: how a replica that lost its lease on an execution
/// stops touching the cluster for it, since the cluster cannot check a fencing token.
pub fn gated_client(client: &kube::Client, may_write: WriteGate) -> kube::Client {
    let inner = client.clone();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let may_write = may_write.clone();
        async move {
            let reads = matches!(
                *request.method(),
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            );
            if !reads && !may_write() {
                return Err(kube::Error::Service(
                    "write refused: this replica no longer holds the execution's lease".into(),
                ));
            }
            inner.send(request).await
        }
    });
    kube::Client::new(service, client.default_namespace().to_string())
}

/// `client`, acting as `user` by Kubernetes impersonation: every request carries
/// `Impersonate-User`, so the API server authorizes it as `user` (the service's own identity
/// needs only the `impersonate` verb on it).
///
/// # Errors
/// [`ClusterError::Config`] when `user` cannot be a header value.
pub fn impersonating(client: &kube::Client, user: &str) -> Result<kube::Client, ClusterError> {
    let user = http::HeaderValue::from_str(user)
        .map_err(|e| ClusterError::Config(format!("impersonated user {user:?}: {e}")))?;
    let inner = client.clone();
    let service = tower::service_fn(move |mut request: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        request.headers_mut().insert(
            http::HeaderName::from_static("impersonate-user"),
            user.clone(),
        );
        async move { inner.send(request).await }
    });
    Ok(kube::Client::new(
        service,
        client.default_namespace().to_string(),
    ))
}

/// Kube clients by cluster name (kubeconfig context). The empty name means the default.
#[derive(Clone)]
pub struct Clusters {
    default: String,
    clients: BTreeMap<String, kube::Client>,
}

impl Clusters {
    /// One cluster under `name`, which is also the default.
    pub fn single(name: &str, client: kube::Client) -> Self {
        Clusters {
            default: name.to_string(),
            clients: BTreeMap::from([(name.to_string(), client)]),
        }
    }

    /// A client for every context of a kubeconfig file; `context` (or the file's current
    /// context) is the default.
    ///
    /// # Errors
    /// [`ClusterError::Config`] when the file cannot be read or the default context is unusable.
    /// Other contexts that fail to load are skipped with a warning.
    pub async fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Self, ClusterError> {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
        Self::from_kubeconfig_value(kubeconfig, context).await
    }

    /// A client for every context of `kubeconfig`; see [`Clusters::from_kubeconfig`].
    ///
    /// # Errors
    /// [`ClusterError::Config`] when the default context is missing or unusable.
    pub async fn from_kubeconfig_value(
        kubeconfig: Kubeconfig,
        context: Option<&str>,
    ) -> Result<Self, ClusterError> {
        let default = context
            .map(str::to_string)
            .or_else(|| kubeconfig.current_context.clone())
            .or_else(|| kubeconfig.contexts.first().map(|c| c.name.clone()))
            .ok_or_else(|| ClusterError::Config("kubeconfig has no context".into()))?;
        let mut clients = BTreeMap::new();
        for named in &kubeconfig.contexts {
            let options = KubeConfigOptions {
                context: Some(named.name.clone()),
                ..Default::default()
            };
            let client =
                match kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options).await {
                    Ok(config) => client_for(config),
                    Err(e) => Err(e.to_string()),
                };
            match client {
                Ok(client) => {
                    clients.insert(named.name.clone(), client);
                }
                Err(e) if named.name == default => {
                    return Err(ClusterError::Config(format!(
                        "context {:?}: {e}",
                        named.name
                    )))
                }
                Err(e) => {
                    tracing::warn!(context = %named.name, error = %e, "skipping kubeconfig context")
                }
            }
        }
        if !clients.contains_key(&default) {
            return Err(ClusterError::Config(format!(
                "context {default:?} not found in the kubeconfig"
            )));
        }
        Ok(Clusters { default, clients })
    }

    /// The in-cluster service account configuration.
    ///
    /// # Errors
    /// [`ClusterError::Config`] outside a pod.
    pub fn in_cluster() -> Result<Self, ClusterError> {
        let config = kube::Config::incluster().map_err(|e| ClusterError::Config(e.to_string()))?;
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Clusters::single("in-cluster", client))
    }

    /// The context `name` stands for: the default context's name for the empty name, else
    /// `name` itself when it is configured. One cluster has one name, whatever alias a request
    /// used, so locks and cooldowns keyed by it cannot be walked around.
    ///
    /// # Errors
    /// [`ClusterError::Unknown`] for a name that is not configured.
    pub fn canonical<'a>(&'a self, name: &'a str) -> Result<&'a str, ClusterError> {
        let name = if name.is_empty() { &self.default } else { name };
        if self.clients.contains_key(name) {
            Ok(name)
        } else {
            Err(ClusterError::Unknown {
                name: name.to_string(),
                known: self.clients.keys().cloned().collect::<Vec<_>>().join(", "),
            })
        }
    }

    /// The client for `name`; the empty name means the default cluster.
    ///
    /// # Errors
    /// [`ClusterError::Unknown`] for a name that is not configured.
    pub fn client(&self, name: &str) -> Result<kube::Client, ClusterError> {
        let name = if name.is_empty() { &self.default } else { name };
        self.clients
            .get(name)
            .cloned()
            .ok_or_else(|| ClusterError::Unknown {
                name: name.to_string(),
                known: self.clients.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Whether the default cluster answers (`/version`).
    pub async fn is_reachable(&self) -> bool {
        match self.client("") {
            Ok(client) => client.apiserver_version().await.is_ok(),
            Err(_) => false,
        }
    }
}
