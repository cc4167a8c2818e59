//! Who is calling: a bearer token from the token file or, with mutual TLS, the verified client
//! certificate's subject CN (or first DNS SAN) becomes the [`Caller`]; without authentication
//! configured every caller is `anonymous`.

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::CertificateDer;

use super::tokens::Tokens;
use crate::engine::ANONYMOUS;

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
    /// A verified client certificate naming the identity reserved for unauthenticated
    /// callers, which must never pass for an authenticated one (self-approval checks rely
    /// on it).
    #[error("the client certificate names the reserved identity {0:?}")]
    ReservedIdentity(String),
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
                if identity.eq_ignore_ascii_case(ANONYMOUS) {
                    return Err(AuthError::ReservedIdentity(identity));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::tokens::digest;

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
