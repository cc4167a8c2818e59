//! The API platform's executor contract (issue 18) against a real `serve` on the embedded
//! simulated cluster: APIs deployed with `curl` through `/deploy`, `/stop/{id}`, `/status/{id}`,
//! `/remove/{id}`, their objects judged with real `kubectl`, a bad bundle failing with the
//! pod's reason and log, bad input refused naming the field with nothing created.

mod common;

use std::process::Command;

use common::{run_ok, tool, ServeProcess};
use serde_json::{json, Value};

const PYTHON: &str = "0b6c54f2-5d0e-4f3a-9a55-3b1f1d2c7e01";
const NODE: &str = "7c1e2a4b-96f3-4b2e-8d41-52a0e9c3b702";
const GO: &str = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e03";
const NAMESPACE: &str = "apis";

/// `curl -s` of `method path` with a JSON body: the status code and the body as JSON.
fn curl(server: &ServeProcess, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://{}{path}", server.http_addr));
    // The body from a file: a bundle can be longer than a command line may be.
    let file = tempfile::NamedTempFile::new().unwrap();
    if let Some(body) = body {
        std::fs::write(file.path(), body.to_string()).unwrap();
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", file.path().display()));
    }
    let out = run_ok(&mut cmd);
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    let parsed = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (code.parse().unwrap_or(0), parsed)
}

fn kubectl(server: &ServeProcess, args: &[&str]) -> String {
    run_ok(
        Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(args),
    )
}

/// The objects of API `id` of the kinds `kinds`, as `kubectl get -o json` lists them.
fn objects(server: &ServeProcess, kinds: &str, id: &str) -> Vec<Value> {
    let out = kubectl(
        server,
        &[
            "get",
            kinds,
            "-n",
            NAMESPACE,
            "-l",
            &format!("executor-service.io/api-id={id}"),
            "-o",
            "json",
        ],
    );
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn bundle(runtime: &str) -> Value {
    match runtime {
        "python" => json!({"main.py": "import os\nprint('serving on', os.environ['PORT'])\n",
                           "lib/helpers.py": "def ok():\n    return True\n"}),
        "node" => {
            json!({"index.js": "require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT)\n"})
        }
        _ => json!({"main.go": "package main\nfunc main() {}\n", "go.mod": "module api\n"}),
    }
}

#[test]
fn three_runtimes_deploy_run_stop_and_remove_through_the_platforms_contract() {
    let server = ServeProcess::start(&[]);
    let (code, health) = curl(&server, "GET", "/health", None);
    assert_eq!(code, 200, "{health}");
    assert_eq!(
        (&health["status"], &health["service"]),
        (&json!("healthy"), &json!("executor"))
    );

    let mut containers = Vec::new();
    for (id, runtime) in [(PYTHON, "python"), (NODE, "node"), (GO, "go")] {
        let (code, body) = curl(
            &server,
            "POST",
            "/deploy",
            Some(&json!({"api_id": id, "runtime": runtime, "files": bundle(runtime)})),
        );
        assert_eq!(code, 200, "{runtime}: {body}");
        assert_eq!(body["status"], "success", "{body}");
        assert_eq!(body["message"], "API deployed successfully");
        let container = body["container_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(container.starts_with("containerd://"), "{body}");
        containers.push(container);
    }

    // What kubectl shows: every object, with the limits, the read-only code, non-root.
    let listed = kubectl(&server, &["get", "deploy,svc,cm,netpol", "-n", NAMESPACE]);
    for id in [PYTHON, NODE, GO] {
        for kind in [
            "deployment.apps",
            "service",
            "configmap",
            "networkpolicy.networking.k8s.io",
        ] {
            assert!(
                listed.contains(&format!("{kind}/api-{id}")),
                "{kind}/api-{id} missing:\n{listed}"
            );
        }
    }
    for (id, image) in [
        (PYTHON, "python:3.11-slim"),
        (NODE, "node:18-alpine"),
        (GO, "golang:1.21-alpine"),
    ] {
        let deployments = objects(&server, "deployments", id);
        assert_eq!(deployments.len(), 1);
        let pod = &deployments[0]["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["image"], image);
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "1", "memory": "512Mi"})
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["restartPolicy"], "Always");
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/app/code")
            .cloned()
            .unwrap();
        assert_eq!(mount["readOnly"], true, "{mount}");
        let policy = &objects(&server, "networkpolicies", id)[0]["spec"];
        assert_eq!(policy["policyTypes"], json!(["Ingress"]));
        assert_eq!(
            policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
                ["kubernetes.io/metadata.name"],
            "api-gateway"
        );
        let owners = &objects(&server, "configmaps", id)[0]["metadata"]["ownerReferences"];
        assert_eq!(
            owners[0]["kind"], "Deployment",
            "the code is owned by its Deployment"
        );
    }
    // The pods run as the cluster records them, with the code's file layout.
    let files = &objects(&server, "configmaps", PYTHON)[0];
    assert!(files["data"]["lib__helpers.py"].is_string(), "{files}");

    for (id, container) in [PYTHON, NODE, GO].iter().zip(&containers) {
        let (code, body) = curl(&server, "GET", &format!("/status/{id}"), None);
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            (&body["api_id"], &body["status"]),
            (&json!(id), &json!("running")),
            "{body}"
        );
        assert_eq!(body["container_id"], json!(container));
    }

    // Stop: no pod left, the code kept.
    let (code, body) = curl(&server, "POST", &format!("/stop/{PYTHON}"), None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "success", "message": "API stopped successfully",
        "api_id": PYTHON, "execution_id": body["execution_id"]})
    );
    let (_, status) = curl(&server, "GET", &format!("/status/{PYTHON}"), None);
    assert_eq!(status["status"], "stopped", "{status}");
    assert!(
        objects(&server, "pods", PYTHON).is_empty(),
        "a stopped API has no pod"
    );
    assert_eq!(
        objects(&server, "configmaps", PYTHON).len(),
        1,
        "the code stays"
    );

    // Remove: nothing of the API is left.
    for id in [PYTHON, NODE, GO] {
        let (code, body) = curl(&server, "POST", &format!("/remove/{id}"), None);
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["message"], "API removed successfully");
        let left = kubectl(
            &server,
            &[
                "get",
                "deploy,rs,pods,svc,cm,netpol,hpa",
                "-n",
                NAMESPACE,
                "-l",
                &format!("executor-service.io/api-id={id}"),
                "-o",
                "name",
            ],
        );
        assert_eq!(left.trim(), "", "left behind by remove: {left}");
    }
    let (code, body) = curl(&server, "GET", &format!("/status/{PYTHON}"), None);
    assert_eq!(
        (code, &body["status"]),
        (404, &json!("not_found")),
        "{body}"
    );
}

