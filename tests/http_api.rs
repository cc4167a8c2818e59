//! The HTTP/JSON API end to end: the seed service's curl example against the real binary on
//! its embedded cluster, and every route against an in-process server on the simulated
//! cluster (Server-Sent Events included).

mod common;

use std::time::Duration;

use common::{run_ok, tool, Harness, ServeProcess};
use executor_service::{
    actions::Registry,
    api,
    cluster::Clusters,
    engine::{Engine, EngineConfig},
    sim::{mk_deployment, Scenario, SimCluster, SimConfig},
};
use futures::StreamExt;
use serde_json::{json, Value};

/// Longest a test waits for an execution or a stream to end.
const PATIENCE: Duration = Duration::from_secs(60);

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

/// A plain-HTTP client; reqwest is built without a default TLS crypto provider, so one is
/// installed first (the TLS tests need it anyway).
fn client() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn get(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// One Server-Sent Event.
#[derive(Debug)]
struct Sse {
    event: String,
    id: String,
    data: Value,
}

/// Reads an event stream to its end (the server ends it after the terminal event).
async fn read_sse(url: &str, last_event_id: Option<u64>) -> Vec<Sse> {
    let mut request = client().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("GET events");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
        }
    })
    .await
    .expect("the event stream ended");
    text.split("\n\n")
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            // Keep-alive comments carry no data.
            (!data.is_empty()).then(|| Sse {
                event,
                id,
                data: serde_json::from_str(&data).expect("event data is JSON"),
            })
        })
        .collect()
}

