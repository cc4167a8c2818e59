//! Size bounds on caller-supplied fields, through both doors: an oversized field is refused
//! with INVALID_ARGUMENT (gRPC) or 400 (HTTP) naming the field, before the engine reads on.

mod common;

use std::collections::HashMap;

use common::{mk_request, mk_target, to_struct, Harness};
use executor_service::{
    api::{
        self,
        proto::{
            AlertContext, ApproveExecutionRequest, CancelExecutionRequest, DryRunRequest,
            ExecuteRequest,
        },
    },
    engine::Engine,
};
use serde_json::{json, Value};
use tonic::Code;

/// Serves the HTTP API of `engine` on `127.0.0.1:0` for the rest of the test.
async fn start_http(engine: Engine) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::http::serve(
        listener,
        api::http::router(engine),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// POSTs `body` as JSON; the status and the JSON answer.
async fn post(url: &str, body: &Value) -> (u16, Value) {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// Asserts a gRPC refusal is INVALID_ARGUMENT on `field` with `message`.
fn assert_grpc_refuses(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    field: &str,
    message: &str,
) {
    let status = result.expect_err("an oversized field is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), format!("{field}: {message}"));
}

/// Asserts an HTTP refusal is 400 INVALID_ARGUMENT on `field` with `message`.
fn assert_http_refuses((status, body): (u16, Value), field: &str, message: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_ARGUMENT", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert_eq!(body["error"]["message"], format!("{field}: {message}"));
}

/// A notify_only request on production/web: read-only, so no cooldown between the tests' runs.
fn mk_notify() -> ExecuteRequest {
    mk_request(
        "notify_only",
        mk_target("production", "Deployment", "web"),
        json!({"message": "bounds test"}),
    )
}

fn mk_alert(labels: HashMap<String, String>, annotations: HashMap<String, String>) -> AlertContext {
    AlertContext {
        name: "HighLatency".into(),
        severity: "critical".into(),
        labels,
        annotations,
    }
}

#[tokio::test]
async fn an_oversized_label_value_is_refused_by_both_doors_naming_the_label() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;
    let value = "x".repeat(5000);
    let mut request = mk_notify();
    request.alert = Some(mk_alert(
        HashMap::from([("app".to_string(), value.clone())]),
        HashMap::new(),
    ));
    let field = r#"alert.labels["app"]"#;
    let message = "must be at most 4096 bytes (got 5000)";
    assert_grpc_refuses(h.grpc().await.execute(request).await, field, message);
    let body = json!({
        "action": "notify_only",
        "target": {"namespace": "production", "name": "web"},
        "alert": {"name": "HighLatency", "labels": {"app": value}},
    });
    assert_http_refuses(
        post(&format!("{base}/api/v1/execute"), &body).await,
        field,
        message,
    );
    assert_http_refuses(
        post(&format!("{base}/api/v1/dry-run"), &body).await,
        field,
        message,
    );
}

#[tokio::test]
async fn an_oversized_request_id_is_refused_by_both_doors() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;
    let request_id = "r".repeat(200);
    let mut request = mk_notify();
    request.request_id = request_id.clone();
    let message = "must be at most 128 bytes (got 200)";
    assert_grpc_refuses(h.grpc().await.execute(request).await, "request_id", message);
    let body = json!({
        "action": "notify_only",
        "target": {"namespace": "production", "name": "web"},
        "request_id": request_id,
    });
    assert_http_refuses(
        post(&format!("{base}/api/v1/execute"), &body).await,
        "request_id",
        message,
    );
}

#[tokio::test]
async fn too_many_annotations_are_refused_by_both_doors() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;
    let annotations: HashMap<String, String> = (0..65)
        .map(|i| (format!("note-{i}"), "short".to_string()))
        .collect();
    let mut request = mk_notify();
    request.alert = Some(mk_alert(HashMap::new(), annotations.clone()));
    let message = "must have at most 64 entries (got 65)";
    assert_grpc_refuses(
        h.grpc().await.execute(request).await,
        "alert.annotations",
        message,
    );
    let body = json!({
        "action": "notify_only",
        "target": {"namespace": "production", "name": "web"},
        "alert": {"name": "HighLatency", "annotations": annotations},
    });
    assert_http_refuses(
        post(&format!("{base}/api/v1/execute"), &body).await,
        "alert.annotations",
        message,
    );
}

#[tokio::test]
async fn a_huge_string_parameter_is_refused_by_execute_and_dry_run_naming_the_parameter() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;
    let huge = "m".repeat(1 << 20);
    let parameters = json!({ "message": huge });
    let field = "parameters.message";
    let message = "must be at most 4096 bytes (got 1048576)";
    let mut client = h.grpc().await;
    let mut request = mk_notify();
    request.parameters = Some(to_struct(&parameters));
    assert_grpc_refuses(client.execute(request).await, field, message);
    let dry_run = DryRunRequest {
        action: "notify_only".into(),
        target: mk_target("production", "Deployment", "web"),
        parameters: Some(to_struct(&parameters)),
        ..Default::default()
    };
    assert_grpc_refuses(client.dry_run(dry_run).await, field, message);
    let body = json!({
        "action": "notify_only",
        "target": {"namespace": "production", "name": "web"},
        "parameters": parameters,
    });
    assert_http_refuses(
        post(&format!("{base}/api/v1/execute"), &body).await,
        field,
        message,
    );
    assert_http_refuses(
        post(&format!("{base}/api/v1/dry-run"), &body).await,
        field,
        message,
    );
}

#[tokio::test]
async fn an_oversized_cancel_reason_or_approver_is_refused_for_an_existing_execution() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;
    let mut client = h.grpc().await;
    let id = client
        .execute(mk_notify())
        .await
        .expect("execute")
        .into_inner()
        .execution
        .expect("an execution")
        .id;
    let reason = "because ".repeat(200);
    let message = "must be at most 1024 bytes (got 1600)";
    assert_grpc_refuses(
        client
            .cancel_execution(CancelExecutionRequest {
                execution_id: id.clone(),
                reason: reason.clone(),
            })
            .await,
        "reason",
        message,
    );
    assert_http_refuses(
        post(
            &format!("{base}/api/v1/executions/{id}/cancel"),
            &json!({ "reason": reason }),
        )
        .await,
        "reason",
        message,
    );
    let approver = "a".repeat(300);
    let message = "must be at most 256 bytes (got 300)";
    assert_grpc_refuses(
        client
            .approve_execution(ApproveExecutionRequest {
                execution_id: id.clone(),
                approver: approver.clone(),
                reason: String::new(),
            })
            .await,
        "approver",
        message,
    );
    assert_http_refuses(
        post(
            &format!("{base}/api/v1/executions/{id}/reject"),
            &json!({ "approver": approver }),
        )
        .await,
        "approver",
        message,
    );
}
