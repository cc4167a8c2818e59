//! What the HTTP/JSON door's bodies, paths and queries mean, and what its answers look like:
//! the seed service's request shape (`{"action", "target", "parameters", "alert",
//! "request_id", "timeout_seconds"}`, the target taken from the alert's labels when omitted,
//! states in either spelling) decoded into the engine's request types, and the engine's
//! answers encoded back. Errors name the HTTP field; [`super::errors`] gives them a status.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection},
        Path,
    },
};
use serde_json::{json, Map, Value};

use super::errors::{body_rejected, path_rejected, ApiResult};
pub(super) use crate::engine::json::{
    execution_request, json_type, optional_bool, optional_string,
};
use crate::{
    domain::{ActionSpec, Event, ExecutionState, ExecutionView, ListFilter, ParamType},
    engine::{DryRunReport, EngineError},
};

// ---- JSON → domain -------------------------------------------------------------------------

/// The body as a JSON object; whatever the content type says, since curl's `-d` sends JSON as
/// a form unless told otherwise.
pub(super) fn json_object(body: Result<Bytes, BytesRejection>) -> ApiResult<Map<String, Value>> {
    let body = body.map_err(body_rejected)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EngineError::invalid("body", "is required: a JSON object"));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(EngineError::invalid(
            "body",
            format!("must be a JSON object, got {}", json_type(&other)),
        )),
        Err(e) => Err(EngineError::invalid(
            "body",
            format!("is not valid JSON: {e}"),
        )),
    }
}

/// Like [`json_object`], but an empty body is an empty object.
pub(super) fn optional_json_object(
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Map<String, Value>> {
    match &body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        _ => json_object(body),
    }
}

pub(super) fn execution_id(id: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    id.map(|Path(id)| id).map_err(path_rejected)
}

/// The `GET /api/v1/executions` query: `state`, `action`, `namespace`, `requester`,
/// `page_size`, `page_token`; an empty value filters nothing, an unknown key is refused.
pub(super) fn list_filter(query: HashMap<String, String>) -> ApiResult<ListFilter> {
    let mut filter = ListFilter::default();
    for (key, value) in query {
        let value = value.trim();
        match key.as_str() {
            "state" if !value.is_empty() => filter.state = Some(state_from(value)?),
            "action" if !value.is_empty() => filter.action = Some(value.to_string()),
            "namespace" if !value.is_empty() => filter.namespace = Some(value.to_string()),
            "requester" if !value.is_empty() => filter.requester = Some(value.to_string()),
            "page_size" if !value.is_empty() => {
                filter.page_size = value.parse().map_err(|_| {
                    EngineError::invalid("page_size", format!("must be a number, got {value:?}"))
                })?
            }
            "page_token" => filter.page_token = value.to_string(),
            "state" | "action" | "namespace" | "requester" | "page_size" => {}
            other => return Err(EngineError::invalid(
                other,
                "unknown query parameter (known: state, action, namespace, requester, page_size, page_token)",
            )),
        }
    }
    Ok(filter)
}

/// `SUCCEEDED`, `succeeded` or gRPC's `EXECUTION_STATE_SUCCEEDED`.
fn state_from(value: &str) -> ApiResult<ExecutionState> {
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("EXECUTION_STATE_").unwrap_or(&upper);
    serde_json::from_value(Value::String(name.to_string()))
        .map_err(|_| EngineError::invalid("state", format!("unknown state {value:?}")))
}

// ---- domain → JSON -------------------------------------------------------------------------

pub fn execution_json(v: &ExecutionView) -> Value {
    json!({
        "id": v.id,
        "action": v.action,
        "target": {
            "cluster": v.target.cluster,
            "namespace": v.target.namespace,
            "kind": v.target.kind,
            "name": v.target.name,
        },
        "parameters": v.parameters,
        "request_id": v.request_id,
        "state": v.state.as_str(),
        "message": v.message,
        "created_at": v.created_at,
        "started_at": v.started_at,
        "finished_at": v.finished_at,
        "timeout_seconds": v.timeout.as_secs_f64(),
        "alert": v.alert,
        "result": v.result,
        "rollback_data": v.rollback_data,
        "last_sequence": v.last_sequence,
        "requester": v.requester,
        "policy": v.policy,
        "approval": v.approval,
        "trace_id": v.trace_id,
        "recommendation": v.recommendation,
    })
}

pub fn event_json(execution_id: &str, e: &Event) -> Value {
    json!({
        "execution_id": execution_id,
        "sequence": e.sequence,
        "timestamp": e.timestamp,
        "state": e.state.as_str(),
        "message": e.message,
        "progress": e.progress.map(|(current, total)| json!({ "current": current, "total": total })),
        "details": e.details,
    })
}

pub(super) fn dry_run_json(r: &DryRunReport) -> Value {
    let mut report = r.plan.to_json();
    report["target"] = json!({
        "cluster": r.target.cluster,
        "namespace": r.target.namespace,
        "kind": r.target.kind,
        "name": r.target.name,
    });
    report["parameters"] = Value::Object(r.parameters.clone());
    report
}

pub(super) fn action_json(spec: &ActionSpec) -> Value {
    json!({
        "name": spec.name,
        "description": spec.description,
        "risk": spec.risk,
        "target_kinds": spec.target_kinds,
        "parameters": spec.params.iter().map(|p| json!({
            "name": p.name,
            "type": match p.ty {
                ParamType::Integer => "integer",
                ParamType::String => "string",
                ParamType::Boolean => "boolean",
                ParamType::Quantity => "quantity",
                ParamType::Files => "files",
            },
            "description": p.description,
            "required": p.required,
            "default": p.default,
            "minimum": p.min,
            "maximum": p.max,
            "allowed_values": p.allowed,
        })).collect::<Vec<_>>(),
    })
}

/// An action as the incident platform's registry lists it: its hyphenated name (the one it
/// sends), our name, risk level and parameters.
pub(super) fn registry_entry(spec: &ActionSpec) -> Value {
    let ours = action_json(spec);
    json!({
        "name": spec.name.replace('_', "-"),
        "action": spec.name,
        "description": spec.description,
        "risk_level": spec.risk,
        "target_kinds": spec.target_kinds,
        "parameters": ours["parameters"],
        "enabled": true,
        "source": "builtin",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_are_refused_as_the_body() {
        for body in ["", "  ", "{", "[1]", "null", "\"x\""] {
            match json_object(Ok(Bytes::from(body))) {
                Err(EngineError::InvalidArgument { field, .. }) => assert_eq!(field, "body"),
                other => panic!("{body:?}: expected INVALID_ARGUMENT, got {other:?}"),
            }
        }
    }

    #[test]
    fn states_are_accepted_in_either_spelling() {
        assert_eq!(state_from("SUCCEEDED").unwrap(), ExecutionState::Succeeded);
        assert_eq!(state_from("timed_out").unwrap(), ExecutionState::TimedOut);
        assert_eq!(
            state_from("EXECUTION_STATE_FAILED").unwrap(),
            ExecutionState::Failed
        );
        assert!(state_from("DONE").is_err());
    }
}
