//! What an approved-action message means, and what a status message says.
//!
//! Two shapes are taken (JSON objects; the schema is `docs/kafka-messages.schema.json`):
//! - the orchestrator's: `action_id`, `action_type` (`scale-deployment` or `scale_deployment`),
//!   `namespace` (default `default`), the target as `resource` (`deployment/web`), a
//!   `target` object, or `kind` + `name`, `parameters`, `incident_id`, `alert`,
//!   `approved_by`, `timeout_seconds`, `dry_run`;
//! - the executor's own (as the HTTP API takes it): `action`, `target`, `parameters`,
//!   `alert`, `request_id`, `timeout_seconds`, with `action_id` and `dry_run` beside them.
//!
//! `action_id` (else `request_id`, else the message's topic/partition/offset) becomes the
//! execution's `request_id`, so a message delivered twice runs once.

use serde_json::{json, Map, Value};

use crate::{
    domain::{Event, ExecutionRequest, ExecutionState, ExecutionView},
    engine::{
        json::{execution_request, json_type, kind_and_name, optional_bool, optional_string},
        EngineError,
    },
};

/// A message taken in: the request, and what its statuses are keyed by.
#[derive(Debug)]
pub struct Approved {
    /// The action id (or the message's own coordinates): the status messages' key.
    pub action_id: String,
    pub incident_id: String,
    pub request: ExecutionRequest,
    pub dry_run: bool,
}

/// Where a message came from, for the request_id of one without an action id.
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// A message refused, with the key its `rejected` status goes under.
#[derive(Debug)]
pub struct Refused {
    pub action_id: String,
    pub error: EngineError,
}

/// Reads a message's payload.
///
/// # Errors
/// [`Refused`] naming the problem (not JSON, not an object, a field of the wrong type).
pub fn parse(payload: Option<&[u8]>, origin: &Origin<'_>) -> Result<Approved, Refused> {
    let coordinates = format!("{}/{}/{}", origin.topic, origin.partition, origin.offset);
    let refuse = |action_id: &str, error: EngineError| Refused {
        action_id: if action_id.is_empty() {
            coordinates.clone()
        } else {
            action_id.to_string()
        },
        error,
    };
    let value: Value = match payload.map(serde_json::from_slice) {
        None => return Err(refuse("", EngineError::invalid("message", "is empty"))),
        Some(Err(e)) => {
            return Err(refuse(
                "",
                EngineError::invalid("message", format!("is not JSON: {e}")),
            ))
        }
        Some(Ok(v)) => v,
    };
    let Value::Object(body) = value else {
        return Err(refuse(
            "",
            EngineError::invalid(
                "message",
                format!("must be a JSON object, got {}", json_type(&value)),
            ),
        ));
    };
    let action_id = optional_string(&body, "action_id")
        .map_err(|e| refuse("", e))?
        .trim()
        .to_string();
    let read = || -> Result<Approved, EngineError> {
        let incident_id = optional_string(&body, "incident_id")?;
        let dry_run = optional_bool(&body, "dry_run")?;
        let shaped = if body.contains_key("action_type") {
            from_orchestrator(&body)?
        } else {
            body.clone()
        };
        // Hyphenated names (`scale-deployment`) are the engine's aliases, as for every door.
        let mut request = execution_request(&shaped)?;
        if request.request_id.is_empty() {
            request.request_id = if action_id.is_empty() {
                format!("kafka:{coordinates}")
            } else {
                action_id.clone()
            };
        }
        let approved_by = optional_string(&body, "approved_by")?;
        if !incident_id.is_empty() || !approved_by.is_empty() {
            let alert = request.alert.get_or_insert_with(Default::default);
            for (name, value) in [("incident_id", &incident_id), ("approved_by", &approved_by)] {
                if !value.is_empty() {
                    alert.annotations.insert(name.to_string(), value.clone());
                }
            }
        }
        Ok(Approved {
            action_id: if action_id.is_empty() {
                request.request_id.clone()
            } else {
                action_id.clone()
            },
            incident_id,
            request,
            dry_run,
        })
    };
    read().map_err(|e| refuse(&action_id, e))
}

/// The orchestrator's shape in the executor's: `action_type` → `action`, the target from
/// `target`, `resource`, or `kind`/`name`, in `namespace` (else `parameters.namespace`, else
/// `default`).
fn from_orchestrator(body: &Map<String, Value>) -> Result<Map<String, Value>, EngineError> {
    let mut shaped = body.clone();
    let action = optional_string(body, "action_type")?;
    if action.trim().is_empty() {
        return Err(EngineError::invalid("action_type", "is required"));
    }
    shaped.insert("action".into(), Value::String(action.trim().to_string()));
    let mut parameters = match body.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(other) => {
            return Err(EngineError::invalid(
                "parameters",
                format!("must be a JSON object, got {}", json_type(other)),
            ))
        }
    };
    // The orchestrator's executor took the namespace as a parameter.
    let namespace = match optional_string(body, "namespace")? {
        ns if !ns.trim().is_empty() => ns.trim().to_string(),
        _ => match parameters.remove("namespace") {
            Some(Value::String(ns)) if !ns.trim().is_empty() => ns.trim().to_string(),
            None | Some(Value::Null) => "default".to_string(),
            Some(Value::String(_)) => "default".to_string(),
            Some(other) => {
                return Err(EngineError::invalid(
                    "parameters.namespace",
                    format!("must be a string, got {}", json_type(&other)),
                ))
            }
        },
    };
    if !body.contains_key("target") {
        let resource = optional_string(body, "resource")?;
        let (kind, name) = if resource.is_empty() {
            (
                optional_string(body, "kind")?,
                optional_string(body, "name")?,
            )
        } else {
            kind_and_name(&resource, "resource")?
        };
        shaped.insert(
            "target".into(),
            json!({ "namespace": namespace, "kind": kind, "name": name }),
        );
    }
    shaped.insert("parameters".into(), Value::Object(parameters));
    for orchestrator_only in ["action_type", "resource", "kind", "name", "namespace"] {
        shaped.remove(orchestrator_only);
    }
    Ok(shaped)
}

