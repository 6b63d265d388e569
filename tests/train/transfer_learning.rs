//! The tutorial's transfer-learning task end to end: cnn_digits (base pretrained on digits 0-4)
//! fine-tuned on the bundled image folder of digits 5-9 with the base frozen, by tfload and by
//! Keras `model.fit` on the same images in the same order. Their validation accuracy must agree
//! within a point.

use crate::common::{model, python_json, root, s, tfload_ok};
use serde_json::Value;

#[test]
fn fine_tuning_from_an_image_folder_matches_keras_fit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("finetuned");
    let images = root().join("saved_models/data/digits_5_9_images");
    let val = root().join("saved_models/data/digits_5_9_val.npz");
    let cnn = model("cnn_digits");
    let json = tfload_ok(&[
        "train",
        s(&cnn),
        "--data",
        s(&images),
        "--val-data",
        s(&val),
        "--out",
        s(&out),
        "--epochs",
        "10",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--no-shuffle",
        "--json",
    ]);
    let outcome: Value = serde_json::from_str(&json).unwrap();
    let ours = outcome["Completed"]["validation"]["accuracy"].as_f64().unwrap();
    let keras = python_json(
        "parity/keras_finetune_reference.py",
        &[s(&cnn), s(&images), s(&val), "--epochs", "10", "--batch-size", "16", "--lr", "0.01"],
    );
    let theirs = keras["val_accuracy"].as_f64().unwrap();
    assert!((ours - theirs).abs() <= 0.01, "tfload {ours:.4}, Keras fit {theirs:.4}");
    assert!(ours > 0.8, "fine-tuning reached only {ours:.4}");
}
