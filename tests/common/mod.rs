//! Helpers shared by the end-to-end tests: the built binary, the project's Python, the committed
//! models, and temp copies of them.

#![allow(dead_code)]

pub mod parity;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed model by name (`multi_io`).
pub fn model(name: &str) -> PathBuf {
    root().join("saved_models").join(name)
}

/// Every committed SavedModel directory, sorted.
pub fn committed_models() -> Vec<PathBuf> {
    let mut models: Vec<PathBuf> = std::fs::read_dir(root().join("saved_models"))
        .expect("saved_models/ exists")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("saved_model.pb").is_file())
        .collect();
    models.sort();
    assert!(!models.is_empty(), "no committed SavedModels found");
    models
}

/// Runs the built `tfload` with `args`.
pub fn tfload(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfload"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TF_CPP_MIN_LOG_LEVEL")
        .output()
        .expect("tfload runs")
}

/// Runs `tfload` and returns stdout, failing the test with stderr when it fails.
pub fn tfload_ok(args: &[&str]) -> String {
    let output = tfload(args);
    assert!(output.status.success(), "tfload {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// Runs `tfload` expecting failure; returns stderr.
pub fn tfload_err(args: &[&str]) -> String {
    let output = tfload(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "tfload {args:?} succeeded; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "tfload {args:?} panicked:\n{stderr}");
    assert!(!stderr.contains("I0000") && !stderr.contains("port.cc"), "TensorFlow log noise:\n{stderr}");
    assert!(output.stdout.is_empty(), "tfload {args:?} failed but printed to stdout");
    stderr
}

/// Runs a script with the project's Python and parses its stdout as JSON.
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts").join(script))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .expect("the project's Python runs (scripts/setup.sh installs it)");
    assert!(output.status.success(), "{script} {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// `tfload train` flags of a run whose numbers repeat exactly from run to run: quiet, one thread
/// in each TensorFlow pool.
pub const QUIET_ONE_THREAD: [&str; 5] = ["-q", "--intra-op-threads", "1", "--inter-op-threads", "1"];

/// Copies a directory tree (a model) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Path as &str for argument lists.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
