//! The train-step contract (docs/train-step-contract.md): the record a trainable SavedModel
//! carries in `assets/tfload_contract.json`, read without a session and checked against the
//! model's signatures before any training starts.

mod check;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::LabelTarget;
use crate::error::{Error, Result};
use crate::formats::checkpoint_index::CheckpointIndex;
use crate::model::meta_graph::MetaGraph;
use crate::model::signature::Signature;
use crate::tensor::dtype::DType;
use crate::tensor::shape::Shape;

/// The contract version this tfload understands.
pub const CONTRACT_VERSION: u32 = 1;
/// The contract version of records whose steps also take `sample_weight` (version 1 plus that input).
pub const CONTRACT_VERSION_SAMPLE_WEIGHT: u32 = 2;
pub use crate::model::record::{EVAL_STEP, RECORD_PATH, SERVE_TAG, TRAIN_STEP};

/// The record of a trainable SavedModel. Every field the contract marks as required is read
/// here and checked against the model by [`TrainContract::read`]; informational fields
/// (`model_name`, `producer`, `extra`) are kept by the file only.
#[derive(Debug, Clone, Deserialize)]
pub struct TrainContract {
    /// Contract version, 1.
    pub contract_version: u32,
    /// Input and output keys of each signature, as the record states them.
    pub signatures: BTreeMap<String, SignatureRecord>,
    /// The model's inputs.
    pub inputs: Vec<InputRecord>,
    /// The model's outputs (`outputs`).
    pub outputs: Vec<OutputRecord>,
    /// The `labels` input of `train_step` and `eval_step`.
    pub labels: TensorRecord,
    /// The `mask` input of `train_step`.
    pub mask: TensorRecord,
    /// The `sample_weight` input of `train_step` and `eval_step` (contract version 2), if any.
    #[serde(default)]
    pub sample_weight: Option<TensorRecord>,
    /// Class names by label index, where known.
    pub class_names: Option<Vec<String>>,
    /// Number of classes of a classifier.
    #[serde(default)]
    pub num_classes: Option<u64>,
    /// Metric output keys of `train_step` and `eval_step`.
    pub metrics: Vec<String>,
    /// The variables the mask addresses, in mask order.
    pub mask_variables: Vec<MaskVariable>,
    /// Variables that are saved but not trained (batch-norm statistics, RNG states).
    pub non_trainable_variables: Vec<StateVariable>,
    /// The optimizer's variables (step counter, slots).
    pub optimizer_variables: Vec<OptimizerVariable>,
    /// The mask stored as the model's default.
    pub default_mask: Vec<f32>,
    /// The learning rate input and its suggested default.
    pub learning_rate: LearningRateRecord,
    /// Optimizer name and settings, as recorded.
    pub optimizer: serde_json::Value,
    /// Loss name and settings, as recorded.
    pub loss: serde_json::Value,
    /// `classification`, `binary_classification` or `regression`.
    #[serde(default)]
    pub task: Option<String>,
    /// Batch-norm layers and the mask and state entries they own.
    #[serde(default)]
    pub batch_norm_layers: Vec<BatchNormLayer>,
    /// Keras's `model.layers` in order, with or without variables, where the exporter recorded
    /// them: what `--train-last-layers` counts.
    #[serde(default)]
    pub layers: Option<Vec<LayerRecord>>,
    /// How batch norm follows the mask (`per_layer_mask`).
    #[serde(default)]
    pub batch_norm_policy: Option<String>,
    /// Whether `train_step` is compiled with XLA (its step keeps TensorFlow's intra-op threads,
    /// see [`crate::train::step_threads`]).
    #[serde(default)]
    pub jit_compile: Option<bool>,
    /// The base/head cut of the feature cache, where the exporter recorded one.
    #[serde(default)]
    pub feature_cut: Option<crate::train::feature_cache::FeatureCut>,
    /// The frozen-base steps the exporter wrote (`train_step_from_<layer index>`), lowest cut
    /// first; empty for older exports.
    #[serde(default)]
    pub frozen_base_steps: Vec<crate::train::frozen_base_step::FrozenBaseStep>,
}

/// The input and output keys the record gives for one signature.
#[derive(Debug, Clone, Deserialize)]
pub struct SignatureRecord {
    /// Input keys.
    pub inputs: Vec<String>,
    /// Output keys.
    pub outputs: Vec<String>,
}