#[test]
fn a_bundle_without_its_entry_file_fails_with_the_pods_reason_and_log_and_a_redeploy_rolls_back() {
    let server = ServeProcess::start(&[]);
    let execution = |id: &str| {
        let (code, body) = curl(&server, "GET", &format!("/api/v1/executions/{id}"), None);
        assert_eq!(code, 200, "{body}");
        body
    };
    let events_text = |body: &Value| body["events"].to_string();

    // A first deploy with no main.py: FAILED, the pod's reason and the interpreter's error.
    let bad = json!({"api_id": PYTHON, "files": {"app.py": "print('hi')\n"}});
    let (code, body) = curl(&server, "POST", "/deploy", Some(&bad));
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["status"], "error");
    let x = execution(body["execution_id"].as_str().unwrap());
    assert_eq!(x["execution"]["state"], "FAILED", "{x}");
    let events = events_text(&x);
    assert!(events.contains("CrashLoopBackOff"), "{events}");
    assert!(
        events.contains("can't open file '/app/code/main.py': [Errno 2] No such file or directory"),
        "{events}"
    );
    let (_, status) = curl(&server, "GET", &format!("/status/{PYTHON}"), None);
    assert_eq!(status["status"], "failed", "{status}");

    // A good deploy, then a bad redeploy: rolled back to the good code, still running.
    let good = json!({"api_id": NODE, "runtime": "node", "files": bundle("node")});
    let (code, body) = curl(&server, "POST", "/deploy", Some(&good));
    assert_eq!(code, 200, "{body}");
    let good_code = objects(&server, "deployments", NODE)[0]["spec"]["template"]["spec"]["volumes"]
        [0]["configMap"]["name"]
        .clone();
    let broken = json!({"api_id": NODE, "runtime": "node", "files": {"server.js": "x\n"}});
    let (code, body) = curl(&server, "POST", "/deploy", Some(&broken));
    assert_eq!(code, 500, "{body}");
    let x = execution(body["execution_id"].as_str().unwrap());
    assert_eq!(x["execution"]["state"], "ROLLED_BACK", "{x}");
    assert!(
        events_text(&x).contains("Error: Cannot find module '/app/code/index.js'"),
        "{x}"
    );
    let now = objects(&server, "deployments", NODE)[0]["spec"]["template"]["spec"]["volumes"][0]
        ["configMap"]["name"]
        .clone();
    assert_eq!(now, good_code, "the template is back on the good code");
    let (_, status) = curl(&server, "GET", &format!("/status/{NODE}"), None);
    assert_eq!(status["status"], "running", "{status}");
}

