//! `tfload predict` on the digits images: the three output formats, class names from the model
//! or a labels file, top-k order, and a model exported by Keras itself.

use crate::common::{model, s, tfload_ok};
use serde_json::Value;

fn images() -> std::path::PathBuf {
    crate::common::root().join("saved_models/data/digits_5_9_images")
}

#[test]
fn json_lists_every_image_with_named_classes_best_first() {
    let doc: Value =
        serde_json::from_str(&tfload_ok(&["predict", s(&model("cnn_digits")), s(&images()), "-k", "3", "--json"]))
            .unwrap();
    assert_eq!(doc["schema"], "tfload.predict/v1");
    assert_eq!(doc["image"], serde_json::json!({"height": 8, "width": 8, "color_mode": "grayscale"}));
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 150);
    assert!(predictions[0]["image"].as_str().unwrap().ends_with("5/0005.png"));
    for prediction in predictions {
        let top = prediction["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let scores: Vec<f64> = top.iter().map(|c| c["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores.iter().sum::<f64>() <= 1.0 + 1e-5);
        for class in top {
            assert_eq!(class["class"].as_str().unwrap(), (5 + class["index"].as_u64().unwrap()).to_string());
        }
    }
}

#[test]
fn text_csv_and_labels_file() {
    let image = images().join("7/0017.png");
    let text = tfload_ok(&["predict", s(&model("cnn_digits")), s(&image), "-k", "2"]);
    assert!(text.lines().next().unwrap().contains("#2"), "{text}");
    assert!(text.contains("0017.png"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "five\nsix\nseven\neight\nnine\n").unwrap();
    let csv = tfload_ok(&["predict", s(&model("cnn_digits")), s(&image), "--csv", "-k", "5", "--labels", s(&labels)]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "image,rank,index,class,score");
    assert_eq!(lines.len(), 6);
    let mut classes: Vec<&str> = lines[1..].iter().map(|l| l.split(',').nth(3).unwrap()).collect();
    classes.sort();
    assert_eq!(classes, ["eight", "five", "nine", "seven", "six"]);
}

#[test]
fn a_keras_exported_model_without_a_record_gets_index_names() {
    let foreign = crate::common::parity::foreign_model();
    let image = images().join("9/0009.png");
    let doc: Value =
        serde_json::from_str(&tfload_ok(&["predict", s(&foreign), s(&image), "--json", "-k", "10"])).unwrap();
    assert_eq!(doc["input"], "keras_tensor");
    assert_eq!(doc["output"], "output_0");
    let top = doc["predictions"][0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    let total: f64 = top.iter().map(|c| c["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "softmax scores sum to {total}");
    assert_eq!(top[0]["class"], top[0]["index"].as_u64().unwrap().to_string());
}
