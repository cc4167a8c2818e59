//! The simulated cluster as the official Python `kubernetes` client sees it (issue 16's
//! "test the sim with that client too"): typed models parse every answer, so a DELETE that
//! answers an object where Kubernetes answers a `Status`, or a generation on a kind without a
//! spec, fails here. The script is `tests/python/kube_client.py`.

mod common;

use std::process::Command;

use common::{run_ok, tool, SimProcess};

#[test]
fn the_official_python_client_creates_patches_watches_and_deletes_on_the_simulated_cluster() {
    let sim = SimProcess::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kube_client.py");
    let printed = run_ok(
        Command::new(tool("python"))
            .arg(script)
            .arg(&sim.kubeconfig),
    );
    assert!(printed.contains("all checks passed"), "{printed}");
}

#[test]
fn the_official_python_client_drives_custom_objects_of_a_crd() {
    let sim = SimProcess::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kube_crd.py");
    let printed = run_ok(
        Command::new(tool("python"))
            .arg(script)
            .arg(&sim.kubeconfig),
    );
    assert!(printed.contains("all checks passed"), "{printed}");
}
