//! TFRecord data: files written by Python TensorFlow read by tfload give the tensors tf.data
//! gives; training from TFRecords matches training from the same images in a folder; corrupt and
//! mismatched data fail with messages that name the file, the record and what to do.

use std::path::{Path, PathBuf};

use crate::common::{model, python_json, root, s, tfload_err, tfload_ok};
use serde_json::Value;
use tfload::data::{Dataset, FeatureMapping, InputSpec, TfRecordDataset, TfRecordOptions};
use tfload::{DType, TensorData};

fn committed(name: &str) -> PathBuf {
    root().join("saved_models/data").join(name)
}

/// Writes the digits as 3 interleaved shards with Python, with an RGB 11x13 image in each record.
fn python_shards(dir: &Path, compression: &str) -> Vec<String> {
    let out = python_json_lines(&[
        "write",
        "--out-dir",
        s(dir),
        "--shards",
        "3",
        "--interleave",
        "--rgb-sizes",
        "11x13",
        "--compression",
        compression,
    ]);
    assert_eq!(out.len(), 3, "{out:?}");
    let mut files: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    files.sort();
    files
}

/// Runs make_tfrecords.py and returns its stdout lines.
fn python_json_lines(args: &[&str]) -> Vec<String> {
    let output = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/fixtures/make_tfrecords.py"))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
}

fn read(pattern: &Path, key: &str, shape: &[usize]) -> (Vec<f32>, Vec<i64>) {
    let mapping = FeatureMapping { input: key.into(), label: Some("image/class/label".into()) };
    let input = InputSpec { shape: shape.to_vec(), dtype: DType::Float32 };
    let dataset = TfRecordDataset::open(pattern, mapping, input, TfRecordOptions::default()).unwrap();
    let batch = dataset.gather(&(0..dataset.len()).collect::<Vec<_>>()).unwrap();
    let (TensorData::Float32(inputs), TensorData::Int64(labels)) = (batch.inputs, batch.labels) else { panic!() };
    (inputs.iter().copied().collect(), labels.iter().copied().collect())
}

