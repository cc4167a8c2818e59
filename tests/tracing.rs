//! Traces: the caller's W3C trace context continues through the RPC span, the execution span
//! and a span per Kubernetes call, exported over OTLP to a receiver run by the test.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{mk_request, mk_target, ServeProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    trace::v1::{span::SpanKind, Span},
};
use serde_json::json;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `span`'s chain of parents reaches `ancestor`.
fn descends_from(spans: &[Span], span: &Span, ancestor: &[u8]) -> bool {
    let mut current = span;
    for _ in 0..spans.len() {
        if current.parent_span_id == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.span_id == current.parent_span_id) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_continue_the_callers_trace_through_execution_and_kubernetes_calls() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let server = ServeProcess::start(&["--otlp-endpoint", &otlp]);
    let mut client = ExecutorServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let mut request = tonic::Request::new({
        let mut r = mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({"replicas": 4}),
        );
        r.wait = true;
        r
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    let done = client
        .execute(request)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    assert_eq!(
        done.trace_id, TRACE_ID,
        "the trace id is recorded on the execution"
    );

    // The batch exporter sends every few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<Span> = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == TRACE_ID)
            .cloned()
            .collect();
        let rpc = spans.iter().find(|s| hex(&s.parent_span_id) == CALLER_SPAN);
        let execution = spans.iter().find(|s| s.name == "execution");
        let kube_calls = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client as i32)
            .count();
        if let (Some(rpc), Some(execution)) = (rpc, execution) {
            if kube_calls > 0 {
                assert_eq!(rpc.kind, SpanKind::Server as i32);
                assert!(rpc.name.contains("Execute"), "{}", rpc.name);
                // The execution hangs off the RPC that created it (through `submit`), and the
                // Kubernetes calls off the execution or the submit's dry run.
                assert!(
                    descends_from(&spans, execution, &rpc.span_id),
                    "execution is not under the RPC span"
                );
                let under_execution = spans
                    .iter()
                    .filter(|s| s.kind == SpanKind::Client as i32)
                    .any(|s| descends_from(&spans, s, &execution.span_id));
                assert!(
                    under_execution,
                    "no Kubernetes call under the execution span"
                );
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans of trace {TRACE_ID} incomplete: {:#?}",
            spans
                .iter()
                .map(|s| (&s.name, hex(&s.parent_span_id)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