/// One model input of the record.
#[derive(Debug, Clone, Deserialize)]
pub struct InputRecord {
    /// The signature input key.
    pub key: String,
    /// TF dtype name (`float32`).
    pub dtype: String,
    /// Shape with `null` for unknown dims.
    pub shape: Vec<Option<u64>>,
    /// How raw data becomes the model input (absent: none).
    #[serde(default)]
    pub preprocessing: Option<serde_json::Value>,
}

/// One model output of the record.
#[derive(Debug, Clone, Deserialize)]
pub struct OutputRecord {
    /// The signature output key (`outputs`).
    pub key: String,
    /// TF dtype name.
    pub dtype: String,
    /// Shape with `null` for unknown dims.
    pub shape: Vec<Option<u64>>,
    /// `probabilities`, `logits` or `values`.
    pub kind: String,
}

/// A signature input the record describes (`labels`, `mask`).
#[derive(Debug, Clone, Deserialize)]
pub struct TensorRecord {
    /// The signature input key.
    pub key: String,
    /// TF dtype name.
    pub dtype: String,
    /// Shape with `null` for unknown dims.
    pub shape: Vec<Option<u64>>,
}

/// One mask entry.
#[derive(Debug, Clone, Deserialize)]
pub struct MaskVariable {
    /// Position in the mask.
    pub index: usize,
    /// Keras path (`conv2d_3/kernel`).
    pub name: String,
    /// Keras layer name.
    pub layer: String,
    /// Variable shape.
    pub shape: Vec<u64>,
    /// TF dtype name.
    pub dtype: String,
    /// Whether the default mask trains it.
    #[serde(default)]
    pub trainable_by_default: Option<bool>,
    /// Its key in `variables/variables.index`.
    pub checkpoint_key: String,
}

/// One saved variable that is not trained.
#[derive(Debug, Clone, Deserialize)]
pub struct StateVariable {
    /// Position in the list.
    pub index: usize,
    /// Keras path.
    pub name: String,
    /// Variable shape.
    pub shape: Vec<u64>,
    /// TF dtype name.
    pub dtype: String,
    /// Its key in `variables/variables.index`.
    pub checkpoint_key: String,
}

/// One optimizer variable.
#[derive(Debug, Clone, Deserialize)]
pub struct OptimizerVariable {
    /// Position in the list.
    pub index: usize,
    /// Name (`m/dense/kernel`).
    pub name: String,
    /// `iterations`, `momentum`, `m`, `v` or `step`.
    pub slot: String,
    /// The mask variable a slot belongs to (`None` for global ones).
    #[serde(default)]
    pub variable_index: Option<usize>,
    /// Variable shape.
    pub shape: Vec<u64>,
    /// TF dtype name.
    pub dtype: String,
    /// Its key in `variables/variables.index`.
    pub checkpoint_key: String,
}

/// One of Keras's `model.layers`: its name and the mask variables it holds (with the layers nested
/// in it); none for pooling, activation or dropout layers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LayerRecord {
    /// The layer name.
    pub name: String,
    /// Its entries in `mask_variables`.
    pub mask_indices: Vec<usize>,
}

/// One batch-norm layer of the record.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchNormLayer {
    /// The layer name.
    pub layer: String,
    /// Its entries in `mask_variables`.
    pub mask_indices: Vec<usize>,
    /// Its entries in `non_trainable_variables`.
    pub state_indices: Vec<usize>,
}

/// The learning-rate input.
#[derive(Debug, Clone, Deserialize)]
pub struct LearningRateRecord {
    /// The signature input key (`learning_rate`).
    pub key: String,
    /// TF dtype name.
    pub dtype: String,
    /// Shape (`[]`).
    pub shape: Vec<Option<u64>>,
    /// The rate the exporter suggests.
    pub default: f32,
}

/// Refuses a learning rate that is not a finite number above 0 (or, with `zero_allowed`, at
/// least 0: the floor of a schedule); `origin` names where it came from (`--lr`, `--min-lr`).
pub fn check_learning_rate(origin: &str, value: f32, zero_allowed: bool) -> Result<()> {
    let fine = value.is_finite() && (value > 0.0 || (zero_allowed && value == 0.0));
    if fine {
        return Ok(());
    }
    Err(Error::InvalidLearningRate {
        origin: origin.to_string(),
        value: value.to_string(),
        expected: if zero_allowed { "a finite number, 0 or more" } else { "a finite number greater than 0" }
            .to_string(),
    })
}

