//! `tfload import-weights` and `tfload inspect-h5` end to end: Keras HDF5 files of both layouts
//! (saved_models/h5/, made by scripts/fixtures/make_h5_fixtures.py) imported into the committed digits
//! models, and the result compared with what Keras's own `load_weights` makes of the same files
//! (`make_h5_fixtures.py compare`: every variable through `tf.train.load_checkpoint`, serving
//! outputs through `tf.saved_model.load`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{model, python_json, root, s, tfload_err, tfload_ok};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    root().join("saved_models/h5").join(name)
}

/// Every file of a directory tree with its bytes, to prove a directory unchanged.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// Imports `weights` into the committed model `model_name` and returns Python's comparison.
fn import_and_compare(model_name: &str, weights: &str, arch: &str, extra: &[&str], kept: &str) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imported");
    let source = model(model_name);
    let before = snapshot(&source);
    let weights = fixture(weights);
    let mut args = vec!["import-weights", s(&source), s(&weights), "--out", s(&out)];
    args.extend_from_slice(extra);
    let stdout = tfload_ok(&args);
    assert!(stdout.contains(&format!("wrote {}", out.display())), "{stdout}");
    assert_eq!(before, snapshot(&source), "the input model was modified");
    tfload_ok(&["variables", s(&out)]); // tfload reads its own output back
    let kept = format!("--kept-layers={kept}");
    python_json("fixtures/make_h5_fixtures.py", &["compare", s(&source), s(&out), s(&weights), arch, &kept])
}

/// Runs an import expected to fail; returns stderr.
fn import_fails(model_name: &str, weights: &Path, out: &Path) -> String {
    let source = model(model_name);
    tfload_err(&["import-weights", s(&source), s(weights), "--out", s(out)])
}

/// Checks the comparison: variables of `imported` layers differ from the input model and equal
/// Keras's, every other variable equals the input's, and serving outputs equal Keras's.
fn assert_parity(report: &Value, imported: &[&str]) {
    for variable in report["variables"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let layer = name.split('/').next().unwrap();
        if imported.contains(&layer) {
            assert_eq!(variable["equals_keras"], true, "{name}: not what Keras loads");
            assert_eq!(variable["equals_input"], false, "{name}: not imported");
        } else {
            assert_eq!(variable["equals_input"], true, "{name}: should be untouched");
            if let Some(equal) = variable.get("equals_keras") {
                assert_eq!(equal, true, "{name}: Keras was given the kept value");
            }
        }
    }
    let diff = report["serving_max_abs_diff"].as_f64().unwrap();
    assert!(diff < 1e-5, "serving_default differs from the Keras model by {diff}");
}

#[test]
fn keras3_weights_import_as_keras_loads_them() {
    let report = import_and_compare("mlp_digits", "mlp_keras3.weights.h5", "mlp", &[], "");
    assert_parity(&report, &["hidden", "output"]);
}

#[test]
fn legacy_whole_model_h5_imports_as_keras_loads_it() {
    let report = import_and_compare("mlp_digits", "mlp_legacy_model.h5", "mlp", &[], "");
    assert_parity(&report, &["hidden", "output"]);
}

#[test]
fn keras3_weights_with_batch_norm_statistics_import_into_the_cnn() {
    let report = import_and_compare("cnn_digits", "cnn_keras3.weights.h5", "cnn5", &[], "");
    assert_parity(&report, &["conv1", "bn1", "conv2", "head"]);
}

#[test]
fn tf_keras_base_with_another_head_imports_with_skip_mismatch() {
    let report = import_and_compare("cnn_digits", "cnn_tfkeras.h5", "cnn5", &["--skip-mismatch"], "head");
    assert_parity(&report, &["conv1", "bn1", "conv2"]);
}

#[test]
fn a_shape_mismatch_without_skip_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let stderr = import_fails("cnn_digits", &fixture("cnn_tfkeras.h5"), &out);
    assert!(stderr.contains("layer `head`") && stderr.contains("[256, 10]") && stderr.contains("[256, 5]"), "{stderr}");
    assert!(stderr.contains("--skip-mismatch"), "{stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "something was written");
}