async fn wait_terminal(base: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(&format!("{base}/api/v1/status/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let state = body["execution"]["state"].as_str().unwrap_or_default();
        if !["QUEUED", "RUNNING"].contains(&state) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {id} did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_seed_curl_example_restarts_the_pod_named_by_the_alert_on_the_embedded_cluster() {
    let server = ServeProcess::start(&[]);
    let base = format!("http://{}", server.http_addr);
    let kubectl = || {
        let mut cmd = std::process::Command::new(tool("kubectl"));
        cmd.arg("--kubeconfig").arg(&server.kubeconfig);
        cmd
    };
    // The demo scenario's controllers create web's pods shortly after start.
    let mut pod = String::new();
    for _ in 0..100 {
        pod = run_ok(kubectl().args([
            "get",
            "pods",
            "-n",
            "production",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]));
        if !pod.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pod.is_empty(), "the demo's web pods never appeared");
    let (status, health) = get(&format!("{base}/health")).await;
    assert_eq!((status, &health["status"]), (200, &json!("healthy")));

    // curl -X POST $BASE/api/v1/execute -H 'Content-Type: application/json' -d '…'
    let body = json!({
        "action": "restart_pod",
        "alert": {
            "name": "PodCrashLooping",
            "severity": "critical",
            "labels": {"pod": pod, "namespace": "production"},
            "annotations": {"summary": "web is crash looping"},
        },
        "wait": true,
    });
    let (status, answer) = post(&format!("{base}/api/v1/execute"), &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let execution = &answer["execution"];
    assert_eq!(execution["state"], "SUCCEEDED", "{answer}");
    assert_eq!(execution["action"], "restart_pod");
    assert_eq!(
        execution["target"],
        json!({"cluster": "", "namespace": "production", "kind": "Pod", "name": pod})
    );
    assert_eq!(execution["alert"]["labels"]["pod"], json!(pod));

    let id = execution["id"].as_str().unwrap();
    let (status, answer) = get(&format!("{base}/api/v1/status/{id}")).await;
    assert_eq!(status, 200);
    let events = answer["events"].as_array().unwrap();
    assert_eq!(events.first().unwrap()["state"], "QUEUED");
    assert_eq!(events.last().unwrap()["state"], "SUCCEEDED");
    let gone = std::process::Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(["get", "pod", "-n", "production", &pod])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the alert's pod {pod} still exists");
}

#[tokio::test]
async fn execute_answers_202_and_the_event_stream_replays_then_ends_with_the_terminal_event() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;
    let (status, answer) = post(
        &format!("{base}/api/v1/execute"),
        r#"{"action": "scale_deployment",
            "target": {"namespace": "production", "kind": "deployment", "name": "web"},
            "parameters": {"replicas": 5},
            "request_id": "http-scale-1",
            "timeout_seconds": 60}"#,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let execution = &answer["execution"];
    assert_eq!(execution["state"], "QUEUED");
    assert_eq!(execution["parameters"]["replicas"], 5);
    assert_eq!(execution["timeout_seconds"], 60.0);
    assert_eq!(execution["request_id"], "http-scale-1");
    let id = execution["id"].as_str().unwrap().to_string();

    let events = read_sse(&format!("{base}/api/v1/executions/{id}/events"), None).await;
    let states: Vec<&str> = events
        .iter()
        .map(|e| e.data["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"QUEUED"));
    assert_eq!(states.last(), Some(&"SUCCEEDED"), "{states:?}");
    for (i, e) in events.iter().enumerate() {
        let sequence = i as u64 + 1;
        assert_eq!(e.event, api::http::SSE_EVENT_NAME);
        assert_eq!(e.id, sequence.to_string());
        assert_eq!(e.data["sequence"], sequence);
        assert_eq!(e.data["execution_id"], json!(id));
    }
    assert!(
        events
            .iter()
            .any(|e| e.data["progress"]["total"] == json!(5)),
        "no rollout progress in {events:?}"
    );

    // Resuming after event k yields exactly the events after k, and still ends.
    let k = 2;
    let resumed = read_sse(&format!("{base}/api/v1/executions/{id}/events"), Some(k)).await;
    let resumed_ids: Vec<&str> = resumed.iter().map(|e| e.id.as_str()).collect();
    let expected: Vec<String> = ((k + 1)..=events.len() as u64)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(resumed_ids, expected);
    // A browser reconnecting after the terminal event is told there is nothing more: 204
    // stops EventSource's automatic reconnection.
    let response = client()
        .get(format!("{base}/api/v1/executions/{id}/events"))
        .header("Last-Event-ID", events.len().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    // The query parameter does the same for clients that cannot set headers.
    let from_query = read_sse(
        &format!("{base}/api/v1/executions/{id}/events?from_sequence={k}"),
        None,
    )
    .await;
    assert_eq!(from_query.len(), resumed.len());

    let (status, answer) = get(&format!("{base}/api/v1/status/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["execution"]["state"], "SUCCEEDED");
    assert_eq!(answer["events"].as_array().unwrap().len(), events.len());
    let replicas = kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
        h.kube.clone(),
        "production",
    )
    .get("web")
    .await
    .unwrap()
    .spec
    .unwrap()
    .replicas;
    assert_eq!(replicas, Some(5));
}

#[tokio::test]
async fn dry_run_list_actions_health_and_cancel_speak_json() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;

    let (status, plan) = post(
        &format!("{base}/api/v1/dry-run"),
        r#"{"action": "scale_deployment", "alert": {"labels": {"deployment": "api", "namespace": "production"}},
            "parameters": {"replicas": 4}}"#,
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["target"]["name"], "api");
    let patch = &plan["changes"][0]["patch"];
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/spec/replicas" && op["value"] == 4),
        "{plan}"
    );

    let (status, catalog) = get(&format!("{base}/api/v1/actions")).await;
    assert_eq!(status, 200);
    let scale = catalog["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "scale_deployment")
        .expect("scale_deployment in the catalog");
    let replicas = scale["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "replicas")
        .unwrap();
    assert_eq!(
        (
            &replicas["type"],
            &replicas["minimum"],
            &replicas["maximum"]
        ),
        (&json!("integer"), &json!(0), &json!(100))
    );
    assert_eq!(scale["target_kinds"], json!(["Deployment"]));

    let (status, health) = get(&format!("{base}/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["cluster_reachable"], true);

    // Finished executions are listed by state and cannot be cancelled any more.
    let (_, answer) = post(
        &format!("{base}/api/v1/execute"),
        r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "worker"},
            "parameters": {"replicas": 3}, "wait": true}"#,
    )
    .await;
    let id = answer["execution"]["id"].as_str().unwrap().to_string();
    let (status, page) = get(&format!(
        "{base}/api/v1/executions?state=SUCCEEDED&action=scale_deployment&namespace=production"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["executions"][0]["id"], json!(id));
    let (status, page) = get(&format!("{base}/api/v1/executions?state=FAILED")).await;
    assert_eq!(
        (status, page["executions"].as_array().unwrap().len()),
        (200, 0)
    );
    let (_, page) = get(&format!("{base}/api/v1/executions?requester=someone-else")).await;
    assert_eq!(page["executions"].as_array().unwrap().len(), 0);
    let (status, error) = post(&format!("{base}/api/v1/executions/{id}/cancel"), "").await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "FAILED_PRECONDITION");

    // A request_id names one request: reusing it for another is a conflict.
    let with_key = |replicas: u32| {
        format!(
            r#"{{"action": "scale_deployment", "target": {{"namespace": "staging", "name": "web"}},
                 "parameters": {{"replicas": {replicas}}}, "request_id": "incident-42"}}"#
        )
    };
    let (status, first) = post(&format!("{base}/api/v1/execute"), &with_key(3)).await;
    assert_eq!(status, 202, "{first}");
    let (status, error) = post(&format!("{base}/api/v1/execute"), &with_key(4)).await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "ALREADY_EXISTS");
}

#[tokio::test]
async fn bad_requests_are_refused_with_400_naming_the_field_and_unknown_ids_with_404() {
    let h = Harness::demo().await;
    let base = start_http(h.engine.clone()).await;
    let execute = format!("{base}/api/v1/execute");
    let cases = [
        (
            r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "web"}, "parameters": {"replicas": "abc"}}"#,
            "parameters.replicas",
        ),
        (
            r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "web"}, "parameters": {"replicas": 500}}"#,
            "parameters.replicas",
        ),
        (
            r#"{"action": "no_such_action", "target": {"name": "web"}}"#,
            "action",
        ),
        (r#"{"action": "restart_pod"}"#, "target.name"),
        (
            r#"{"action": "scale_deployment", "target": {"name": "web"}, "parameters": {"replicas": 1}, "timeout_seconds": -5}"#,
            "timeout_seconds",
        ),
        (r#"{"action": "scale_deployment", "wait": "yes"}"#, "wait"),
        (r#"{"action": "scale_deployment", "target": "#, "body"),
        (r#"[1, 2]"#, "body"),
        ("", "body"),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&execute, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "INVALID_ARGUMENT", "{body}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(field));
    }
    let (status, answer) = get(&format!("{base}/api/v1/executions?state=DONE")).await;
    assert_eq!((status, &answer["error"]["field"]), (400, &json!("state")));
    let (status, answer) = get(&format!("{base}/api/v1/executions?colour=red")).await;
    assert_eq!((status, &answer["error"]["field"]), (400, &json!("colour")));

    for url in [
        format!("{base}/api/v1/status/nope"),
        format!("{base}/api/v1/executions/nope/events"),
    ] {
        let (status, answer) = get(&url).await;
        assert_eq!(status, 404, "{url}");
        assert_eq!(answer["error"]["code"], "NOT_FOUND");
    }
    let (status, _) = post(&format!("{base}/api/v1/executions/nope/cancel"), "").await;
    assert_eq!(status, 404);
    let (status, answer) = post(
        &format!("{base}/api/v1/execute"),
        r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "missing"}, "parameters": {"replicas": 1}}"#,
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("NOT_FOUND"))
    );
}

