//! Linked checkpoints (the default) against `--full-checkpoints` on models made in the test the
//! ordinary ways users make them, trained with the tutorial's mask (the export's default: base
//! frozen, new head trainable):
//!
//! - a `keras.applications` model (MobileNetV2, alpha 0.35, 32x32) exported by the exporter's
//!   command line, `--application ... --default-freeze-base`
//!   (scripts/fixtures/linked_checkpoints_fixture.py);
//! - a Keras 3 model saved with `tf.saved_model.save`, made trainable with
//!   `tfload-export --saved-model` (the fixture of tests/train/saved_model_source.rs).
//!
//! Each is trained 2 epochs twice, with `--keep-checkpoints 2`, linked and full. The trained models
//! must be file for file the same and one data shard; each kept linked checkpoint must be two
//! shards whose base (the input's values, one file shared by the checkpoints) is the input's
//! shard byte for byte, hold every entry of the full checkpoint of the same step with the same
//! bytes, load in tfload and in Python's `tf.saved_model.load` with equal outputs, and serve
//! exactly the full checkpoint's outputs; the input model must be left as it was.
//! (tests/train/train_safety.rs checks the same on the committed MLP.)

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{copy_dir, python_json, root, s, tfload_ok, QUIET_ONE_THREAD};
use crate::train_safety::{assert_loads_everywhere_with, assert_same_files, data_shards, model_files, strs};

const FIXTURE: &str = "fixtures/linked_checkpoints_fixture.py";
const ONE_SHARD: &str = "variables.data-00000-of-00001";
const BASE_SHARD: &str = "variables.data-00000-of-00002";
const OWN_SHARD: &str = "variables.data-00001-of-00002";

/// A trainable model made by the test, its training data and inputs for `serving_default`.
struct Made {
    trainable: PathBuf,
    data: PathBuf,
    key: String,
    /// A `.npy` of inputs for `key`.
    x: PathBuf,
}

#[test]
fn linked_checkpoints_of_a_keras_application_export_match_full_ones() {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json(FIXTURE, &["application", s(dir.path())]);
    assert!(made["summary"].as_str().unwrap().contains("(2 trainable by default)"), "{made}");
    let made = Made {
        trainable: PathBuf::from(made["trainable"].as_str().unwrap()),
        data: PathBuf::from(made["data"].as_str().unwrap()),
        key: made["input_key"].as_str().unwrap().to_string(),
        x: PathBuf::from(made["val_x"].as_str().unwrap()),
    };
    assert_linked_checkpoints_match_full(dir.path(), &made);
}

#[test]
fn linked_checkpoints_of_a_keras_tf_saved_model_save_export_match_full_ones() {
    let dir = tempfile::tempdir().unwrap();
    let made = python_json("parity/saved_model_source_reference.py", &["make", "save", s(dir.path())]);
    assert!(made["summary"].as_str().unwrap().contains("(2 trainable by default)"), "{made}");
    let x = dir.path().join("val_x.npy");
    let script =
        format!("import numpy as np; np.save('{}', np.load('{}')['x'])", s(&x), s(&dir.path().join("val.npz")));
    assert!(Command::new(root().join(".venv/bin/python")).args(["-c", &script]).status().unwrap().success());
    let made = Made {
        trainable: PathBuf::from(made["trainable"].as_str().unwrap()),
        data: dir.path().join("train.npz"),
        key: made["input_key"].as_str().unwrap().to_string(),
        x,
    };
    assert_linked_checkpoints_match_full(dir.path(), &made);
}

/// `tfload train` of `made` for 2 epochs keeping 2 checkpoints, `extra` appended.
fn train(made: &Made, out: &Path, extra: &[&str]) {
    let args: Vec<String> = [
        "train",
        s(&made.trainable),
        "--data",
        s(&made.data),
        "--out",
        s(out),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--keep-checkpoints",
        "2",
        "--seed",
        "5",
    ]
    .iter()
    .chain(&QUIET_ONE_THREAD)
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    tfload_ok(&strs(&args));
}

/// The step checkpoints kept in `out/checkpoints`, sorted.
fn kept_steps(out: &Path) -> Vec<PathBuf> {
    let mut steps: Vec<PathBuf> =
        std::fs::read_dir(out.join("checkpoints")).unwrap().flatten().map(|e| e.path()).collect();
    steps.sort();
    steps
}

