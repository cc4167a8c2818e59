//! API errors, rendered as `meta/v1 Status` objects exactly as the real API server does.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};

use super::resources::ResourceDef;

/// An error the simulated API server answers with: HTTP code, `reason`, message, details.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code, also the Status `code`.
    pub code: u16,
    /// The machine-readable Status `reason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message, as kubectl prints it after `Error from server (Reason):`.
    pub message: String,
    /// Status `details` (name, group, kind, causes), if any.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (the real server sends one for API priority and
    /// fairness rejections, not for PDB-blocked evictions).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, res: &ResourceDef, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        self
    }

    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.qualified(), name),
        )
        .with_details(res, name)
    }

    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", res.qualified(), name),
        )
        .with_details(res, name)
    }

    pub fn conflict(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified(),
                name
            ),
        )
        .with_details(res, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn forbidden(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{}\" is forbidden: {}", res.qualified(), name, why),
        )
        .with_details(res, name)
    }

    /// `422 Invalid` with one cause per `(field, message)`.
    pub fn invalid(res: &ResourceDef, name: &str, causes: &[(String, String)]) -> Self {
        let msgs: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let joined = if msgs.len() == 1 {
            msgs[0].clone()
        } else {
            format!("[{}]", msgs.join(", "))
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|(f, m)| {
                let reason = if m.starts_with("Required value") {
                    "FieldValueRequired"
                } else if m.starts_with("Unsupported value") {
                    "FieldValueNotSupported"
                } else if m.starts_with("Forbidden") {
                    "FieldValueForbidden"
                } else {
                    "FieldValueInvalid"
                };
                json!({"reason": reason, "message": m, "field": f})
            })
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "{} \"{}\" is invalid: {}",
                res.qualified_kind(),
                name,
                joined
            ),
            details: Some(json!({
                "name": name, "group": res.group, "kind": res.kind, "causes": causes_json
            })),
            retry_after: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            self.status().to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// A `Status` with `status: Success`, as eviction and some deletes answer.
pub fn success_status(code: u16, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}
