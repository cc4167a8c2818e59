//! The dashboard: three files embedded in the binary (nothing to install, no build step),
//! served at `/` and `/ui/…`. They hold no data: everything the page shows comes from the
//! API with the caller's token, so they are served without authentication and the page
//! shows nothing until the API lets it.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// The paths of the dashboard's files.
pub const ASSET_PATHS: &[&str] = &["/", "/ui/app.js", "/ui/app.css"];

/// Whether `path` is one of the dashboard's files (served without authentication).
pub fn is_asset(path: &str) -> bool {
    ASSET_PATHS.contains(&path)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Only our own scripts, styles and API; no framing by another site.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(super) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(super) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
