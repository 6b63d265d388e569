//! The `train_step` specialized on the run's mask (the default) against the exported step fed the
//! mask at every step, on the same batches and masks: per-step losses and metrics bit for bit,
//! every saved variable byte for byte, the frozen variables, their optimizer slots and the
//! statistics of frozen BatchNormalization layers byte-identical to the input model's, and both
//! equal to Python calling the same `train_step` with the same mask. And the proof that the
//! specialization pays: the ops TensorFlow executes for a frozen-base step.

use std::collections::BTreeSet;

use ndarray::Axis;
use serde_json::Value;
use tfload::session::saver::save_variables;
use tfload::train::trainer::StepKind;
use tfload::train::{Mask, MaskSpec, MaskStart, TrainableModel, Trainer};
use tfload::{SessionConfig, TensorData};

use crate::common::{model, python_json, root, s, tfload_ok};
use crate::train_parity::step_losses;

const BATCH: usize = 64;
const STEPS: usize = 6;
const LR: f32 = 0.01;

/// Rows `start..end` of a batch-first array.
fn rows(data: &TensorData, start: usize, end: usize) -> TensorData {
    match data {
        TensorData::Float32(a) => TensorData::Float32(a.slice_axis(Axis(0), (start..end).into()).to_owned()),
        TensorData::Int64(a) => TensorData::Int64(a.slice_axis(Axis(0), (start..end).into()).to_owned()),
        other => panic!("unexpected dtype {}", other.dtype()),
    }
}

fn batches() -> Vec<tfload::data::Batch> {
    let data = root().join("saved_models/data/digits_5_9_train.npz");
    let x = tfload::formats::npy::read_npz(&data, Some("x")).unwrap();
    let y = tfload::formats::npy::read_npz(&data, Some("y")).unwrap();
    (0..STEPS)
        .map(|step| {
            let (start, end) = (step * BATCH, (step + 1) * BATCH);
            tfload::data::Batch::new(rows(&x, start, end), rows(&y, start, end), (start..end).collect())
        })
        .collect()
}

/// Checkpoint keys that `mask` keeps as they are: frozen variables, their slots, and the moving
/// statistics of BatchNormalization layers whose variables are all frozen (inference mode).
fn frozen_keys(opened: &TrainableModel, mask: &Mask) -> BTreeSet<String> {
    let contract = opened.contract();
    let frozen = |i: usize| !mask.entries()[i].trainable;
    let mut keys = BTreeSet::new();
    for variable in contract.mask_variables.iter().filter(|v| frozen(v.index)) {
        keys.insert(variable.checkpoint_key.clone());
    }
    for slot in &contract.optimizer_variables {
        if slot.variable_index.is_some_and(frozen) {
            keys.insert(slot.checkpoint_key.clone());
        }
    }
    for layer in contract.batch_norm_layers.iter().filter(|l| l.mask_indices.iter().all(|&i| frozen(i))) {
        for &state in &layer.state_indices {
            keys.insert(contract.non_trainable_variables[state].checkpoint_key.clone());
        }
    }
    keys
}

/// Trains `STEPS` batches of `name` with both steps under `spec` and compares everything.
fn assert_specialized_is_exact(name: &str, spec: MaskSpec, expect_frozen: usize) {
    assert_specialized_is_exact_at(&model(name), spec, expect_frozen);
}

