//! The text and JSON output of `tfload signatures` / `tfload variables`, and every bad input they
//! must refuse with a clear message.

use crate::common::{copy_dir, model, s, tfload_err, tfload_ok};

#[test]
fn text_lists_serving_default_first_and_hides_internal_signatures() {
    let out = tfload_ok(&["signatures", s(&model("multi_io"))]);
    let order: Vec<usize> = ["'serving_default'", "'any_rank'", "'constant'", "'lookup'"]
        .iter()
        .map(|key| out.find(key).unwrap_or_else(|| panic!("{key} missing from:\n{out}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "signatures out of order:\n{out}");
    assert!(!out.contains("__saved_model_init_op"), "internal signature shown:\n{out}");
    for expected in
        ["[?, 4]", "<unknown rank>", "string", "int64", "serving_default_features:0", "tensorflow/serving/predict"]
    {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    let all = tfload_ok(&["signatures", s(&model("multi_io")), "--all"]);
    assert!(all.contains("__saved_model_init_op"));
}

#[test]
fn json_document_is_stable() {
    let out = tfload_ok(&["signatures", s(&model("multi_io")), "--json"]);
    let mut ours: serde_json::Value = serde_json::from_str(&out).unwrap();
    ours["path"] = "saved_models/multi_io".into();
    let snapshot_path = crate::common::root().join("tests/snapshots/multi_io_signatures.json");
    let snapshot: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&snapshot_path).unwrap()).unwrap();
    assert_eq!(ours, snapshot, "the JSON schema changed; if on purpose, bump `schema` and update {snapshot_path:?}");
}

#[test]
fn one_signature_by_key() {
    let out = tfload_ok(&["signatures", s(&model("multi_io")), "-s", "lookup", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let signatures = doc["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 1);
    assert_eq!(signatures[0]["key"], "lookup");
}

#[test]
fn variables_text_has_totals() {
    let out = tfload_ok(&["variables", s(&model("multi_io"))]);
    assert!(out.contains("dense/kernel"), "{out}");
    assert!(out.contains("3 variables (2 trainable), 16 elements (15 trainable), 68 B"), "{out}");
}

#[test]
fn missing_path() {
    let err = tfload_err(&["signatures", "/no/such/model"]);
    assert!(err.contains("/no/such/model: no such file or directory"), "{err}");
}

#[test]
fn file_instead_of_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.keras");
    std::fs::write(&file, b"PK").unwrap();
    let err = tfload_err(&["signatures", s(&file)]);
    assert!(err.contains("is a file, not a SavedModel directory"), "{err}");
    assert!(err.contains("Keras 3 model file"), "{err}");
}

#[test]
fn directory_without_saved_model_pb() {
    let dir = tempfile::tempdir().unwrap();
    let err = tfload_err(&["signatures", s(dir.path())]);
    assert!(err.contains("has no saved_model.pb"), "{err}");
    assert!(err.contains(s(dir.path())), "{err}");
}

#[test]
fn versioned_serving_layout_is_pointed_at() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model("multi_io"), &dir.path().join("1"));
    let err = tfload_err(&["signatures", s(dir.path())]);
    assert!(err.contains("one level down"), "{err}");
    assert!(err.contains(s(&dir.path().join("1"))), "{err}");
}

#[test]
fn truncated_and_corrupt_saved_model_pb() {
    let original = std::fs::read(model("multi_io").join("saved_model.pb")).unwrap();
    for (what, bytes) in [("truncated", original[..original.len() / 2].to_vec()), ("garbage", vec![0xff; 64])] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&model("multi_io"), dir.path());
        std::fs::write(dir.path().join("saved_model.pb"), bytes).unwrap();
        let err = tfload_err(&["signatures", s(dir.path())]);
        assert!(err.contains("is truncated or corrupt"), "{what}: {err}");
        assert!(err.contains("saved_model.pb"), "{what}: {err}");
    }
}

#[test]
fn missing_variables_directory() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model("multi_io"), dir.path());
    std::fs::remove_dir_all(dir.path().join("variables")).unwrap();
    let err = tfload_err(&["variables", s(dir.path())]);
    assert!(err.contains("has no variables/variables.index"), "{err}");
    // Signatures need no variables.
    tfload_ok(&["signatures", s(dir.path())]);
}

#[test]
fn corrupt_checkpoint_index() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model("multi_io"), dir.path());
    std::fs::write(dir.path().join("variables/variables.index"), b"short").unwrap();
    let err = tfload_err(&["variables", s(dir.path())]);
    assert!(err.contains("cannot read the checkpoint index"), "{err}");
}

#[test]
fn unknown_tag_set_lists_the_available_ones() {
    let err = tfload_err(&["signatures", s(&model("multi_io")), "--tag", "train"]);
    assert!(err.contains("no MetaGraph with tag set [train]"), "{err}");
    assert!(err.contains("this model has: [serve]"), "{err}");
}

#[test]
fn unknown_signature_lists_the_available_ones() {
    let err = tfload_err(&["signatures", s(&model("multi_io")), "-s", "predict"]);
    assert!(err.contains("no signature `predict`"), "{err}");
    assert!(err.contains("serving_default, any_rank, constant, lookup"), "{err}");
}

#[test]
fn signatures_and_variables_are_listed_without_loading_tensorflow() {
    // With -v the launcher leaves TensorFlow's own log on, and loading libtensorflow logs
    // (oneDNN, absl): `--version` goes to tfload-core, which links it; `signatures` and
    // `variables` must not load it.
    let model = model("mlp_digits");
    let dir = s(&model);
    let loaded = crate::common::tfload(&["-v", "--version"]);
    assert!(String::from_utf8_lossy(&loaded.stderr).contains("port.cc"), "the probe sees TensorFlow load");
    for (command, expected) in [("signatures", "serving_default"), ("variables", "hidden/kernel")] {
        let listed = crate::common::tfload(&["-v", command, dir]);
        assert!(listed.status.success(), "{command}");
        let stderr = String::from_utf8_lossy(&listed.stderr);
        assert!(!stderr.contains("port.cc") && !stderr.contains("absl"), "{command} loaded libtensorflow:\n{stderr}");
        assert!(String::from_utf8_lossy(&listed.stdout).contains(expected), "{command}");
    }
}

#[test]
fn tensorflow_stays_silent_whatever_tf_cpp_min_log_level_says() {
    // TensorFlow prints the absl "before InitializeLog" warning and oneDNN's notice while it
    // loads, at every TF_CPP_MIN_LOG_LEVEL: only -v may show them.
    let model = model("mlp_digits");
    let x = tempfile::tempdir().unwrap();
    let input = x.path().join("x.npy");
    let script = format!("import numpy as np; np.save('{}', np.zeros((1, 8, 8, 1), np.float32))", s(&input));
    assert!(std::process::Command::new(crate::common::root().join(".venv/bin/python"))
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    for level in [None, Some("0"), Some("1"), Some("2"), Some("3")] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tfload"));
        command.args(["run", s(&model), "-i", &format!("inputs={}", s(&input))]).env_remove("TF_CPP_MIN_LOG_LEVEL");
        if let Some(level) = level {
            command.env("TF_CPP_MIN_LOG_LEVEL", level);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{level:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.is_empty(), "TF_CPP_MIN_LOG_LEVEL={level:?} printed:\n{stderr}");
    }
}
