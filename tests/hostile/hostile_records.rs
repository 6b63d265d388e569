//! Hostile contract records and learning rates (issue 14, item 5): a copy of the committed
//! `mlp_digits` with one field of its record edited must be refused by `tfload train` before any
//! step, with an error naming the field, and nothing may be written at `--out`.

use std::path::{Path, PathBuf};

use crate::common::{model, root, s, tfload_err, tfload_ok};
use serde_json::{json, Value};

const RECORD: &str = "assets/tfload_contract.json";

fn train_data() -> PathBuf {
    root().join("saved_models/data/digits_5_9_train.npz")
}

/// A temp copy of mlp_digits whose record `edit` has changed.
fn edited(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let copy = dir.join("model");
    crate::common::copy_dir(&model("mlp_digits"), &copy);
    let path = copy.join(RECORD);
    let mut record: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut record);
    std::fs::write(&path, serde_json::to_string_pretty(&record).unwrap()).unwrap();
    copy
}

/// Runs `tfload train` on `model` with `extra` flags, expects a refusal and checks that
/// nothing was trained or written; returns stderr.
fn refused(dir: &Path, model: &Path, extra: &[&str]) -> String {
    let (out, data) = (dir.join("out"), train_data());
    let mut args = vec!["train", s(model), "--data", s(&data), "--out", s(&out), "--epochs", "1", "--batch-size", "64"];
    args.extend_from_slice(extra);
    let err = tfload_err(&args);
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "model")
        .collect();
    assert!(leftovers.is_empty(), "a refused run left {leftovers:?} beside --out; stderr:\n{err}");
    assert!(!err.contains("epoch 1"), "a step ran before the refusal:\n{err}");
    err
}

/// Expects a refusal naming `field`, with `found` in the message.
fn refuses_field(edit: impl FnOnce(&mut Value), field: &str, found: &str) {
    let dir = tempfile::tempdir().unwrap();
    let copy = edited(dir.path(), edit);
    let err = refused(dir.path(), &copy, &[]);
    assert!(err.contains(&format!("record field `{field}`")), "expected a refusal naming `{field}`:\n{err}");
    assert!(err.contains(found), "expected the message to show {found:?}:\n{err}");
}

#[test]
fn the_unedited_record_trains() {
    let dir = tempfile::tempdir().unwrap();
    let copy = edited(dir.path(), |_| {});
    let out = dir.path().join("out");
    tfload_ok(&[
        "train",
        s(&copy),
        "--data",
        s(&train_data()),
        "--out",
        s(&out),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "-q",
    ]);
    assert!(out.join("saved_model.pb").is_file());
}

#[test]
fn empty_train_step_inputs_are_refused() {
    refuses_field(|r| r["signatures"]["train_step"]["inputs"] = json!([]), "signatures.train_step.inputs", "is []");
}

#[test]
fn wrongly_keyed_train_step_inputs_are_refused() {
    refuses_field(
        |r| r["signatures"]["train_step"]["inputs"] = json!(["inputs", "labels", "masks", "learning_rate"]),
        "signatures.train_step.inputs",
        "masks",
    );
}

#[test]
fn a_missing_signature_entry_is_refused() {
    refuses_field(
        |r| drop(r["signatures"].as_object_mut().unwrap().remove("eval_step")),
        "signatures",
        "serving_default, train_step",
    );
}

#[test]
fn a_mask_variable_shape_unlike_the_checkpoint_is_refused() {
    refuses_field(|r| r["mask_variables"][2]["shape"] = json!([32, 11]), "mask_variables[2].shape", "[32, 11]");
}

#[test]
fn a_mask_variable_dtype_unlike_the_checkpoint_is_refused() {
    refuses_field(|r| r["mask_variables"][0]["dtype"] = json!("float64"), "mask_variables[0].dtype", "float64");
}

#[test]
fn a_checkpoint_key_that_does_not_exist_is_refused() {
    refuses_field(
        |r| r["mask_variables"][1]["checkpoint_key"] = json!("mask_variables/9/.ATTRIBUTES/VARIABLE_VALUE"),
        "mask_variables[1].checkpoint_key",
        "mask_variables/9/",
    );
}

#[test]
fn missing_optimizer_variables_are_refused() {
    refuses_field(
        |r| r["optimizer_variables"] = json!([]),
        "optimizer_variables",
        "missing 5 of the checkpoint's 9 variables",
    );
}

#[test]
fn an_optimizer_slot_of_the_wrong_shape_is_refused() {
    refuses_field(
        |r| r["optimizer_variables"][3]["variable_index"] = json!(0),
        "optimizer_variables[3].shape",
        "[32, 10]",
    );
}

#[test]
fn labels_of_the_wrong_dtype_are_refused() {
    refuses_field(|r| r["labels"]["dtype"] = json!("float32"), "labels.dtype", "\"float32\"");
}

#[test]
fn a_mask_record_of_the_wrong_shape_is_refused() {
    refuses_field(|r| r["mask"]["shape"] = json!([5]), "mask.shape", "[5]");
}

#[test]
fn class_names_that_do_not_match_the_head_are_refused() {
    refuses_field(|r| drop(r["class_names"].as_array_mut().unwrap().pop()), "class_names", "9 names");
}

#[test]
fn a_default_mask_value_other_than_0_or_1_is_refused() {
    refuses_field(|r| r["default_mask"][0] = json!(0.5), "default_mask[0]", "0.5");
}

#[test]
fn an_unknown_loss_is_refused() {
    refuses_field(|r| r["loss"]["name"] = json!("hinge"), "loss.name", "hinge");
}