/// A copy of the trained model in `out` without its `checkpoints/`, to compare file by file.
fn model_only(out: &Path, copy: &Path) -> PathBuf {
    std::fs::create_dir_all(copy).unwrap();
    for entry in std::fs::read_dir(out).unwrap().flatten() {
        let (from, to) = (entry.path(), copy.join(entry.file_name()));
        if entry.file_name() == "checkpoints" {
            continue;
        } else if from.is_dir() {
            copy_dir(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    copy.to_path_buf()
}

/// `serving_default`'s outputs of `model` on `made.x`, as tfload writes them (`.npy` bytes).
fn outputs(model: &Path, made: &Made, out: &Path) -> Vec<u8> {
    tfload_ok(&["run", s(model), "-i", &format!("{}={}", made.key, s(&made.x)), "--out", s(out), "-q"]);
    std::fs::read(out.join("outputs.npy")).unwrap()
}

fn assert_linked_checkpoints_match_full(dir: &Path, made: &Made) {
    let input_before = model_files(&made.trainable);
    assert!(input_before.contains_key(&format!("variables/{ONE_SHARD}")), "{:?}", input_before.keys());
    let (linked, full) = (dir.join("linked"), dir.join("full"));
    train(made, &linked, &[]);
    train(made, &full, &["--full-checkpoints"]);

    // The trained model is one shard, file for file what full checkpoints give (every file
    // outside checkpoints/: saved_model.pb, assets, variables, metrics.jsonl but its timings).
    for out in [&linked, &full] {
        assert_eq!(data_shards(out), [ONE_SHARD], "{}", out.display());
        assert!(out.join("assets/tfload_contract.json").is_file(), "{}", out.display());
    }
    assert_same_files(&model_only(&linked, &dir.join("linked-model")), &model_only(&full, &dir.join("full-model")));

    // The kept checkpoints: the same steps both ways; linked ones are the input's shard,
    // hard-linked (one file for all of them, shared with nothing else once the run is done),
    // plus a shard of the values that changed.
    let (linked_steps, full_steps) = (kept_steps(&linked), kept_steps(&full));
    let names = |steps: &[PathBuf]| steps.iter().map(|p| p.file_name().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(linked_steps.len(), 2, "{linked_steps:?}");
    assert_eq!(names(&linked_steps), names(&full_steps));
    let input_shard = std::fs::read(made.trainable.join("variables").join(ONE_SHARD)).unwrap();
    let base = |step: &Path| std::fs::metadata(step.join("variables").join(BASE_SHARD)).unwrap();
    for (linked_step, full_step) in linked_steps.iter().zip(&full_steps) {
        assert_eq!(data_shards(linked_step), [BASE_SHARD, OWN_SHARD], "{}", linked_step.display());
        assert_eq!(data_shards(full_step), [ONE_SHARD], "{}", full_step.display());
        assert_eq!(base(linked_step).ino(), base(&linked_steps[0]).ino(), "the base shard is one file");
        assert_eq!(
            base(linked_step).nlink(),
            2,
            "{}: the base is linked by the 2 kept checkpoints only",
            linked_step.display()
        );
        assert!(
            std::fs::read(linked_step.join("variables").join(BASE_SHARD)).unwrap() == input_shard,
            "{}: the base shard is not the input's values",
            linked_step.display()
        );
        let own = std::fs::metadata(linked_step.join("variables").join(OWN_SHARD)).unwrap().len();
        let whole = std::fs::metadata(full_step.join("variables").join(ONE_SHARD)).unwrap().len();
        assert!(
            own < whole,
            "{}: its own shard ({own} bytes) holds more than the changed values",
            linked_step.display()
        );
    }

    // Every checkpoint entry (optimizer slots and counters too) has the full checkpoint's bytes.
    let pairs: Vec<&str> = linked_steps.iter().zip(&full_steps).flat_map(|(l, f)| [s(l), s(f)]).collect();
    let compared = python_json(FIXTURE, &[&["same-values"][..], &pairs].concat());
    for pair in compared.as_array().unwrap() {
        assert!(pair["entries"].as_u64().unwrap() > 0, "{pair}");
        assert_eq!(pair["differing"], serde_json::json!([]), "{pair}");
    }

    // Each linked checkpoint loads in tfload and in Python with equal outputs, the outputs of the
    // full checkpoint of its step, which training moved away from the input's. (One thread per
    // checkpoint: Python's load of a MobileNetV2 export takes about 10 s.)
    let scratch = dir.join("scratch");
    let from_input = outputs(&made.trainable, made, &scratch.join("input"));
    std::thread::scope(|threads| {
        // The published model too: its shard was built from the run's draft (output_draft).
        let published = scratch.join("published");
        threads.spawn(move || {
            std::fs::create_dir_all(&published).unwrap();
            assert_loads_everywhere_with(&linked, &made.key, &made.x, &published);
        });
        for (at, (linked_step, full_step)) in linked_steps.iter().zip(&full_steps).enumerate() {
            let (scratch, from_input) = (scratch.join(format!("step-{at}")), &from_input);
            threads.spawn(move || {
                std::fs::create_dir_all(&scratch).unwrap();
                assert_loads_everywhere_with(linked_step, &made.key, &made.x, &scratch);
                let from_linked = outputs(linked_step, made, &scratch.join("from-linked"));
                let from_full = outputs(full_step, made, &scratch.join("from-full"));
                assert!(from_linked == from_full, "{}", linked_step.display());
                assert!(from_linked != *from_input, "{}: training changed no output", linked_step.display());
            });
        }
    });

    // The input is as it was, and no file of it is shared with the run's output.
    assert!(model_files(&made.trainable) == input_before, "the run changed its input {}", made.trainable.display());
    for file in input_before.keys() {
        let nlink = std::fs::metadata(made.trainable.join(file)).unwrap().nlink();
        assert_eq!(nlink, 1, "the input's {file} is hard-linked elsewhere");
    }
}
