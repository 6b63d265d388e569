//! `tfload run` against Python TensorFlow: every signature of the committed models, and one
//! SavedModel exported by Keras itself, called on the same inputs on both sides; outputs equal
//! (floats within 1e-6 relative, integers and strings exactly).

use std::path::Path;

use crate::common::parity::{assert_same, foreign_model, pseudo_random, python, read_all};
use ndarray::{ArrayD, IxDyn};
use tfload::formats::npy::{read_npy, read_npz, write_npy};
use tfload::TensorData;

/// Runs signature `key` of `model` on `inputs` through `tfload run --out` and through Python,
/// and compares every output.
fn parity(model: &Path, key: &str, inputs: &[(&str, TensorData)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut ours = vec!["run".to_string(), crate::common::s(model).to_string(), "-s".into(), key.into()];
    let mut theirs = vec!["run".to_string(), crate::common::s(model).to_string(), key.into()];
    let python_out = dir.path().join("python.npz");
    theirs.push(python_out.display().to_string());
    for (name, data) in inputs {
        let file = dir.path().join(format!("{name}.npy"));
        write_npy(&file, data).unwrap();
        ours.extend(["-i".to_string(), format!("{name}={}", file.display())]);
        theirs.push(format!("{name}={}", file.display()));
    }
    let out = dir.path().join("out");
    ours.extend(["--out".to_string(), out.display().to_string()]);
    crate::common::tfload_ok(&ours.iter().map(String::as_str).collect::<Vec<_>>());
    python(&theirs.iter().map(String::as_str).collect::<Vec<_>>());
    let expected = read_all(&python_out);
    assert!(!expected.is_empty(), "{model:?} {key}: Python gave no outputs");
    for (name, value) in &expected {
        let ours = read_npy(&out.join(format!("{name}.npy"))).unwrap();
        assert_same(&format!("{model:?} {key} `{name}`"), &ours, value, 1e-6);
    }
    let written = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(written, expected.len(), "{model:?} {key}: tfload wrote other files than the outputs");
}

fn float32(shape: &[usize], seed: u64, low: f32, high: f32) -> TensorData {
    let n = shape.iter().product();
    TensorData::Float32(ArrayD::from_shape_vec(IxDyn(shape), pseudo_random(n, seed, low, high)).unwrap())
}

fn digits_val(rows: usize) -> (TensorData, TensorData) {
    let path = crate::common::root().join("saved_models/data/digits_5_9_val.npz");
    let indices: Vec<usize> = (0..rows).collect();
    let x = read_npz(&path, Some("x")).unwrap().select_rows(&indices);
    let y = read_npz(&path, Some("y")).unwrap().select_rows(&indices);
    (x, y)
}

#[test]
fn multi_io_signatures_match_python() {
    let model = crate::common::model("multi_io");
    parity(&model, "serving_default", &[("features", float32(&[5, 4], 1, -3.0, 3.0))]);
    let ids = TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![-7, 0, 41]).unwrap());
    let names: Vec<String> = ["ada", "été", "x y"].iter().map(|s| s.to_string()).collect();
    let names = TensorData::String(ArrayD::from_shape_vec(IxDyn(&[3]), names).unwrap());
    parity(&model, "lookup", &[("ids", ids), ("names", names)]);
    parity(&model, "any_rank", &[("values", float32(&[2, 3, 4], 2, 0.0, 1.0))]);
    parity(&model, "any_rank", &[("values", float32(&[], 3, 0.0, 1.0))]);
    parity(&model, "constant", &[]);
}

#[test]
fn digits_models_serving_and_eval_step_match_python() {
    let (x, y) = digits_val(64);
    for name in ["mlp_digits", "cnn_digits"] {
        let model = crate::common::model(name);
        parity(&model, "serving_default", &[("inputs", x.clone())]);
        parity(&model, "eval_step", &[("inputs", x.clone()), ("labels", y.clone())]);
    }
}

#[test]
fn a_keras_exported_mobilenet_matches_python() {
    let model = foreign_model();
    parity(&model, "serving_default", &[("keras_tensor", float32(&[4, 64, 64, 3], 4, 0.0, 255.0))]);
}
