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
//! The token file stores identities and, preferably, only the SHA-256 of each token:
//!
//! ```yaml
//! tokens:
//!   - identity: alice
//!     sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b  # sha256sum of the token
//!   - identity: ci
//!     token: a-plain-token   # accepted, but anyone who reads the file can use it
//! ```

use std::{collections::HashMap, path::Path, sync::Arc};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::tls::{Tls, TlsPeer};
use crate::engine::ANONYMOUS;

/// HTTP paths served without authentication: probes and Prometheus carry no token.
pub const OPEN_HTTP_PATHS: &[&str] = &["/health", "/livez", "/metrics"];

/// Who made a request, as the edge established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The identity recorded as `requester` and checked by the authorization rules.
    pub identity: String,
    /// Whether `identity` was proven (token or certificate); `false` = `anonymous` because no
    /// authentication is configured.
    pub authenticated: bool,
}

impl Default for Caller {
    fn default() -> Self {
        Caller {
            identity: ANONYMOUS.to_string(),
            authenticated: false,
        }
    }
}

impl Caller {
    /// The approver of an Approve/Reject: the authenticated caller when there is one (the
    /// request's own `approver` field cannot speak for someone else), else that field.
    pub fn approver(&self, claimed: &str) -> String {
        if self.authenticated {
            self.identity.clone()
        } else {
            claimed.to_string()
        }
    }
}

/// Why a request was not authenticated; the message goes back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header and no verified client certificate.
    #[error("authentication required: send `authorization: Bearer <token>`")]
    Missing,
    /// An `authorization` header that is not `Bearer <token>`.
    #[error("malformed authorization header: expected `Bearer <token>`")]
    Malformed,
    /// A token that is not in the token file.
    #[error("invalid bearer token")]
    InvalidToken,
    /// A verified client certificate that names nobody (no CN, no DNS SAN).
    #[error("the client certificate has neither a subject CN nor a DNS name")]
    AnonymousCertificate,
}

/// Why the token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML/JSON of the expected shape.
    #[error("parsing {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: serde_yaml::Error,
    },
    /// An entry is incomplete, ambiguous or a duplicate.
    #[error("{origin}: tokens[{index}]: {message}")]
    Invalid {
        origin: String,
        index: usize,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    identity: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Identities by the SHA-256 of their token: tokens are compared as digests, so neither the
/// file nor memory needs to hold them, and the lookup's timing says nothing about a token.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], String>,
}

