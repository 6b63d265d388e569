//! A model layer the weights file has nothing for is never left silently at its values (issue 16
//! item 4): `import-weights` and `train --init-weights` fail naming it, the file's unused layers
//! and the `--head-names` that would match them, and write nothing; `--skip-mismatch` imports the
//! rest and says which layers kept their values.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{model, root, s, tfload_err, tfload_ok};

/// The committed cnn_digits weights with the head's layer called `dense` instead of `head`, as a
/// user's file is when the model's new head was named otherwise (tfload-export's default `head`).
fn renamed_head(dir: &Path) -> PathBuf {
    let path = dir.join("user.weights.h5");
    std::fs::copy(root().join("saved_models/h5/cnn_keras3.weights.h5"), &path).unwrap();
    let script =
        "import h5py, sys\nwith h5py.File(sys.argv[1], 'r+') as f:\n    f['layers/dense/vars'].attrs['name'] = 'dense'";
    let status = Command::new(root().join(".venv/bin/python")).args(["-c", script, s(&path)]).status().unwrap();
    assert!(status.success());
    path
}

#[test]
fn a_layer_without_weights_fails_the_import_naming_it_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = renamed_head(tmp.path());
    let out = tmp.path().join("imported");
    let cnn = model("cnn_digits");
    let stderr = tfload_err(&["import-weights", s(&cnn), s(&weights), "--out", s(&out)]);
    assert!(stderr.contains("holds no weights for 1 layer(s) of the model (head)"), "{stderr}");
    assert!(stderr.contains("its layer(s) dense match no layer of the model"), "{stderr}");
    assert!(stderr.contains("tfload-export --head-names dense"), "{stderr}");
    assert!(stderr.contains("--skip-mismatch"), "{stderr}");
    assert!(!out.exists(), "a failed import wrote {}", out.display());

    // The same for the weights training starts from, before any data is read.
    let data = root().join("saved_models/data/digits_5_9_train.npz");
    let trained = tmp.path().join("trained");
    let args = ["train", s(&cnn), "--data", s(&data), "--out", s(&trained), "--init-weights", s(&weights)];
    let stderr = tfload_err(&args);
    assert!(stderr.contains("no weights for 1 layer(s) of the model (head)"), "{stderr}");
    assert!(!trained.exists());
}

#[test]
fn skip_mismatch_imports_the_rest_and_names_the_kept_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = renamed_head(tmp.path());
    let out = tmp.path().join("imported");
    let stdout =
        tfload_ok(&["import-weights", s(&model("cnn_digits")), s(&weights), "--out", s(&out), "--skip-mismatch"]);
    assert!(stdout.contains("kept 1 layer(s) the file has no weights for: head"), "{stdout}");
    assert!(stdout.contains("of 3 layer(s) (bn1, conv1, conv2)"), "{stdout}");
    assert!(out.join("saved_model.pb").is_file());
}
