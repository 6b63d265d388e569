//! Bad input to `tfload run`, `predict` and `eval`: a clear message naming the key or path and
//! what was expected, a non-zero exit, and nothing half-written in `--out`.

use std::path::Path;

use crate::common::{model, s, tfload_err, tfload_ok};
use ndarray::{ArrayD, IxDyn};
use tfload::formats::npy::write_npy;
use tfload::TensorData;

fn npy(dir: &Path, name: &str, data: TensorData) -> String {
    let path = dir.join(name);
    write_npy(&path, &data).unwrap();
    path.display().to_string()
}

fn zeros(shape: &[usize]) -> TensorData {
    TensorData::Float32(ArrayD::zeros(IxDyn(shape)))
}

/// `tfload run multi_io` with `inputs`, expected to fail; checks `--out` stayed untouched.
fn run_fails(inputs: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec!["run".to_string(), s(&model("multi_io")).to_string()];
    for input in inputs {
        args.extend(["-i".to_string(), input.clone()]);
    }
    args.extend(["--out".to_string(), out.display().to_string()]);
    let err = tfload_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.exists(), "--out was created by a failed run");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "files left beside --out");
    err
}

#[test]
fn missing_unknown_wrong_dtype_and_wrong_rank_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let features = npy(dir.path(), "f.npy", zeros(&[2, 4]));
    let err = run_fails(&[]);
    assert!(err.contains("input `features` not given"), "{err}");
    let err = run_fails(&[format!("features={features}"), format!("extra={features}")]);
    assert!(err.contains("there is no input `extra`; its inputs are: features"), "{err}");
    let ints = npy(dir.path(), "i.npy", TensorData::Int64(ArrayD::zeros(IxDyn(&[2, 4]))));
    let err = run_fails(&[format!("features={ints}")]);
    assert!(err.contains("input `features` must be float32 [?, 4], but int64 [2, 4] was given"), "{err}");
    let rank3 = npy(dir.path(), "r.npy", zeros(&[2, 4, 1]));
    let err = run_fails(&[format!("features={rank3}")]);
    assert!(err.contains("must have shape [?, 4] (float32), but float32 [2, 4, 1] was given"), "{err}");
    let err = run_fails(&[format!("features={features}"), format!("features={features}")]);
    assert!(err.contains("given twice"), "{err}");
}

#[test]
fn unreadable_arrays_name_their_file() {
    let data = crate::common::root().join("saved_models/data/digits_5_9_val.npz");
    let err = run_fails(&[format!("features={}[nope]", data.display())]);
    assert!(err.contains("has no array `nope`; it has: x, y"), "{err}");
    assert!(err.contains("digits_5_9_val.npz"), "{err}");
    let err = run_fails(&["features=/no/such.npy".to_string()]);
    assert!(err.contains("/no/such.npy"), "{err}");
    let err = tfload_err(&["run", s(&model("multi_io")), "-i", "features"]);
    assert!(err.contains("is not KEY=FILE"), "{err}");
}

#[test]
fn out_that_is_a_file_is_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken");
    std::fs::write(&out, "keep me").unwrap();
    let err = tfload_err(&["run", s(&model("multi_io")), "-s", "constant", "--out", s(&out)]);
    assert!(err.contains("--out must be a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
}

#[test]
fn out_into_an_existing_directory_adds_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let stdout = tfload_ok(&["run", s(&model("multi_io")), "-s", "constant", "--out", s(dir.path())]);
    assert!(stdout.contains("answer: int32 []"), "{stdout}");
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["answer.npy", "notes.txt"]);
}

#[test]
fn an_image_that_does_not_decode_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("5");
    std::fs::create_dir(&class).unwrap();
    std::fs::copy(crate::common::root().join("saved_models/data/digits_5_9_images/5/0005.png"), class.join("good.png"))
        .unwrap();
    std::fs::write(class.join("broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let err = tfload_err(&["predict", s(&model("cnn_digits")), s(dir.path())]);
    assert!(err.contains("broken.png: cannot be decoded as an image"), "{err}");
    let err = tfload_err(&["eval", s(&model("cnn_digits")), "--data", s(dir.path())]);
    assert!(err.contains("broken.png"), "{err}");
}

#[test]
fn predict_refuses_models_that_are_not_image_classifiers() {
    let image = crate::common::root().join("saved_models/data/digits_5_9_images/5/0005.png");
    let err = tfload_err(&["predict", s(&model("multi_io")), s(&image)]);
    assert!(err.contains("input `features` is float32 [?, 4], not a float32 batch of images"), "{err}");
    let err = tfload_err(&["predict", s(&model("cnn_digits")), "/no/such/image.png"]);
    assert!(err.contains("/no/such/image.png: no such file or directory"), "{err}");
}

#[test]
fn a_labels_file_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "a\nb\n").unwrap();
    let image = crate::common::root().join("saved_models/data/digits_5_9_images/5/0005.png");
    let err = tfload_err(&["predict", s(&model("cnn_digits")), s(&image), "--labels", s(&labels)]);
    assert!(err.contains("2 class names given for the 5 classes of output `outputs`"), "{err}");
}