impl Tokens {
    /// Loads a token file (YAML or JSON).
    ///
    /// # Errors
    /// Unreadable or malformed file, an entry with neither or both of `sha256` and `token`,
    /// a digest that is not 64 hex digits, one token listed twice, or no token at all.
    pub fn from_file(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses a token file's text; `origin` names it in errors.
    ///
    /// # Errors
    /// See [`Tokens::from_file`].
    pub fn from_yaml(text: &str, origin: &str) -> Result<Tokens, TokensError> {
        let file: TokensFile = serde_yaml::from_str(text).map_err(|source| TokensError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        let mut by_digest = HashMap::new();
        if file.tokens.is_empty() {
            return Err(TokensError::Invalid {
                origin: origin.to_string(),
                index: 0,
                message: "no tokens: nobody could call the API".to_string(),
            });
        }
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let invalid = |message: &str| TokensError::Invalid {
                origin: origin.to_string(),
                index,
                message: message.to_string(),
            };
            let identity = entry.identity.trim().to_string();
            if identity.is_empty() {
                return Err(invalid("identity: is required"));
            }
            let digest = match (entry.sha256, entry.token) {
                (Some(hex), None) => parse_digest(hex.trim())
                    .ok_or_else(|| invalid("sha256: must be 64 hexadecimal digits"))?,
                (None, Some(token)) if !token.trim().is_empty() => digest(token.trim()),
                (None, Some(_)) => return Err(invalid("token: is empty")),
                _ => return Err(invalid("give exactly one of sha256 and token")),
            };
            if by_digest.insert(digest, identity).is_some() {
                return Err(invalid("the same token is listed twice"));
            }
        }
        Ok(Tokens { by_digest })
    }

    /// The identity holding `token`.
    pub fn identity(&self, token: &str) -> Option<&str> {
        self.by_digest.get(&digest(token)).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Decides who a request comes from.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// Shared by every clone, so that [`Authenticator::replace_tokens`] reaches all listeners.
    tokens: Option<Arc<std::sync::RwLock<Arc<Tokens>>>>,
    /// Whether the TLS layer verified client certificates (mTLS).
    client_certificates: bool,
}

impl Authenticator {
    pub fn new(tokens: Option<Arc<Tokens>>, client_certificates: bool) -> Self {
        Authenticator {
            tokens: tokens.map(|t| Arc::new(std::sync::RwLock::new(t))),
            client_certificates,
        }
    }

    /// Puts `tokens` in force for every listener; tokens not in it stop working at once.
    ///
    /// # Errors
    /// When the server was started without tokens (turning them on needs a restart).
    pub fn replace_tokens(&self, tokens: Tokens) -> Result<(), &'static str> {
        let current = self
            .tokens
            .as_ref()
            .ok_or("the server was started without --auth-tokens")?;
        *current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
        Ok(())
    }

    /// Whether callers must prove who they are.
    pub fn is_enabled(&self) -> bool {
        self.tokens.is_some() || self.client_certificates
    }

    /// The caller of a request with this `authorization` header and these (verified) client
    /// certificates. A bearer token wins over a certificate; a token presented when tokens
    /// are configured must be valid.
    ///
    /// # Errors
    /// When authentication is configured and neither proves an identity.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        certificates: Option<&[CertificateDer<'_>]>,
    ) -> Result<Caller, AuthError> {
        if !self.is_enabled() {
            return Ok(Caller::default());
        }
        if let (Some(tokens), Some(header)) = (&self.tokens, authorization) {
            let token = bearer_token(header).ok_or(AuthError::Malformed)?;
            let tokens = tokens.read().unwrap_or_else(|e| e.into_inner()).clone();
            let identity = tokens.identity(token).ok_or(AuthError::InvalidToken)?;
            return Ok(Caller {
                identity: identity.to_string(),
                authenticated: true,
            });
        }
        if self.client_certificates {
            if let Some(leaf) = certificates.and_then(|chain| chain.first()) {
                let identity = certificate_identity(leaf).ok_or(AuthError::AnonymousCertificate)?;
                return Ok(Caller {
                    identity,
                    authenticated: true,
                });
            }
        }
        Err(AuthError::Missing)
    }
}

/// `Bearer <token>` (scheme case-insensitive, RFC 7235) → the token.
fn bearer_token(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A certificate's subject CN, else its first DNS subject alternative name.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let common_name = cert.subject().iter_common_name().find_map(|cn| {
        cn.as_str()
            .ok()
            .map(str::trim)
            .filter(|cn| !cn.is_empty())
            .map(str::to_string)
    });
    common_name.or_else(|| {
        let san = cert.subject_alternative_name().ok().flatten()?;
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) if !dns.is_empty() => Some(dns.to_string()),
            _ => None,
        })
    })
}

/// The security of both edges: TLS (optional) and who callers are.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<Arc<Tls>>,
    pub authenticator: Authenticator,
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

/// Authenticates each ExecutorService call and leaves the [`Caller`] in its extensions.
#[derive(Debug, Clone)]
pub struct GrpcAuth(Authenticator);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let certificates = request.peer_certs();
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let caller = self
            .0
            .authenticate(authorization, certificates.as_deref().map(Vec::as_slice))
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The [`Caller`] of a gRPC request (anonymous when no interceptor set one).
pub fn grpc_caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default()
}

