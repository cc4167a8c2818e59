//! The executor's request as JSON, shared by the doors that take JSON (HTTP, Kafka):
//! `{"action", "target", "parameters", "alert", "request_id", "timeout_seconds"}`, the target
//! may be omitted when the alert's labels name it (the seed service's shape). Errors name the
//! JSON field.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{EngineError, MAX_TIMEOUT};
use crate::domain::{AlertContext, ExecutionRequest, Recommendation, RequestedTarget};

/// `{"action", "target", "parameters", "alert", "request_id", "timeout_seconds"}`; the target
/// may be omitted when the alert's labels name it, as the seed service allowed.
pub fn execution_request(body: &Map<String, Value>) -> Result<ExecutionRequest, EngineError> {
    if body.get("action").is_some_and(Value::is_object) {
        return execution_request(&from_platform(body)?);
    }
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
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|p| i32::try_from(p).is_ok()) => {
            n.as_i64().and_then(|p| i32::try_from(p).ok()).unwrap_or(0)
        }
        Some(other) => {
            return Err(EngineError::invalid(
                "priority",
                format!("must be an integer, got {}", json_type(other)),
            ))
        }
    };
    Ok(ExecutionRequest {
        recommendation: recommendation(body)?,
        priority,
        action: optional_string(body, "action")?.trim().to_string(),
        target,
        parameters,
        request_id: optional_string(body, "request_id")?,
        timeout,
        alert,
        ..Default::default()
    })
}

/// `recommendation: {incident_id, confidence, reasoning, source}`, or the same fields at the
/// top level (`incident_id`, `confidence`, `reasoning`), as the platforms send them.
fn recommendation(body: &Map<String, Value>) -> Result<Option<Recommendation>, EngineError> {
    let mut r = match body.get("recommendation") {
        None | Some(Value::Null) => Recommendation::default(),
        Some(Value::Object(o)) => Recommendation {
            incident_id: nested_string(o, "recommendation", "incident_id")?,
            confidence: confidence(o.get("confidence"), "recommendation.confidence")?,
            reasoning: nested_string(o, "recommendation", "reasoning")?,
            source: nested_string(o, "recommendation", "source")?,
        },
        Some(other) => return Err(not_an_object("recommendation", other)),
    };
    if r.incident_id.is_empty() {
        r.incident_id = optional_string(body, "incident_id")?.trim().to_string();
    }
    if r.confidence.is_none() {
        r.confidence = confidence(body.get("confidence"), "confidence")?;
    }
    if r.reasoning.is_empty() {
        r.reasoning = optional_string(body, "reasoning")?.trim().to_string();
    }
    Ok((r != Recommendation::default()).then_some(r))
}

fn confidence(value: Option<&Value>, field: &str) -> Result<Option<f64>, EngineError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(EngineError::invalid(
            field,
            format!("must be a number, got {}", json_type(other)),
        )),
    }
}

/// Whether `body` is the incident platform's shape: `{"action": {"action", "parameters",
/// "priority"}, "alert": {"name", "severity", "namespace", "resource", …}}`.
pub fn is_platform_shape(body: &Map<String, Value>) -> bool {
    body.get("action").is_some_and(Value::is_object)
}

