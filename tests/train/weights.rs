//! Class and sample weights (issue 16): `tfload train --class-weight` / `--sample-weight` on a
//! model exported with `--sample-weights` gives per-step losses equal to Keras's
//! `train_on_batch(..., class_weight=... | sample_weight=...)` on the same batches; a model
//! without the `sample_weight` input refuses weights before training, naming the export flag.
//! Fixture: scripts/fixtures/make_weighted_fixture.py.

use crate::common::{model, python_json, root, s, tfload_err, tfload_ok};
use crate::train_parity::step_losses;

const SCRIPT: &str = "fixtures/make_weighted_fixture.py";

/// Trains the fixture's model with each weighting and compares its step losses with Keras's:
/// balanced class weights, class weights by name and index, sample weights from the `.npz`.
#[test]
fn class_and_sample_weights_train_as_keras() {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json(SCRIPT, &["make", s(dir.path())]);
    let data = dir.path().join("train.npz");
    let cases: [(&[&str], &str); 3] = [
        (&["--class-weight", "balanced"], "balanced"),
        (&["--class-weight", "trucks:2.5,2:0.5"], "named"),
        (&["--sample-weight"], "sample"),
    ];
    for (weighting, mode) in cases {
        let out = dir.path().join(mode);
        let args = ["train", made["trainable"].as_str().unwrap(), "--data", s(&data), "--out", s(&out)];
        let run = ["--epochs", "2", "--batch-size", "16", "--lr", "0.1", "--no-shuffle", "--train-all", "-q"];
        tfload_ok(&[&args[..], &run, weighting].concat());
        let ours = step_losses(&out);
        let theirs: Vec<f64> = python_json(SCRIPT, &["reference", s(dir.path()), mode])["losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), theirs.len());
        for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - b).abs() <= 1e-5, "step {step}: tfload {a}, Keras {b} ({weighting:?})");
        }
    }
}

#[test]
fn a_model_without_sample_weight_input_refuses_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (mlp, data) = (model("mlp_digits"), root().join("saved_models/data/digits_5_9_train.npz"));
    let out = dir.path().join("out");
    let stderr = tfload_err(&["train", s(&mlp), "--data", s(&data), "--out", s(&out), "--class-weight", "balanced"]);
    assert!(stderr.contains("takes no sample_weight") && stderr.contains("--sample-weights"), "{stderr}");
    assert!(!out.exists() && !dir.path().join("out.partial").exists(), "a refused run writes nothing");
}