/// The seed's plain status of a state.
pub fn plain_status(state: ExecutionState) -> &'static str {
    match state {
        ExecutionState::Queued => "accepted",
        ExecutionState::WaitingApproval => "waiting_approval",
        ExecutionState::Running => "running",
        ExecutionState::RollingBack => "rolling_back",
        ExecutionState::Succeeded => "success",
        ExecutionState::Failed => "failed",
        ExecutionState::TimedOut => "timed_out",
        ExecutionState::Cancelled => "cancelled",
        ExecutionState::RolledBack => "rolled_back",
        ExecutionState::Interrupted => "interrupted",
        ExecutionState::Rejected => "rejected",
        ExecutionState::Shadowed => "shadowed",
    }
}

/// The status message of `event` of `execution`.
pub fn status(action_id: &str, execution: &ExecutionView, event: &Event) -> Value {
    let mut message = json!({
        "action_id": action_id,
        "execution_id": execution.id,
        "action": execution.action,
        "target": {
            "cluster": execution.target.cluster,
            "namespace": execution.target.namespace,
            "kind": execution.target.kind,
            "name": execution.target.name,
        },
        "sequence": event.sequence,
        "state": event.state.as_str(),
        "status": plain_status(event.state),
        "message": event.message,
        "timestamp": event.timestamp,
        "created_at": execution.created_at,
    });
    if let Some(incident) = execution
        .alert
        .as_ref()
        .and_then(|a| a.annotations.get("incident_id"))
    {
        message["incident_id"] = json!(incident);
    }
    if event.state.is_terminal() {
        message["started_at"] = json!(execution.started_at);
        message["finished_at"] = json!(execution.finished_at.unwrap_or(event.timestamp));
        message["result"] = if event.details.is_null() {
            execution.result.clone()
        } else {
            event.details.clone()
        };
    }
    message
}

/// The status message of a refused message.
pub fn rejected(refused: &Refused) -> Value {
    let (field, reason) = match &refused.error {
        EngineError::InvalidArgument { field, message } => (field.as_str(), message.clone()),
        other => ("", other.to_string()),
    };
    json!({
        "action_id": refused.action_id,
        "state": "REJECTED",
        "status": "rejected",
        "message": if field.is_empty() { reason.clone() } else { format!("{field}: {reason}") },
        "error": { "field": field, "reason": reason },
        "timestamp": chrono::Utc::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<'static> {
        Origin {
            topic: "actions.approved",
            partition: 0,
            offset: 7,
        }
    }

    fn parsed(v: Value) -> Result<Approved, Refused> {
        parse(Some(v.to_string().as_bytes()), &origin())
    }

    #[test]
    fn the_orchestrators_shape_names_a_target_by_resource_and_defaults_the_namespace() {
        let a = parsed(json!({
            "action_id": "a-1", "action_type": "scale-deployment",
            "resource": "deployment/web", "parameters": {"replicas_increment": 2},
            "incident_id": "INC-9", "approved_by": "alice",
        }))
        .unwrap();
        assert_eq!(a.action_id, "a-1");
        assert_eq!(a.request.request_id, "a-1");
        assert_eq!(a.request.action, "scale-deployment");
        assert_eq!(
            (
                a.request.target.namespace.as_str(),
                a.request.target.kind.as_str(),
                a.request.target.name.as_str()
            ),
            ("default", "deployment", "web")
        );
        assert_eq!(a.request.parameters["replicas_increment"], 2);
        let alert = a.request.alert.unwrap();
        assert_eq!(alert.annotations["incident_id"], "INC-9");
        assert_eq!(alert.annotations["approved_by"], "alice");
    }

    #[test]
    fn the_namespace_may_come_as_a_parameter_as_the_orchestrators_executor_took_it() {
        let a = parsed(json!({
            "action_id": "a-2", "action_type": "restart_pod", "kind": "Pod", "name": "web-1",
            "parameters": {"namespace": "production"},
        }))
        .unwrap();
        assert_eq!(a.request.target.namespace, "production");
        assert!(!a.request.parameters.contains_key("namespace"));
    }

    #[test]
    fn the_executors_own_shape_is_taken_as_the_http_api_takes_it() {
        let a = parsed(json!({
            "action": "rolling_restart_deployment",
            "target": {"namespace": "production", "name": "api"},
        }))
        .unwrap();
        assert_eq!(a.request.request_id, "kafka:actions.approved/0/7");
        assert_eq!(a.action_id, "kafka:actions.approved/0/7");
    }

    #[test]
    fn bad_messages_are_refused_naming_the_problem_under_their_key() {
        let field = |payload: &[u8]| {
            let refused = parse(Some(payload), &origin()).unwrap_err();
            match refused.error {
                EngineError::InvalidArgument { field, .. } => (refused.action_id, field),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(field(b"not json").1, "message");
        assert_eq!(field(b"[1]").1, "message");
        assert_eq!(
            field(br#"{"action_id": "x", "action_type": "scale-deployment", "resource": "web"}"#),
            ("x".to_string(), "resource".to_string())
        );
        assert_eq!(
            field(br#"{"action_id": "y", "action_type": "restart_pod", "parameters": [1]}"#).1,
            "parameters"
        );
        assert_eq!(field(br#"{"action_id": 5}"#).1, "action_id");
        assert_eq!(field(br#"{"action_id": 5}"#).0, "actions.approved/0/7");
    }
}
