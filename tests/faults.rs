//! Chaos by hand: the real binary with faults given on its command line (`sim --fault`,
//! `serve --sim-fault`), driven by real kubectl and by the CLI client, as a person would rerun
//! a reliability scenario.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{run_ok, tool, ServeProcess, SimProcess};

fn kubectl(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(tool("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
fn sim_answers_kubectl_with_the_faults_its_command_line_gives() {
    let sim = SimProcess::start(&[
        "verb=get,resource=namespaces,code=503",
        "verb=watch,resource=deployments,code=403",
    ]);
    // kubectl retries a 503 that carries Retry-After (about ten times), then reports it.
    let stderr = failed(
        &kubectl(&sim.kubeconfig)
            .args(["get", "namespace", "default"])
            .output()
            .unwrap(),
    );
    assert!(
        stderr.contains("Error from server (ServiceUnavailable)")
            && stderr.contains("injected fault"),
        "{stderr}"
    );
    // Only `get` is faulted: listing the same resource works.
    let names = run_ok(kubectl(&sim.kubeconfig).args([
        "get",
        "namespaces",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]));
    assert!(names.split(' ').any(|n| n == "default"), "{names}");

    // Watches are faulted when they are opened: `get -w` lists, then its watch is refused.
    let stderr = failed(
        &kubectl(&sim.kubeconfig)
            .args([
                "get",
                "deployments",
                "-n",
                "production",
                "--watch",
                "--request-timeout",
                "20s",
            ])
            .output()
            .unwrap(),
    );
    assert!(
        stderr.contains("Forbidden")
            && stderr.contains("cannot watch resource \"deployments\"")
            && stderr.contains("injected fault"),
        "{stderr}"
    );
    run_ok(kubectl(&sim.kubeconfig).args(["get", "deployments", "-n", "production"]));
}

#[test]
fn a_bad_fault_rule_is_refused_at_start_naming_its_key() {
    for (rule, says) in [
        ("verb=get,colour=red,code=503", "unknown key \"colour\""),
        ("verb=get,code=418", "code: \"418\" is not one of"),
        ("verb=get,probability=2,code=503", "probability: \"2\""),
        ("verb=watch,latency=soon", "latency: \"soon\""),
        ("verb=get,resource=pods", "no effect"),
    ] {
        for args in [
            vec!["sim", "--listen", "127.0.0.1:0", "--fault", rule],
            vec!["serve", "--listen", "127.0.0.1:0", "--sim-fault", rule],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_executor-service"))
                .args(&args)
                .env_remove("SIM_FAULTS")
                .env_remove("EXECUTOR_SIM_FAULTS")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains(says) && stderr.contains(rule),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn serve_with_a_forbidden_rollout_watch_fails_the_restart_at_once_naming_the_cause() {
    let server = ServeProcess::start(&["--sim-fault", "verb=watch,resource=deployments,code=403"]);
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_executor-service"))
        .args([
            "exec",
            "rolling_restart_deployment",
            "-n",
            "production",
            "deployment/web",
            "--watch",
            "--timeout",
            "120s",
            "--server",
            &format!("http://{}", server.addr),
        ])
        .output()
        .expect("run the CLI");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}: {stdout}",
        started.elapsed()
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains(" FAILED: ")
            && last
                .contains("lost permission to follow deployment production/web: Forbidden (403)"),
        "{stdout}"
    );
    // Nothing to restore, or no way to see the restore: no rollback is tried.
    assert!(!stdout.contains("ROLLING_BACK"), "{stdout}");
}
