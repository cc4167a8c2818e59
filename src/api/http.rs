//! The HTTP/JSON edge (the seed service's REST contract) on the same [`Engine`] as gRPC.
//! Handlers only translate: JSON → domain request, one engine call, domain → JSON.
//!
//! Validation is the engine's, so HTTP and gRPC refuse the same requests with the same field
//! names; only the fields that exist in HTTP alone (`timeout_seconds`, `Last-Event-ID`, query
//! parameters) are checked here. Every error leaves through the one
//! `impl IntoResponse for EngineError` below as
//! `{"error": {"code": "INVALID_ARGUMENT", "field": "parameters.replicas", "message": "…"}}`.
//!
//! | Route | What it does |
//! | --- | --- |
//! | `POST /api/v1/execute` | Execute: 202 with the QUEUED execution, 200 with the final one when `wait` |
//! | `POST /api/v1/dry-run` | DryRun: target, parameters, summary, changes with JSON patches, warnings |
//! | `GET /api/v1/status/{id}`, `GET /api/v1/executions/{id}` | one execution and its events |
//! | `GET /api/v1/executions` | filtered page newest first (`state`, `action`, `namespace`, `requester`, `page_size`, `page_token`) |
//! | `POST /api/v1/executions/{id}/cancel` | cancel, optional body `{"reason": "…"}` |
//! | `POST /api/v1/executions/{id}/approve`, `…/reject` | answer an execution WAITING_APPROVAL, body `{"approver", "reason"}` |
//! | `GET /api/v1/executions/{id}/events` | Server-Sent Events: replay then live, `id:` = sequence, resumes after `Last-Event-ID`; 204 once nothing is left to send |
//! | `GET /api/v1/actions` | the action catalog |
//! | `GET /health` | 200 while the default cluster answers, 503 otherwise or while shutting down |

use std::{collections::HashMap, convert::Infallible, future::Future, time::Duration};

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::Caller;
use crate::{
    domain::{
        ActionSpec, AlertContext, Event, ExecutionRequest, ExecutionState, ExecutionView,
        ListFilter, ParamType, RequestedTarget,
    },
    engine::{DryRunReport, Engine, EngineError, MAX_TIMEOUT},
};

/// Events buffered per SSE stream between its producer task and the connection.
const STREAM_BUFFER: usize = 32;
/// The `event:` name of every execution event on the SSE stream; the state is in the data.
pub const SSE_EVENT_NAME: &str = "execution_event";
/// How long `/health` waits for the cluster's `/version` before calling it unreachable; below
/// the probes' `timeoutSeconds` in `deploy/`, so a hung cluster reads as 503, not as a probe
/// timeout.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds a client told 429 should wait before retrying: a queue slot frees when any queued
/// execution starts, which is usually well within this.
const QUEUE_FULL_RETRY_AFTER_SECONDS: u64 = 1;

/// The HTTP API as a router with its state applied, ready to `.merge()` other routes into
/// (it has no fallback, so merging cannot conflict).
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/api/v1/execute", post(execute))
        .route("/api/v1/dry-run", post(dry_run))
        .route("/api/v1/status/{id}", get(status))
        .route("/api/v1/executions", get(list))
        .route("/api/v1/executions/{id}", get(status))
        .route("/api/v1/executions/{id}/cancel", post(cancel))
        .route("/api/v1/executions/{id}/approve", post(approve))
        .route("/api/v1/executions/{id}/reject", post(reject))
        .route("/api/v1/executions/{id}/events", get(events))
        .route("/api/v1/actions", get(actions))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        // A span per request, continuing the caller's W3C `traceparent`.
        .layer(axum::middleware::from_fn(traced))
        .with_state(engine)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests (and event
/// streams, which end once their execution is terminal) finish.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    // Responses must not wait for the peer's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// The one mapping from engine errors to HTTP statuses and error bodies.
impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            EngineError::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            EngineError::FailedPrecondition(_) => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            EngineError::PermissionDenied(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            EngineError::AlreadyExists(_) => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            EngineError::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
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
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if matches!(self, EngineError::QueueFull { .. }) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(QUEUE_FULL_RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

type ApiResult<T> = Result<T, EngineError>;

async fn execute(
    State(engine): State<Engine>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = json_object(body)?;
    let wait = optional_bool(&body, "wait")?;
    let mut request = execution_request(&body)?;
    request.requester = caller.identity;
    request.trace_id = crate::telemetry::current_trace_id();
    let mut execution = engine.submit(request).await?;
    let status = if wait {
        execution = engine.wait(&execution.id).await?;
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({ "execution": execution_json(&execution) })),
    )
        .into_response())
}

async fn dry_run(
    State(engine): State<Engine>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_object(body)?;
    let ExecutionRequest {
        action,
        target,
        parameters,
        alert,
        ..
    } = execution_request(&body)?;
    let report = engine
        .dry_run(ExecutionRequest {
            action,
            target,
            parameters,
            alert,
            requester: caller.identity,
            ..Default::default()
        })
        .await?;
    Ok(Json(dry_run_json(&report)))
}

async fn status(
    State(engine): State<Engine>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = execution_id(id)?;
    let (execution, events) = engine.get(&id, &caller.identity).await?;
    Ok(Json(json!({
        "execution": execution_json(&execution),
        "events": events.iter().map(|e| event_json(&execution.id, e)).collect::<Vec<_>>(),
    })))
}

async fn list(
    State(engine): State<Engine>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| EngineError::invalid("query", e.body_text()))?;
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
    let (executions, next_page_token) = engine.list(&filter, &caller.identity).await?;
    Ok(Json(json!({
        "executions": executions.iter().map(execution_json).collect::<Vec<_>>(),
        "next_page_token": next_page_token,
    })))
}

