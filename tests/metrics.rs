//! `/metrics` is valid Prometheus text (checked by the reference Python parser) and its
//! counters move with executions.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{mk_request, mk_target, tool, ServeProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState,
};
use serde_json::json;

/// Parses the exposition with `prometheus_client.parser` and returns `{sample name{labels}: value}`.
fn parse(text: &str) -> serde_json::Map<String, serde_json::Value> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(tool("python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not Prometheus text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `GET /metrics` over a plain HTTP/1.1 connection, as Prometheus scrapes it.
async fn scrape(http: &str) -> serde_json::Map<String, serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    assert!(
        !head.to_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    let body = body.to_string();
    tokio::task::block_in_place(|| parse(&body))
}

fn value(samples: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    samples.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_parse_as_prometheus_text_and_move_with_executions() {
    let server = ServeProcess::start(&[]);
    let before = scrape(&server.http_addr).await;
    let succeeded = r#"executor_executions_total{action="scale_deployment",state="SUCCEEDED"}"#;
    let failed =
        r#"executor_executions_total{action="rolling_restart_deployment",state="NOT_FOUND"}"#;
    let mut client = ExecutorServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let done = common::run_to_end(
        &mut client,
        "scale_deployment",
        mk_target("production", "Deployment", "web"),
        json!({"replicas": 4}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let after = scrape(&server.http_addr).await;
    assert_eq!(
        value(&after, succeeded),
        value(&before, succeeded) + 1.0,
        "{after:#?}"
    );
    let count = r#"executor_execution_duration_seconds_count{action="scale_deployment"}"#;
    assert_eq!(value(&after, count), value(&before, count) + 1.0);
    for gauge in [
        "executor_queue_depth{}",
        "executor_in_flight{}",
        "executor_stream_subscribers{}",
    ] {
        assert!(after.contains_key(gauge), "{gauge} missing: {after:#?}");
    }
    assert_eq!(value(&after, failed), 0.0);
    // A refused Kubernetes call is counted by status code.
    let missing = client
        .execute(mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "nope"),
            json!({"replicas": 1}),
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let last = scrape(&server.http_addr).await;
    let not_found = r#"executor_kubernetes_api_errors_total{code="404"}"#;
    assert!(
        value(&last, not_found) >= value(&after, not_found) + 1.0,
        "{last:#?}"
    );
}
