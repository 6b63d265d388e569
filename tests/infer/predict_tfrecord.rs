//! `tfload predict` on TFRecord data: the same classes and scores, in the same order, as on the
//! image folder the records were written from (plain and GZIP), with no label feature needed.

use crate::common::{model, root, s, tfload_err, tfload_ok};
use serde_json::Value;

fn predictions(args: &[&str]) -> Vec<Value> {
    let json: Value = serde_json::from_str(&tfload_ok(args)).unwrap();
    json["predictions"].as_array().unwrap().iter().map(|p| p["top"].clone()).collect()
}

#[test]
fn records_are_classified_like_the_images_they_hold() {
    let cnn = model("cnn_digits");
    let folder = root().join("saved_models/data/digits_5_9_images");
    let expected = predictions(&["predict", s(&cnn), s(&folder), "-k", "3", "--json"]);
    assert_eq!(expected.len(), 150);
    for file in ["digits_5_9.tfrecord", "digits_5_9.tfrecord.gz"] {
        let records = root().join("saved_models/data").join(file);
        let got = predictions(&["predict", s(&cnn), s(&records), "--feature", "image/encoded", "-k", "3", "--json"]);
        assert_eq!(got, expected, "{file}");
    }
}

#[test]
fn records_without_a_feature_mapping_list_their_features() {
    let records = root().join("saved_models/data/digits_5_9.tfrecord");
    let err = tfload_err(&["predict", s(&model("cnn_digits")), s(&records)]);
    assert!(err.contains("--feature"), "{err}");
    assert!(err.contains("image/encoded"), "{err}");
}
