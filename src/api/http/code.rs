//! The API platform's executor contract, a compatibility door mapped onto the code actions:
//!
//! | Route | Action | Answer |
//! | --- | --- | --- |
//! | `POST /deploy` `{"api_id", …}` | `deploy_code` | `{"status": "success", "container_id", "message": "API deployed successfully"}` |
//! | `POST /stop/{api_id}` | `stop_code` | `{"status": "success", "message": "API stopped successfully"}` |
//! | `GET /status/{api_id}` | `code_status` | `{"api_id", "status": "running", "container_id"}` |
//! | `POST /remove/{api_id}` | `remove_code` | `{"status": "success", "message": "API removed successfully"}` |
//! | `GET /logs/{api_id}` | `code_logs` | Server-Sent Events: the log lines as they come |
//!
//! Each call is an execution like any other (history, policy, authorization, events); the
//! answer waits for its end. `/deploy` takes `deploy_code`'s parameters beside `api_id`
//! (`runtime`, `files`, `config_map`, `command`…); the platform's own call sends `api_id`
//! alone and deploys the ConfigMap `api-<id>-code` it uploaded. The namespace is
//! `--code-namespace`. Errors carry the platform's `{"status": "error", "message"}` and this
//! service's `error` object, with the field named as the caller sent it (`api_id`, `runtime`).

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

use super::{
    errors::{query_rejected, ApiResult},
    json::json_object,
    sse,
};
use crate::{
    api::Caller,
    domain::{
        code_object_name, is_uuid, ExecutionRequest, ExecutionState, ExecutionView, RequestedTarget,
    },
    engine::{Engine, EngineError},
};

/// Fields of `/deploy` that are not `deploy_code` parameters.
const DEPLOY_FIELDS: &[&str] = &["api_id"];

/// An error in the platform's shape, with this service's error object beside it.
fn refused(err: EngineError) -> Response {
    let err = match err {
        EngineError::InvalidArgument { field, message } => EngineError::InvalidArgument {
            field: caller_field(&field),
            message,
        },
        other => other,
    };
    let message = err.to_string();
    let mut response = err.into_response();
    let status = response.status();
    let body = json!({ "status": "error", "message": message });
    // The standard body is replaced by one holding both shapes.
    let code = status_code_name(status);
    let mut full = body;
    full["error"] = json!({ "code": code, "message": message });
    if let Some(field) = message.split_once(':').map(|(f, _)| f.to_string()) {
        if status == StatusCode::BAD_REQUEST {
            full["error"]["field"] = json!(field);
        }
    }
    *response.body_mut() = axum::body::Body::from(full.to_string());
    response
}

fn status_code_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// The field as the platform's caller sent it: `parameters.runtime` → `runtime`,
/// `target.name` → `api_id`.
fn caller_field(field: &str) -> String {
    if let Some(name) = field.strip_prefix("parameters.") {
        return name.to_string();
    }
    match field {
        "target.name" => "api_id".into(),
        other => other.into(),
    }
}

/// The API id from a path or body: a UUID, else 400 naming `api_id`.
fn api_id(text: &str) -> Result<String, EngineError> {
    if is_uuid(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        let shown: String = text.chars().take(64).collect();
        Err(EngineError::invalid(
            "api_id",
            format!("must be a UUID such as 3f2504e0-4f89-11d3-9a0c-0305e82c3301, got {shown:?}"),
        ))
    }
}

fn path_api_id(path: Result<Path<String>, PathRejection>) -> Result<String, EngineError> {
    let Path(text) = path.map_err(|e| EngineError::invalid("api_id", e.body_text()))?;
    api_id(&text)
}

/// `action` on API `id`'s Deployment in the code namespace, for `caller`.
fn request(
    engine: &Engine,
    caller: &Caller,
    action: &str,
    id: &str,
    parameters: Map<String, Value>,
) -> ExecutionRequest {
    ExecutionRequest {
        action: action.into(),
        target: RequestedTarget {
            namespace: engine.code_namespace().to_string(),
            kind: "Deployment".into(),
            name: code_object_name(id),
            ..Default::default()
        },
        parameters,
        requester: caller.identity.clone(),
        trace_id: crate::telemetry::current_trace_id(),
        ..Default::default()
    }
}

/// Runs `action` on API `id` and waits for its end (or for an approval it needs).
async fn run(
    engine: &Engine,
    caller: &Caller,
    action: &str,
    id: &str,
    parameters: Map<String, Value>,
) -> Result<ExecutionView, EngineError> {
    let execution = engine
        .submit(request(engine, caller, action, id, parameters))
        .await?;
    let events = engine.watch(&execution.id, 0, &caller.identity).await?;
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        if event.state.is_terminal() || event.state == ExecutionState::WaitingApproval {
            break;
        }
    }
    Ok(engine.get(&execution.id, &caller.identity).await?.0)
}

