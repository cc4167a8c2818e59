//! One port for both contracts: on the gRPC listener, a request that is not gRPC (nor
//! gRPC-Web) — by its content type — goes to the HTTP/JSON API instead, so
//! `curl http://HOST:8084/health` answers as the HTTP port does while gRPC clients are
//! unaffected. The HTTP API keeps its own port too (`--http-listen`).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

/// Sends requests that are not gRPC to `app`.
#[derive(Clone)]
pub struct HttpBesideGrpc {
    app: axum::Router,
}

impl HttpBesideGrpc {
    pub fn new(app: axum::Router) -> HttpBesideGrpc {
        HttpBesideGrpc { app }
    }
}

impl<S> Layer<S> for HttpBesideGrpc {
    type Service = Split<S>;

    fn layer(&self, inner: S) -> Split<S> {
        Split {
            inner,
            app: self.app.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Split<S> {
    inner: S,
    app: axum::Router,
}

/// gRPC and gRPC-Web requests say so in their content type (`application/grpc…`).
fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

impl<S, B, R> Service<http::Request<B>> for Split<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    R: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<tower::BoxError>,
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_grpc(&request) {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(tonic::body::Body::new)) });
        }
        let app = self.app.clone();
        Box::pin(async move {
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(tonic::body::Body::new))
        })
    }
}