async fn cancel(
    State(engine): State<Engine>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let id = execution_id(id)?;
    // The body is optional: an empty POST cancels without a reason.
    let reason = optional_string(&optional_json_object(body)?, "reason")?;
    let execution = engine.cancel(&id, &reason, &caller.identity).await?;
    Ok(Json(json!({ "execution": execution_json(&execution) })))
}

async fn approve(
    State(engine): State<Engine>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    decide(&engine, &caller, id, body, true).await
}

async fn reject(
    State(engine): State<Engine>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    decide(&engine, &caller, id, body, false).await
}

/// Approve or reject, body `{"approver", "reason"}`; an authenticated caller is the approver
/// whatever the body claims.
async fn decide(
    engine: &Engine,
    caller: &Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    approve: bool,
) -> ApiResult<Json<Value>> {
    let id = execution_id(id)?;
    let body = optional_json_object(body)?;
    let approver = caller.approver(&optional_string(&body, "approver")?);
    let reason = optional_string(&body, "reason")?;
    let execution = engine
        .decide_approval(&id, approve, &approver, &reason)
        .await?;
    Ok(Json(json!({ "execution": execution_json(&execution) })))
}

async fn events(
    State(engine): State<Engine>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = execution_id(id)?;
    let Query(query) = query.map_err(|e| EngineError::invalid("query", e.body_text()))?;
    // A reconnecting EventSource sends the last id it saw; it wins over the query.
    let from = match headers.get("last-event-id") {
        Some(value) => sequence(
            "Last-Event-ID",
            value.to_str().map_err(|_| {
                EngineError::invalid("Last-Event-ID", "must be an event sequence number")
            })?,
        )?,
        None => match query.get("from_sequence") {
            Some(value) => sequence("from_sequence", value)?,
            None => 0,
        },
    };
    // An EventSource reconnects whenever a stream ends, even after the terminal event; 204
    // is the one answer that stops it, rather than a stream that would never send anything.
    let (execution, _) = engine.get(&id, &caller.identity).await?;
    if execution.state.is_terminal() && from >= execution.last_sequence {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let events = engine.watch(&id, from, &caller.identity).await?;
    // The producer runs in its own task: a client that goes away ends only its own stream.
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    let span = tracing::info_span!("sse", execution_id = %id);
    tokio::spawn(
        async move {
            futures::pin_mut!(events);
            loop {
                let event = tokio::select! {
                    _ = tx.closed() => break,
                    event = events.next() => event,
                };
                let Some(event) = event else { break };
                let sse = SseEvent::default()
                    .event(SSE_EVENT_NAME)
                    .id(event.sequence.to_string())
                    .data(event_json(&id, &event).to_string());
                if tx.send(Ok(sse)).await.is_err() {
                    break;
                }
            }
        }
        .instrument(span),
    );
    Ok(
        Sse::new(ReceiverStream::<Result<SseEvent, Infallible>>::new(rx))
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

/// Prometheus text exposition (format 0.0.4).
async fn metrics(State(engine): State<Engine>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        engine.metrics_text(),
    )
        .into_response()
}

async fn actions(State(engine): State<Engine>) -> Json<Value> {
    Json(json!({
        "actions": engine.actions().iter().map(action_json).collect::<Vec<_>>(),
    }))
}

/// Liveness: the process answers HTTP. Unlike `/health` it does not depend on the cluster: a
/// restart would not bring an unreachable API server back.
async fn livez() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

async fn health(State(engine): State<Engine>) -> Response {
    let reachable = tokio::time::timeout(HEALTH_PROBE_TIMEOUT, engine.clusters().is_reachable())
        .await
        .unwrap_or(false);
    let closing = engine.is_closing();
    let serving = reachable && !closing;
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if serving { "SERVING" } else { "NOT_SERVING" },
        "cluster_reachable": reachable,
        "shutting_down": closing,
    });
    (status, Json(body)).into_response()
}

async fn traced(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let name = format!("{} {}", request.method(), request.uri().path());
    let span = crate::telemetry::request_span("http", &name, request.headers());
    next.run(request).instrument(span).await
}

// ---- JSON → domain -------------------------------------------------------------------------

/// The body as a JSON object; whatever the content type says, since curl's `-d` sends JSON as
/// a form unless told otherwise.
fn json_object(body: Result<Bytes, BytesRejection>) -> ApiResult<Map<String, Value>> {
    let body = body.map_err(|e| EngineError::invalid("body", e.body_text()))?;
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
fn optional_json_object(body: Result<Bytes, BytesRejection>) -> ApiResult<Map<String, Value>> {
    match &body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        _ => json_object(body),
    }
}

/// `{"action", "target", "parameters", "alert", "request_id", "timeout_seconds"}`; the target
/// may be omitted when the alert's labels name it, as the seed service allowed.
fn execution_request(body: &Map<String, Value>) -> ApiResult<ExecutionRequest> {
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

fn optional_string(map: &Map<String, Value>, field: &str) -> ApiResult<String> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(EngineError::invalid(
            field,
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

fn optional_bool(map: &Map<String, Value>, field: &str) -> ApiResult<bool> {
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

fn execution_id(id: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    id.map(|Path(id)| id)
        .map_err(|e| EngineError::invalid("execution_id", e.body_text()))
}

fn sequence(field: &str, value: &str) -> ApiResult<u64> {
    value.trim().parse().map_err(|_| {
        EngineError::invalid(
            field,
            format!("must be an event sequence number, got {value:?}"),
        )
    })
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

fn dry_run_json(r: &DryRunReport) -> Value {
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

fn action_json(spec: &ActionSpec) -> Value {
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
