//! The gRPC edge (the generated types, the service, health, reflection, grpc-web) and the
//! HTTP/JSON edge ([`http`]). Translation only; the engine does the work.

pub mod auth;
pub(crate) mod convert;
pub mod cors;
mod grpc;
pub mod http;
mod limits;
mod one_port;
mod status;
pub mod tls;
mod watch;

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;

use crate::engine::Engine;

/// Generated from `proto/executor/v1/executor.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("executor.v1");

    /// The encoded descriptor set of the API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/executor_descriptor.bin"));
}

pub use auth::{Caller, Security};
pub use grpc::GrpcApi;

/// How often health re-checks that the cluster answers.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Serves gRPC on `listener` until `shutdown` resolves: ExecutorService, health (NOT_SERVING
/// while the default cluster is unreachable) and reflection v1 and v1alpha (grpcurl 1.8.6
/// speaks only v1alpha).
///
/// # Errors
/// When the transport fails.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, engine, Security::default(), shutdown).await
}

/// [`serve`] with TLS and authentication: ExecutorService calls go through the
/// authentication interceptor; health and reflection stay open.
///
/// # Errors
/// When the TLS configuration or the transport fails.
pub async fn serve_with(
    listener: TcpListener,
    engine: Engine,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let service_name = <proto::executor_service_server::ExecutorServiceServer<GrpcApi> as tonic::server::NamedService>::NAME;
    {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                let status =
                    if engine.clusters().is_reachable().await && engine.store_reachable().await {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                health.set_service_status("", status).await;
                health.set_service_status(service_name, status).await;
                if engine.is_closing() {
                    health
                        .set_service_status("", tonic_health::ServingStatus::NotServing)
                        .await;
                    break;
                }
                tokio::time::sleep(HEALTH_CHECK_INTERVAL).await;
            }
        });
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // HTTP/1.1 and the grpc-web layer let a browser call the API (WatchExecution included)
    // without a proxy; HTTP/2 gRPC clients are unaffected.
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        server = server.tls_config(tls.grpc_config())?;
    }
    // The HTTP/JSON API on this port too, for what is not gRPC (as authenticated as on its
    // own port).
    let http_app = security.protect_http(http::router(engine.clone()));
    server
        // Outermost: a browser's preflight is answered before anything asks for a token.
        .layer(tower::util::option_layer(cors::layer(
            &security.cors_origins,
        )))
        .layer(one_port::HttpBesideGrpc::new(http_app))
        // A span per RPC, continuing the caller's W3C `traceparent`.
        .trace_fn(|request| {
            crate::telemetry::request_span("grpc", request.uri().path(), request.headers())
        })
        .accept_http1(true)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(tower::util::MapResponseLayer::new(
            status::correct_decode_errors,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            watch::ExecutorRoutes::new(engine),
            security.grpc(),
        ))
        // Without TCP_NODELAY a response longer than a segment waits ~40 ms for the peer's
        // delayed ACK (tonic ignores its own nodelay setting for a given listener).
        .serve_with_incoming_shutdown(
            limits::limit_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                limits::MAX_CONNECTIONS,
            ),
            shutdown,
        )
        .await?;
    Ok(())
}

/// Binds `addr`, warning when it is not loopback (no TLS or authentication here).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    bind_with(addr, &Security::default()).await
}

/// Binds `addr`, warning when a non-loopback address lacks TLS or authentication.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind_with(addr: SocketAddr, security: &Security) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        match (security.tls.is_some(), security.authenticator.is_enabled()) {
            (true, true) => {}
            (false, false) => {
                tracing::warn!(%addr, "listening on a non-loopback address without TLS or authentication: anyone who can reach it can run actions")
            }
            (true, false) => {
                tracing::warn!(%addr, "listening on a non-loopback address without authentication: anyone who can reach it can run actions")
            }
            (false, true) => {
                tracing::warn!(%addr, "listening on a non-loopback address without TLS: bearer tokens cross the network in clear text")
            }
        }
    }
    Ok(TcpListener::bind(addr).await?)
}

/// Serves only `/health`, `/livez` and `/metrics` of `app` on `listener`, in plain HTTP and without
/// authentication (`--health-listen`): probes and scrapers reach them even when the API
/// ports demand client certificates.
///
/// # Errors
/// When the listener fails.
pub async fn serve_health(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    http::serve(listener, auth::open_paths_only(app), shutdown).await
}

/// Serves the HTTP API `app` on `listener`, over TLS when configured, with every route but
/// health and metrics behind authentication when configured.
///
/// # Errors
/// When the listener fails.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    security: &Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = security.protect_http(app);
    let app = match cors::layer(&security.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    match &security.tls {
        Some(tls) => tls.serve_http(listener, app, shutdown).await,
        None => http::serve(listener, app, shutdown).await,
    }
}
