//! The Kubernetes door (issue 16): a `KubernetesExecution` applied with real kubectl becomes an
//! execution of the engine, and its status, `kubectl get` and the gRPC API all tell the same
//! story. A real `serve --controller` process on its embedded simulated cluster; the CRD is
//! installed from `deploy/crd.yaml` the way an operator would.

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{get_execution, tool, watch_all, ServeProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState,
};
use serde_json::Value;
use tonic::transport::Channel;

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn apply(kubeconfig: &Path, yaml: &str) {
    let mut child = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl apply");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `serve --controller` on its embedded cluster, with the CRD installed by kubectl.
fn start() -> ServeProcess {
    let serve = ServeProcess::start(&["--controller"]);
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd.yaml");
    kubectl_ok(&serve.kubeconfig, &["apply", "-f", crd.to_str().unwrap()]);
    kubectl_ok(
        &serve.kubeconfig,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            "crd/kubernetesexecutions.executor-service.io",
        ],
    );
    serve
}

async fn connect(addr: &str) -> ExecutorServiceClient<Channel> {
    ExecutorServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// The object as `kubectl get -o json` shows it.
fn object(kubeconfig: &Path, namespace: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(
        kubeconfig,
        &[
            "get",
            "kubernetesexecution",
            name,
            "-n",
            namespace,
            "-o",
            "json",
        ],
    ))
    .expect("JSON")
}

