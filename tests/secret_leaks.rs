//! `rotate_secrets` never leaks a value (issue 17): a real `serve` process (debug logging,
//! SQLite history) rotates the demo's Secret twice within a second (every key, then one key
//! longer), approved as the policy asks; then every plan, event, result and rollback record
//! it answers with, every line it logged and every byte of its store (database, WAL and
//! shared-memory files) is searched for the old and the new values, plain and base64.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use base64::Engine as _;
use common::{kube_client_from, mk_request, mk_target};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ApproveExecutionRequest, ExecutionState,
    GetExecutionRequest, WatchExecutionRequest,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;

fn value(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_result_log_line_or_store_row_holds_an_old_or_new_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sim.kubeconfig");
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_executor-service"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
        ])
        .args([
            "--sim-speed",
            "20",
            "--cooldown",
            "0s",
            "--sim-kubeconfig-out",
        ])
        .arg(&kubeconfig)
        .arg("--store")
        .arg(store_dir.join("history.db"))
        .env("RUST_LOG", "debug")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("executor-service listening on ")
        .unwrap()
        .to_string();
    let mut client = ExecutorServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let kube = kube_client_from(&kubeconfig).await;
    let secrets = Api::<Secret>::namespaced(kube.clone(), "production");
    let old = value(&secrets.get("api-credentials").await.unwrap(), "password");
    assert_eq!(old, "s3cr3t");

    let target = mk_target("production", "Secret", "api-credentials");
    let mut seen = String::new();
    let plan = client
        .dry_run(executor_service::api::proto::DryRunRequest {
            action: "rotate_secrets".into(),
            target: target.clone(),
            parameters: Some(common::to_struct(&json!({}))),
            alert: None,
        })
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&format!("{plan:?}"));
    let mut ids = Vec::new();
    for params in [json!({}), json!({"keys": "password", "min_length": 40})] {
        let request = mk_request("rotate_secrets", target.clone(), params);
        let queued = client
            .execute(request)
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        // A high-risk action: the built-in policy holds it for an approval.
        client
            .approve_execution(ApproveExecutionRequest {
                execution_id: queued.id.clone(),
                approver: "security-lead".into(),
                reason: "credentials leaked".into(),
            })
            .await
            .unwrap();
        let mut stream = client
            .watch_execution(WatchExecutionRequest {
                execution_id: queued.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(event) = stream.next().await {
            last = event.unwrap().event;
        }
        let last = last.expect("events");
        assert_eq!(
            last.state,
            ExecutionState::Succeeded as i32,
            "rotation: {}",
            last.message
        );
        ids.push(queued.id.clone());
    }
    let mut values = vec![old.clone(), "api".to_string()];
    let rotated = secrets.get("api-credentials").await.unwrap();
    values.push(value(&rotated, "password"));
    values.push(value(&rotated, "username"));
    // Every copy of an earlier version too.
    for s in secrets.list(&Default::default()).await.unwrap().items {
        if s.metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("api-credentials-previous-")
        {
            values.push(value(&s, "password"));
        }
    }
    for id in &ids {
        let got = client
            .get_execution(GetExecutionRequest {
                execution_id: id.clone(),
                include_events: true,
            })
            .await
            .unwrap()
            .into_inner();
        seen.push_str(&format!("{got:?}"));
        let mut stream = client
            .watch_execution(WatchExecutionRequest {
                execution_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(event) = stream.next().await {
            seen.push_str(&format!("{:?}", event.unwrap()));
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.lines().count() > 10,
        "the log is not what was expected: {logged}"
    );
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&store_dir).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(stored.len() > 4096, "no store written");
    let stored = String::from_utf8_lossy(&stored);
    let b64 = base64::engine::general_purpose::STANDARD;
    // The username `api` is too common a word to search for; the passwords are not.
    for v in values.iter().filter(|v| v.len() >= 6) {
        for needle in [v.clone(), b64.encode(v)] {
            assert!(!seen.contains(&needle), "{needle} in what the API answered");
            assert!(!logged.contains(&needle), "{needle} in the log");
            assert!(!stored.contains(&needle), "{needle} in the store");
        }
    }
    assert!(seen.contains("production/deployment") || seen.contains("api-credentials"));
}
