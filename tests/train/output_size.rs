//! The output folder's size beside the model's own (issue 16 item 5): printed after a run and in
//! `--json`, and equal to what the folder holds on disk.

use std::path::Path;

use serde_json::Value;

use crate::common::{model, root, s, tfload_ok};

/// Bytes of every file under `path`, counted here independently of tfload.
fn bytes_under(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).unwrap().len();
    }
    std::fs::read_dir(path).unwrap().flatten().map(|entry| bytes_under(&entry.path())).sum()
}

fn train(out: &Path, extra: &[&str]) -> String {
    let (mlp, data) = (model("mlp_digits"), root().join("saved_models/data/digits_5_9_train.npz"));
    let args = ["train", s(&mlp), "--data", s(&data), "--out", s(out), "--epochs", "2", "--lr", "0.05"];
    tfload_ok(&[&args[..], extra].concat())
}

#[test]
fn output_size_is_reported_beside_the_model_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain");
    let stdout = train(&out, &["-q"]);
    let metrics = std::fs::metadata(out.join("metrics.jsonl")).unwrap().len();
    let total = bytes_under(&out);
    let line = stdout.lines().find(|l| l.starts_with("SavedModel written to")).expect(&stdout);
    assert!(line.contains("output folder: ") && line.contains("the model's own files: "), "{line}");

    let kept = dir.path().join("kept");
    let json: Value = serde_json::from_str(&train(&kept, &["--json", "--keep-checkpoints", "1"])).unwrap();
    let completed = &json["Completed"];
    let (output, own) = (completed["output_bytes"].as_u64().unwrap(), completed["model_bytes"].as_u64().unwrap());
    assert_eq!(output, bytes_under(&kept));
    assert_eq!(
        output - own,
        bytes_under(&kept.join("checkpoints")) + std::fs::metadata(kept.join("metrics.jsonl")).unwrap().len()
    );
    // Without kept checkpoints the folder is the model and its metrics only.
    assert_eq!(total - metrics, own, "the plain run's model files are the kept run's");
}
