//! `WatchExecution` for many subscribers: each event is encoded once and the same bytes go to
//! every stream.
//!
//! The generated service would convert and encode every event once per subscriber (10,000
//! dashboards on one execution: 10,000 conversions of its details into a protobuf `Struct`),
//! and its 8 KiB encode buffer per stream is most of a subscriber's memory. [`ExecutorRoutes`]
//! sits in front of the generated service, answers the WatchExecution path with a codec that
//! writes the cached encoding ([`Event::encoded`]), and passes every other method through.
//!
//! Each stream is polled by its own HTTP/2 stream task, so a client that goes away drops only
//! its own stream, and a slow one lags only itself (the event log re-reads what it missed).

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes};
use futures::{future::BoxFuture, Stream, StreamExt};
use prost::Message;
use tonic::{
    body::Body,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    server::{Grpc, NamedService, ServerStreamingService},
    Request, Response, Status,
};

use super::{convert, proto, GrpcApi};
use crate::{domain::Event, engine::Engine};

type Generated = proto::executor_service_server::ExecutorServiceServer<GrpcApi>;

/// The path the generated client calls.
const WATCH_PATH: &str = "/executor.v1.ExecutorService/WatchExecution";

/// Initial encode buffer per stream: one typical event (tonic's default is 8 KiB per stream,
/// most of a subscriber's memory with 10,000 of them). It grows for a larger event.
const ENCODE_BUFFER: usize = 512;

/// Buffered bytes after which a stream hands its encoded events to HTTP/2 (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The executor service: WatchExecution served from cached encodings, the rest generated.
#[derive(Clone)]
pub struct ExecutorRoutes {
    generated: Generated,
    engine: Engine,
}

impl ExecutorRoutes {
    pub fn new(engine: Engine) -> Self {
        ExecutorRoutes {
            generated: Generated::new(GrpcApi::new(engine.clone())),
            engine,
        }
    }
}

impl NamedService for ExecutorRoutes {
    const NAME: &'static str = <Generated as NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for ExecutorRoutes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            return self.generated.call(request);
        }
        let watch = Watch(self.engine.clone());
        Box::pin(async move { Ok(Grpc::new(WireCodec).server_streaming(watch, request).await) })
    }
}

/// The WatchExecution handler: translate, ask the engine, send each event's cached encoding.
struct Watch(Engine);

type WireStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl ServerStreamingService<proto::WatchExecutionRequest> for Watch {
    type Response = Bytes;
    type ResponseStream = WireStream;
    type Future = BoxFuture<'static, Result<Response<WireStream>, Status>>;

    fn call(&mut self, request: Request<proto::WatchExecutionRequest>) -> Self::Future {
        let engine = self.0.clone();
        Box::pin(async move {
            let caller = super::auth::grpc_caller(&request);
            let request = request.into_inner();
            let id = request.execution_id;
            let events = engine
                .watch(&id, request.from_sequence, &caller.identity)
                .await?;
            let stream: WireStream = Box::pin(events.map(move |event| Ok(encoded(&id, &event))));
            Ok(Response::new(stream))
        })
    }
}

/// `event` as a `WatchExecutionResponse` message, encoded on first use.
pub fn encoded(execution_id: &str, event: &Event) -> Bytes {
    event.encoded.get_or_init(|| {
        proto::WatchExecutionResponse {
            event: Some(convert::event_to(execution_id, event)),
        }
        .encode_to_vec()
        .into()
    })
}

/// Writes already-encoded messages; decodes requests with prost.
struct WireCodec;

impl Codec for WireCodec {
    type Encode = Bytes;
    type Decode = proto::WatchExecutionRequest;
    type Encoder = WireEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::WatchExecutionRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

struct WireEncoder;

impl Encoder for WireEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExecutionState;

    fn mk_event(sequence: u64) -> Event {
        Event {
            sequence,
            timestamp: chrono::Utc::now(),
            state: ExecutionState::Running,
            message: "evicted pod default/web-1".into(),
            progress: Some((1, 3)),
            details: serde_json::json!({"pod": "web-1", "attempts": [1, 2]}),
            encoded: Default::default(),
        }
    }

    #[test]
    fn the_cached_encoding_decodes_to_what_the_generated_service_would_send() {
        let event = mk_event(7);
        let bytes = encoded("exec-1", &event);
        let decoded = proto::WatchExecutionResponse::decode(bytes.clone()).unwrap();
        assert_eq!(
            decoded.event,
            Some(convert::event_to("exec-1", &event)),
            "same message as a per-subscriber conversion"
        );
        // The second subscriber gets the very same bytes, not a re-encoding.
        assert_eq!(encoded("exec-1", &event).as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn a_changed_clone_is_encoded_afresh() {
        let event = mk_event(1);
        let first = encoded("exec-1", &event);
        let mut changed = event.clone();
        changed.message = "something else".into();
        let second = encoded("exec-1", &changed);
        assert_ne!(first, second);
        assert_eq!(
            proto::WatchExecutionResponse::decode(second)
                .unwrap()
                .event
                .unwrap()
                .message,
            "something else"
        );
    }
}