impl TrainContract {
    /// Reads the record of the SavedModel in `dir` and checks it against `meta_graph`'s
    /// signatures. A model without a `train_step` gets an error that says how to make one.
    pub fn read(dir: &Path, meta_graph: &MetaGraph) -> Result<TrainContract> {
        crate::model::handles::check_one_handle_per_variable(meta_graph)?;
        let keys = meta_graph.signature_keys();
        let has_train_step = meta_graph.signature(TRAIN_STEP).is_ok();
        let path = dir.join(RECORD_PATH);
        if !has_train_step || !path.is_file() {
            return Err(Error::NotTrainable {
                dir: dir.to_path_buf(),
                problem: if has_train_step {
                    format!("it has a `{TRAIN_STEP}` signature but no {RECORD_PATH} record")
                } else {
                    format!("it has no `{TRAIN_STEP}` signature (its signatures: {})", keys.join(", "))
                },
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let contract: TrainContract =
            serde_json::from_str(&text).map_err(|e| contract_error(&path, format!("does not parse ({e})")))?;
        contract.check(&path, meta_graph)?;
        let index = CheckpointIndex::read(&CheckpointIndex::path_in(dir))?;
        check::check_record(&contract, &path, meta_graph, &index)?;
        Ok(contract)
    }

    /// The input key of a single-input model.
    pub fn input_key(&self) -> &str {
        &self.inputs[0].key
    }

    /// The labels the loss takes (`None` for plain values, mean squared error).
    pub fn label_target(&self) -> Option<LabelTarget> {
        LabelTarget::for_loss(self.loss.get("name").and_then(serde_json::Value::as_str)?, &self.labels.shape)
    }

    /// The shape of one input example (without the batch axis), unknown dims as `None`.
    pub fn example_shape(&self) -> &[Option<u64>] {
        &self.inputs[0].shape[1..]
    }

    fn check(&self, path: &Path, meta_graph: &MetaGraph) -> Result<()> {
        let fail = |problem: String| Err(contract_error(path, problem));
        let version = if self.sample_weight.is_some() { CONTRACT_VERSION_SAMPLE_WEIGHT } else { CONTRACT_VERSION };
        if self.contract_version != version {
            return fail(format!(
                "is contract version {}, and this tfload reads version {CONTRACT_VERSION} (version {CONTRACT_VERSION_SAMPLE_WEIGHT} with a `sample_weight` record{})",
                self.contract_version,
                if self.sample_weight.is_some() { ", which this record has" } else { ", which this record lacks" }
            ));
        }
        if self.inputs.len() != 1 || self.inputs[0].shape.is_empty() {
            return fail("must describe exactly one batched model input (tfload trains single-input models)".into());
        }
        if self.default_mask.len() != self.mask_variables.len() {
            return fail(format!(
                "has a default mask of {} entries for {} mask variables",
                self.default_mask.len(),
                self.mask_variables.len()
            ));
        }
        if let Some((i, v)) = self.mask_variables.iter().enumerate().find(|(i, v)| v.index != *i) {
            return fail(format!("lists mask variable `{}` at position {i} with index {}", v.name, v.index));
        }
        let train = meta_graph.signature(TRAIN_STEP)?;
        let input_key = self.input_key();
        let mut wanted = vec![input_key, "labels", "mask", "learning_rate"];
        wanted.extend(self.sample_weight.as_ref().map(|_| "sample_weight"));
        wanted.sort();
        let mut have: Vec<&str> = train.inputs.iter().map(|s| s.key.as_str()).collect();
        have.sort();
        if have != wanted {
            return fail(format!(
                "says train_step takes {}, but the signature takes {}",
                wanted.join(", "),
                have.join(", ")
            ));
        }
        expect_spec(path, &train, "mask", DType::Float32, &Shape::Known(vec![Some(self.mask_variables.len() as u64)]))?;
        expect_spec(path, &train, "learning_rate", DType::Float32, &Shape::Known(vec![]))?;
        for signature in [Some(train), meta_graph.signature(EVAL_STEP).ok()].into_iter().flatten() {
            let mut outputs: Vec<&str> = signature.outputs.iter().map(|s| s.key.as_str()).collect();
            outputs.sort();
            let mut expected: Vec<&str> =
                std::iter::once("loss").chain(self.metrics.iter().map(String::as_str)).collect();
            expected.sort();
            if outputs != expected {
                return fail(format!(
                    "says {} outputs {}, but the signature outputs {}",
                    signature.key,
                    expected.join(", "),
                    outputs.join(", ")
                ));
            }
        }
        Ok(())
    }
}

fn expect_spec(path: &Path, signature: &Signature, key: &str, dtype: DType, shape: &Shape) -> Result<()> {
    let spec = signature.input(key).expect("checked above");
    if spec.dtype != dtype || spec.shape != *shape {
        return Err(contract_error(
            path,
            format!(
                "and the `{}` signature disagree on input `{key}`: the record needs {dtype} {shape}, the signature has {} {}",
                signature.key, spec.dtype, spec.shape
            ),
        ));
    }
    Ok(())
}

fn contract_error(path: &Path, problem: String) -> Error {
    Error::ContractMismatch { path: PathBuf::from(path), problem }
}

/// A record for unit tests: these inputs and mask variables, every other field empty, a learning
/// rate of 0.01 and the given default mask.
#[cfg(test)]
pub(crate) fn test_contract(
    inputs: serde_json::Value,
    mask_variables: Vec<serde_json::Value>,
    default_mask: &[f32],
) -> TrainContract {
    let tensor = serde_json::json!({"key": "k", "dtype": "float32", "shape": []});
    serde_json::from_value(serde_json::json!({
        "contract_version": 1, "signatures": {}, "inputs": inputs, "outputs": [], "labels": tensor, "mask": tensor,
        "class_names": null, "metrics": [], "mask_variables": mask_variables, "non_trainable_variables": [],
        "optimizer_variables": [], "default_mask": default_mask,
        "learning_rate": {"key": "learning_rate", "dtype": "float32", "shape": [], "default": 0.01},
        "optimizer": null, "loss": null
    }))
    .expect("a well-formed record")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("saved_models").join(name)
    }

    /// A copy of a committed model with its record edited.
    fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = dir.path().join(name);
        let from = committed(name);
        for sub in ["", "assets", "variables"] {
            std::fs::create_dir_all(copy.join(sub)).expect("mkdir");
            for entry in std::fs::read_dir(from.join(sub)).expect("read_dir").flatten().filter(|e| e.path().is_file()) {
                std::fs::copy(entry.path(), copy.join(sub).join(entry.file_name())).expect("copy");
            }
        }
        let path = copy.join(RECORD_PATH);
        let mut record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("record")).expect("json");
        edit(&mut record);
        std::fs::write(&path, record.to_string()).expect("write");
        (dir, copy)
    }

