//! Frozen-base steps (issue 18 item 2): where the export has a `train_step_from_<layer>` that
//! the mask allows, `tfload train` (feature cache off) runs it instead of `train_step`: the base
//! below the cut forward in inference mode, the head's step alone, no backward pass below the
//! cut. It must give the full `train_step`'s per-step losses, validation metrics and final
//! variables within 1e-5 relative, write the same complete SavedModel (every file but the
//! variables byte for byte the input's), and Python must compute tfload's outputs from it.
//! Fixtures: the feature-cache tests' CNN (BatchNormalization in the base) and MobileNetV2 (alpha
//! 0.35, 32x32, new head), exported in the test by scripts/parity/feature_cache_reference.py.

use std::collections::BTreeMap;
use std::path::Path;

use tfload::train::trainer::StepKind;
use tfload::train::{MaskSpec, MaskStart, TrainableModel, Trainer};
use tfload::SessionConfig;

use crate::common::{model, python_json, s};
use crate::feature_cache::{
    assert_close, assert_python_outputs_equal_tfload, assert_same_weights, epoch_validation, fixture, train,
};
use crate::train_parity::step_losses;

/// Every file under `dir` but the checkpoint's, by path relative to `dir`, with its bytes.
fn files_but_variables(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walkdir(dir) {
        let relative = entry.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if !relative.starts_with("variables/") {
            files.insert(relative, std::fs::read(&entry).unwrap());
        }
    }
    files
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The model's own files in a `tfload train` output folder (the SavedModel; the run's logs and
/// working files beside it left out).
fn model_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = files_but_variables(out);
    files.retain(|path, _| path == "saved_model.pb" || path.starts_with("assets/") || path == "fingerprint.pb");
    assert!(!files.contains_key("fingerprint.pb"), "a stale fingerprint.pb was written");
    files
}

/// The same file names, each with the same bytes (named when not: bytes would flood the log).
fn assert_same_files(written: &BTreeMap<String, Vec<u8>>, input: &BTreeMap<String, Vec<u8>>) {
    let names = |files: &BTreeMap<String, Vec<u8>>| files.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(written), names(input), "the written model's files against the input's");
    let differ: Vec<&String> = written.iter().filter(|(name, bytes)| input[*name] != **bytes).map(|(n, _)| n).collect();
    assert!(differ.is_empty(), "written differently from the input: {differ:?}");
}

fn assert_frozen_base_equals_full(kind: &str, epochs: &str, signature: &str, layer: &str) {
    let fixture = fixture(kind);
    let dir = tempfile::tempdir().unwrap();
    let (frozen, full) = (dir.path().join("frozen_base"), dir.path().join("full"));
    let common = ["--epochs", epochs, "--validation-split", "0.25", "--no-feature-cache"];
    let progress = train(&fixture, &frozen, &common);
    let says =
        format!("step: `{signature}` (every variable below layer `{layer}` is frozen: no backward pass below it)");
    assert!(progress.contains(&says), "{progress}");
    let mut plain = common.to_vec();
    plain.push("--no-specialize-step");
    let progress = train(&fixture, &full, &plain);
    assert!(!progress.contains("step: `train_step_from_"), "{progress}");
    assert_close("per-step losses", &step_losses(&frozen), &step_losses(&full));
    assert_close("validation losses", &epoch_validation(&frozen), &epoch_validation(&full));
    assert_same_weights(&frozen, &full);
    // `fingerprint.pb` would describe the input's checkpoint: the writer leaves it out.
    let mut input = files_but_variables(&fixture.join("model"));
    assert!(input.remove("fingerprint.pb").is_some() && input.contains_key("saved_model.pb"));
    assert_same_files(&model_files(&frozen), &input);
    assert_same_files(&model_files(&full), &input);
    assert_python_outputs_equal_tfload(&frozen, &fixture, dir.path());
}

#[test]
fn cnn_frozen_base_step_trains_as_the_full_train_step() {
    // model.layers: input, conv, bn, relu, flat, hid, head; conv and bn frozen by default.
    assert_frozen_base_equals_full("cnn", "3", "train_step_from_5", "hid");
}

#[test]
fn mobilenet_v2_frozen_base_step_trains_as_the_full_train_step() {
    let record = TrainableModel::open(fixture("mobilenet").join("model")).unwrap();
    let top = record.contract().frozen_base_steps.last().expect("the export has frozen-base steps").clone();
    assert_eq!(top.layer, "head");
    assert_frozen_base_equals_full("mobilenet", "1", &top.signature, "head");
}

