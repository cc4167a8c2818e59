//! What the HTTP/JSON door's bodies, paths and queries mean, and what its answers look like:
//! the seed service's request shape (`{"action", "target", "parameters", "alert",
//! "request_id", "timeout_seconds"}`, the target taken from the alert's labels when omitted,
//! states in either spelling) decoded into the engine's request types, and the engine's
//! answers encoded back. Errors name the HTTP field; [`super::errors`] gives them a status.

use std::{collections::HashMap, time::Duration};

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection},
        Path,
    },
};
use serde_json::{json, Map, Value};

use super::errors::{body_rejected, path_rejected, ApiResult};
use crate::{
    domain::{
        ActionSpec, AlertContext, Event, ExecutionRequest, ExecutionState, ExecutionView,
        ListFilter, ParamType, RequestedTarget,
    },
    engine::{DryRunReport, EngineError, MAX_TIMEOUT},
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

/// `{"action", "target", "parameters", "alert", "request_id", "timeout_seconds"}`; the target
/// may be omitted when the alert's labels name it, as the seed service allowed.
pub(super) fn execution_request(body: &Map<String, Value>) -> ApiResult<ExecutionRequest> {
    let target = match body.get("target") {
        None | Some(Value::Null) => RequestedTarget::default(),
        Some(Value::Object(t)) => RequestedTarget {
            cluster: nested_string(t, "target", "cluster")?,
            namespace: nested_string(t, "target", "namespace")?,
            kind: nested_string(t, "target", "kind")?,
            name: nested_string(t, "target", "name")?,
        },
        Some(other) => return Err(not_an_object("target", other)),
    };
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(other) => return Err(not_an_object("parameters", other)),
    };
    let alert = match body.get("alert") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => Some(AlertContext {
            name: nested_string(a, "alert", "name")?,
            severity: nested_string(a, "alert", "severity")?,
            labels: string_map(a, "alert.labels", "labels")?,
            annotations: string_map(a, "alert.annotations", "annotations")?,
        }),
        Some(other) => return Err(not_an_object("alert", other)),
    };
    let timeout = match body.get("timeout_seconds") {
        None | Some(Value::Null) => None,
        Some(value) => Some(timeout_seconds(value)?),
    };
    Ok(ExecutionRequest {
        action: optional_string(body, "action")?.trim().to_string(),
        target,
        parameters,
        request_id: optional_string(body, "request_id")?,
        timeout,
        alert,
        ..Default::default()
    })
}

/// A positive number of seconds up to the engine's maximum, named as the HTTP field (the
/// engine would name gRPC's `timeout`).
fn timeout_seconds(value: &Value) -> ApiResult<Duration> {
    let field = "timeout_seconds";
    let max = MAX_TIMEOUT.as_secs();
    let seconds = value.as_f64().ok_or_else(|| {
        EngineError::invalid(field, format!("must be a number, got {}", json_type(value)))
    })?;
    if !(seconds >= 1.0 && seconds <= max as f64) {
        return Err(EngineError::invalid(
            field,
            format!("must be between 1 and {max}, got {seconds}"),
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(super) fn optional_string(map: &Map<String, Value>, field: &str) -> ApiResult<String> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(EngineError::invalid(
            field,
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

pub(super) fn optional_bool(map: &Map<String, Value>, field: &str) -> ApiResult<bool> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(EngineError::invalid(
            field,
            format!("must be a boolean, got {}", json_type(other)),
        )),
    }
}

/// A string member of a nested object, its errors naming `parent.key`; trimmed like gRPC's.
fn nested_string(map: &Map<String, Value>, parent: &str, key: &str) -> ApiResult<String> {
    optional_string(map, key)
        .map(|s| s.trim().to_string())
        .map_err(|e| match e {
            EngineError::InvalidArgument { message, .. } => EngineError::InvalidArgument {
                field: format!("{parent}.{key}"),
                message,
            },
            other => other,
        })
}

/// Alert labels or annotations: strings, with numbers and booleans taken as their text
/// (alert managers are not always careful to quote).
fn string_map(
    map: &Map<String, Value>,
    field: &str,
    key: &str,
) -> ApiResult<std::collections::BTreeMap<String, String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                other => Err(EngineError::invalid(
                    &format!("{field}.{k}"),
                    format!("must be a string, got {}", json_type(other)),
                )),
            })
            .collect(),
        Some(other) => Err(not_an_object(field, other)),
    }
}

fn not_an_object(field: &str, value: &Value) -> EngineError {
    EngineError::invalid(
        field,
        format!("must be a JSON object, got {}", json_type(value)),
    )
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
    json!({
        "target": {
            "cluster": r.target.cluster,
            "namespace": r.target.namespace,
            "kind": r.target.kind,
            "name": r.target.name,
        },
        "parameters": r.parameters,
        "summary": r.plan.summary,
        "changes": r.plan.changes.iter().map(|c| json!({
            "object": c.object,
            "summary": c.summary,
            "before": c.before,
            "after": c.after,
            "patch": c.patch(),
        })).collect::<Vec<_>>(),
        "warnings": r.plan.warnings,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_seed_shape_takes_its_target_from_the_alert_labels() {
        let r = execution_request(&mk_body(json!({
            "action": "restart_pod",
            "alert": {"labels": {"pod": "web-123", "namespace": "production"}},
        })))
        .unwrap();
        assert_eq!(r.action, "restart_pod");
        let alert = r.alert.unwrap();
        assert_eq!(alert.labels["pod"], "web-123");
        assert_eq!(alert.labels["namespace"], "production");
        assert!(r.target.name.is_empty());
    }

    #[test]
    fn ill_typed_members_are_refused_naming_the_field() {
        let field = |v: Value| match execution_request(&mk_body(v)) {
            Err(EngineError::InvalidArgument { field, .. }) => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        };
        assert_eq!(field(json!({"action": 5})), "action");
        assert_eq!(field(json!({"target": {"name": 5}})), "target.name");
        assert_eq!(field(json!({"parameters": [1]})), "parameters");
        assert_eq!(
            field(json!({"alert": {"labels": {"pod": ["x"]}}})),
            "alert.labels.pod"
        );
        assert_eq!(field(json!({"timeout_seconds": "60s"})), "timeout_seconds");
        assert_eq!(field(json!({"timeout_seconds": 0})), "timeout_seconds");
        assert_eq!(field(json!({"timeout_seconds": 1e9})), "timeout_seconds");
    }

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