    fn read(dir: &Path) -> Result<TrainContract> {
        TrainContract::read(dir, &crate::model::saved_model::SavedModel::open(dir)?.meta_graph(&[SERVE_TAG])?)
    }

    fn field_of(error: Error) -> String {
        match error {
            Error::ContractField { field, .. } => field,
            other => panic!("expected a ContractField error, got {other}"),
        }
    }

    #[test]
    fn the_committed_records_pass() -> Result<()> {
        for name in ["mlp_digits", "cnn_digits"] {
            read(&committed(name))?;
        }
        Ok(())
    }

    #[test]
    fn each_edited_field_is_named() {
        type Edit = fn(&mut serde_json::Value);
        let cases: [(Edit, &str); 5] = [
            (|r| r["signatures"]["train_step"]["inputs"] = serde_json::json!([]), "signatures.train_step.inputs"),
            (|r| r["non_trainable_variables"][0]["shape"] = serde_json::json!([9]), "non_trainable_variables[0].shape"),
            (
                |r| {
                    r["optimizer_variables"][4]["checkpoint_key"] =
                        serde_json::json!("optimizer_variables/1/.ATTRIBUTES/VARIABLE_VALUE")
                },
                "optimizer_variables[4].checkpoint_key",
            ),
            (
                |r| r["batch_norm_layers"][0]["mask_indices"] = serde_json::json!([0]),
                "batch_norm_layers[0].mask_indices",
            ),
            (|r| r["outputs"][0]["kind"] = serde_json::json!("scores"), "outputs[0].kind"),
        ];
        for (edit, field) in cases {
            let (_dir, copy) = edited("cnn_digits", edit);
            assert_eq!(field_of(read(&copy).expect_err(field)), field);
        }
    }

    #[test]
    fn learning_rates_must_be_finite_and_positive() {
        assert!(check_learning_rate("--lr", 0.01, false).is_ok());
        assert!(check_learning_rate("--min-lr", 0.0, true).is_ok());
        for bad in [0.0, -0.1, f32::NAN, f32::INFINITY] {
            let error = check_learning_rate("--lr", bad, false).expect_err("refused").to_string();
            assert!(error.starts_with(&format!("--lr is {bad}")), "{error}");
        }
        assert!(check_learning_rate("--min-lr", -1.0, true).is_err());
    }
}