/// The tutorial's own way, in Keras: the same architecture and weights, `layer.trainable = False`
/// below the head (BatchNormalization then runs in inference mode), `train_on_batch` on the same
/// batches in the same order. tfload's frozen-base step and its feature cache must give Keras's
/// per-step losses and final variables within 1e-5 relative. One known difference, asserted so
/// that it cannot grow unseen: Keras 3 adds the weight regularizers of trainable variables only,
/// the exported steps add every variable's, so tfload's loss is Keras's plus the frozen layers'
/// penalty (a constant: those variables do not change, and the gradients are the same).
fn assert_frozen_base_matches_keras_fit(kind: &str, epochs: &str) -> f64 {
    let fixture = fixture(kind);
    let dir = tempfile::tempdir().unwrap();
    let mut penalties = Vec::new();
    for (path, extra, says) in [
        ("frozen_base_step", &["--no-feature-cache"][..], "step: `train_step_from_"),
        ("feature_cache", &[][..], "feature cache: on (base frozen below"),
    ] {
        let out = dir.path().join(path);
        let mut args = vec!["--epochs", epochs, "--no-shuffle"];
        args.extend(extra);
        let progress = train(&fixture, &out, &args);
        assert!(progress.contains(says), "{path}: {progress}");
        let keras =
            python_json("parity/feature_cache_reference.py", &["keras-fit", kind, s(&fixture), epochs, "8", s(&out)]);
        assert!(!keras["frozen_layers"].as_array().unwrap().is_empty(), "{keras}");
        let penalty = keras["frozen_regularization"].as_f64().unwrap();
        let expected: Vec<f64> =
            keras["losses"].as_array().unwrap().iter().map(|loss| loss.as_f64().unwrap() + penalty).collect();
        assert_close(&format!("{path}: per-step losses against Keras's"), &step_losses(&out), &expected);
        let diffs = keras["max_relative"].as_object().unwrap();
        assert!(!diffs.is_empty());
        for (name, diff) in diffs {
            assert!(diff.as_f64().unwrap() <= 1e-5, "{path}: `{name}` is {diff} from Keras's");
        }
        penalties.push(penalty);
    }
    penalties[0]
}

#[test]
fn cnn_frozen_base_training_matches_keras_fit() {
    let penalty = assert_frozen_base_matches_keras_fit("cnn", "2");
    assert!(penalty > 1e-4, "the frozen conv's L2 penalty ({penalty}) is what the losses differ by");
}

#[test]
fn mobilenet_v2_frozen_base_training_matches_keras_fit() {
    let penalty = assert_frozen_base_matches_keras_fit("mobilenet", "2");
    assert_eq!(penalty, 0.0, "keras.applications' MobileNetV2 has no regularizers");
}

/// The trainer picks the highest cut the mask allows, `train_step` when none does (or when the
/// step is not specialized, or the export predates frozen-base steps).
#[test]
fn the_trainer_runs_the_highest_frozen_base_step_the_mask_allows() {
    let opened = TrainableModel::open(fixture("cnn").join("model")).unwrap();
    let signature = |spec: MaskSpec, step: StepKind| {
        let mask = opened.mask(&spec).unwrap();
        let trainer = Trainer::from_model_with(&opened, mask, SessionConfig::default(), step).unwrap();
        assert_eq!(trainer.frozen_base_step().map(|s| s.signature.as_str()), {
            let key = trainer.train_signature();
            key.starts_with("train_step_from_").then_some(key)
        });
        trainer.train_signature().to_string()
    };
    let last = |n| MaskSpec { train_last_layers: Some(n), ..MaskSpec::default() };
    assert_eq!(signature(MaskSpec::default(), StepKind::Specialized), "train_step_from_5");
    assert_eq!(signature(last(1), StepKind::Specialized), "train_step_from_6");
    assert_eq!(signature(last(5), StepKind::Specialized), "train_step", "conv and bn train: no cut allows it");
    let all = MaskSpec { start: MaskStart::AllTrainable, ..MaskSpec::default() };
    assert_eq!(signature(all, StepKind::Specialized), "train_step");
    assert_eq!(signature(MaskSpec::default(), StepKind::Plain), "train_step");
    let older = TrainableModel::open(model("cnn_digits")).unwrap();
    assert!(older.contract().frozen_base_steps.is_empty(), "the committed model predates frozen-base steps");
}
