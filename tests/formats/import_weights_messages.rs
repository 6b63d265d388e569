//! What `tfload import-weights` prints: nothing with `-q`, a short summary of long layer lists
//! without it, and a short error (what is wrong, the first names, what to do) when the target is a
//! Keras 3 `model.export()` folder, whose variables each appear twice.

use crate::common::{model, root, s, tfload, tfload_err, tfload_ok};

fn fixture(name: &str) -> std::path::PathBuf {
    root().join("saved_models/h5").join(name)
}

#[test]
fn quiet_import_prints_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imported");
    let weights = fixture("mlp_keras3.weights.h5");
    let output = tfload(&["-q", "import-weights", s(&model("mlp_digits")), s(&weights), "--out", s(&out)]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&output.stdout));
    assert!(output.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(out.join("saved_model.pb").is_file());
    // Without -q the summary counts the layers.
    let stdout = tfload_ok(&["import-weights", s(&model("mlp_digits")), s(&weights), "--dry-run"]);
    assert!(stdout.contains("layer(s) ("), "{stdout}");
}

#[test]
fn importing_into_a_keras_export_is_a_short_error_that_says_what_to_do() {
    let foreign = crate::common::parity::foreign_model();
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("mobilenet.weights.h5");
    let script = "import keras, sys\nkeras.utils.set_random_seed(7)\nkeras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10).save_weights(sys.argv[1])";
    let status = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", script, s(&weights)])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .status()
        .unwrap();
    assert!(status.success());
    let stderr = tfload_err(&["import-weights", s(&foreign), s(&weights), "--out", s(&tmp.path().join("out"))]);
    assert!(stderr.len() < 2500, "{} bytes: {stderr}", stderr.len());
    assert!(stderr.contains("twice") && stderr.contains("model.export()"), "{stderr}");
    assert!(stderr.contains("tfload-export") && stderr.contains("more"), "{stderr}");
}
