//! Shared helpers for the end-to-end tests: locating the real client tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a real client tool (`kubectl`, `grpcurl`, `python`, `buf`) installed by
/// `scripts/install-tools` into `target/tools/bin`. Runs the installer once per test binary
/// when the tool is missing, so `cargo test` works on a fresh machine. Panics (fails the test)
/// when the tool cannot be had: a missing tool must never turn a test into a silent pass.
pub fn tool(name: &str) -> PathBuf {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let path = repo_root().join("target/tools/bin").join(name);
    if !path.exists() {
        INSTALLED.get_or_init(|| {
            let lock_path = repo_root().join("target/tools.lock");
            std::fs::create_dir_all(repo_root().join("target")).expect("target dir");
            let lock = std::fs::File::create(&lock_path).expect("tools lock file");
            lock.lock().expect("lock tools install");
            let status = Command::new("bash")
                .arg(repo_root().join("scripts/install-tools"))
                .status()
                .expect("run scripts/install-tools");
            assert!(status.success(), "scripts/install-tools failed");
        });
    }
    assert!(Path::new(&path).exists(), "{name} not installed at {}", path.display());
    path
}
