//! `tfload train` against Python TensorFlow calling the same `train_step` on the same batches:
//! per-step losses, the weights it writes (frozen ones byte-identical, trained ones equal to
//! Python's), and the written SavedModel's outputs as Python computes them.

use crate::common::{model, python_json, root, s, tfload_ok};
use serde_json::Value;
use tfload::{LoadedModel, SessionConfig, Tensors};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-6)
}

/// The per-step training losses tfload wrote to `out/metrics.jsonl`.
pub(crate) fn step_losses(out: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["event"] == "step")
        .map(|line| line["metrics"]["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn training_matches_python_calling_the_same_train_step() {
    assert_training_matches_python(&model("cnn_digits"));
}

/// The same with `train_step` compiled by XLA (`tfload-export --jit-compile`): the C API
/// session compiles and runs it, and the result is still Python's.
#[test]
fn xla_compiled_training_matches_python() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = dir.path().join("cnn_xla");
    let made = python_json("fixtures/make_digits_models.py", &["--twin", "cnn", "--jit-compile", "--out", s(&cnn)]);
    assert_eq!(made["default_mask"].as_array().unwrap().len(), 7, "conv1, bn1 (2), conv2 (2), head (2)");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(cnn.join("assets/tfload_contract.json")).unwrap()).unwrap();
    assert_eq!(record["jit_compile"], true);
    assert_training_matches_python(&cnn);
}

/// Trains `cnn` (a digits CNN with a frozen base) 2 epochs with tfload and with Python calling
/// its `train_step` on the same batches, and compares losses, weights and the output model.
fn assert_training_matches_python(cnn: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trained");
    let data = root().join("saved_models/data/digits_5_9_train.npz");
    let val = root().join("saved_models/data/digits_5_9_val.npz");
    tfload_ok(&[
        "train",
        s(cnn),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.01",
        "--no-shuffle",
        "-q",
    ]);
    let python = python_json(
        "parity/train_reference.py",
        &[s(cnn), s(&data), s(&val), s(&out), "--batch-size", "64", "--epochs", "2", "--lr", "0.01"],
    );

    let ours = step_losses(&out);
    let theirs: Vec<f64> = python["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(ours.len(), theirs.len(), "step count");
    assert_eq!(ours.len(), 2 * 717usize.div_ceil(64));
    for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(close(*a, *b, 1e-5), "step {}: tfload loss {a}, Python {b}", step + 1);
    }

    for variable in python["variables"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let unchanged = variable["unchanged_bytes"].as_bool().unwrap();
        if variable["trainable"].as_bool().unwrap() {
            assert!(!unchanged, "{name} is trainable but did not change");
        } else {
            assert!(unchanged, "{name} is frozen but changed");
        }
        let diff = variable["max_abs_diff_vs_python"].as_f64().unwrap();
        let scale = variable["max_abs_value"].as_f64().unwrap().max(1.0);
        assert!(diff <= 1e-5 * scale, "{name}: tfload's weights differ from Python's by {diff}");
    }

    let trained = LoadedModel::load(&out, &["serve"], SessionConfig::default()).unwrap();
    let val_x = tfload::formats::npy::read_npz(&val, Some("x")).unwrap();
    let outputs = trained.run("serving_default", &Tensors::from([("inputs".to_string(), val_x)])).unwrap();
    let ours = outputs["outputs"].to_f32().unwrap();
    let theirs = &python["serving_outputs"];
    for (row, values) in theirs.as_array().unwrap().iter().enumerate() {
        for (col, value) in values.as_array().unwrap().iter().enumerate() {
            let (a, b) = (f64::from(ours[[row, col]]), value.as_f64().unwrap());
            assert!(close(a, b, 1e-6), "output [{row}, {col}]: tfload {a}, Python {b}");
        }
    }
}
