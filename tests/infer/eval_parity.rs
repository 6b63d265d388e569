//! `tfload eval` against Keras-side numbers: `eval_step` over the same batches in Python,
//! averaged weighted by batch size as Keras's `evaluate` does; and the confusion matrix
//! against the predictions themselves.

use serde_json::Value;

#[test]
fn eval_loss_and_accuracy_match_python() {
    let data = crate::common::root().join("saved_models/data/digits_5_9_val.npz");
    for (name, batch) in [("cnn_digits", "32"), ("mlp_digits", "50")] {
        let model = crate::common::model(name);
        let ours: Value = serde_json::from_str(&crate::common::tfload_ok(&[
            "eval",
            crate::common::s(&model),
            "--data",
            crate::common::s(&data),
            "--batch-size",
            batch,
            "--json",
        ]))
        .unwrap();
        let theirs = crate::common::parity::python(&["eval", crate::common::s(&model), crate::common::s(&data), batch]);
        assert_eq!(ours["examples"], theirs["examples"], "{name}");
        for (key, value) in [("loss", &ours["loss"]), ("accuracy", &ours["metrics"]["accuracy"])] {
            let (a, b) = (value.as_f64().unwrap(), theirs[key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-5, "{name} {key}: tfload {a}, Python {b}");
        }
        // eval_step's accuracy and the argmax of serving_default count the same thing.
        let accuracy = ours["accuracy"].as_f64().unwrap();
        assert!((accuracy - theirs["accuracy"].as_f64().unwrap()).abs() <= 1e-6, "{name}: argmax accuracy");
        let counts: Vec<Vec<u64>> = serde_json::from_value(ours["confusion"]["counts"].clone()).unwrap();
        let total: u64 = counts.iter().flatten().sum();
        assert_eq!(total, ours["examples"].as_u64().unwrap(), "{name}: every example counted once");
        let supports: Vec<u64> =
            ours["per_class"].as_array().unwrap().iter().map(|c| c["support"].as_u64().unwrap()).collect();
        assert_eq!(supports, counts.iter().map(|row| row.iter().sum()).collect::<Vec<u64>>(), "{name}: support");
    }
}

#[test]
fn eval_on_an_image_folder_names_the_classes_and_prints_tables() {
    let folder = crate::common::root().join("saved_models/data/digits_5_9_images");
    let out = crate::common::tfload_ok(&[
        "eval",
        crate::common::s(&crate::common::model("cnn_digits")),
        "--data",
        crate::common::s(&folder),
    ]);
    for expected in ["150 images in 5 classes", "loss", "precision", "macro avg", "confusion matrix"] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    let doc: Value = serde_json::from_str(&crate::common::tfload_ok(&[
        "eval",
        crate::common::s(&crate::common::model("cnn_digits")),
        "--data",
        crate::common::s(&folder),
        "--json",
    ]))
    .unwrap();
    assert_eq!(doc["class_names"], serde_json::json!(["5", "6", "7", "8", "9"]));
    assert_eq!(doc["examples"], 150);
}