fn flat(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
        .collect()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn python_written_shards_read_as_tf_data_parses_them() {
    for (compression, python_name) in [("none", ""), ("gzip", "GZIP")] {
        let dir = tempfile::tempdir().unwrap();
        let files = python_shards(dir.path(), compression);
        let mut args = vec!["parse", "--compression", python_name, "--label", "image/class/label"];
        args.extend(["--image", "image/encoded:8x8x1", "--image", "image/rgb:8x8x3", "--floats", "image/pixels:8x8x1"]);
        args.extend(files.iter().map(String::as_str));
        let expected = python_json("fixtures/make_tfrecords.py", &args);
        let pattern = dir.path().join("digits_5_9-*");
        let (gray, labels) = read(&pattern, "image/encoded", &[8, 8, 1]);
        let want_labels: Vec<i64> =
            expected["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(labels, want_labels, "{compression}");
        assert_eq!(labels.len(), 150);
        assert_eq!(gray, flat(&expected["image/encoded"]), "{compression}: PNG bytes decode exactly");
        let (pixels, _) = read(&pattern, "image/pixels", &[8, 8, 1]);
        assert_eq!(pixels, flat(&expected["image/pixels"]), "{compression}: float lists");
        let (rgb, _) = read(&pattern, "image/rgb", &[8, 8, 3]);
        let difference = max_difference(&rgb, &flat(&expected["image/rgb"]));
        assert!(difference <= 1e-3, "{compression}: RGB 11x13 resized to 8x8 differs by {difference}");
    }
}

/// Each step's metrics (loss, accuracy) from the run's log.
fn step_metrics(out: &Path) -> Vec<Value> {
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines = log.lines().map(|line| serde_json::from_str::<Value>(line).unwrap());
    lines.filter(|line| line["event"] == "step").map(|line| line["metrics"].clone()).collect()
}

fn train(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> Vec<Value> {
    let cnn = model("cnn_digits");
    let mut args = vec!["train", s(&cnn), "--data", s(data), "--out", s(out), "--epochs", epochs];
    args.extend(["--batch-size", "16", "--no-shuffle", "--lr", "0.01", "-q"]);
    args.extend(extra);
    tfload_ok(&args);
    step_metrics(out)
}

#[test]
fn training_from_tfrecords_gives_the_image_folders_losses() {
    let dir = tempfile::tempdir().unwrap();
    let folder = train(&committed("digits_5_9_images"), &dir.path().join("folder"), "2", &[]);
    let mapping = ["--feature", "inputs=image/encoded", "--label", "image/class/label"];
    let plain = train(&committed("digits_5_9.tfrecord"), &dir.path().join("plain"), "2", &mapping);
    assert_eq!(folder.len(), 20);
    assert_eq!(plain, folder, "per-step loss and accuracy, TFRecord against image folder");
    let gzip = train(&committed("digits_5_9.tfrecord.gz"), &dir.path().join("gzip"), "1", &mapping);
    assert_eq!(gzip, folder[..10], "per-step loss and accuracy, GZIP TFRecord");
}

/// A copy of the committed TFRecord file, changed by `damage`.
fn damaged(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(committed("digits_5_9.tfrecord")).unwrap();
    damage(&mut bytes);
    let path = dir.join("damaged.tfrecord");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn train_err(data: &Path, out: &Path, mapping: &[&str]) -> String {
    let cnn = model("cnn_digits");
    let mut args = vec!["train", s(&cnn), "--data", s(data), "--out", s(out), "--epochs", "1", "-q"];
    args.extend(mapping);
    tfload_err(&args)
}

const MAPPING: [&str; 4] = ["--feature", "image/encoded", "--label", "image/class/label"];

#[test]
fn corrupt_records_name_the_file_and_offset_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    // The second record starts after the first: 12 header bytes, its data, 4 checksum bytes.
    let first_len = |bytes: &[u8]| u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let flipped = damaged(dir.path(), |bytes| {
        let second = 16 + first_len(bytes);
        bytes[second + 12 + 40] ^= 0xff;
    });
    let second = 16 + first_len(&std::fs::read(&flipped).unwrap());
    let err = train_err(&flipped, &out, &MAPPING);
    assert!(err.contains("damaged.tfrecord") && err.contains(&format!("record at offset {second}")), "{err}");
    assert!(err.contains("fails its CRC check") && err.contains("--skip-corrupt"), "{err}");
    assert!(!out.exists());

    let cnn = model("cnn_digits");
    let mut args = vec!["train", s(&cnn), "--data", s(&flipped), "--out", s(&out), "--epochs", "1", "--skip-corrupt"];
    args.extend(MAPPING);
    let output = crate::common::tfload(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("149 records in 1 file(s); 1 corrupt record(s) skipped"), "{stderr}");

    let truncated = damaged(dir.path(), |bytes| bytes.truncate(bytes.len() - 100));
    // A fresh --out: `out` holds the model trained above, and the output is checked before the data.
    let err = train_err(&truncated, &dir.path().join("o2"), &MAPPING);
    assert!(err.contains("truncated") && err.contains("damaged.tfrecord"), "{err}");
}

#[test]
fn a_missing_feature_lists_the_keys_and_a_wrong_kind_says_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let data = committed("digits_5_9.tfrecord");
    let err = train_err(&data, &out, &["--feature", "image/encode", "--label", "image/class/label"]);
    assert!(
        err.contains("record 0 (offset 0): has no feature `image/encode` (did you mean `image/encoded`?)"),
        "{err}"
    );
    assert!(err.contains("image/class/label (int64 (1 value)), image/class/text (bytes (1 value))"), "{err}");
    let err = train_err(&data, &out, &["--feature", "image/encoded", "--label", "image/class/text"]);
    assert!(err.contains("label `image/class/text` is bytes (1 value); labels must be int64"), "{err}");
    let err = train_err(&data, &out, &["--feature", "image/class/label", "--label", "image/class/label"]);
    assert!(err.contains("is int64 (1 value), but the model input takes 64 values per example"), "{err}");
    let err = train_err(&data, &out, &["--feature", "x=image/encoded", "--label", "image/class/label"]);
    assert!(err.contains("the model has no input `x`; its input is `inputs`"), "{err}");
    let err = train_err(&data, &out, &[]);
    assert!(err.contains("--feature KEY --label KEY") && err.contains("image/pixels (float (64 values))"), "{err}");
    assert!(!out.exists());
}

#[test]
fn eval_on_tfrecords_equals_eval_on_the_image_folder() {
    let cnn = model("cnn_digits");
    let eval = |data: &Path, extra: &[&str]| -> Value {
        let mut args = vec!["eval", s(&cnn), "--data", s(data), "--json"];
        args.extend(extra);
        serde_json::from_str(&tfload_ok(&args)).unwrap()
    };
    let folder = eval(&committed("digits_5_9_images"), &[]);
    let records = eval(&committed("digits_5_9.tfrecord.gz"), &MAPPING);
    for key in ["loss", "accuracy", "examples"] {
        assert_eq!(records[key], folder[key], "{key}");
    }
    assert_eq!(records["examples"], 150);
}
