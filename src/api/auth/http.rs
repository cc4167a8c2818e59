//! The HTTP adapter: axum middleware that authenticates every request outside
//! [`OPEN_HTTP_PATHS`], and the [`Caller`] extractor the handlers read it with.

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};

use super::{Authenticator, Caller};
use crate::api::tls::TlsPeer;

/// HTTP paths served without authentication: probes and Prometheus carry no token.
pub const OPEN_HTTP_PATHS: &[&str] = &["/health", "/livez", "/metrics"];

/// Axum middleware: authenticates every request outside [`OPEN_HTTP_PATHS`] and leaves the
/// [`Caller`] in its extensions; 401 with `WWW-Authenticate: Bearer` otherwise.
pub async fn http_layer(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !auth.is_enabled()
        || OPEN_HTTP_PATHS.contains(&path)
        || crate::api::http::dashboard::is_asset(path)
    {
        return next.run(request).await;
    }
    let certificates = request
        .extensions()
        .get::<ConnectInfo<TlsPeer>>()
        .and_then(|peer| peer.0.certificates.clone());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match auth.authenticate(authorization, certificates.as_deref().map(Vec::as_slice)) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => {
            let body = serde_json::json!({ "error": { "code": "UNAUTHENTICATED", "message": e.to_string() } });
            let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// `app` answering only [`OPEN_HTTP_PATHS`]; anything else is 404.
pub fn open_paths_only(app: axum::Router) -> axum::Router {
    app.layer(axum::middleware::from_fn(
        |request: Request, next: Next| async move {
            if OPEN_HTTP_PATHS.contains(&request.uri().path()) {
                next.run(request).await
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        },
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}
