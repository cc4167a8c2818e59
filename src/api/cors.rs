//! Cross-origin calls (`--cors-allow-origin`): dashboards of other teams, served from other
//! origins, call the HTTP API, follow event streams and use gRPC-Web. Only the exact origins
//! configured are allowed (never `*`, since credentials — client certificates — may be
//! sent); the headers gRPC-Web and the API need may be sent, and the gRPC status headers read.
//! Preflight requests are answered before authentication, as browsers send them without a
//! token.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The configured origins, checked: `scheme://host[:port]`, nothing else.
///
/// # Errors
/// The first origin that is not one, named.
pub fn origins(configured: &[String]) -> anyhow::Result<Vec<HeaderValue>> {
    configured
        .iter()
        .map(|origin| {
            let origin = origin.trim();
            let valid = match origin.split_once("://") {
                Some(("http" | "https", rest)) => {
                    !rest.is_empty()
                        && !rest.contains(['/', '?', '#', '*', '@', ' '])
                }
                _ => false,
            };
            if !valid {
                anyhow::bail!(
                    "--cors-allow-origin {origin:?}: must be an exact origin such as https://dashboard.example.com or http://127.0.0.1:3000 (no path, no wildcard)"
                );
            }
            Ok(HeaderValue::from_str(origin)?)
        })
        .collect()
}

/// The layer answering preflights and marking responses for `origins`; `None` without any.
pub fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("tracestate"),
            ])
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ])
            .allow_credentials(true)
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::origins;

    #[test]
    fn only_exact_origins_are_accepted() {
        assert!(origins(&[
            "https://dash.example.com".into(),
            "http://127.0.0.1:3000".into()
        ])
        .is_ok());
        for bad in [
            "*",
            "https://*.example.com",
            "dash.example.com",
            "https://x.com/path",
            "ftp://x",
        ] {
            let err = origins(&[bad.to_string()]).unwrap_err().to_string();
            assert!(err.contains("--cors-allow-origin"), "{bad}: {err}");
        }
    }
}