#[test]
fn bad_input_is_refused_naming_the_field_and_creates_nothing() {
    let server = ServeProcess::start(&[]);
    let refused = |body: Value, field: &str| {
        let (code, answer) = curl(&server, "POST", "/deploy", Some(&body));
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["status"], "error", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().starts_with(field),
            "{answer}"
        );
    };
    refused(
        json!({"api_id": "not-a-uuid", "files": bundle("python")}),
        "api_id",
    );
    refused(json!({"files": bundle("python")}), "api_id");
    refused(json!({"api_id": 42}), "api_id");
    refused(
        json!({"api_id": PYTHON, "runtime": "ruby", "files": bundle("python")}),
        "runtime",
    );
    refused(
        json!({"api_id": PYTHON, "files": {"main.py": "#".repeat(300 * 1024)}}),
        "files",
    );
    refused(
        json!({"api_id": PYTHON, "files": {"../main.py": "x"}}),
        "files",
    );
    refused(
        json!({"api_id": PYTHON, "memory": "lots", "files": bundle("python")}),
        "memory",
    );
    for path in ["/stop/nope", "/remove/nope"] {
        let (code, answer) = curl(&server, "POST", path, None);
        assert_eq!(
            (code, &answer["error"]["field"]),
            (400, &json!("api_id")),
            "{answer}"
        );
    }
    let (code, answer) = curl(&server, "GET", "/status/12345", None);
    assert_eq!(
        (code, &answer["error"]["field"]),
        (400, &json!("api_id")),
        "{answer}"
    );
    // DryRun shows every object the deploy would create, and creates none.
    let (code, plan) = curl(
        &server,
        "POST",
        "/api/v1/dry-run",
        Some(&json!({"action": "deploy_code",
            "target": {"namespace": NAMESPACE, "name": format!("api-{PYTHON}")},
            "parameters": {"files": bundle("python"), "max_replicas": 3}})),
    );
    assert_eq!(code, 200, "{plan}");
    let objects: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["object"].as_str())
        .collect();
    let name = format!("api-{PYTHON}");
    for kind in [
        "deployment",
        "service",
        "networkpolicy",
        "horizontalpodautoscaler",
    ] {
        assert!(
            objects.contains(&format!("{NAMESPACE}/{kind}/{name}").as_str()),
            "{objects:?}"
        );
    }
    assert!(
        objects
            .iter()
            .any(|o| o.starts_with(&format!("{NAMESPACE}/configmap/{name}-code-"))),
        "{objects:?}"
    );
    let created = kubectl(
        &server,
        &[
            "get",
            "deploy,cm,svc,netpol,hpa",
            "-n",
            NAMESPACE,
            "-o",
            "name",
        ],
    );
    assert_eq!(created.trim(), "", "refused requests created {created}");
}

#[test]
fn a_deployed_apis_logs_stream_as_server_sent_events() {
    let server = ServeProcess::start(&[]);
    let (code, body) = curl(
        &server,
        "POST",
        "/deploy",
        Some(&json!({"api_id": GO, "runtime": "go", "files": bundle("go")})),
    );
    assert_eq!(code, 200, "{body}");
    let out = run_ok(
        Command::new("curl")
            .args(["-sN", "--max-time", "30"])
            .arg(format!(
                "http://{}/logs/{GO}?duration_seconds=2&tail_lines=10",
                server.http_addr
            )),
    );
    assert!(out.contains("event: execution_event"), "{out}");
    assert!(out.contains("listening on :8080"), "{out}");
    assert!(
        out.contains(&format!("api-{GO}-")),
        "lines name their pod: {out}"
    );
    assert!(
        out.contains("SUCCEEDED"),
        "the stream ends with the execution: {out}"
    );
}