#[tokio::test]
async fn a_full_queue_is_refused_with_429_and_retry_after() {
    // One worker held by a rollout that cannot finish (its image never pulls), one execution
    // waiting for the worker: the queue of one is full.
    let scenario = Scenario::demo().with(mk_deployment("production", "stuck", 1, "nginx:badimage"));
    let h = Harness::start(
        EngineConfig {
            workers: 1,
            queue_capacity: 1,
            ..EngineConfig::default()
        },
        scenario,
    )
    .await;
    let base = start_http(h.engine.clone()).await;
    let execute = format!("{base}/api/v1/execute");
    let (status, stuck) = post(
        &execute,
        r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "stuck"}, "parameters": {"replicas": 2}, "timeout_seconds": 120}"#,
    )
    .await;
    assert_eq!(status, 202, "{stuck}");
    let stuck_id = stuck["execution"]["id"].as_str().unwrap().to_string();
    // Wait until it holds the worker, so the next one waits in the queue.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, s) = get(&format!("{base}/api/v1/status/{stuck_id}")).await;
        if s["execution"]["state"] == "RUNNING" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ran: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, queued) = post(
        &execute,
        r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "web"}, "parameters": {"replicas": 4}}"#,
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let response = client()
        .post(&execute)
        .body(
            r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "api"}, "parameters": {"replicas": 3}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "RESOURCE_EXHAUSTED");

    let (status, cancelled) = post(
        &format!("{base}/api/v1/executions/{stuck_id}/cancel"),
        r#"{"reason": "test over"}"#,
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["execution"]["state"], "CANCELLED");
    let queued_id = queued["execution"]["id"].as_str().unwrap();
    let done = wait_terminal(&base, queued_id).await;
    assert_eq!(done["execution"]["state"], "SUCCEEDED", "{done}");
}

