//! The CLI client of the real binary against a started server on its embedded cluster: it runs
//! executions to completion, and its exit code says whether they succeeded.

mod common;

use std::process::{Command, Output};

use common::{run_ok, tool, ServeProcess};

fn cli(server: &ServeProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_executor-service"))
        .args(args)
        .args(["--server", &format!("http://{}", server.addr)])
        .output()
        .expect("run the CLI")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kubectl(server: &ServeProcess) -> Command {
    let mut cmd = Command::new(tool("kubectl"));
    cmd.arg("--kubeconfig").arg(&server.kubeconfig);
    cmd
}

#[test]
fn exec_watch_scales_a_deployment_to_completion_and_exits_zero() {
    let server = ServeProcess::start(&[]);
    let out = cli(
        &server,
        &[
            "exec",
            "scale_deployment",
            "-n",
            "production",
            "deployment/web",
            "--set",
            "replicas=5",
            "--watch",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("QUEUED"), "{stdout}");
    assert!(stdout.contains("[5/5]"), "no rollout progress: {stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("execution ") && last.contains(" SUCCEEDED: "),
        "{stdout}"
    );
    let replicas = run_ok(kubectl(&server).args([
        "get",
        "deployment",
        "web",
        "-n",
        "production",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "5");

    // The same execution through get and watch (a replay of a finished one exits 0 too).
    let id = last
        .strip_prefix("execution ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    let out = cli(&server, &["get", id]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("state:       SUCCEEDED"));
    let out = cli(&server, &["watch", id, "--from", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(" QUEUED "));
}

#[test]
fn exec_exits_non_zero_when_the_rollout_fails_or_times_out() {
    let server = ServeProcess::start(&[]);
    // Containers that crash forever: the restart's rollout exceeds its progress deadline. An
    // image that never pulls, with a deadline of a day: a rollout that just stalls.
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: crashy, namespace: production}
spec:
  replicas: 2
  progressDeadlineSeconds: 10
  selector: {matchLabels: {app: crashy}}
  template:
    metadata: {labels: {app: crashy}}
    spec:
      containers: [{name: app, image: "nginx:crashloop"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: stalled, namespace: production}
spec:
  replicas: 1
  progressDeadlineSeconds: 86400
  selector: {matchLabels: {app: stalled}}
  template:
    metadata: {labels: {app: stalled}}
    spec:
      containers: [{name: app, image: "nginx:badimage"}]
"#;
    let mut apply = kubectl(&server)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut apply.stdin.take().unwrap(), manifest.as_bytes()).unwrap();
    assert!(apply.wait().unwrap().success());

    let out = cli(
        &server,
        &[
            "exec",
            "rolling_restart_deployment",
            "-n",
            "production",
            "deployment/crashy",
            "--watch",
            "--timeout",
            "60s",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains(" FAILED: ") || last.contains(" TIMED_OUT: "),
        "{stdout}"
    );

    // A stalled rollout under a short timeout ends TIMED_OUT (without the rollback the server
    // would otherwise attempt), also non-zero.
    let out = cli(
        &server,
        &[
            "exec",
            "scale_deployment",
            "-n",
            "production",
            "stalled",
            "--set",
            "replicas=4",
            "--wait",
            "--timeout",
            "1s",
            "--no-rollback",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(" TIMED_OUT: "), "{stdout}");
}

#[test]
fn bad_usage_exits_two_naming_the_field_and_the_read_only_commands_show_the_catalog() {
    let server = ServeProcess::start(&[]);
    let out = cli(
        &server,
        &[
            "exec",
            "scale_deployment",
            "-n",
            "production",
            "deployment/web",
            "--set",
            "replicas=abc",
            "--watch",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("INVALID_ARGUMENT: parameters.replicas"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&server, &["watch", "no-such-execution"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("NOT_FOUND"));

    let out = cli(&server, &["actions"]);
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("scale_deployment") && l.contains("replicas:integer[0..100]")),
        "{table}"
    );

    let out = cli(
        &server,
        &[
            "dry-run",
            "scale_deployment",
            "-n",
            "production",
            "deployment/web",
            "--set",
            "replicas=7",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("\"path\": \"/spec/replicas\""), "{plan}");
    assert!(plan.contains("\"value\": 7"), "{plan}");
    let replicas = run_ok(kubectl(&server).args([
        "get",
        "deployment",
        "web",
        "-n",
        "production",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "3", "a dry run changed the cluster");
}

#[test]
fn with_authentication_the_cli_needs_its_token_and_runs_as_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(&tokens, "tokens:\n  - identity: ci\n    token: ci-secret\n").unwrap();
    let server = ServeProcess::start(&["--auth-tokens", tokens.to_str().unwrap()]);

    let out = cli(&server, &["actions"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&server, &["actions", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));

    let out = cli(
        &server,
        &[
            "exec",
            "scale_deployment",
            "-n",
            "production",
            "deployment/worker",
            "--set",
            "replicas=3",
            "--wait",
            "--token",
            "ci-secret",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_executor-service"))
        .args(["get", &id, "--server", &server.addr])
        .env("EXECUTOR_TOKEN", "ci-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("requester:   ci"));
}

#[test]
fn a_drain_waits_for_approval_and_reject_ends_it() {
    let server = ServeProcess::start(&[]);
    let out = cli(&server, &["exec", "drain_node", "node/node-2"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(" WAITING_APPROVAL: "), "{stdout}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let out = cli(
        &server,
        &["reject", &id, "--approver", "bob", "--reason", "not now"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(" REJECTED: "),
        "{}",
        text(&out.stdout)
    );
    // Watching it now replays to the end and reports the failure to run.
    let out = cli(&server, &["watch", &id]);
    assert_eq!(out.status.code(), Some(1));
}

/// A CA, and PEM files of a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn write_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, sans) in [
        ("server", vec!["127.0.0.1".to_string()]),
        ("client", vec![]),
    ] {
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("cli-test-{name}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[test]
fn over_mutual_tls_the_cli_verifies_the_server_and_presents_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let server = ServeProcess::start(&[
        "--tls-cert",
        &file("server.pem"),
        "--tls-key",
        &file("server.key"),
        "--tls-client-ca",
        &file("ca.pem"),
    ]);
    let https = format!("https://{}", server.addr);
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_executor-service"))
            .args(["actions", "--server", &https])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--ca-cert",
        &file("ca.pem"),
        "--client-cert",
        &file("client.pem"),
        "--client-key",
        &file("client.key"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("scale_deployment"));
    // Without a client certificate the handshake is refused; without the CA, usage error.
    let out = run(&["--ca-cert", &file("ca.pem")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--ca-cert"));
}