/// The answer to an execution that did not succeed: 202 while it waits for an approval, 404
/// when the API does not exist, 500 with the execution's message otherwise.
fn unsuccessful(execution: &ExecutionView) -> Response {
    let (status, state) = match execution.state {
        ExecutionState::WaitingApproval => (StatusCode::ACCEPTED, "pending_approval"),
        ExecutionState::Failed if execution.message.contains("not found") => {
            (StatusCode::NOT_FOUND, "error")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "error"),
    };
    (
        status,
        Json(json!({
            "status": state,
            "message": execution.message,
            "execution_id": execution.id,
            "state": execution.state.as_str(),
        })),
    )
        .into_response()
}

pub(super) async fn deploy(
    State(engine): State<Engine>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match json_object(body) {
        Ok(body) => body,
        Err(e) => return refused(e),
    };
    let id = match body.get("api_id") {
        Some(Value::String(s)) => api_id(s),
        Some(_) => Err(EngineError::invalid("api_id", "must be a string (a UUID)")),
        None => Err(EngineError::invalid("api_id", "is required")),
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => return refused(e),
    };
    let parameters: Map<String, Value> = body
        .into_iter()
        .filter(|(k, _)| !DEPLOY_FIELDS.contains(&k.as_str()))
        .collect();
    match run(&engine, &caller, "deploy_code", &id, parameters).await {
        Err(e) => refused(e),
        Ok(x) if x.state == ExecutionState::Succeeded => Json(json!({
            "status": "success",
            "container_id": x.result.get("container_id").cloned().unwrap_or(Value::Null),
            "message": "API deployed successfully",
            "api_id": id,
            "execution_id": x.id,
        }))
        .into_response(),
        Ok(x) => unsuccessful(&x),
    }
}

pub(super) async fn stop(
    State(engine): State<Engine>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    lifecycle(
        &engine,
        &caller,
        path,
        "stop_code",
        "API stopped successfully",
    )
    .await
}

pub(super) async fn remove(
    State(engine): State<Engine>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    lifecycle(
        &engine,
        &caller,
        path,
        "remove_code",
        "API removed successfully",
    )
    .await
}

async fn lifecycle(
    engine: &Engine,
    caller: &Caller,
    path: Result<Path<String>, PathRejection>,
    action: &str,
    done: &str,
) -> Response {
    let id = match path_api_id(path) {
        Ok(id) => id,
        Err(e) => return refused(e),
    };
    match run(engine, caller, action, &id, Map::new()).await {
        Err(e) => refused(e),
        Ok(x) if x.state == ExecutionState::Succeeded => Json(json!({
            "status": "success",
            "message": done,
            "api_id": id,
            "execution_id": x.id,
        }))
        .into_response(),
        Ok(x) => unsuccessful(&x),
    }
}

pub(super) async fn status(
    State(engine): State<Engine>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path_api_id(path) {
        Ok(id) => id,
        Err(e) => return refused(e),
    };
    match run(&engine, &caller, "code_status", &id, Map::new()).await {
        Err(e) => refused(e),
        Ok(x) if x.state == ExecutionState::Succeeded => {
            let mut body = json!({
                "api_id": id,
                "status": x.result.get("status").cloned().unwrap_or(Value::Null),
                "container_id": x.result.get("container_id").cloned().unwrap_or(Value::Null),
            });
            for key in ["replicas", "ready_replicas", "runtime", "image", "pods"] {
                if let Some(v) = x.result.get(key) {
                    body[key] = v.clone();
                }
            }
            Json(body).into_response()
        }
        Ok(x) if x.message.contains("not found") => (
            StatusCode::NOT_FOUND,
            Json(json!({ "api_id": id, "status": "not_found", "message": x.message })),
        )
            .into_response(),
        Ok(x) => unsuccessful(&x),
    }
}

/// The API's logs as Server-Sent Events: a `code_logs` execution (`duration_seconds`,
/// `tail_lines` from the query) whose events carry the lines.
pub(super) async fn logs(
    State(engine): State<Engine>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let id = path_api_id(path)?;
    let Query(query) = query.map_err(query_rejected)?;
    let mut parameters = Map::new();
    for (key, value) in query {
        parameters.insert(key, Value::String(value));
    }
    let execution = engine
        .submit(request(&engine, &caller, "code_logs", &id, parameters))
        .await?;
    sse::stream(&engine, execution.id, 0, &caller).await
}