#[tokio::test]
async fn health_is_503_and_execute_unavailable_once_the_cluster_is_gone() {
    let sim = SimCluster::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: Scenario::demo(),
        speed: common::TEST_SPEED,
    })
    .await
    .expect("start simulated cluster");
    let clusters = Clusters::from_kubeconfig_value(sim.kubeconfig(), None)
        .await
        .expect("clusters");
    let engine = Engine::new(EngineConfig::default(), Registry::builtin(), clusters);
    let base = start_http(engine).await;
    let (status, _) = get(&format!("{base}/health")).await;
    assert_eq!(status, 200);

    sim.shutdown().await;
    let (status, health) = get(&format!("{base}/health")).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["cluster_reachable"], false);
    // Unready, but alive: a restart would not bring the API server back.
    let (status, live) = get(&format!("{base}/livez")).await;
    assert_eq!(status, 200, "{live}");
    let (status, answer) = tokio::time::timeout(
        PATIENCE,
        post(
            &format!("{base}/api/v1/execute"),
            r#"{"action": "scale_deployment", "target": {"namespace": "production", "name": "web"}, "parameters": {"replicas": 2}}"#,
        ),
    )
    .await
    .expect("an answer while the cluster is gone");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "UNAVAILABLE");
}

#[tokio::test]
async fn a_high_risk_execution_waits_for_an_approval_and_a_rejection_ends_it() {
    // The real binary carries the built-in policy: drain_node needs an approval.
    let server = ServeProcess::start(&[]);
    let base = format!("http://{}", server.http_addr);
    let (status, answer) = post(
        &format!("{base}/api/v1/execute"),
        r#"{"action": "drain_node", "target": {"kind": "Node", "name": "node-3"}}"#,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["execution"]["id"].as_str().unwrap().to_string();
    assert_eq!(answer["execution"]["state"], "WAITING_APPROVAL", "{answer}");

    // Someone has to answer.
    let (status, error) = post(&format!("{base}/api/v1/executions/{id}/approve"), "").await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (400, &json!("approver"))
    );

    let (status, answer) = post(
        &format!("{base}/api/v1/executions/{id}/reject"),
        r#"{"approver": "bob", "reason": "not during the sale"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["execution"]["state"], "REJECTED");
    assert_eq!(
        answer["execution"]["approval"]["approver"], "bob",
        "{answer}"
    );
    let (status, _) = post(
        &format!("{base}/api/v1/executions/{id}/approve"),
        r#"{"approver": "bob"}"#,
    )
    .await;
    assert_eq!(status, 409);
}

/// The incident platform's documented call, as its users send it: a nested action object with a
/// hyphenated name, the target in the alert's `namespace` and `resource`, a `priority`; their
/// answer (200, `success`, an `action_id` that `/api/v1/status/{id}` reads back). On the HTTP
/// port and on the gRPC port alike; camelCase parameter names are taken as aliases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_incident_platforms_documented_call_changes_the_cluster_and_reads_back() {
    let server = ServeProcess::start(&[]);
    let http = common::plain_http();
    let kube = common::kube_client_from(&server.kubeconfig).await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube.clone(), "production");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(kube.clone(), "production");
    let pod = common::first_pod(&kube, "production", "worker").await;
    let calls = [
        (
            server.http_addr.clone(),
            json!({"action": {"action": "scale-deployment", "parameters": {"replicas": 4}, "priority": 1,
                              "confidence": 0.92, "reasoning": "CPU above 90% for 10 minutes"},
                   "incident_id": "INC-4711",
                   "alert": {"name": "HighCPUUsage", "severity": "critical",
                             "namespace": "production", "resource": "deployment/web"}}),
        ),
        (
            server.addr.clone(),
            json!({"action": {"action": "restart-pod", "parameters": {"gracePeriodSeconds": 5}},
                   "alert": {"name": "PodCrashLooping", "severity": "warning",
                             "namespace": "production", "resource": format!("pod/{pod}")}}),
        ),
    ];
    for (addr, body) in calls {
        let response = http
            .post(format!("http://{addr}/api/v1/execute"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["success"], true, "{answer}");
        let id = answer["action_id"]
            .as_str()
            .expect("an action_id")
            .to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status: Value = http
                .get(format!("http://{addr}/api/v1/status/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let state = status["execution"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state == "SUCCEEDED" {
                // What the platform's decision engine said is kept for the audit trail.
                if body["incident_id"] == "INC-4711" {
                    assert_eq!(
                        status["execution"]["recommendation"],
                        json!({"incident_id": "INC-4711", "confidence": 0.92,
                               "reasoning": "CPU above 90% for 10 minutes", "source": ""}),
                        "{status}"
                    );
                }
                break;
            }
            assert!(
                std::time::Instant::now() < deadline
                    && !["FAILED", "REJECTED"].contains(&state.as_str()),
                "{status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(4));
    let old = pods.get_opt(&pod).await.unwrap();
    assert!(old.is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
}

#[tokio::test]
async fn the_registry_lists_the_catalog_and_registering_is_refused_with_a_reason() {
    let server = ServeProcess::start(&[]);
    let http = common::plain_http();
    let base = format!("http://{}", server.http_addr);
    let (status, registry) = get(&format!("{base}/api/v1/registry/actions")).await;
    assert_eq!(status, 200);
    let (_, catalog) = get(&format!("{base}/api/v1/actions")).await;
    let actions = registry["actions"].as_array().unwrap();
    assert_eq!(registry["total"], json!(actions.len()));
    assert_eq!(actions.len(), catalog["actions"].as_array().unwrap().len());
    let scale = actions
        .iter()
        .find(|a| a["name"] == "scale-deployment")
        .expect("scale-deployment in the registry");
    assert_eq!(scale["action"], "scale_deployment");
    assert!(scale["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "replicas"));
    let response = http
        .post(format!("{base}/api/v1/registry/register"))
        .json(&json!({"name": "my-action", "image": "example/my-action:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 501);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNIMPLEMENTED");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("compiled into executor-service"),
        "{body}"
    );
    // A confidence outside 0..1 is refused naming the field, and nothing is recorded.
    let (status, answer) = post(
        &format!("{base}/api/v1/execute"),
        &json!({"action": {"action": "scale-deployment", "parameters": {"replicas": 4}, "confidence": 7},
                "alert": {"namespace": "production", "resource": "deployment/web"}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["field"], "recommendation.confidence",
        "{answer}"
    );
    let (_, listed) = get(&format!("{base}/api/v1/executions")).await;
    assert_eq!(listed["executions"], json!([]), "{listed}");
}
