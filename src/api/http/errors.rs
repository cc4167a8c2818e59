//! How the HTTP/JSON door refuses: the one mapping from [`EngineError`] to an HTTP status and
//! `{"error": {"code", "field", "message"}}` body (the HTTP twin of `api::status`), and the
//! rejections of axum's extractors (an unreadable body, path or query) turned into
//! `INVALID_ARGUMENT` naming what was wrong, so they leave through that same mapping.

use axum::{
    extract::rejection::{BytesRejection, PathRejection, QueryRejection},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use crate::engine::EngineError;

/// Seconds a client told 429 should wait before retrying: a queue slot frees when any queued
/// execution starts, which is usually well within this.
const QUEUE_FULL_RETRY_AFTER_SECONDS: u64 = 1;

/// The one mapping from engine errors to HTTP statuses and error bodies.
impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            EngineError::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            EngineError::FailedPrecondition(_) => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            EngineError::PermissionDenied(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            EngineError::AlreadyExists(_) => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            EngineError::QueueFull { .. } | EngineError::Exhausted { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED")
            }
            EngineError::ShuttingDown | EngineError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            EngineError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "HTTP request failed");
        }
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let EngineError::InvalidArgument { field, .. } = &self {
            error["field"] = Value::String(field.clone());
        }
        let retry_after = match &self {
            EngineError::QueueFull { .. } => Some(QUEUE_FULL_RETRY_AFTER_SECONDS),
            // Whole seconds, rounded up: a client waiting less would be refused again.
            EngineError::Exhausted {
                retry_after: Some(wait),
                ..
            } => Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            _ => None,
        };
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if matches!(&self, EngineError::InvalidArgument { field, .. } if field == "body") {
            // A body the server could not read (over the limit, cut off) is left partly
            // unread, and the connection with it: say so, or a keep-alive client sends its
            // next request on a connection that will never answer.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// A call this service has no operation for, answered 501 `UNIMPLEMENTED` with why and what
/// to use instead (not a 404, which would read as a wrong URL).
pub(super) fn unimplemented(message: &str) -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({ "error": { "code": "UNIMPLEMENTED", "message": message } })),
    )
        .into_response()
}

/// What every handler returns: its answer, or an engine error in the one shape above.
pub(super) type ApiResult<T> = Result<T, EngineError>;

/// A body axum could not read (too large, cut off) as `INVALID_ARGUMENT` on `body`.
pub(super) fn body_rejected(rejection: BytesRejection) -> EngineError {
    EngineError::invalid("body", rejection.body_text())
}

/// A path axum could not decode as `INVALID_ARGUMENT` on `execution_id`, the one path parameter.
pub(super) fn path_rejected(rejection: PathRejection) -> EngineError {
    EngineError::invalid("execution_id", rejection.body_text())
}

/// A query string axum could not decode as `INVALID_ARGUMENT` on `query`.
pub(super) fn query_rejected(rejection: QueryRejection) -> EngineError {
    EngineError::invalid("query", rejection.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_error_has_its_status() {
        let status = |e: EngineError| e.into_response().status();
        assert_eq!(
            status(EngineError::invalid("x", "y")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(EngineError::NotFound("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(EngineError::FailedPrecondition("x".into())),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(EngineError::QueueFull { capacity: 1 }),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(EngineError::ShuttingDown),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
