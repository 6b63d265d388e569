//! `tfload train --logdir`: event files that TensorFlow's own reader (`summary_iterator`) reads,
//! with Keras's tags and steps, and values equal to those of `metrics.jsonl`.

use std::path::Path;

use crate::common::{model, python_json, root, s, tfload_err, tfload_ok};
use serde_json::Value;

/// `(tag, step, value)` of a run's scalars with this tag.
fn scalars(run: &Value, tag: &str) -> Vec<(i64, f64)> {
    run["scalars"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == tag)
        .map(|s| (s[1].as_i64().unwrap(), s[2].as_f64().unwrap()))
        .collect()
}

fn log_lines(out: &Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["event"] == event)
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0) // event values are float32
}

fn assert_series(actual: &[(i64, f64)], expected: &[(i64, f64)], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: {actual:?} against {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!(a.0 == e.0 && close(a.1, e.1), "{what}: {a:?} against {e:?}");
    }
}

#[test]
fn event_files_hold_keras_tags_with_the_logged_values() {
    let dir = tempfile::tempdir().unwrap();
    let (out, logdir) = (dir.path().join("o"), dir.path().join("logs"));
    let data = root().join("saved_models/data/digits_5_9_images");
    let val = root().join("saved_models/data/digits_5_9_val.npz");
    tfload_ok(&[
        "train",
        s(&model("cnn_digits")),
        "--data",
        s(&data),
        "--val-data",
        s(&val),
        "--out",
        s(&out),
        "--logdir",
        s(&logdir),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--no-shuffle",
        "--lr",
        "0.01",
        "--lr-schedule",
        "cosine",
        "-q",
    ]);
    let runs = python_json("parity/read_events.py", &[s(&logdir)]);
    let (train, validation) = (&runs["train"], &runs["validation"]);
    assert_eq!(train["file_version"], "brain.Event:2");
    assert_eq!(validation["file_version"], "brain.Event:2");

    // batch_loss: the epoch's running mean (batch-size weighted), at the 1-based global step.
    let steps = log_lines(&out, "step");
    assert_eq!(steps.len(), 10); // 150 images, batches of 32: 4 full and 1 of 22, twice
    let mut expected = Vec::new();
    let (mut sum, mut count) = (0.0, 0.0);
    for (i, line) in steps.iter().enumerate() {
        if i % 5 == 0 {
            (sum, count) = (0.0, 0.0);
        }
        let size = if i % 5 == 4 { 22.0 } else { 32.0 };
        sum += line["metrics"]["loss"].as_f64().unwrap() * size;
        count += size;
        expected.push((line["step"].as_i64().unwrap(), sum / count));
    }
    assert_series(&scalars(train, "batch_loss"), &expected, "batch_loss");
    let lrs: Vec<(i64, f64)> = steps.iter().map(|l| (l["step"].as_i64().unwrap(), l["lr"].as_f64().unwrap())).collect();
    assert_series(&scalars(train, "batch_learning_rate"), &lrs, "batch_learning_rate");

    // epoch_*: at the 0-based epoch, train and validation in their own runs.
    let epochs = log_lines(&out, "epoch");
    let per_epoch = |part: &str, metric: &str| -> Vec<(i64, f64)> {
        epochs.iter().map(|l| (l["epoch"].as_i64().unwrap() - 1, l[part][metric].as_f64().unwrap())).collect()
    };
    assert_series(&scalars(train, "epoch_loss"), &per_epoch("train", "loss"), "epoch_loss (train)");
    assert_series(&scalars(train, "epoch_accuracy"), &per_epoch("train", "accuracy"), "epoch_accuracy (train)");
    assert_series(&scalars(validation, "epoch_loss"), &per_epoch("validation", "loss"), "epoch_loss (validation)");
    assert_series(
        &scalars(validation, "epoch_accuracy"),
        &per_epoch("validation", "accuracy"),
        "epoch_accuracy (validation)",
    );
    let at_steps: Vec<(i64, f64)> =
        epochs.iter().map(|l| (l["step"].as_i64().unwrap(), l["validation"]["loss"].as_f64().unwrap())).collect();
    assert_series(&scalars(validation, "evaluation_loss_vs_iterations"), &at_steps, "evaluation_loss_vs_iterations");
    assert_eq!(scalars(train, "epoch_samples_per_second").len(), 2);
    assert!(scalars(validation, "batch_loss").is_empty(), "batch scalars belong to the train run");
}

#[test]
fn a_logdir_that_cannot_be_written_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a_file");
    std::fs::write(&file, "").unwrap();
    let out = dir.path().join("o");
    let data = root().join("saved_models/data/digits_5_9_train.npz");
    let err = tfload_err(&[
        "train",
        s(&model("cnn_digits")),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--logdir",
        s(&file),
        "--epochs",
        "1",
    ]);
    assert!(err.contains("a_file/train"), "{err}");
    assert!(!out.exists());
}
