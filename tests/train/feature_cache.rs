//! The frozen-base feature cache (issue 18 item 1): `tfload train` on a model whose exporter
//! recorded a base/head cut trains the head on features computed once, and must give the same
//! per-step losses, validation metrics and final variables (weights, BN statistics, optimizer
//! slots, `iterations`) as the full `train_step` path (`--no-feature-cache`) on the same batches,
//! within 1e-5 relative. Models: a small Keras CNN with BatchNormalization in the base, and
//! MobileNetV2 (alpha 0.35, 32x32) with a new 3-class head; both exported by
//! scripts/parity/feature_cache_reference.py, which also compares the written models in Python.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

use crate::common::{python_json, s, tfload};
use crate::train_parity::step_losses;

const SCRIPT: &str = "parity/feature_cache_reference.py";
const RTOL: f64 = 1e-5;

/// The exported model `kind` (`cnn`, `mobilenet`) and its data, made once per build directory.
pub(crate) fn fixture(kind: &str) -> PathBuf {
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("feature_cache_v2_{kind}"));
    if !dir.join("model/saved_model.pb").is_file() {
        python_json(SCRIPT, &["make", kind, s(&dir)]);
    }
    dir
}

/// Runs `tfload train` on the fixture into `out`; returns stderr (the progress lines).
pub(crate) fn train(fixture: &Path, out: &Path, extra: &[&str]) -> String {
    train_model(&fixture.join("model"), &fixture.join("train.npz"), out, extra)
}

pub(crate) fn train_model(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", s(model), "--data", s(data), "--out", s(out), "--batch-size", "8"];
    args.extend(extra.iter().copied());
    let output = tfload(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "tfload {args:?} failed:\n{stderr}");
    stderr
}

pub(crate) fn assert_close(what: &str, ours: &[f64], theirs: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: {} values against {}", ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!((a - b).abs() <= RTOL * b.abs().max(1e-3), "{what}[{i}]: {a} against {b}");
    }
}

/// Every saved variable of `a` within 1e-5 relative of `b`'s.
pub(crate) fn assert_same_weights(a: &Path, b: &Path) {
    let answer = python_json(SCRIPT, &["weights", s(a), s(b)]);
    let diffs = answer["max_relative"].as_object().unwrap_or_else(|| panic!("{answer}"));
    assert!(!diffs.is_empty());
    for (key, diff) in diffs {
        assert!(diff.as_f64().unwrap() <= RTOL, "{key} differs by {diff} between {a:?} and {b:?}");
    }
}

pub(crate) fn epoch_validation(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["event"] == "epoch")
        .map(|line| line["validation"]["loss"].as_f64().unwrap())
        .collect()
}

