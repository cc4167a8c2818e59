//! The benchmark harness still works: `bench --smoke` runs every part with tiny counts (no
//! timing is asserted), loses no WatchExecution event, and writes its table. R2 and R4 judge
//! invariants (no stuck execution, no lost event, no overlap; the burst's excess refused), so
//! the run fails when one breaks.

mod common;

use std::process::Command;

#[test]
fn the_benchmark_harness_runs_every_part_in_smoke_mode_and_writes_its_table() {
    let kubectl = common::tool("kubectl");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS-run.md");
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--smoke")
        .arg("--kubectl")
        .arg(&kubectl)
        .arg("--out")
        .arg(&out)
        // P6 runs replicas on the test PostgreSQL (a database per level).
        .arg("--postgres")
        .arg(common::postgres_url())
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench --smoke failed:\n{stdout}\n{stderr}"
    );
    let table = std::fs::read_to_string(&out).expect("the report file");
    assert!(
        table.contains("| Part | Measure |"),
        "no table in the report:\n{table}"
    );
    for part in ["P1", "P2", "P3", "P4", "P5", "P6", "R2", "R4"] {
        assert!(
            table.contains(&format!("| {part} |")),
            "no {part} row in the report:\n{table}"
        );
    }
    // Lost events fail the run; a missed timing target in smoke mode does not.
    let lost: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("events lost"))
        .collect();
    assert!(
        !lost.is_empty() && lost.iter().all(|l| l.ends_with("| yes |")),
        "events were lost:\n{table}"
    );
    assert_eq!(stdout.trim(), table.trim(), "stdout and the file differ");
}