/// Polls `kubectl get kex` until the phase is one of `phases`; returns every phase seen on the
/// way (in order, without repeats) and the final object.
fn until_phase(
    kubeconfig: &Path,
    namespace: &str,
    name: &str,
    phases: &[&str],
    within: Duration,
) -> (Vec<String>, Value) {
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let obj = object(kubeconfig, namespace, name);
        let phase = obj["status"]["phase"].as_str().unwrap_or("").to_string();
        if !phase.is_empty() && seen.last() != Some(&phase) {
            seen.push(phase.clone());
        }
        if phases.contains(&phase.as_str()) {
            return (seen, obj);
        }
        assert!(
            start.elapsed() < within,
            "{namespace}/{name} still {phase:?} after {within:?} (seen {seen:?}): {}",
            obj["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`until_phase`] on a blocking thread, so the test's runtime goes on serving.
async fn phase_reached(
    kubeconfig: &Path,
    namespace: &str,
    name: &str,
    phases: &'static [&'static str],
    within: Duration,
) -> (Vec<String>, Value) {
    let (kubeconfig, namespace, name) = (
        kubeconfig.to_path_buf(),
        namespace.to_string(),
        name.to_string(),
    );
    tokio::task::spawn_blocking(move || until_phase(&kubeconfig, &namespace, &name, phases, within))
        .await
        .expect("polling the phase")
}

/// `spec.replicas` of Deployment production/`name`, from the cluster's own record.
fn replicas(kubeconfig: &Path, name: &str) -> String {
    kubectl_ok(
        kubeconfig,
        &[
            "get",
            "deploy",
            name,
            "-n",
            "production",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    )
}

fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no condition {type_}: {}", obj["status"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_execution_applied_with_kubectl_scales_the_deployment_and_grpc_sees_the_same_execution(
) {
    let serve = start();
    let kc = serve.kubeconfig.clone();
    apply(
        &kc,
        r#"
apiVersion: executor-service.io/v1alpha1
kind: KubernetesExecution
metadata:
  name: scale-web
  namespace: production
spec:
  action: scale_deployment
  target: {kind: Deployment, name: web}
  parameters: {replicas: 5}
  timeoutSeconds: 120
  request:
    incident: INC-1042
    alert: {name: HighLatency, severity: critical}
"#,
    );
    let (seen, obj) = phase_reached(
        &kc,
        "production",
        "scale-web",
        &["Succeeded", "Failed", "Rejected", "RolledBack"],
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("Succeeded"),
        "{seen:?}: {}",
        obj["status"]
    );
    assert!(
        seen.len() >= 2,
        "the phase moved through a running phase first: {seen:?}"
    );
    // The cluster's own record.
    assert_eq!(replicas(&kc, "web"), "5");
    // The status: the execution, the result, the conditions, the generation seen.
    let status = &obj["status"];
    let id = status["executionId"]
        .as_str()
        .expect("executionId")
        .to_string();
    assert!(!status["result"].is_null(), "{status}");
    assert_eq!(status["requester"], "kubernetesexecution:production");
    assert_eq!(status["observedGeneration"], obj["metadata"]["generation"]);
    assert_eq!(condition(&obj, "Accepted")["status"], "True");
    assert_eq!(condition(&obj, "Succeeded")["status"], "True");
    assert!(status["completionTime"].is_string() && status["startTime"].is_string());
    // `kubectl get -o yaml` shows the same, and `kubectl get` prints the columns.
    let yaml = kubectl_ok(
        &kc,
        &["get", "kex", "scale-web", "-n", "production", "-o", "yaml"],
    );
    assert!(yaml.contains(&format!("executionId: {id}")), "{yaml}");
    assert!(yaml.contains("result:"), "{yaml}");
    let table = kubectl_ok(&kc, &["get", "kubernetesexecutions", "-n", "production"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "ACTION", "TARGET", "AGE"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..4]
                == ["scale-web", "Succeeded", "scale_deployment", "web"]),
        "{table}"
    );
    // The same execution through gRPC: GetExecution and WatchExecution.
    let mut grpc = connect(&serve.addr).await;
    let execution = get_execution(&mut grpc, &id).await;
    assert_eq!(execution.state(), ExecutionState::Succeeded);
    assert_eq!(execution.action, "scale_deployment");
    assert_eq!(execution.requester, "kubernetesexecution:production");
    let events = watch_all(&mut grpc, &id, 0).await;
    assert_eq!(
        events.last().map(|e| e.state()),
        Some(ExecutionState::Succeeded)
    );
    assert_eq!(
        status["lastProgress"]["sequence"].as_u64(),
        events.last().map(|e| e.sequence),
        "the status carries the last event"
    );
    // A spec change after acceptance is refused in the status, never applied.
    kubectl_ok(
        &kc,
        &[
            "patch",
            "kex",
            "scale-web",
            "-n",
            "production",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"parameters":{"replicas":1}}}"#,
        ],
    );
    let start = Instant::now();
    let refused = loop {
        let obj = object(&kc, "production", "scale-web");
        if obj["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "SpecChangeRefused"))
        {
            break obj;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            obj["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(condition(&refused, "SpecChangeRefused")["status"], "True");
    assert_eq!(refused["status"]["executionId"], id.as_str());
    assert_eq!(replicas(&kc, "web"), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_rejected_with_the_field_named_and_nothing_changes() {
    let serve = start();
    let kc = serve.kubeconfig.clone();
    apply(
        &kc,
        r#"
apiVersion: executor-service.io/v1alpha1
kind: KubernetesExecution
metadata: {name: too-many, namespace: production}
spec:
  action: scale_deployment
  target: {kind: Deployment, name: web}
  parameters: {replicas: 100000}
---
apiVersion: executor-service.io/v1alpha1
kind: KubernetesExecution
metadata: {name: no-such-action, namespace: production}
spec:
  action: reboot_everything
  target: {kind: Deployment, name: web}
---
apiVersion: executor-service.io/v1alpha1
kind: KubernetesExecution
metadata: {name: wrong-kind, namespace: production}
spec:
  action: scale_deployment
  target: {kind: Node, name: node-1}
  parameters: {replicas: 2}
"#,
    );
    for (name, field) in [
        ("too-many", "spec.parameters.replicas"),
        ("no-such-action", "spec.action"),
        ("wrong-kind", "spec.target.kind"),
    ] {
        let (_, obj) = phase_reached(
            &kc,
            "production",
            name,
            &["Rejected", "Succeeded", "Failed"],
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            obj["status"]["phase"], "Rejected",
            "{name}: {}",
            obj["status"]
        );
        let accepted = condition(&obj, "Accepted");
        assert_eq!(accepted["status"], "False");
        assert_eq!(accepted["reason"], "InvalidSpec");
        let message = accepted["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{name}: {message}");
        assert!(obj["status"]["executionId"].is_null(), "{}", obj["status"]);
    }
    assert_eq!(replicas(&kc, "web"), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_risk_action_waits_until_kubectl_annotate_approves_it() {
    let serve = start();
    let kc = serve.kubeconfig.clone();
    apply(
        &kc,
        r#"
apiVersion: executor-service.io/v1alpha1
kind: KubernetesExecution
metadata: {name: patch-config, namespace: production}
spec:
  action: patch_resource
  target: {kind: ConfigMap, name: web-config}
  parameters:
    patch: '{"data":{"mode":"degraded"}}'
"#,
    );
    let (_, obj) = phase_reached(
        &kc,
        "production",
        "patch-config",
        &["WaitingApproval", "Succeeded", "Failed", "Rejected"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        obj["status"]["phase"], "WaitingApproval",
        "{}",
        obj["status"]
    );
    assert_eq!(condition(&obj, "Approved")["status"], "False");
    // Nothing changed while it waits.
    let mode = |kc: &Path| {
        kubectl_ok(
            kc,
            &[
                "get",
                "cm",
                "web-config",
                "-n",
                "production",
                "-o",
                "jsonpath={.data.mode}",
            ],
        )
    };
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mode(&kc), "");
    kubectl_ok(
        &kc,
        &[
            "annotate",
            "kex",
            "patch-config",
            "-n",
            "production",
            "executor-service.io/approve=alice",
            "executor-service.io/reason=INC-7 bridge call",
        ],
    );
    let (_, obj) = phase_reached(
        &kc,
        "production",
        "patch-config",
        &["Succeeded", "Failed", "Rejected", "RolledBack"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(obj["status"]["phase"], "Succeeded", "{}", obj["status"]);
    let approved = condition(&obj, "Approved");
    assert_eq!(approved["status"], "True");
    // The annotation's value is a claim: the approver is the namespace's annotators, the
    // claim and the reason are kept.
    assert_eq!(
        approved["message"],
        "approved by kubernetesexecution-approver:production"
    );
    assert_eq!(
        obj["status"]["approval"]["reason"],
        "executor-service.io/approve=alice: INC-7 bridge call"
    );
    assert_eq!(mode(&kc), "degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_of_a_running_execution_cancels_it_and_its_history_stays() {
    let serve = start();
    let kc = serve.kubeconfig.clone();
    // A Deployment whose pods never become ready: scaling it up waits until its timeout.
    apply(
        &kc,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck, namespace: staging, labels: {app: stuck}}
spec:
  replicas: 1
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      containers: [{name: app, image: "example/stuck:crashloop"}]
---
apiVersion: executor-service.io/v1alpha1
kind: KubernetesExecution
metadata: {name: scale-stuck, namespace: staging}
spec:
  action: scale_deployment
  target: {kind: Deployment, name: stuck}
  parameters: {replicas: 3}
  timeoutSeconds: 600
"#,
    );
    let (_, obj) = phase_reached(
        &kc,
        "staging",
        "scale-stuck",
        &["Running", "Succeeded", "Failed", "Rejected"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(obj["status"]["phase"], "Running", "{}", obj["status"]);
    assert!(obj["metadata"]["finalizers"].as_array().is_some_and(|f| f
        .iter()
        .any(|f| f == "executor-service.io/cancel-on-delete")));
    let id = obj["status"]["executionId"].as_str().unwrap().to_string();
    // kubectl waits until the finalizer is gone, i.e. the execution was cancelled.
    kubectl_ok(
        &kc,
        &[
            "delete",
            "kex",
            "scale-stuck",
            "-n",
            "staging",
            "--timeout=60s",
        ],
    );
    let gone = kubectl(&kc, &["get", "kex", "scale-stuck", "-n", "staging"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    let mut grpc = connect(&serve.addr).await;
    let execution = get_execution(&mut grpc, &id).await;
    assert_eq!(
        execution.state(),
        ExecutionState::Cancelled,
        "{}",
        execution.message
    );
    assert!(
        execution
            .message
            .contains("the KubernetesExecution was deleted"),
        "{}",
        execution.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_postgresql_store_run_one_execution_per_object() {
    use executor_service::api::proto::ListExecutionsRequest;
    let sim = common::SimProcess::start(&[]);
    let kc = sim.kubeconfig.clone();
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd.yaml");
    kubectl_ok(&kc, &["apply", "-f", crd.to_str().unwrap()]);
    kubectl_ok(
        &kc,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            "crd/kubernetesexecutions.executor-service.io",
        ],
    );
    let database = common::fresh_postgres_database().await;
    let replicas: Vec<ServeProcess> = (0..3)
        .map(|_| ServeProcess::on_cluster(&kc, Path::new(&database), &["--controller"]))
        .collect();
    let names = ["one", "two", "three", "four"];
    let objects: String = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "apiVersion: executor-service.io/v1alpha1\nkind: KubernetesExecution\n\
                 metadata: {{name: restart-{name}, namespace: production}}\n\
                 spec:\n  action: {}\n  target: {{kind: Deployment, name: {}}}\n{}---\n",
                if i % 2 == 0 {
                    "rolling_restart_deployment"
                } else {
                    "scale_deployment"
                },
                ["web", "api", "worker", "web"][i],
                if i % 2 == 0 {
                    String::new()
                } else {
                    format!("  parameters: {{replicas: {}}}\n", i + 2)
                },
            )
        })
        .collect();
    apply(&kc, &objects);
    let mut ids = Vec::new();
    for name in names {
        let (_, obj) = phase_reached(
            &kc,
            "production",
            &format!("restart-{name}"),
            &[
                "Succeeded",
                "Failed",
                "Rejected",
                "RolledBack",
                "Interrupted",
            ],
            Duration::from_secs(120),
        )
        .await;
        // Two executions on production/web: the second may wait for the first, never both.
        assert_eq!(
            obj["status"]["phase"], "Succeeded",
            "{name}: {}",
            obj["status"]
        );
        ids.push(obj["status"]["executionId"].as_str().unwrap().to_string());
    }
    // Each object became exactly one execution, whichever replicas reconciled it.
    let mut grpc = connect(&replicas[2].addr).await;
    let listed = grpc
        .list_executions(ListExecutionsRequest {
            namespace: "production".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .executions;
    assert_eq!(listed.len(), names.len(), "{listed:?}");
    let mut listed_ids: Vec<String> = listed.iter().map(|e| e.id.clone()).collect();
    listed_ids.sort();
    ids.sort();
    assert_eq!(listed_ids, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_plans_without_changing_and_turning_it_off_runs_it_for_real() {
    let serve = start();
    let kc = serve.kubeconfig.clone();
    apply(
        &kc,
        r#"
apiVersion: executor-service.io/v1alpha1
kind: KubernetesExecution
metadata: {name: plan-first, namespace: production}
spec:
  action: scale_deployment
  target: {kind: Deployment, name: api}
  parameters: {replicas: 4}
  dryRun: true
"#,
    );
    let (_, planned) = phase_reached(
        &kc,
        "production",
        "plan-first",
        &["Succeeded", "Failed", "Rejected"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        planned["status"]["phase"], "Succeeded",
        "{}",
        planned["status"]
    );
    assert_eq!(condition(&planned, "DryRun")["status"], "True");
    assert!(planned["status"]["executionId"].is_null());
    let plan = planned["status"]["result"].to_string();
    assert!(
        plan.contains("replicas"),
        "the plan shows the change: {plan}"
    );
    assert_eq!(replicas(&kc, "api"), "2", "a dry run changes nothing");
    // The same object, for real: a new generation is a new request.
    kubectl_ok(
        &kc,
        &[
            "patch",
            "kex",
            "plan-first",
            "-n",
            "production",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"dryRun":false}}"#,
        ],
    );
    let start = Instant::now();
    let done = loop {
        let obj = object(&kc, "production", "plan-first");
        if obj["status"]["executionId"].is_string() && obj["status"]["phase"] == "Succeeded" {
            break obj;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            obj["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(replicas(&kc, "api"), "4");
    let conditions = done["status"]["conditions"].as_array().unwrap();
    assert!(
        !conditions.iter().any(|c| c["type"] == "DryRun"),
        "the dry run's condition is gone: {conditions:?}"
    );
    assert_ne!(
        done["status"]["result"].to_string(),
        plan,
        "the plan is gone"
    );
}