#[test]
fn a_negative_recorded_learning_rate_is_refused() {
    refuses_field(|r| r["learning_rate"]["default"] = json!(-0.05), "learning_rate.default", "-0.05");
}

#[test]
fn a_learning_rate_that_is_not_finite_and_positive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let copy = edited(dir.path(), |_| {});
    for (flags, origin) in [
        (vec!["--lr=-0.1"], "--lr is -0.1"),
        (vec!["--lr", "NaN"], "--lr is NaN"),
        (vec!["--lr", "inf"], "--lr is inf"),
        (vec!["--lr", "0"], "--lr is 0"),
        (vec!["--lr-schedule", "cosine", "--min-lr", "nan"], "--min-lr is NaN"),
        (vec!["--lr-schedule", "step", "--lr-decay-factor=-2"], "--lr-decay-factor is -2"),
    ] {
        let err = refused(dir.path(), &copy, &flags);
        assert!(err.contains(origin), "{flags:?}: expected {origin:?}:\n{err}");
    }
}

// ---- Keras HDF5 weights (issue 14, item 4) ----

fn h5(name: &str) -> PathBuf {
    root().join("saved_models/h5").join(name)
}

/// Runs the project's Python on `script`; returns its stdout.
fn python(script: &str) -> String {
    let output = std::process::Command::new(root().join(".venv/bin/python")).args(["-c", script]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn truncated_weights_files_are_refused_as_h5py_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    for (file, model_name) in [
        ("mlp_keras3.weights.h5", "mlp_digits"),
        ("cnn_keras3.weights.h5", "cnn_digits"),
        ("mlp_legacy_model.h5", "mlp_digits"),
    ] {
        let bytes = std::fs::read(h5(file)).unwrap();
        // Cut points include ones after the last complete layer, which once imported a part.
        for cut in [bytes.len() / 3, bytes.len() * 2 / 3, bytes.len() * 17 / 20, bytes.len() * 19 / 20, bytes.len() - 8]
        {
            let cut_file = dir.path().join(format!("cut-{cut}-{file}"));
            std::fs::write(&cut_file, &bytes[..cut]).unwrap();
            let reference = python(&format!(
                "import h5py\ntry:\n    h5py.File('{}', 'r').close(); print('opened')\nexcept OSError as e:\n    print('refused', e)",
                s(&cut_file)
            ));
            assert!(reference.starts_with("refused") && reference.contains("truncated file"), "h5py: {reference}");
            let out = dir.path().join("imported");
            let err = tfload_err(&["import-weights", s(&model(model_name)), s(&cut_file), "--out", s(&out)]);
            assert!(
                err.contains("is truncated or corrupt") && err.contains(&format!("it is {cut} bytes long")),
                "{file} cut at {cut}:\n{err}"
            );
            assert!(!out.exists());
        }
    }
}

#[test]
fn train_init_weights_refuses_a_truncated_file_before_any_step() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(h5("mlp_keras3.weights.h5")).unwrap();
    let copy = edited(dir.path(), |_| {});
    // Inside the model copy, so that `refused` sees nothing else beside --out.
    let cut_file = copy.join("cut.weights.h5");
    std::fs::write(&cut_file, &bytes[..bytes.len() * 9 / 10]).unwrap();
    let err = refused(dir.path(), &copy, &["--init-weights", s(&cut_file)]);
    assert!(err.contains("is truncated or corrupt"), "{err}");
}

/// mlp_keras3.weights.h5 without its `output` layer (Keras group `dense_1`), written by h5py.
fn without_output_layer(dir: &Path) -> PathBuf {
    let path = dir.join("no_output.weights.h5");
    std::fs::copy(h5("mlp_keras3.weights.h5"), &path).unwrap();
    python(&format!("import h5py\nwith h5py.File('{}', 'r+') as f:\n    del f['layers/dense_1']", s(&path)));
    path
}

#[test]
fn a_model_layer_the_file_lacks_is_an_error_unless_skip_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let weights = without_output_layer(dir.path());
    let out = dir.path().join("imported");
    let err = tfload_err(&["import-weights", s(&model("mlp_digits")), s(&weights), "--out", s(&out)]);
    assert!(err.contains("no weights for 1 layer(s) of the model (output)"), "{err}");
    assert!(!out.exists());
    let summary =
        tfload_ok(&["import-weights", s(&model("mlp_digits")), s(&weights), "--out", s(&out), "--skip-mismatch"]);
    assert!(summary.contains("kept 1 layer(s) the file has no weights for: output"), "{summary}");
    let json: Value = serde_json::from_str(&tfload_ok(&[
        "import-weights",
        s(&model("mlp_digits")),
        s(&weights),
        "--dry-run",
        "--json",
        "--skip-mismatch",
    ]))
    .unwrap();
    assert_eq!(json["missing_layers"], json!(["output"]));
}

#[test]
fn train_init_weights_names_a_layer_the_file_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let copy = edited(dir.path(), |_| {});
    let weights = without_output_layer(&copy);
    let err = refused(dir.path(), &copy, &["--init-weights", s(&weights)]);
    assert!(err.contains("no weights for 1 layer(s) of the model (output)"), "{err}");
    let out = dir.path().join("out");
    let data = train_data();
    let args = [
        "train",
        s(&copy),
        "--init-weights",
        s(&weights),
        "--skip-mismatch",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "-q",
    ];
    let output = crate::common::tfload(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("left as they were: output"));
}
