//! The HTTP/JSON edge (the seed service's REST contract) on the same [`Engine`] as gRPC.
//! Handlers only translate: JSON → domain request, one engine call, domain → JSON.
//!
//! Validation is the engine's, so HTTP and gRPC refuse the same requests with the same field
//! names; only the fields that exist in HTTP alone (`timeout_seconds`, `Last-Event-ID`, query
//! parameters) are checked here. Every error leaves through the one
//! `impl IntoResponse for EngineError` (in `errors.rs`) as
//! `{"error": {"code": "INVALID_ARGUMENT", "field": "parameters.replicas", "message": "…"}}`.
//!
//! - this file: the routes and their handlers, each one decode, one engine call, one encode;
//! - `json.rs`: bodies, paths and queries → the engine's request types (the seed service's
//!   shape, states in either spelling), and the engine's answers → JSON;
//! - `errors.rs`: engine errors and extractor rejections → status and error body;
//! - `sse.rs`: the event stream of one execution.
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
//! | `GET /api/v1/approvals` | executions waiting for an approval, each with `approval_expires_at` |
//! | `GET /`, `/ui/app.js`, `/ui/app.css` | the dashboard (`dashboard.rs`) |
//! | `GET /api/v1/registry/actions` | the catalog in the incident platform's registry shape (hyphenated names) |
//! | any `/api/v1/registry/register` | 501: actions are compiled in |
//! | `POST /deploy`, `POST /stop/{api_id}`, `POST /remove/{api_id}`, `GET /status/{api_id}`, `GET /logs/{api_id}` | the API platform's contract on the code actions (`code.rs`) |
//! | `GET /health` | `{"status": "healthy", "service": "executor"}` while the default cluster and the store answer; 503 `unhealthy` otherwise or while shutting down |

mod code;
pub mod dashboard;
mod errors;
mod json;
mod sse;

use std::{collections::HashMap, future::Future, time::Duration};

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, post},
    Json, Router,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use self::{
    errors::{query_rejected, ApiResult},
    json::{
        action_json, dry_run_json, execution_id, execution_request, json_object, list_filter,
        optional_bool, optional_json_object, optional_string,
    },
};
use super::Caller;
use crate::{
    domain::{ExecutionRequest, ExecutionState, ListFilter},
    engine::Engine,
};

pub use self::{
    json::{event_json, execution_json},
    sse::SSE_EVENT_NAME,
};

/// How long `/health` waits for the cluster's `/version` before calling it unreachable; below
/// the probes' `timeoutSeconds` in `deploy/`, so a hung cluster reads as 503, not as a probe
/// timeout.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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
        .route("/api/v1/executions/{id}/events", get(sse::events))
        .route("/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::script))
        .route("/ui/app.css", get(dashboard::style))
        .route("/api/v1/approvals", get(approvals))
        .route("/api/v1/actions", get(actions))
        .route("/api/v1/registry/actions", get(registry_actions))
        .route("/api/v1/registry/register", any(registry_register))
        .route("/deploy", post(code::deploy))
        .route("/stop/{api_id}", post(code::stop))
        .route("/remove/{api_id}", post(code::remove))
        .route("/status/{api_id}", get(code::status))
        .route("/logs/{api_id}", get(code::logs))
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
    let listener = super::limits::LimitedListener::new(listener, super::limits::MAX_CONNECTIONS);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn execute(
    State(engine): State<Engine>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = json_object(body)?;
    let wait = optional_bool(&body, "wait")?;
    let platform = crate::engine::json::is_platform_shape(&body);
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
    if platform {
        // The incident platform's answer: 200 with `success` and the `action_id` its status
        // calls use, and the execution for those who want it.
        return Ok((
            StatusCode::OK,
            Json(json!({
                "success": true,
                "action_id": execution.id,
                "execution": execution_json(&execution),
            })),
        )
            .into_response());
    }
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
    let Query(query) = query.map_err(query_rejected)?;
    let filter = list_filter(query)?;
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

/// What waits for an approval (that the caller may read), with when each expires.
async fn approvals(State(engine): State<Engine>, caller: Caller) -> ApiResult<Json<Value>> {
    let filter = ListFilter {
        state: Some(ExecutionState::WaitingApproval),
        page_size: crate::domain::MAX_PAGE_SIZE,
        ..Default::default()
    };
    let (waiting, _) = engine.list(&filter, &caller.identity).await?;
    let timeout = engine.approval_timeout();
    let approvals: Vec<Value> = waiting
        .iter()
        .map(|x| {
            let mut shown = execution_json(x);
            shown["approval_expires_at"] = json!(
                x.created_at + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX)
            );
            shown
        })
        .collect();
    Ok(Json(json!({
        "approval_timeout_seconds": timeout.as_secs(),
        "approvals": approvals,
    })))
}

/// The catalog in the incident platform's registry shape.
async fn registry_actions(State(engine): State<Engine>) -> Json<Value> {
    let actions: Vec<Value> = engine.actions().iter().map(json::registry_entry).collect();
    Json(json!({ "total": actions.len(), "actions": actions }))
}

/// The platform registers actions at run time; here they are compiled in.
async fn registry_register() -> Response {
    errors::unimplemented(
        "actions are compiled into executor-service and cannot be registered at run time; \
         see them in GET /api/v1/registry/actions (or ListActions), and allow, deny or hold \
         them for approval per action, namespace and risk with the Rego policy (--policy) and \
         the authorization rules (--authz)",
    )
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
    let store = tokio::time::timeout(HEALTH_PROBE_TIMEOUT, engine.store_reachable())
        .await
        .unwrap_or(false);
    let closing = engine.is_closing();
    let serving = reachable && store && !closing;
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if serving { "healthy" } else { "unhealthy" },
        "service": "executor",
        "cluster_reachable": reachable,
        "store_reachable": store,
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