/// The written model's outputs in Python (`tf.saved_model.load`) equal `tfload run`'s.
pub(crate) fn assert_python_outputs_equal_tfload(model: &Path, fixture: &Path, scratch: &Path) {
    let x = fixture.join("x.npy");
    let ours = scratch.join("ours");
    let output = tfload(&["run", s(model), "-i", &format!("inputs={}", s(&x)), "--out", s(&ours), "-q"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer = python_json(SCRIPT, &["outputs", s(model), s(&x), s(&ours.join("outputs.npy"))]);
    assert_eq!(answer["same_shape"], true, "{answer}");
    assert!(answer["max_relative"].as_f64().unwrap() <= 1e-6, "{answer}");
}

fn assert_cached_equals_full(kind: &str, epochs: &str) {
    let fixture = fixture(kind);
    let dir = tempfile::tempdir().unwrap();
    let (cached, full) = (dir.path().join("cached"), dir.path().join("full"));
    let common = ["--epochs", epochs, "--validation-split", "0.25"];
    let progress = train(&fixture, &cached, &common);
    assert!(progress.contains("feature cache: on (base frozen below"), "{progress}");
    // The full `train_step` itself: not specialized, so not a frozen-base step either.
    let mut no_cache = common.to_vec();
    no_cache.extend(["--no-feature-cache", "--no-specialize-step"]);
    let progress = train(&fixture, &full, &no_cache);
    assert!(progress.contains("feature cache: off (--no-feature-cache)"), "{progress}");
    assert!(!progress.contains("step: `train_step_from_"), "{progress}");
    assert_close("per-step losses", &step_losses(&cached), &step_losses(&full));
    assert_close("validation losses", &epoch_validation(&cached), &epoch_validation(&full));
    assert_same_weights(&cached, &full);
    assert_python_outputs_equal_tfload(&cached, &fixture, dir.path());
}

#[test]
fn cnn_with_batch_norm_base_cached_path_equals_full_train_step() {
    assert_cached_equals_full("cnn", "3");
}

#[test]
fn mobilenet_v2_new_head_cached_path_equals_full_train_step() {
    assert_cached_equals_full("mobilenet", "2");
}

/// A TF2 SavedModel source with a new head: the restored function is the base.
#[test]
fn saved_model_source_new_head_cached_path_equals_full_train_step() {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json("parity/saved_model_source_reference.py", &["make", "save", s(dir.path())]);
    let model = PathBuf::from(made["trainable"].as_str().unwrap());
    let data = dir.path().join("train.npz");
    let (cached, full) = (dir.path().join("cached"), dir.path().join("full"));
    let progress = train_model(&model, &data, &cached, &["--epochs", "2"]);
    assert!(progress.contains("feature cache: on (base frozen below `head"), "{progress}");
    train_model(&model, &data, &full, &["--epochs", "2", "--no-feature-cache", "--no-specialize-step"]);
    assert_close("per-step losses", &step_losses(&cached), &step_losses(&full));
    assert_same_weights(&cached, &full);
}

/// A mask that trains a variable below the cut (`--train-all`, or `--train-last-layers` reaching
/// into the base) falls back to the full step and says why.
#[test]
fn falls_back_when_the_mask_reaches_into_the_base() {
    let fixture = fixture("cnn");
    let dir = tempfile::tempdir().unwrap();
    // model.layers: input, conv, bn, relu, flat, hid, head; the cut is at `hid`.
    let progress = train(&fixture, &dir.path().join("last5"), &["--epochs", "1", "--train-last-layers", "5"]);
    assert!(
        progress.contains("feature cache: off (the mask trains 2 variable(s) below the cut at `hid`"),
        "{progress}"
    );
    let progress = train(&fixture, &dir.path().join("last3"), &["--epochs", "1", "--train-last-layers", "3"]);
    assert!(progress.contains("feature cache: on"), "{progress}");
    let progress = train(&fixture, &dir.path().join("all"), &["--epochs", "1", "--train-all"]);
    assert!(
        progress
            .contains("feature cache: off (the mask trains 4 variable(s) below the cut at `hid`, e.g. `conv/kernel`"),
        "{progress}"
    );
}

/// Features beyond `--feature-cache-memory` go to a file in the working directory; the run
/// trains the same.
#[test]
fn features_beyond_the_memory_budget_train_the_same() {
    let fixture = fixture("cnn");
    let dir = tempfile::tempdir().unwrap();
    let (memory, file) = (dir.path().join("memory"), dir.path().join("file"));
    train(&fixture, &memory, &["--epochs", "2"]);
    let progress = train(&fixture, &file, &["--epochs", "2", "--feature-cache-memory", "1KiB"]);
    assert!(progress.contains("partly in a file under the working directory"), "{progress}");
    assert_eq!(step_losses(&memory), step_losses(&file));
    assert!(!file.join("feature_cache").exists(), "the cache file stayed in the output");
}

/// A run killed mid-epoch and resumed (the cache rebuilt) ends with the uninterrupted run's weights.
#[test]
fn resume_with_the_cache_gives_the_uninterrupted_weights() {
    let fixture = fixture("cnn");
    let dir = tempfile::tempdir().unwrap();
    let (straight, resumed) = (dir.path().join("straight"), dir.path().join("resumed"));
    let args = ["--epochs", "2", "--checkpoint-every-steps", "2"];
    train(&fixture, &straight, &args);
    let (model, data) = (fixture.join("model"), fixture.join("train.npz"));
    let mut killed = vec!["train", s(&model), "--data", s(&data), "--out", s(&resumed), "--batch-size", "8"];
    killed.extend(args);
    // Steps 2 and 4 are checkpointed; the third checkpoint (end of epoch 1, step 5) dies built.
    let status = Command::new(env!("CARGO_BIN_EXE_tfload"))
        .args(&killed)
        .env("TFLOAD_FAULT_AT", "checkpoint-built:3")
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "the fault point did not stop the run");
    let mut resume = args.to_vec();
    resume.push("--resume");
    let progress = train(&fixture, &resumed, &resume);
    assert!(progress.contains("feature cache: on"), "{progress}");
    assert_same_weights(&resumed, &straight);
}
