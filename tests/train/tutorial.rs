//! The tutorial's steps 2 and 3 on its architecture at a small size (issue 16): a Keras model's
//! `save_weights` HDF5 file imported into a trainable export of the same architecture with
//! `tfload import-weights`, then `tfload train --train-last-layers 3` with Adam 1e-4 and
//! categorical cross-entropy on one-hot labels (validation labels given as class indices, which
//! tfload makes one-hot), 3 epochs without shuffling. Keras does the same with `load_weights`,
//! `for layer in model.layers[:-3]: layer.trainable = False` and `fit(..., validation_data)`.
//! The fixture is made by scripts/fixtures/make_tutorial_fixture.py: the tutorial's own ResNet50
//! base at 32x32, and a scaled-down stand-in of the same shape (see there).

use serde_json::Value;

use crate::common::{python_json, s, tfload_ok};

const SCRIPT: &str = "fixtures/make_tutorial_fixture.py";

/// The epoch records of `out/metrics.jsonl`.
fn epochs(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["event"] == "epoch")
        .collect()
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("an array").iter().map(|v| v.as_f64().expect("a number")).collect()
}

#[test]
fn tutorial_recipe_trains_as_keras_fit_does() {
    tutorial_recipe("--base=small");
}

/// The same on the tutorial's own architecture: keras.applications.ResNet50 (weights=None) at
/// 32x32, GlobalAveragePooling2D, Dense(512, relu), Dense(3, softmax).
#[test]
fn tutorial_recipe_on_resnet50_trains_as_keras_fit_does() {
    tutorial_recipe("--base=resnet50");
}

fn tutorial_recipe(base: &str) {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json(SCRIPT, &["make", s(dir.path()), base]);
    let (weights, trainable) = (made["weights"].as_str().unwrap(), made["trainable"].as_str().unwrap());
    let (imported, out, preds) = (dir.path().join("imported"), dir.path().join("trained"), dir.path().join("preds"));
    let (data, val) = (dir.path().join("train.npz"), dir.path().join("val.npz"));
    tfload_ok(&["import-weights", trainable, weights, "--out", s(&imported), "-q"]);
    let imported_args = [s(&imported), "--train-last-layers", "3"];
    tfload_ok(
        &[
            &["train"],
            &imported_args[..],
            &["--lr", "1e-4", "--epochs", "3", "--batch-size", "16", "--no-shuffle", "-q"],
            &["--data", s(&data), "--val-data", s(&val), "--out", s(&out)],
        ]
        .concat(),
    );
    let val_x = format!("image={}[x]", s(&val));
    tfload_ok(&["run", s(&out), "-i", &val_x, "--out", s(&preds), "-q"]);
    let preds_file = preds.join("outputs.npy");
    let keras = python_json(SCRIPT, &["reference", s(dir.path()), s(&imported), s(&out), s(&preds_file), base]);

    // The trainable set is Keras's: only the head's variables moved, no BatchNormalization
    // statistics either (the frozen BN layers ran in inference mode).
    assert_eq!(keras["changed_mask_variables"], keras["keras_trainable"]);
    assert_eq!(keras["changed_state_variables"], serde_json::json!([]));
    let history = &keras["history"];
    let ours = epochs(&out);
    assert_eq!(ours.len(), 3);
    for (name, split, metric) in [
        ("loss", "train", "loss"),
        ("accuracy", "train", "accuracy"),
        ("val_loss", "validation", "loss"),
        ("val_accuracy", "validation", "accuracy"),
    ] {
        let theirs = floats(&history[name]);
        let ours: Vec<f64> = ours.iter().map(|e| e[split][metric].as_f64().unwrap()).collect();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (epoch, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - b).abs() <= 1e-4, "{name} of epoch {}: tfload {a}, Keras fit {b}", epoch + 1);
        }
    }
    // The written model, loaded whole in Python, gives tfload's outputs, and those of the model
    // Keras trained.
    assert!(keras["tfload_vs_python"].as_f64().unwrap() <= 1e-6, "{keras}");
    assert!(keras["keras_vs_python"].as_f64().unwrap() <= 1e-4, "{keras}");
}

/// A categorical model trains from an image folder (labels made one-hot, Keras's
/// `label_mode="categorical"`), `--label-mode int` is refused naming the mode it takes, and
/// `eval` on the folder counts the classes of one-hot labels.
#[test]
fn image_folders_feed_one_hot_labels_to_a_categorical_model() {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json(SCRIPT, &["digits", s(dir.path())]);
    let trainable = made["trainable"].as_str().unwrap();
    let images = crate::common::root().join("saved_models/data/digits_5_9_images");
    let out = dir.path().join("trained");
    let args = ["train", trainable, "--data", s(&images), "--out", s(&out), "--epochs", "2", "-q"];
    let refused = crate::common::tfload_err(&[&args[..], &["--label-mode", "int"]].concat());
    assert!(refused.contains("--label-mode int") && refused.contains("--label-mode categorical"), "{refused}");
    tfload_ok(&[&args[..], &["--label-mode", "categorical"]].concat());
    assert_eq!(epochs(&out).len(), 2);
    let eval: Value = serde_json::from_str(&tfload_ok(&["eval", s(&out), "--data", s(&images), "--json"])).unwrap();
    let (from_step, from_argmax) = (eval["metrics"]["accuracy"].as_f64(), eval["accuracy"].as_f64());
    assert!(from_step.is_some() && (from_step.unwrap() - from_argmax.unwrap()).abs() < 1e-6, "{eval}");
    assert_eq!(eval["examples"].as_u64(), Some(150));
}