/// [`assert_specialized_is_exact`] of the model in `dir`.
fn assert_specialized_is_exact_at(model_dir: &std::path::Path, spec: MaskSpec, expect_frozen: usize) {
    let name = model_dir.file_name().unwrap().to_string_lossy().into_owned();
    let opened = TrainableModel::open(model_dir).unwrap();
    let mask = opened.mask(&spec).unwrap();
    let frozen = frozen_keys(&opened, &mask);
    assert!(frozen.len() >= expect_frozen, "{name}: {} frozen keys, expected at least {expect_frozen}", frozen.len());
    let open = |step| Trainer::from_model_with(&opened, mask.clone(), SessionConfig::default(), step).unwrap();
    let (plain, specialized) = (open(StepKind::Plain), open(StepKind::Specialized));
    assert_eq!(plain.step_kind(), StepKind::Plain);
    assert_eq!(specialized.step_kind(), StepKind::Specialized, "{name}: the exporter's step specializes");
    let mut losses = Vec::new();
    for (step, batch) in batches().iter().enumerate() {
        let a = plain.train_batch(batch, LR).unwrap();
        let b = specialized.train_batch(batch, LR).unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (key, value) in &a {
            // Bit-identical: the same kernels run on the same values; only dead work is dropped.
            assert_eq!(
                value.to_bits(),
                b[key].to_bits(),
                "{name} step {}: {key} plain {value}, specialized {}",
                step + 1,
                b[key]
            );
        }
        losses.push(b["loss"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let (plain_prefix, specialized_prefix) =
        (dir.path().join("plain/variables"), dir.path().join("specialized/variables"));
    for prefix in [&plain_prefix, &specialized_prefix] {
        std::fs::create_dir_all(prefix.parent().unwrap()).unwrap();
    }
    save_variables(plain.model(), &plain_prefix).unwrap();
    save_variables(specialized.model(), &specialized_prefix).unwrap();
    let values: Vec<String> = mask.values().iter().map(|v| v.to_string()).collect();
    let python = python_json(
        "parity/specialized_reference.py",
        &[
            s(model_dir),
            s(&root().join("saved_models/data/digits_5_9_train.npz")),
            s(&plain_prefix),
            s(&specialized_prefix),
            "--mask",
            &values.join(","),
            "--batch-size",
            &BATCH.to_string(),
            "--steps",
            &STEPS.to_string(),
            "--lr",
            &LR.to_string(),
        ],
    );
    let theirs: Vec<f64> = python["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(theirs.len(), STEPS);
    for (step, (a, b)) in losses.iter().zip(&theirs).enumerate() {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-6), "{name} step {}: tfload {a}, Python {b}", step + 1);
    }
    let variables = python["variables"].as_array().unwrap();
    let mut seen_frozen = 0;
    for variable in variables {
        let key = variable["key"].as_str().unwrap();
        assert_eq!(variable["plain_equals_specialized"], Value::Bool(true), "{name}: {key} differs between the steps");
        let unchanged = variable["specialized_equals_input"] == Value::Bool(true);
        if frozen.contains(key) {
            assert!(unchanged, "{name}: {key} is frozen but changed");
            seen_frozen += 1;
        } else if key.starts_with("mask_variables/") {
            assert!(!unchanged, "{name}: {key} trains but did not change");
        }
        let diff = variable["max_abs_diff_vs_python"].as_f64().expect("Python saves every key");
        let scale = variable["max_abs_value"].as_f64().unwrap().max(1.0);
        assert!(diff <= 1e-5 * scale, "{name}: {key} differs from Python's by {diff}");
    }
    assert_eq!(seen_frozen, frozen.len(), "{name}: every frozen key is saved");
}

fn spec(start: MaskStart, train_last_layers: Option<usize>) -> MaskSpec {
    MaskSpec { start, train_last_layers, ..MaskSpec::default() }
}

#[test]
fn adam_cnn_base_frozen_with_batch_norm() {
    // conv1, bn1 (gamma, beta), conv2 (kernel, bias) and their Adam slots, bn1's statistics.
    assert_specialized_is_exact("cnn_digits", spec(MaskStart::ModelDefault, None), 5 + 3 * 5 + 2);
}

#[test]
fn adam_cnn_last_layers_trainable() {
    // conv2 and head train; conv1 and bn1 (with its statistics) stay.
    assert_specialized_is_exact("cnn_digits", spec(MaskStart::ModelDefault, Some(2)), 3 + 3 * 3 + 2);
}

#[test]
fn adam_cnn_all_trainable() {
    assert_specialized_is_exact("cnn_digits", spec(MaskStart::AllTrainable, None), 0);
}

#[test]
fn sgd_momentum_mlp_head_only_and_all() {
    assert_specialized_is_exact("mlp_digits", spec(MaskStart::ModelDefault, Some(1)), 2 + 2);
    assert_specialized_is_exact("mlp_digits", spec(MaskStart::AllTrainable, None), 0);
}

/// The step as the current exporter writes it (the committed models predate it): Adam and SGD
/// with momentum as fused in-place training ops under a `tf.cond` on each mask entry, and
/// BatchNormalization's training mode (the fused kernel) picked by `tf.where`. A frozen layer
/// inside `train_step` (conv2 alone, or bn1 alone with conv1 training through its inference mode:
/// masks without a frozen-base step) must stay byte-identical in both steps, and the specialized
/// step must not compute a frozen kernel's gradient.
#[test]
fn fresh_export_fused_updates_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (cnn, mlp) = (dir.path().join("cnn_twin"), dir.path().join("mlp_twin"));
    python_json("fixtures/make_digits_models.py", &["--twin", "cnn", "--out", s(&cnn)]);
    python_json("fixtures/make_digits_models.py", &["--twin", "mlp", "--out", s(&mlp)]);
    let freeze = |pattern: &str| MaskSpec {
        start: MaskStart::AllTrainable,
        freeze: vec![pattern.to_string()],
        ..MaskSpec::default()
    };
    assert_specialized_is_exact_at(&cnn, spec(MaskStart::AllTrainable, None), 0);
    assert_specialized_is_exact_at(&cnn, spec(MaskStart::ModelDefault, Some(2)), 3 + 3 * 3 + 2);
    // conv2's kernel and bias with their m, v and step.
    assert_specialized_is_exact_at(&cnn, freeze("conv2"), 2 + 6);
    // gamma, beta, their 6 slots and the moving statistics.
    assert_specialized_is_exact_at(&cnn, freeze("bn1"), 2 + 6 + 2);
    assert_specialized_is_exact_at(&mlp, spec(MaskStart::AllTrainable, None), 0);
    assert_specialized_is_exact_at(&mlp, spec(MaskStart::ModelDefault, Some(1)), 2 + 2);

    let opened = TrainableModel::open(&cnn).unwrap();
    let ops = |spec: &MaskSpec, step| {
        let trainer =
            Trainer::from_model_with(&opened, opened.mask(spec).unwrap(), SessionConfig::default(), step).unwrap();
        let prepared = trainer.preparer().prepare(&batches()[0]).unwrap();
        trainer.train_prepared_counting_ops(&prepared, LR).unwrap().1
    };
    let all = ops(&spec(MaskStart::AllTrainable, None), StepKind::Specialized);
    assert_eq!(all.count_containing("ResourceApplyAdam"), 7, "{all:?}");
    assert_eq!(all.count_containing("SelectV2"), 0, "{all:?}");
    assert_eq!(all.count_containing("OptionalFromValue"), 0, "no BatchNormalization tf.cond left: {all:?}");
    // bn1 trains through the fused kernel, and nothing of its inference mode is left.
    assert_eq!(all.count_containing("FusedBatchNormV3"), 1, "{all:?}");
    assert_eq!(all.count_containing("FusedBatchNormGradV3"), 1, "{all:?}");
    assert_eq!(all.count_containing("Rsqrt"), 0, "{all:?}");
    // Each update's tf.cond is replaced by the branch the mask takes: no Switch or Merge runs.
    assert_eq!(all.count_containing("Switch"), 0, "{all:?}");
    assert_eq!(all.count_containing("Merge"), 0, "{all:?}");
    let plain = ops(&spec(MaskStart::AllTrainable, None), StepKind::Plain);
    assert!(plain.count_containing("Switch") >= 7, "the plain step keeps its tf.conds: {plain:?}");
    let conv2_frozen = ops(&freeze("conv2"), StepKind::Specialized);
    assert_eq!(conv2_frozen.count_containing("Conv2DBackpropFilter"), 1, "conv1's only: {conv2_frozen:?}");
    assert_eq!(conv2_frozen.count_containing("ResourceApplyAdam"), 5, "conv2's two updates gone: {conv2_frozen:?}");
    assert_eq!(conv2_frozen.count_containing("Switch"), 0, "{conv2_frozen:?}");
    assert_eq!(ops(&freeze("conv2"), StepKind::Plain).count_containing("Conv2DBackpropFilter"), 2);
    // bn1 frozen with conv1 training below it: inference mode only, no fused kernel left over.
    let bn1_frozen = ops(&freeze("bn1"), StepKind::Specialized);
    assert_eq!(bn1_frozen.count_containing("FusedBatchNorm"), 0, "{bn1_frozen:?}");
    assert_eq!(bn1_frozen.count_containing("Conv2DBackpropFilter"), 2, "conv1's and conv2's: {bn1_frozen:?}");
}

/// The executed graph of a frozen-base step: no weight gradient and no `tf.where` left, fewer
/// nodes; the plain step computes both convolutions' filter gradients.
#[test]
fn specialized_frozen_base_step_drops_the_frozen_gradients() {
    let opened = TrainableModel::open(model("cnn_digits")).unwrap();
    let mask = opened.mask(&MaskSpec::default()).unwrap();
    let batch = &batches()[0];
    let ops = |step| {
        let trainer = Trainer::from_model_with(&opened, mask.clone(), SessionConfig::default(), step).unwrap();
        let prepared = trainer.preparer().prepare(batch).unwrap();
        trainer.train_prepared_counting_ops(&prepared, LR).unwrap().1
    };
    let (plain, specialized) = (ops(StepKind::Plain), ops(StepKind::Specialized));
    assert_eq!(plain.count_containing("Conv2DBackpropFilter"), 2, "{plain:?}");
    assert_eq!(specialized.count_containing("Conv2DBackpropFilter"), 0, "{specialized:?}");
    assert!(plain.count_containing("SelectV2") > 0);
    assert_eq!(specialized.count_containing("SelectV2"), 0, "{specialized:?}");
    assert!(specialized.total() * 4 < plain.total() * 3, "{} nodes against {}", specialized.total(), plain.total());
}

/// `tfload train` specializes by default; `--no-specialize-step` runs the exported step, with the
/// same per-step losses (as logged, bit for bit) and the same written weights.
#[test]
fn cli_no_specialize_step_trains_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let data = root().join("saved_models/data/digits_5_9_train.npz");
    let train = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let cnn = model("cnn_digits");
        let mut args = vec!["train", s(&cnn), "--data", s(&data), "--out", s(&out)];
        args.extend(["--epochs", "1", "--batch-size", "64", "--no-shuffle", "-q"]);
        args.extend(extra);
        tfload_ok(&args);
        out
    };
    let (specialized, plain) = (train("specialized", &[]), train("plain", &["--no-specialize-step"]));
    let losses = step_losses(&specialized);
    assert_eq!(losses.len(), 717usize.div_ceil(64));
    assert_eq!(losses, step_losses(&plain));
    let bytes = |out: &std::path::Path| std::fs::read(out.join("variables/variables.data-00000-of-00001")).unwrap();
    assert_eq!(bytes(&specialized), bytes(&plain), "the written checkpoints are byte-identical");
}

/// An XLA-compiled step is one cluster the session does not inline: a constant mask would fold
/// nothing, so the trainer runs it as exported (and says so).
#[test]
fn xla_compiled_step_runs_as_exported() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = dir.path().join("cnn_xla");
    python_json("fixtures/make_digits_models.py", &["--twin", "cnn", "--jit-compile", "--out", s(&cnn)]);
    let opened = TrainableModel::open(&cnn).unwrap();
    let mask = opened.mask(&MaskSpec::default()).unwrap();
    let trainer = Trainer::from_model_with(&opened, mask, SessionConfig::default(), StepKind::Specialized).unwrap();
    assert_eq!(trainer.step_kind(), StepKind::Plain);
    assert!(trainer.train_batch(&batches()[0], LR).unwrap()["loss"].is_finite());
}
