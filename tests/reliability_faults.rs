//! A small R2 in CI: 40 executions of five actions (scale_deployment with and without its
//! rollout, rolling_restart_deployment, restart_pod, cordon_node/uncordon_node) on many
//! targets while the simulated API server fails a fifth of all requests, watches included.
//! It runs the benchmark binary's R2 (`bench --only R2`), so the load and the judgement are
//! the same as the 1,000-execution run's: every execution ends within its timeout, loses no
//! event, takes its turn on its object, and a SUCCEEDED one leaves its change in the cluster;
//! one that did not succeed leaves the pre-state or says what it changed. The run fails (a
//! non-zero exit naming the broken invariants) when any of that breaks. No timing is asserted.

mod common;

use std::process::Command;

/// Executions of the run: a few per target, so that executions queue on each object.
const EXECUTIONS: &str = "40";

#[test]
fn under_api_faults_every_execution_ends_loses_no_event_takes_turns_and_leaves_its_change() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r2.md");
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--smoke", "--only", "R2", "--r2-executions", EXECUTIONS])
        .arg("--kubectl")
        .arg(common::tool("kubectl"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "R2 failed:\n{stdout}\n{stderr}");
    let table = std::fs::read_to_string(&out).expect("the report file");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| R2 |")).collect();
    assert!(!rows.is_empty(), "no R2 row:\n{table}");
    // Every row with a target met it (stuck 0, lost 0, overlaps 0, changes verified…).
    let missed: Vec<&&str> = rows.iter().filter(|l| l.ends_with("| **no** |")).collect();
    assert!(
        missed.is_empty(),
        "R2 targets missed:\n{missed:#?}\n{table}"
    );
    assert!(
        table.contains(&format!("R2: {EXECUTIONS} executions")),
        "not the run asked for:\n{table}"
    );
}
