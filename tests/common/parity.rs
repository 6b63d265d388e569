//! Helpers of the run / predict / eval tests: the Python reference (scripts/parity/py_parity.py),
//! reading its `.npz` answers, and comparing tensors with a tolerance.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tfload::formats::npy::{npz_names, read_npz};
use tfload::TensorData;

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/parity/py_parity.py ARGS` with the project's Python; returns the JSON it prints.
pub fn python(args: &[&str]) -> serde_json::Value {
    super::python_json("parity/py_parity.py", args)
}

/// Every array of a `.npz` file by name.
pub fn read_all(path: &Path) -> BTreeMap<String, TensorData> {
    npz_names(path)
        .unwrap()
        .into_iter()
        .map(|name| {
            let data = read_npz(path, Some(&name)).unwrap();
            (name, data)
        })
        .collect()
}

/// A photo shipped inside scikit-learn (`china.jpg`, `flower.jpg`), 427 × 640 RGB JPEG.
pub fn sample_photo(name: &str) -> PathBuf {
    let lib = root().join(".venv/lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|python| python.path().join("site-packages/sklearn/datasets/images").join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not found under {lib:?}; run scripts/setup.sh"))
}

/// Largest |a - b| / max(1, |b|) over two float tensors of the same shape.
pub fn max_relative_difference(ours: &TensorData, theirs: &TensorData) -> f64 {
    assert_eq!(ours.shape(), theirs.shape(), "shapes differ");
    let (a, b) = (ours.to_f32().unwrap(), theirs.to_f32().unwrap());
    a.iter()
        .zip(b.iter())
        .map(
            |(&x, &y)| {
                if x.is_nan() && y.is_nan() {
                    0.0
                } else {
                    f64::from((x - y).abs()) / f64::from(y.abs().max(1.0))
                }
            },
        )
        .fold(0.0, f64::max)
}

/// Asserts two tensors are equal: same dtype and shape, floats within `rtol` (relative, absolute
/// below 1), everything else exactly.
pub fn assert_same(what: &str, ours: &TensorData, theirs: &TensorData, rtol: f64) {
    assert_eq!(ours.dtype(), theirs.dtype(), "{what}: dtype");
    assert_eq!(ours.shape(), theirs.shape(), "{what}: shape");
    match ours {
        TensorData::Float16(_) | TensorData::Float32(_) | TensorData::Float64(_) => {
            let difference = max_relative_difference(ours, theirs);
            assert!(difference <= rtol, "{what}: differs by {difference:e} (tolerance {rtol:e})");
        }
        _ => assert_eq!(ours, theirs, "{what}: values"),
    }
}

/// The foreign model (scripts/fixtures/make_foreign_model.py: Keras 3's own export of a MobileNetV2),
/// made once per build directory.
pub fn foreign_model() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("foreign_mobilenet_v2");
    if !dir.join("saved_model.pb").is_file() {
        let status = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/fixtures/make_foreign_model.py"))
            .arg(&dir)
            .env("TF_CPP_MIN_LOG_LEVEL", "3")
            .status()
            .expect("the project's Python runs");
        assert!(status.success(), "make_foreign_model.py failed");
    }
    dir
}

/// `n` reproducible pseudo-random values in `low..high` (a linear congruential generator).
pub fn pseudo_random(n: usize, seed: u64, low: f32, high: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            low + (high - low) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}
