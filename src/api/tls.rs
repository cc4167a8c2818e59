//! TLS for both edges from one set of PEM files (`--tls-cert`, `--tls-key`, and
//! `--tls-client-ca` for mutual TLS): tonic's [`ServerTlsConfig`] for gRPC, a rustls acceptor
//! and a [`Listener`] for axum. Both use rustls with the `ring` provider already in the tree
//! (kube's client uses it too).
//!
//! With a client CA, a connection without a certificate chaining to that CA fails its
//! handshake: nothing of the request is ever read.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{extract::connect_info::Connected, serve::IncomingStream, serve::Listener, Router};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
    task::JoinHandle,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
        RootCertStore, ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How long a client may take to finish its TLS handshake; a client that stalls only holds
/// its own task, this bounds how long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server to pick them up; beyond it, accepting
/// pauses (backpressure instead of unbounded memory).
const ACCEPTED_BACKLOG: usize = 64;
/// Pause after an accept error that is not about one connection (e.g. out of descriptors),
/// so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the expected kind.
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    /// rustls refused the certificate, key or CA (mismatched key, unsupported algorithm…).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The server's certificate and key, and the CA client certificates must chain to.
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Tls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the PEM files: a certificate chain, its private key (PKCS#8, PKCS#1 or
    /// SEC1), and optionally a CA bundle for client certificates.
    ///
    /// # Errors
    /// Unreadable files, no certificate or key in them, a key that does not match.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Tls, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let client_ca_pem = client_ca.map(read).transpose()?;
        let certs = certificates(&cert_pem, cert)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: key.to_path_buf(),
            message: format!("no private key: {e}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match (&client_ca_pem, client_ca) {
            (Some(pem), Some(path)) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(pem, path)? {
                    roots.add(ca).map_err(|e| TlsError::Pem {
                        path: path.to_path_buf(),
                        message: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, private_key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert_pem,
            key_pem,
            client_ca_pem,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Whether clients must present a certificate from the client CA (mutual TLS).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// The same settings for tonic's server.
    pub fn grpc_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }

    /// Serves `app` over TLS on `listener` until `shutdown` resolves, with each connection's
    /// client certificates available to handlers as `ConnectInfo<TlsPeer>`.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        app: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = super::limits::LimitedListener::new(
            TlsListener::new(listener, self.acceptor.clone())?,
            super::limits::MAX_CONNECTIONS,
        );
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TlsPeer>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        Ok(())
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("bad certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no CERTIFICATE section".to_string(),
        });
    }
    Ok(certs)
}

/// Who is at the other end of a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub remote: SocketAddr,
    /// The client's chain (leaf first), verified against the client CA; `None` without mTLS.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Connected<IncomingStream<'_, super::limits::LimitedListener<TlsListener>>> for TlsPeer {
    fn connect_info(
        stream: IncomingStream<'_, super::limits::LimitedListener<TlsListener>>,
    ) -> Self {
        stream.remote_addr().clone()
    }
}

/// TCP connections after their TLS handshake, for `axum::serve`. Handshakes run in their own
/// tasks so that a slow or silent client delays nobody else.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let handshakes = Arc::new(Semaphore::new(super::limits::MAX_HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                // At the bound, stop accepting until a handshake ends: a flood of slow
                // handshakes costs at most this many tasks.
                let Ok(handshake) = handshakes.clone().acquire_owned().await else {
                    break;
                };
                let (tcp, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting HTTP connections");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let handed = tx.clone();
                tokio::spawn(async move {
                    let _handshake = handshake;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let certificates = tls.get_ref().1.peer_certificates().map(|chain| {
                                Arc::new(chain.iter().map(|c| c.clone().into_owned()).collect())
                            });
                            let _ = handed
                                .send((
                                    tls,
                                    TlsPeer {
                                        remote,
                                        certificates,
                                    },
                                ))
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(TlsPeer {
            remote: self.local,
            certificates: None,
        })
    }
}

/// Errors about one connection, which say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
