//! `tfload export-serving`: the serving form of committed trainable models and of one just
//! trained, checked in Python TensorFlow (`tf.saved_model.load`, `tf.train.list_variables`),
//! with `saved_model_cli show --all` and `run`, and through tfload itself; refusals that must
//! leave the base directory as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{model, python_json, root, s, tfload_err, tfload_ok};
use tfload::TensorData;

/// A batch of three random digit-shaped inputs, as .npy.
fn digits_input(dir: &Path) -> PathBuf {
    let path = dir.join("batch.npy");
    let values: Vec<f32> = (0..3 * 64).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
    let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[3, 8, 8, 1]), values).unwrap();
    tfload::formats::npy::write_npy(&path, &TensorData::Float32(array)).unwrap();
    path
}

/// Runs `scripts/parity/check_serving_export.py` on an export and asserts what every export must show.
fn assert_served_like_the_source(source: &Path, export: &Path, input: &Path) -> serde_json::Value {
    let report = python_json("parity/check_serving_export.py", &[s(source), s(export), s(input)]);
    assert_eq!(report["signatures"], serde_json::json!(["serving_default"]), "{report}");
    assert!(report["max_abs_diff"].as_f64().unwrap() <= 1e-6, "{report}");
    let keys: Vec<&str> = report["checkpoint_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(keys.contains(&"_CHECKPOINTABLE_OBJECT_GRAPH"), "{keys:?}");
    assert!(keys.len() > 1, "{keys:?}");
    for key in &keys {
        assert!(!key.contains("optimizer") && !key.contains("iterations") && !key.contains("step"), "{key}");
    }
    assert_eq!(report["different_values"], serde_json::json!([]), "{report}");
    report
}

/// The one signature `tfload signatures` lists.
fn assert_one_signature(export: &Path) {
    let listing: serde_json::Value = serde_json::from_str(&tfload_ok(&["signatures", s(export), "--json"])).unwrap();
    let keys: Vec<&str> =
        listing["signatures"].as_array().unwrap().iter().map(|sig| sig["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["serving_default"], "{listing}");
}

fn export(source: &Path, base: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["export-serving", s(source), "--out", s(base), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&tfload_ok(&args)).expect("export-serving --json prints JSON")
}

/// The names under `base`, recursively, with file sizes: what a refusal must not change.
fn listing(base: &Path) -> Vec<(String, u64)> {
    let mut entries = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let size = entry.metadata().unwrap().len();
            entries.push((path.strip_prefix(base).unwrap().display().to_string(), size));
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    entries.sort();
    entries
}

#[test]
fn committed_trainable_models_serve_like_their_source_without_optimizer_state() {
    let dir = tempfile::tempdir().unwrap();
    let input = digits_input(dir.path());
    for name in ["mlp_digits", "cnn_digits"] {
        let base = dir.path().join(name);
        let report = export(&model(name), &base, &["--warmup-input", &format!("inputs={}", s(&input))]);
        assert_eq!(report["version"], 1, "{report}");
        assert!(report["dropped_variables"].as_array().unwrap().iter().any(|v| v == "optimizer/iterations"));
        let written = report["written_bytes"].as_u64().unwrap();
        assert!(written > 0 && written < report["source_bytes"].as_u64().unwrap() / 2, "{report}");
        let version = base.join("1");
        assert_eq!(PathBuf::from(report["path"].as_str().unwrap()), version);
        assert!(!version.join("assets/tfload_contract.json").exists(), "tfload's own asset is left out");
        let checked = assert_served_like_the_source(&model(name), &version, &input);
        let warmup = &checked["warmup"][0];
        assert_eq!(warmup["signature_name"], "serving_default", "{checked}");
        assert_eq!(warmup["inputs"]["inputs"]["shape"], serde_json::json!([3, 8, 8, 1]), "{checked}");
        assert_eq!(warmup["inputs"]["inputs"]["equal"], true, "{checked}");
        assert_one_signature(&version);
    }
}

#[test]
fn saved_model_cli_shows_and_runs_the_export_like_tfload_runs_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let input = digits_input(dir.path());
    let base = dir.path().join("served");
    export(&model("mlp_digits"), &base, &[]);
    let version = base.join("1");
    let cli = root().join(".venv/bin/saved_model_cli");
    let show = Command::new(&cli)
        .args(["show", "--dir", s(&version), "--all"])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    assert!(listing.contains("signature_def['serving_default']"), "{listing}");
    assert!(!listing.contains("train_step") && !listing.contains("eval_step"), "{listing}");

    let cli_out = dir.path().join("cli_out");
    let run = Command::new(&cli)
        .args(["run", "--dir", s(&version), "--tag_set", "serve", "--signature_def", "serving_default"])
        .args(["--inputs", &format!("inputs={}", s(&input)), "--outdir", s(&cli_out)])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let tfload_out = dir.path().join("tfload_out");
    let inputs = format!("inputs={}", s(&input));
    tfload_ok(&["run", s(&model("mlp_digits")), "-i", &inputs, "--out", s(&tfload_out)]);
    let served = tfload::formats::npy::read_npy(&cli_out.join("outputs.npy")).unwrap().to_f32().unwrap();
    let source = tfload::formats::npy::read_npy(&tfload_out.join("outputs.npy")).unwrap().to_f32().unwrap();
    assert_eq!(served.shape(), source.shape());
    let diff = served.iter().zip(source.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 1e-6, "saved_model_cli run differs from the source by {diff}");
    // tfload's own loader (the C API, which runs the new saver's restore op) agrees too.
    let again = dir.path().join("tfload_served");
    tfload_ok(&["run", s(&version), "-i", &inputs, "--out", s(&again)]);
    let restored = tfload::formats::npy::read_npy(&again.join("outputs.npy")).unwrap().to_f32().unwrap();
    assert_eq!(restored, source);
}

#[test]
fn a_model_just_trained_by_tfload_exports_as_the_next_version() {
    let dir = tempfile::tempdir().unwrap();
    let input = digits_input(dir.path());
    let trained = dir.path().join("trained");
    let data = model("data").join("digits_5_9_train.npz");
    tfload_ok(&["train", s(&model("mlp_digits")), "--data", s(&data), "--out", s(&trained), "--epochs", "1", "-q"]);
    let base = dir.path().join("digits");
    assert_eq!(export(&model("mlp_digits"), &base, &[])["version"], 1);
    let report = export(&trained, &base, &[]);
    assert_eq!(report["version"], 2, "{report}");
    let version = base.join("2");
    assert_served_like_the_source(&trained, &version, &input);
    assert_one_signature(&version);
    // The trained weights, not the committed ones: the two versions differ.
    let first = std::fs::read(base.join("1/variables/variables.data-00000-of-00001")).unwrap();
    let second = std::fs::read(version.join("variables/variables.data-00000-of-00001")).unwrap();
    assert_ne!(first, second);
    let names: Vec<String> =
        std::fs::read_dir(&base).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2, "no temporary folder is left in the base: {names:?}");
}

#[test]
fn refusals_leave_the_base_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    export(&model("mlp_digits"), &base, &[]);
    let before = listing(&base);
    let no_default = dir.path().join("no_default");
    python_json("parity/check_serving_export.py", &["--make-no-default", s(&no_default)]);
    let mlp = model("mlp_digits");
    let not_a_model = model("data");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&no_default)], "has no `serving_default` signature"),
        (vec![s(&mlp), "--version", "1"], "already exists"),
        (vec![s(&mlp), "--signature", "nope"], "no signature `nope`"),
        (vec![s(&mlp), "--signature", "train_step"], "training signatures"),
        (vec![s(&not_a_model)], "is not a SavedModel"),
        (vec![s(&mlp), "--warmup-input", "features=/no/such.npy"], "--warmup-input features=/no/such.npy"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["export-serving"];
        full.extend(args.iter().copied());
        full.extend(["--out", s(&base)]);
        let err = tfload_err(&full);
        assert!(err.contains(expected), "{full:?}: {err}");
        assert_eq!(listing(&base), before, "{full:?} changed the base directory");
    }
    let fresh = dir.path().join("fresh");
    tfload_err(&["export-serving", s(&no_default), "--out", s(&fresh)]);
    assert!(!fresh.exists(), "a refused export creates no base directory");
}