/// Axum middleware: authenticates every request outside [`OPEN_HTTP_PATHS`] and leaves the
/// [`Caller`] in its extensions; 401 with `WWW-Authenticate: Bearer` otherwise.
pub async fn http_layer(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    if !auth.is_enabled() || OPEN_HTTP_PATHS.contains(&request.uri().path()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_TOKEN: &str = "alice-secret";

    fn mk_tokens() -> Arc<Tokens> {
        let yaml = format!(
            "tokens:\n  - identity: alice\n    sha256: {}\n  - identity: ci\n    token: ci-secret\n",
            digest(ALICE_TOKEN).iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        Arc::new(Tokens::from_yaml(&yaml, "test").expect("valid tokens"))
    }

    #[test]
    fn without_authentication_everyone_is_anonymous() {
        let caller = Authenticator::default()
            .authenticate(Some(b"Bearer whatever"), None)
            .unwrap();
        assert_eq!(caller, Caller::default());
        assert_eq!(caller.identity, ANONYMOUS);
        assert_eq!(caller.approver("bob"), "bob");
    }

    #[test]
    fn a_token_names_its_identity_by_digest_or_plain() {
        let auth = Authenticator::new(Some(mk_tokens()), false);
        let alice = auth
            .authenticate(Some(b"Bearer alice-secret"), None)
            .unwrap();
        assert_eq!(alice.identity, "alice");
        assert!(alice.authenticated);
        assert_eq!(alice.approver("mallory"), "alice");
        assert_eq!(
            auth.authenticate(Some(b"bearer  ci-secret "), None)
                .unwrap()
                .identity,
            "ci"
        );
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused() {
        let auth = Authenticator::new(Some(mk_tokens()), false);
        assert_eq!(auth.authenticate(None, None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some(b"alice-secret"), None),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Basic YWxpY2U="), None),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer "), None),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(&[0xff, 0xfe]), None),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer alice-secreT"), None),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn mistakes_in_the_token_file_fail_the_load() {
        let load = |yaml: &str| Tokens::from_yaml(yaml, "test").unwrap_err().to_string();
        assert!(load("tokens: []").contains("no tokens"));
        assert!(load("tokens: [{identity: a}]").contains("exactly one"));
        assert!(load("tokens: [{identity: a, token: x, sha256: y}]").contains("exactly one"));
        assert!(load("tokens: [{identity: a, sha256: abc}]").contains("64"));
        assert!(load("tokens: [{identity: '', token: x}]").contains("identity"));
        assert!(
            load("tokens: [{identity: a, token: x}, {identity: b, token: x}]").contains("twice")
        );
        assert!(load("tokens: [{identity: a, token: x, role: admin}]").contains("role"));
        assert!(load("{").contains("test"));
    }

    #[test]
    fn json_token_files_are_accepted() {
        let tokens = Tokens::from_yaml(
            r#"{"tokens": [{"identity": "bob", "token": "t0k"}]}"#,
            "test",
        )
        .unwrap();
        assert_eq!(tokens.identity("t0k"), Some("bob"));
        assert_eq!(tokens.identity("t0K"), None);
    }

    fn mk_certificate(common_name: Option<&str>, dns_names: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(
            dns_names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_its_subject_cn_else_its_first_dns_name() {
        let both = mk_certificate(Some("deploy-bot"), &["bot.example.com"]);
        assert_eq!(certificate_identity(&both).as_deref(), Some("deploy-bot"));
        let san_only = mk_certificate(None, &["bot.example.com", "other.example.com"]);
        assert_eq!(
            certificate_identity(&san_only).as_deref(),
            Some("bot.example.com")
        );
        assert_eq!(certificate_identity(&mk_certificate(None, &[])), None);
    }

    #[test]
    fn garbage_is_no_certificate_identity() {
        assert_eq!(certificate_identity(b"not a certificate"), None);
        assert_eq!(certificate_identity(&[]), None);
    }
}
