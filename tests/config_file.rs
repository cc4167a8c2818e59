//! `serve --config FILE`: the incident platform's YAML file as its service reads it, our own
//! `serve:` block, `${VAR}` expansion, flags and environment over the file, unknown keys
//! refused by name, and `--print-config` with secrets masked.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
};

use common::{fresh_postgres_database, mk_request, mk_target, plain_http, SimProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState,
};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_executor-service");

/// The platform's file as they wrote it, with the test's database in the `database` block and
/// port 0 for its two ports (tests never bind fixed ports), and our `serve:` block after it.
fn platform_file(dir: &Path, database: &reqwest::Url) -> std::path::PathBuf {
    let text = format!(
        r#"executor:
  service_port: 0
  kubernetes: {{config_path: "${{KUBECONFIG}}", timeout: 30s, retry_attempts: 3}}
  actions: {{dry_run: false, max_concurrent: 10, cooldown_period: 5m, execution_timeout: 120s}}
  database: {{host: {host}, port: {port}, name: {name}, user: {user}, password: "${{DB_PASSWORD}}"}}
  safety: {{enable_cooldown: true, enable_validation: true, require_confirmation: false}}
  monitoring: {{enable_metrics: true, metrics_port: 0, enable_tracing: true}}
serve:
  http-listen: "off"
"#,
        host = database.host_str().unwrap(),
        port = database.port().unwrap(),
        name = database.path().trim_start_matches('/'),
        user = database.username(),
    );
    let path = dir.join("executor.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("EXECUTOR_WORKERS")
        .envs(env.iter().copied());
    command
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = args.to_vec();
    args.push("--print-config");
    serve(&args, env)
        .output()
        .expect("run serve --print-config")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platforms_file_as_written_starts_the_service_on_its_database() {
    let sim = SimProcess::start(&[]);
    let database: reqwest::Url = fresh_postgres_database().await.parse().unwrap();
    let password = database.password().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = platform_file(dir.path(), &database);
    let kubeconfig = sim.kubeconfig.display().to_string();
    let env = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("DB_PASSWORD", password.as_str()),
    ];
    let file_arg = file.display().to_string();

    // What it would run with: every key of their block mapped, the password masked.
    let shown = print_config(&["--config", &file_arg], &env);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let shown = stdout(&shown);
    for line in [
        "listen: \"127.0.0.1:0\"  # file: executor.service_port",
        "kube-timeout: \"30s\"  # file: executor.kubernetes.timeout",
        "kube-retries: \"3\"  # file: executor.kubernetes.retry_attempts",
        "workers: \"10\"  # file: executor.actions.max_concurrent",
        "cooldown: \"5m\"  # file: executor.actions.cooldown_period",
        "default-timeout: \"120s\"  # file: executor.actions.execution_timeout",
        "health-listen: \"127.0.0.1:0\"  # file: executor.monitoring.metrics_port",
        "http-listen: \"off\"  # file: serve.http-listen",
        "shadow: \"false\"  # default",
    ] {
        assert!(shown.contains(line), "missing {line:?} in:\n{shown}");
    }
    let store = format!(
        "store: \"postgres://{}:****@{}:{}{}\"  # file: executor.database",
        database.username(),
        database.host_str().unwrap(),
        database.port().unwrap(),
        database.path()
    );
    assert!(shown.contains(&store), "missing {store:?} in:\n{shown}");
    assert!(
        !shown.contains(&format!(":{password}@")),
        "the password is shown:\n{shown}"
    );

    // It starts, with the API (JSON routes too) on the service port and metrics on their own.
    let mut child = serve(&["--config", &file_arg], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut read = |prefix: &str| {
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_string()
    };
    let addr = read("executor-service listening on ");
    let metrics_addr = read("executor-service health listening on ");
    let http = plain_http();
    let health = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("executor_"));

    // An execution runs on the cluster of KUBECONFIG and is recorded in their database.
    let mut client = ExecutorServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = mk_request(
        "scale_deployment",
        mk_target("production", "Deployment", "worker"),
        json!({ "replicas": 3 }),
    );
    request.wait = true;
    request.timeout = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let execution = client
        .execute(request)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        execution.state(),
        ExecutionState::Succeeded,
        "{}",
        execution.message
    );
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(database.as_str())
        .await
        .unwrap();
    let (state,): (String,) = sqlx::query_as("SELECT state FROM executions WHERE id = $1")
        .bind(&execution.id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(state, "SUCCEEDED");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_unknown_key_or_an_unset_variable_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("executor.yaml");
    let file_arg = file.display().to_string();
    std::fs::write(
        &file,
        "executor:\n  actions: {dry_run: false, max_concurent: 10}\n",
    )
    .unwrap();
    let out = print_config(&["--config", &file_arg], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("executor.actions: unknown field `max_concurent`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&file, "serve:\n  wrokers: 4\n").unwrap();
    let out = print_config(&["--config", &file_arg], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("serve.wrokers: unknown setting"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        &file,
        "executor:\n  database: {host: db, password: \"${EXECUTOR_TEST_UNSET_PASSWORD}\"}\n",
    )
    .unwrap();
    let out = print_config(&["--config", &file_arg], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("line 2: environment variable EXECUTOR_TEST_UNSET_PASSWORD is not set"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&file, "serve:\n  workers: lots\n").unwrap();
    let out = print_config(&["--config", &file_arg], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("'lots'") && err.contains("serve.workers"),
        "{err}"
    );

    // Validation cannot be switched off.
    std::fs::write(&file, "executor:\n  safety: {enable_validation: false}\n").unwrap();
    let out = print_config(&["--config", &file_arg], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("executor.safety.enable_validation"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn flags_and_environment_override_the_file_and_ours_override_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("executor.yaml");
    let file_arg = file.display().to_string();
    std::fs::write(
        &file,
        "executor:\n  actions: {dry_run: true, max_concurrent: 10, cooldown_period: 5m, execution_timeout: 90s}\n  safety: {require_confirmation: true}\nserve:\n  default-timeout: 45s\n  protected-namespaces: [kube-system, payments]\n",
    )
    .unwrap();
    let out = print_config(
        &["--config", &file_arg, "--cooldown", "1m"],
        &[("EXECUTOR_WORKERS", "7")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    for line in [
        "workers: \"7\"  # environment: EXECUTOR_WORKERS",
        "cooldown: \"1m\"  # command line",
        "default-timeout: \"45s\"  # file: serve.default-timeout",
        "protected-namespaces: [\"kube-system\", \"payments\"]  # file: serve.protected-namespaces",
        "shadow: \"true\"  # file: executor.actions.dry_run",
        "require-approval: \"true\"  # file: executor.safety.require_confirmation",
    ] {
        assert!(shown.contains(line), "missing {line:?} in:\n{shown}");
    }
    // EXECUTOR_CONFIG names the file as --config does.
    let out = serve(&["--print-config"], &[("EXECUTOR_CONFIG", &file_arg)])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("shadow: \"true\"  # file: executor.actions.dry_run"));
}
