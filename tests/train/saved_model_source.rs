//! A TF2 SavedModel as the exporter's source (`tfload-export --saved-model`): a Keras 3 model
//! saved with `tf.saved_model.save` and one saved with `model.export()`, each exported trainable
//! with a new 3-class head and trained by `tfload train`. Python calling the same `train_step` on
//! the same batches must see the same losses; the trained model must load in Python with outputs
//! equal to `tfload run`'s; the frozen restored variables must keep the source's bytes.

use serde_json::Value;

use crate::common::{python_json, s, tfload_ok};
use crate::train_parity::step_losses;

const SCRIPT: &str = "parity/saved_model_source_reference.py";

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("an array").iter().map(|v| v.as_f64().expect("a number")).collect()
}

#[test]
fn keras_tf_saved_model_save_source_trains_like_python() {
    assert_saved_model_source_trains_like_python("save");
}

#[test]
fn keras_model_export_source_trains_like_python() {
    assert_saved_model_source_trains_like_python("export");
}

/// `--train`/`--freeze` by the restored variables' names pick exactly those variables.
#[test]
fn masks_by_restored_variable_names() {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json(SCRIPT, &["make", "save", s(dir.path())]);
    let trainable = made["trainable"].as_str().unwrap();
    let out = dir.path().join("trained");
    let data = dir.path().join("train.npz");
    tfload_ok(&[
        "train",
        trainable,
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--train",
        "conv2d_1/*",
        "--freeze",
        "tfload_head/*",
        "-q",
    ]);
    let changed = python_json(SCRIPT, &["changed", trainable, s(&out)]);
    assert_eq!(changed, serde_json::json!(["conv2d_1/kernel", "conv2d_1/bias"]));
}

/// Makes the source (`kind`: save | export) and its trainable export, trains it 2 epochs with
/// tfload, and compares with Python.
fn assert_saved_model_source_trains_like_python(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json(SCRIPT, &["make", kind, s(dir.path())]);
    assert_eq!(made["record_source"]["kind"], "saved_model");
    assert_eq!(made["record_source"]["training_mode"], false);
    let (source, trainable) = (made["source"].as_str().unwrap(), made["trainable"].as_str().unwrap());
    let key = made["input_key"].as_str().unwrap();
    let (data, val) = (dir.path().join("train.npz"), dir.path().join("val.npz"));
    let out = dir.path().join("trained");
    let train_args = ["train", trainable, "--data", s(&data), "--out", s(&out), "--epochs", "2", "--batch-size", "32"];
    tfload_ok(&[&train_args[..], &["--lr", "0.01", "--no-shuffle", "-q"]].concat());
    let python = python_json(
        SCRIPT,
        &[
            "reference",
            source,
            trainable,
            s(&data),
            s(&val),
            s(&out),
            "--batch-size",
            "32",
            "--epochs",
            "2",
            "--lr",
            "0.01",
        ],
    );

    let (ours, theirs) = (step_losses(&out), floats(&python["losses"]));
    assert_eq!(ours.len(), 2 * 3, "2 epochs of 96 samples at batch 32");
    assert_eq!(ours.len(), theirs.len(), "step count");
    for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(close(*a, *b, 1e-5), "step {}: tfload loss {a}, Python {b}", step + 1);
    }
    assert_variables(&python["variables"]);
    assert_run_equals_python(&out, key, &val, &python["serving_outputs"]);
}

/// Restored variables are frozen by default and keep the source's bytes; the head trains and
/// ends where Python's own training ends.
fn assert_variables(variables: &Value) {
    let variables = variables.as_array().unwrap();
    let restored = variables.iter().filter(|v| v["restored"] == true).count();
    assert!(restored >= 8, "the source's conv and BN variables are mask variables: {restored}");
    for variable in variables {
        let name = variable["name"].as_str().unwrap();
        let trainable = variable["trainable"].as_bool().unwrap();
        if variable["restored"] == true {
            assert!(!trainable, "{name}: restored variables are frozen by default");
            assert_eq!(variable["same_bytes_as_source"], true, "{name} is frozen but differs from the source");
        } else {
            assert!(trainable, "{name}: the new head trains by default");
        }
        let diff = variable["max_abs_diff_vs_python"].as_f64().unwrap();
        let scale = variable["max_abs_value"].as_f64().unwrap().max(1.0);
        assert!(diff <= 1e-5 * scale, "{name}: tfload's weights differ from Python's by {diff}");
    }
}

/// `tfload run` on the trained model equals Python's `tf.saved_model.load` of it.
fn assert_run_equals_python(out: &std::path::Path, key: &str, val: &std::path::Path, theirs: &Value) {
    let input = format!("{key}={}[x]", s(val));
    let printed = tfload_ok(&["run", s(out), "-i", &input, "--json", "-q"]);
    let ran: Value = serde_json::from_str(&printed).expect("tfload run --json prints JSON");
    let ours = find_outputs(&ran).expect("tfload run --json has an `outputs` array");
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "rows");
    for (row, (a_row, b_row)) in ours.iter().zip(theirs).enumerate() {
        for (col, (a, b)) in floats(a_row).iter().zip(floats(b_row)).enumerate() {
            assert!(close(*a, b, 1e-6), "output [{row}, {col}]: tfload {a}, Python {b}");
        }
    }
}

/// The nested rows of the `outputs` tensor in `tfload run --json`'s document.
fn find_outputs(doc: &Value) -> Option<&Vec<Value>> {
    let tensors = doc["outputs"].as_array()?;
    tensors.iter().find(|t| t["key"] == "outputs")?["values"].as_array()
}