/// The incident platform's shape in the executor's: the nested action object's `action`,
/// `parameters` and `priority`; the alert's `namespace` and `resource` (`kind/name`) as the
/// target when none is given. Errors name the platform's fields (`action.parameters`,
/// `alert.resource`).
fn from_platform(body: &Map<String, Value>) -> Result<Map<String, Value>, EngineError> {
    let mut shaped = body.clone();
    let Some(Value::Object(action)) = body.get("action") else {
        return Ok(shaped);
    };
    let name = optional_string(action, "action").map_err(|e| renamed(e, "action.action"))?;
    if name.trim().is_empty() {
        return Err(EngineError::invalid("action.action", "is required"));
    }
    shaped.insert("action".into(), Value::String(name));
    match action.get("parameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            shaped.insert("parameters".into(), Value::Object(p.clone()));
        }
        Some(other) => return Err(not_an_object("action.parameters", other)),
    }
    // What their decision engine said of it, kept for the audit trail.
    for field in ["priority", "confidence", "reasoning", "incident_id"] {
        if let Some(value) = action.get(field) {
            shaped.entry(field).or_insert_with(|| value.clone());
        }
    }
    if let Some(Value::Object(alert)) = body.get("alert") {
        let mut ours = alert.clone();
        let namespace =
            optional_string(alert, "namespace").map_err(|e| renamed(e, "alert.namespace"))?;
        let resource =
            optional_string(alert, "resource").map_err(|e| renamed(e, "alert.resource"))?;
        ours.remove("namespace");
        ours.remove("resource");
        shaped.insert("alert".into(), Value::Object(ours));
        if !body.contains_key("target") && (!namespace.is_empty() || !resource.is_empty()) {
            let (kind, name) = if resource.is_empty() {
                (String::new(), String::new())
            } else {
                kind_and_name(&resource, "alert.resource")?
            };
            shaped.insert(
                "target".into(),
                serde_json::json!({ "namespace": namespace, "kind": kind, "name": name }),
            );
        }
    }
    Ok(shaped)
}

/// `KIND/NAME` (`deployment/web`), as the platforms name an object; errors name `field`.
pub fn kind_and_name(resource: &str, field: &str) -> Result<(String, String), EngineError> {
    match resource.split_once('/') {
        Some((kind, name)) => Ok((kind.to_string(), name.to_string())),
        None => Err(EngineError::invalid(
            field,
            format!("must be KIND/NAME (e.g. deployment/web), got {resource:?}"),
        )),
    }
}

/// `e` naming `field` instead.
fn renamed(e: EngineError, field: &str) -> EngineError {
    match e {
        EngineError::InvalidArgument { message, .. } => EngineError::InvalidArgument {
            field: field.to_string(),
            message,
        },
        other => other,
    }
}

/// A positive number of seconds up to the engine's maximum, named as the HTTP field (the
/// engine would name gRPC's `timeout`).
fn timeout_seconds(value: &Value) -> Result<Duration, EngineError> {
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

pub fn optional_string(map: &Map<String, Value>, field: &str) -> Result<String, EngineError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(EngineError::invalid(
            field,
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

pub fn optional_bool(map: &Map<String, Value>, field: &str) -> Result<bool, EngineError> {
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
fn nested_string(map: &Map<String, Value>, parent: &str, key: &str) -> Result<String, EngineError> {
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
) -> Result<std::collections::BTreeMap<String, String>, EngineError> {
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

pub fn not_an_object(field: &str, value: &Value) -> EngineError {
    EngineError::invalid(
        field,
        format!("must be a JSON object, got {}", json_type(value)),
    )
}

pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn the_incident_platforms_shape_names_action_parameters_priority_and_target() {
        let r = execution_request(&mk_body(json!({
            "action": {"action": "scale-deployment", "parameters": {"replicas": 3}, "priority": 1},
            "alert": {"name": "HighCPUUsage", "severity": "critical",
                      "namespace": "production", "resource": "deployment/web-server"},
        })))
        .unwrap();
        assert_eq!(r.action, "scale-deployment");
        assert_eq!(r.parameters["replicas"], 3);
        assert_eq!(r.priority, 1);
        assert_eq!(
            (
                r.target.namespace.as_str(),
                r.target.kind.as_str(),
                r.target.name.as_str()
            ),
            ("production", "deployment", "web-server")
        );
        assert_eq!(r.alert.unwrap().name, "HighCPUUsage");
        let field = |v: Value| match execution_request(&mk_body(v)) {
            Err(EngineError::InvalidArgument { field, .. }) => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        };
        assert_eq!(field(json!({"action": {"action": 5}})), "action.action");
        assert_eq!(
            field(json!({"action": {"action": "x", "parameters": 1}})),
            "action.parameters"
        );
        assert_eq!(
            field(json!({"action": {"action": "x"}, "alert": {"resource": "web"}})),
            "alert.resource"
        );
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
}