#[test]
fn a_weight_count_mismatch_names_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let stderr = import_fails("mlp_digits", &fixture("mlp_nobias.weights.h5"), &out);
    assert!(
        stderr.contains("layer `hidden` has 1 weight(s) in the file") && stderr.contains("2 variable(s)"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn dry_run_prints_the_whole_mapping_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (m_cnn_digits, f_cnn_tfkeras_h5) = (model("cnn_digits"), fixture("cnn_tfkeras.h5"));
    let args =
        ["import-weights", s(&m_cnn_digits), s(&f_cnn_tfkeras_h5), "--out", s(&out), "--dry-run", "--skip-mismatch"];
    let stdout = tfload_ok(&args);
    let line =
        |needle: &str| stdout.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}:\n{stdout}"));
    assert!(
        line("/bn1/bn1/moving_variance:0").contains("bn1/moving_variance")
            && line("moving_variance:0").ends_with("import")
    );
    assert!(line("/head/head/kernel:0").ends_with("keep (shape differs)"));
    assert!(line("optimizer/m/conv1/kernel").ends_with("keep (not in file)"));
    assert!(stdout.contains("dry run: nothing written"));
    assert!(!out.exists());
}

#[test]
fn dry_run_json_lists_every_row() {
    let m_mlp_digits = model("mlp_digits");
    let f_mlp_keras3_weights_h5 = fixture("mlp_keras3.weights.h5");
    let args = ["import-weights", s(&m_mlp_digits), s(&f_mlp_keras3_weights_h5), "--dry-run", "--json"];
    let document: Value = serde_json::from_str(&tfload_ok(&args)).unwrap();
    assert_eq!(document["schema"], "tfload.import_weights/v1");
    assert_eq!(document["imported"], 4);
    let mapping = document["mapping"].as_array().unwrap();
    let kernel = mapping.iter().find(|r| r["variable"] == "hidden/kernel").unwrap();
    assert_eq!(kernel["h5_weight"], "/layers/dense/vars/0");
    assert_eq!(kernel["action"], "import");
    assert_eq!(mapping.len(), 9, "4 imported + 5 optimizer variables kept");
}

#[test]
fn an_existing_out_needs_force_and_the_input_is_never_a_target() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let m_mlp_digits = model("mlp_digits");
    let f_mlp_keras3_weights_h5 = fixture("mlp_keras3.weights.h5");
    let base = ["import-weights", s(&m_mlp_digits), s(&f_mlp_keras3_weights_h5), "--out", s(&out)];
    tfload_ok(&base);
    let stderr = tfload_err(&base);
    assert!(stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    let forced: Vec<&str> = base.iter().copied().chain(["--force"]).collect();
    tfload_ok(&forced);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers, ["out"], "temporary directories left behind");
    let f_mlp_keras3_weights_h5 = fixture("mlp_keras3.weights.h5");
    let into_input = ["import-weights", s(&out), s(&f_mlp_keras3_weights_h5), "--out", s(&out), "--force"];
    let stderr = tfload_err(&into_input);
    assert!(stderr.contains("input is never modified"), "{stderr}");
}

#[test]
fn files_that_are_not_keras_weights_are_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("weights.h5");
    std::fs::write(&text, "just some text\n").unwrap();
    let out = tmp.path().join("out");
    let cases = [
        (text.clone(), "is not a readable HDF5 file"),
        (fixture("not_keras.h5"), "is an HDF5 file but not Keras weights"),
        (tmp.path().join("missing.h5"), "No such file"),
    ];
    for (file, expected) in cases {
        let stderr = import_fails("mlp_digits", &file, &out);
        assert!(stderr.contains(expected), "{file:?}: {stderr}");
        assert!(!out.exists());
    }
    let stderr = import_fails("mlp_digits", &fixture("cnn_keras3.weights.h5"), &out);
    assert!(stderr.contains("no layer of") && stderr.contains("conv1") && stderr.contains("hidden"), "{stderr}");
}

#[test]
fn inspect_h5_lists_layers_weights_and_shapes() {
    let stdout = tfload_ok(&["inspect-h5", s(&fixture("cnn_tfkeras.h5"))]);
    assert!(stdout.contains("legacy Keras 2.15.0 weights"), "{stdout}");
    let bn = stdout.lines().find(|l| l.contains("bn1/moving_mean:0")).unwrap();
    assert!(bn.contains("float32") && bn.contains("[8]"), "{bn}");
    let document: Value =
        serde_json::from_str(&tfload_ok(&["inspect-h5", s(&fixture("mlp_keras3.weights.h5")), "--json"])).unwrap();
    assert_eq!(document["layout"]["kind"], "keras3");
    let layers: Vec<&str> =
        document["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(layers, ["hidden", "output"]);
    assert_eq!(document["layers"][0]["weights"][0]["shape"], serde_json::json!([64, 32]));
    let stderr = tfload_err(&["inspect-h5", s(&fixture("not_keras.h5"))]);
    assert!(stderr.contains("not Keras weights"), "{stderr}");
}
