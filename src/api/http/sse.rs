//! `GET /api/v1/executions/{id}/events`: an execution's events as Server-Sent Events, replay
//! then live, each `id:` its sequence; a reconnecting EventSource resumes after its
//! `Last-Event-ID`, and gets 204 once nothing is left to send.

use std::{collections::HashMap, convert::Infallible};

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::{HeaderMap, StatusCode},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::{
    errors::{query_rejected, ApiResult},
    json::{event_json, execution_id},
};
use crate::{
    api::Caller,
    engine::{Engine, EngineError},
};

/// Events buffered per SSE stream between its producer task and the connection.
const STREAM_BUFFER: usize = 32;
/// The `event:` name of every execution event on the SSE stream; the state is in the data.
pub const SSE_EVENT_NAME: &str = "execution_event";

pub(super) async fn events(
    State(engine): State<Engine>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = execution_id(id)?;
    let Query(query) = query.map_err(query_rejected)?;
    let from = resume_from(&headers, &query)?;
    stream(&engine, id, from, &caller).await
}

/// The events of execution `id` after sequence `from` as Server-Sent Events: replay, then
/// live until the terminal event; 204 when nothing is left to send.
pub(super) async fn stream(
    engine: &Engine,
    id: String,
    from: u64,
    caller: &Caller,
) -> ApiResult<Response> {
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

/// The sequence a stream resumes after: a reconnecting EventSource sends the last id it saw,
/// which wins over the `from_sequence` query; 0 = from the start.
fn resume_from(headers: &HeaderMap, query: &HashMap<String, String>) -> ApiResult<u64> {
    match headers.get("last-event-id") {
        Some(value) => sequence(
            "Last-Event-ID",
            value.to_str().map_err(|_| {
                EngineError::invalid("Last-Event-ID", "must be an event sequence number")
            })?,
        ),
        None => match query.get("from_sequence") {
            Some(value) => sequence("from_sequence", value),
            None => Ok(0),
        },
    }
}

fn sequence(field: &str, value: &str) -> ApiResult<u64> {
    value.trim().parse().map_err(|_| {
        EngineError::invalid(
            field,
            format!("must be an event sequence number, got {value:?}"),
        )
    })
}
