//! Authentication at the edge: who is calling. A bearer token (`--auth-tokens`) or, with
//! mutual TLS, the client certificate's subject CN (or first DNS SAN) becomes the [`Caller`],
//! which gRPC handlers read from the request's extensions (set by [`GrpcAuth`]) and HTTP
//! handlers through the [`Caller`] extractor (set by [`http_layer`]). What a caller may do is
//! the engine's business (`engine::authz`), on the resolved target.
//!
//! With authentication configured, a request without a valid token (or, token-less, without
//! a verified client certificate) is refused with `UNAUTHENTICATED` / 401 before any handler
//! runs. Health, reflection and `/metrics` stay open: probes and scrapers carry no token.
//! Without it every caller is `anonymous`, as before.
//!
//! - `tokens.rs`: the token file, its format and loading;
//! - `authenticator.rs`: who is calling, from a token or a client certificate ([`Caller`]);
//! - `grpc.rs`, `http.rs`: the two adapters, a tonic interceptor and axum middleware with the
//!   [`Caller`] extractor;
//! - this file: [`Security`], what both edges are configured with.

mod authenticator;
mod grpc;
mod http;
mod tokens;

use std::{path::Path, sync::Arc};

use super::tls::Tls;

pub use self::{
    authenticator::{certificate_identity, AuthError, Authenticator, Caller},
    grpc::{grpc_caller, GrpcAuth},
    http::{http_layer, open_paths_only, OPEN_HTTP_PATHS},
    tokens::{Tokens, TokensError},
};

/// The security of both edges: TLS (optional) and who callers are.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<Arc<Tls>>,
    pub authenticator: Authenticator,
    /// Origins allowed to call from a browser (`--cors-allow-origin`); none by default.
    pub cors_origins: Vec<::http::HeaderValue>,
}

impl Security {
    /// Loads `--tls-cert`/`--tls-key`/`--tls-client-ca` and `--auth-tokens`.
    ///
    /// # Errors
    /// A client CA without a certificate, or a file that cannot be used.
    pub fn load(
        tls_cert: Option<&Path>,
        tls_key: Option<&Path>,
        tls_client_ca: Option<&Path>,
        auth_tokens: Option<&Path>,
    ) -> anyhow::Result<Security> {
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key, tls_client_ca)?)),
            (None, None) if tls_client_ca.is_none() => None,
            _ => anyhow::bail!(
                "--tls-cert and --tls-key go together (and --tls-client-ca needs both)"
            ),
        };
        let tokens = auth_tokens
            .map(Tokens::from_file)
            .transpose()?
            .map(Arc::new);
        let client_certificates = tls.as_ref().is_some_and(|t| t.verifies_clients());
        Ok(Security {
            tls,
            authenticator: Authenticator::new(tokens, client_certificates),
            cors_origins: Vec::new(),
        })
    }

    /// The interceptor in front of ExecutorService.
    pub fn grpc(&self) -> GrpcAuth {
        GrpcAuth(self.authenticator.clone())
    }

    /// `app` with every route but [`OPEN_HTTP_PATHS`] behind authentication.
    pub fn protect_http(&self, app: axum::Router) -> axum::Router {
        app.layer(axum::middleware::from_fn_with_state(
            self.authenticator.clone(),
            http_layer,
        ))
    }
}
