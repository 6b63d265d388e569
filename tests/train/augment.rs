//! `tfload train --augment`: each transform equals Keras's layer on a pinned draw
//! (scripts/parity/augment_reference.py), training with augmentation is reproducible run to run,
//! and a run killed mid-epoch then resumed ends with the uninterrupted run's weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tfload::data::augment::{Augmentation, Dims, FillMode, Transform};
use tfload::formats::npy::read_npz;
use tfload::TensorData;

use crate::common::{model, python_json, root, s, tfload_err, tfload_ok, QUIET_ONE_THREAD};
use crate::train_parity::step_losses;

const SPEC: &str = "flip=horizontal,rotation=0.1,zoom=0.2,brightness=0.2,contrast=0.2";

fn floats(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let TensorData::Float32(array) = read_npz(path, Some(name)).unwrap() else { panic!("{name} is not float32") };
    (array.shape().to_vec(), array.iter().copied().collect())
}

/// The case's transform and the augmentation settings it runs under, as the reference pins them.
fn case(name: &str) -> (Augmentation, Transform) {
    let none = Transform::default();
    let keras = Augmentation::default();
    match name {
        "flip_horizontal" => (keras, Transform { flip_horizontal: true, ..none }),
        "flip_vertical" => (keras, Transform { flip_vertical: true, ..none }),
        "rotation_0.07_reflect" => (keras, Transform { rotation_degrees: Some(0.07 * 360.0), ..none }),
        "rotation_-0.2_nearest" => (
            Augmentation { fill_mode: FillMode::Nearest, ..keras },
            Transform { rotation_degrees: Some(-0.2 * 360.0), ..none },
        ),
        "rotation_0.3_constant_9" => (
            Augmentation { fill_mode: FillMode::Constant, fill_value: 9.0, ..keras },
            Transform { rotation_degrees: Some(0.3 * 360.0), ..none },
        ),
        "zoom_0.3" => (keras, Transform { zoom: Some((1.3, 1.3)), ..none }),
        "zoom_-0.25_0.1" => (keras, Transform { zoom: Some((0.75, 1.1)), ..none }),
        "brightness_0.1" => (keras, Transform { brightness_delta: Some(0.1 * 255.0), ..none }),
        "brightness_-0.3" => (keras, Transform { brightness_delta: Some(-0.3 * 255.0), ..none }),
        "contrast_1.4" => (keras, Transform { contrast_factor: Some(1.4), ..none }),
        "crop_5_4_at_2_1" => {
            (Augmentation { crop: Some((5, 4)), ..keras }, Transform { crop_origin: Some((2, 1)), ..none })
        }
        other => panic!("no Rust side for the reference's case {other}"),
    }
}

#[test]
fn each_transform_equals_keras_s_layer_on_the_same_draw() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("augment.npz");
    let names = python_json("parity/augment_reference.py", &["--out", s(&reference)]);
    let (shape, image) = floats(&reference, "image");
    let dims = Dims::of(&shape).unwrap();
    let names: Vec<&str> = names.as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(names.len(), 11);
    for name in names {
        let (augmentation, transform) = case(name);
        let mut ours = image.clone();
        augmentation.apply(&transform, &mut ours, dims);
        let (keras_shape, keras) = floats(&reference, name);
        assert_eq!(keras_shape, shape, "{name}");
        let worst = ours.iter().zip(&keras).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        // Values are 0..255; seen: equal but for 2.4e-4 in one rotation (float32 rounding).
        assert!(worst < 1e-3, "{name}: differs from Keras by up to {worst}");
    }
}

fn train_args(out: &Path, augment: Option<&str>, extra: &[&str]) -> Vec<String> {
    let data = root().join("saved_models/data/digits_5_9_train.npz");
    let mut args: Vec<String> = ["train", s(&model("cnn_digits")), "--data", s(&data), "--out", s(out)]
        .iter()
        .chain(&["--epochs", "2", "--batch-size", "64", "--seed", "5"])
        .chain(&QUIET_ONE_THREAD)
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
    if let Some(spec) = augment {
        args.extend(["--augment".to_string(), spec.to_string()]);
    }
    args
}

fn run(args: &[String]) -> String {
    tfload_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("variables/variables.data-00000-of-00001")).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_losses_and_augmentation_changes_them() {
    let dir = tempfile::tempdir().unwrap();
    let [first, second, plain]: [PathBuf; 3] = ["first", "second", "plain"].map(|n| dir.path().join(n));
    run(&train_args(&first, Some(SPEC), &[]));
    run(&train_args(&second, Some(SPEC), &[]));
    run(&train_args(&plain, None, &[]));
    let losses = step_losses(&first);
    assert_eq!(losses.len(), 2 * 717usize.div_ceil(64));
    assert!(losses.iter().all(|l| l.is_finite()));
    assert_eq!(losses, step_losses(&second), "same seed, same augmented images, same losses");
    assert_eq!(weights(&first), weights(&second));
    let unaugmented = step_losses(&plain);
    assert_ne!(losses[0], unaugmented[0], "the first step, on the same weights, sees other images");
}

#[test]
fn a_killed_augmented_run_resumed_ends_with_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    let every = ["--checkpoint-every-steps", "5"];
    run(&train_args(&straight, Some(SPEC), &every));
    // Killed while building its third checkpoint (step 12, the end of epoch 1): resumes from step 10.
    let args = train_args(&resumed, Some(SPEC), &every);
    let killed = Command::new(env!("CARGO_BIN_EXE_tfload"))
        .args(&args)
        .env("TFLOAD_FAULT_AT", "checkpoint-built:3")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!killed.status.success() && !resumed.exists(), "the run was not killed");
    let mut again = args.clone();
    again.push("--resume".to_string());
    run(&again);
    assert_eq!(weights(&resumed), weights(&straight), "resumed weights differ");
    assert_eq!(step_losses(&resumed), step_losses(&straight));

    // Resuming with another augmentation would not reproduce the run: refused, saying why.
    let other = dir.path().join("other");
    let args = train_args(&other, Some(SPEC), &every);
    let killed =
        Command::new(env!("CARGO_BIN_EXE_tfload")).args(&args).env("TFLOAD_FAULT_AT", "checkpoint-built:2").output();
    assert!(!killed.unwrap().status.success());
    let mut changed = train_args(&other, Some("flip=vertical"), &every);
    changed.push("--resume".to_string());
    let error = tfload_err(&changed.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(error.contains("Resume with the same --augment"), "{error}");
}

#[test]
fn a_bad_spec_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = train_args(&out, Some("flip=sideways"), &[]);
    let error = tfload_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(error.contains("--augment: `flip=sideways` names no flip mode"), "{error}");
    assert!(!out.exists() && !dir.path().join("out.partial").exists());
}
