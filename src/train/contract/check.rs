//! Checks every field of a contract record against the model it sits in: the signatures of
//! `saved_model.pb` and the entries of `variables/variables.index`. A record that passes
//! describes the model exactly, so nothing a step relies on can come from a stale or edited
//! record. Each failure is one [`Error::ContractField`] naming the field, the value found and
//! the value expected.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::checkpoint_index::{CheckpointEntry, CheckpointIndex};
use crate::model::meta_graph::MetaGraph;
use crate::model::signature::Signature;
use crate::tensor::shape::Shape;

use super::{TensorRecord, TrainContract, EVAL_STEP, TRAIN_STEP};

const SERVING_DEFAULT: &str = "serving_default";
const RESERVED_INPUTS: [&str; 3] = ["labels", "mask", "learning_rate"];
const LOSSES: [&str; 4] =
    ["sparse_categorical_crossentropy", "binary_crossentropy", "mean_squared_error", "categorical_crossentropy"];
const OUTPUT_KINDS: [&str; 3] = ["probabilities", "logits", "values"];
const TASKS: [&str; 3] = ["classification", "binary_classification", "regression"];
/// The suffix of a variable's value in a TF2 checkpoint index.
const VARIABLE_VALUE: &str = "/.ATTRIBUTES/VARIABLE_VALUE";

/// Checks `contract`, read from `path`, against `meta_graph`'s signatures and `index`.
pub(super) fn check_record(
    contract: &TrainContract,
    path: &Path,
    meta_graph: &MetaGraph,
    index: &CheckpointIndex,
) -> Result<()> {
    let check = Check { contract, path, index };
    let signatures = check.signatures(meta_graph)?;
    check.tensors(&signatures)?;
    check.loss_and_optimizer()?;
    check.classes()?;
    check.default_mask()?;
    check.variables()?;
    check.batch_norm()?;
    check.layers()?;
    Ok(())
}

/// The model's three contract signatures, found through the record's `signatures`.
struct Signatures {
    serve: Signature,
    train: Signature,
    eval: Option<Signature>,
}

struct Check<'a> {
    contract: &'a TrainContract,
    path: &'a Path,
    index: &'a CheckpointIndex,
}

impl Check<'_> {
    fn field(&self, field: impl Into<String>, found: impl Display, expected: impl Display) -> Error {
        Error::ContractField {
            path: self.path.to_path_buf(),
            field: field.into(),
            found: found.to_string(),
            expected: expected.to_string(),
        }
    }

    /// `signatures`: an entry for each contract signature, each naming exactly the model's keys.
    fn signatures(&self, meta_graph: &MetaGraph) -> Result<Signatures> {
        let records = &self.contract.signatures;
        for key in [SERVING_DEFAULT, TRAIN_STEP, EVAL_STEP] {
            if !records.contains_key(key) {
                let found = list(records.keys());
                return Err(self.field(
                    "signatures",
                    found,
                    format!("an entry for each of {SERVING_DEFAULT}, {TRAIN_STEP}, {EVAL_STEP}"),
                ));
            }
        }
        let mut model = BTreeMap::new();
        for (key, record) in records {
            let signature = meta_graph.signature(key).map_err(|_| {
                self.field(
                    format!("signatures.{key}"),
                    "present",
                    format!("a signature of the model, which has {}", meta_graph.signature_keys().join(", ")),
                )
            })?;
            let model_inputs: Vec<&str> = signature.inputs.iter().map(|s| s.key.as_str()).collect();
            let model_outputs: Vec<&str> = signature.outputs.iter().map(|s| s.key.as_str()).collect();
            self.same_keys(&format!("signatures.{key}.inputs"), &record.inputs, &model_inputs)?;
            self.same_keys(&format!("signatures.{key}.outputs"), &record.outputs, &model_outputs)?;
            model.insert(key.clone(), signature);
        }
        Ok(Signatures {
            serve: model.remove(SERVING_DEFAULT).expect("checked above"),
            train: model.remove(TRAIN_STEP).expect("checked above"),
            eval: model.remove(EVAL_STEP),
        })
    }

    fn same_keys(&self, field: &str, record: &[String], model: &[&str]) -> Result<()> {
        let mut found: Vec<&str> = record.iter().map(String::as_str).collect();
        found.sort();
        let mut expected = model.to_vec();
        expected.sort();
        if found == expected {
            Ok(())
        } else {
            Err(self.field(field, list(&found), format!("the signature's keys {}", list(&expected))))
        }
    }

    /// `inputs`, `outputs`, `labels`, `mask`, `learning_rate`: keys, dtypes and shapes of the
    /// signature tensors they describe.
    fn tensors(&self, signatures: &Signatures) -> Result<()> {
        let contract = self.contract;
        let steps: Vec<&Signature> = std::iter::once(&signatures.train).chain(signatures.eval.as_ref()).collect();
        let input = &contract.inputs[0];
        if RESERVED_INPUTS.contains(&input.key.as_str()) {
            return Err(self.field(
                "inputs[0].key",
                quoted(&input.key),
                format!("a key other than the reserved {}", RESERVED_INPUTS.join(", ")),
            ));
        }
        let with_serve: Vec<&Signature> = std::iter::once(&signatures.serve).chain(steps.iter().copied()).collect();
        let record = TensorRecord { key: input.key.clone(), dtype: input.dtype.clone(), shape: input.shape.clone() };
        self.tensor("inputs[0]", &record, &input.key, &with_serve, true)?;
        self.preprocessing(input)?;
        if contract.outputs.len() != 1 {
            return Err(self.field(
                "outputs",
                format!("{} entries", contract.outputs.len()),
                "one entry, the `outputs` output of serving_default",
            ));
        }
        let output = &contract.outputs[0];
        let record = TensorRecord { key: output.key.clone(), dtype: output.dtype.clone(), shape: output.shape.clone() };
        self.tensor("outputs[0]", &record, "outputs", &[&signatures.serve], false)?;
        if !OUTPUT_KINDS.contains(&output.kind.as_str()) {
            return Err(self.field(
                "outputs[0].kind",
                quoted(&output.kind),
                format!("one of {}", OUTPUT_KINDS.join(", ")),
            ));
        }
        self.tensor("labels", &contract.labels, "labels", &steps, true)?;
        if let Some(weights) = &contract.sample_weight {
            self.fixed("sample_weight", weights, &[None])?;
            self.tensor("sample_weight", weights, "sample_weight", &steps, true)?;
        }
        let mask_shape = vec![Some(contract.mask_variables.len() as u64)];
        self.fixed("mask", &contract.mask, &mask_shape)?;
        self.tensor("mask", &contract.mask, "mask", &[&signatures.train], true)?;
        let rate = &contract.learning_rate;
        let rate_record = TensorRecord { key: rate.key.clone(), dtype: rate.dtype.clone(), shape: rate.shape.clone() };
        self.fixed("learning_rate", &rate_record, &[])?;
        self.tensor("learning_rate", &rate_record, "learning_rate", &[&signatures.train], true)?;
        if !(rate.default.is_finite() && rate.default > 0.0) {
            return Err(self.field("learning_rate.default", rate.default, "a finite number greater than 0"));
        }
        for signature in &steps {
            self.scalar_outputs(signature)?;
        }
        Ok(())
    }

    /// A record tensor whose dtype is float32 and whose shape the contract fixes.
    fn fixed(&self, field: &str, record: &TensorRecord, shape: &[Option<u64>]) -> Result<()> {
        if record.dtype != "float32" {
            return Err(self.field(format!("{field}.dtype"), quoted(&record.dtype), "\"float32\""));
        }
        if record.shape != shape {
            return Err(self.field(
                format!("{field}.shape"),
                dims(&record.shape),
                format!("{} (one entry per mask variable for `mask`, a scalar for `learning_rate`)", dims(shape)),
            ));
        }
        Ok(())
    }

    /// A record tensor against the input (or output) `key` of each of `signatures`.
    fn tensor(
        &self,
        field: &str,
        record: &TensorRecord,
        key: &str,
        signatures: &[&Signature],
        input: bool,
    ) -> Result<()> {
        if record.key != key {
            return Err(self.field(format!("{field}.key"), quoted(&record.key), quoted(key)));
        }
        for signature in signatures {
            let spec = if input { signature.input(key) } else { signature.output(key) };
            let what = if input { "input" } else { "output" };
            let Some(spec) = spec else {
                return Err(self.field(
                    format!("{field}.key"),
                    quoted(key),
                    format!("an {what} of `{}`", signature.key),
                ));
            };
            if record.dtype != spec.dtype.name() {
                return Err(self.field(
                    format!("{field}.dtype"),
                    quoted(&record.dtype),
                    format!("\"{}\", the dtype of `{}` {what} `{key}`", spec.dtype.name(), signature.key),
                ));
            }
            if Shape::Known(record.shape.clone()) != spec.shape {
                return Err(self.field(
                    format!("{field}.shape"),
                    dims(&record.shape),
                    format!("{}, the shape of `{}` {what} `{key}`", spec.shape, signature.key),
                ));
            }
        }
        Ok(())
    }

    /// Loss and metric outputs of a step are float32 scalars.
    fn scalar_outputs(&self, signature: &Signature) -> Result<()> {
        for spec in &signature.outputs {
            if spec.dtype.name() != "float32" || spec.shape != Shape::Known(vec![]) {
                let field = if spec.key == "loss" { "loss".to_string() } else { "metrics".to_string() };
                return Err(self.field(
                    field,
                    format!("`{}` ({} {} in `{}`)", spec.key, spec.dtype, spec.shape, signature.key),
                    "a float32 scalar output",
                ));
            }
        }
        Ok(())
    }

    /// `inputs[0].preprocessing`: scale and offset are lists of 1 or channel-count numbers.
    fn preprocessing(&self, input: &super::InputRecord) -> Result<()> {
        let Some(preprocessing) = &input.preprocessing else {
            return Ok(());
        };
        let Some(object) = preprocessing.as_object() else {
            return Err(self.field("inputs[0].preprocessing", preprocessing, "an object (mode, scale, offset, ...)"));
        };
        let channels = input.shape.last().copied().flatten();
        for name in ["scale", "offset"] {
            let Some(value) = object.get(name) else { continue };
            let numbers = value.as_array().filter(|a| a.iter().all(serde_json::Value::is_number));
            let fits = numbers.is_some_and(|a| a.len() == 1 || channels.is_none_or(|c| a.len() as u64 == c));
            if !fits {
                let expected =
                    format!("a list of 1{} numbers", channels.map(|c| format!(" or {c}")).unwrap_or_default());
                return Err(self.field(format!("inputs[0].preprocessing.{name}"), value, expected));
            }
        }
        Ok(())
    }

    /// `loss.name`, `optimizer.name` and `optimizer.learning_rate`, `task`, `batch_norm_policy`.
    fn loss_and_optimizer(&self) -> Result<()> {
        let contract = self.contract;
        let loss = contract.loss.get("name").and_then(serde_json::Value::as_str);
        if !loss.is_some_and(|name| LOSSES.contains(&name)) {
            return Err(self.field(
                "loss.name",
                json_or_missing(contract.loss.get("name")),
                format!("one of {}", LOSSES.join(", ")),
            ));
        }
        let optimizer = contract.optimizer.get("name").and_then(serde_json::Value::as_str);
        if optimizer.is_none_or(str::is_empty) {
            return Err(self.field(
                "optimizer.name",
                json_or_missing(contract.optimizer.get("name")),
                "the optimizer's name (sgd, adam, adamw, ...)",
            ));
        }
        if let Some(rate) = contract.optimizer.get("learning_rate") {
            if !rate.as_f64().is_some_and(|r| r.is_finite() && r > 0.0) {
                return Err(self.field("optimizer.learning_rate", rate, "a finite number greater than 0"));
            }
        }
        if let Some(task) = contract.task.as_deref().filter(|t| !TASKS.contains(t)) {
            return Err(self.field("task", quoted(task), format!("one of {}", TASKS.join(", "))));
        }
        if let Some(policy) = contract.batch_norm_policy.as_deref().filter(|p| *p != "per_layer_mask") {
            return Err(self.field("batch_norm_policy", quoted(policy), "\"per_layer_mask\""));
        }
        Ok(())
    }

    /// `class_names` and `num_classes` agree with each other and, for sparse categorical
    /// cross-entropy, with the output's last dimension.
    fn classes(&self) -> Result<()> {
        let contract = self.contract;
        // Both cross-entropies over classes have one output unit per class.
        let loss = contract.loss.get("name").and_then(serde_json::Value::as_str);
        let sparse = loss == Some(LOSSES[0]) || loss == Some(LOSSES[3]);
        let units = contract.outputs[0].shape.last().copied().flatten();
        if let Some(n) = contract.num_classes {
            if n == 0 || (sparse && units.is_some_and(|u| u != n)) {
                let expected = units
                    .filter(|_| sparse)
                    .map_or("at least 1".to_string(), |u| format!("{u}, the last dimension of the output"));
                return Err(self.field("num_classes", n, expected));
            }
        }
        if let Some(names) = &contract.class_names {
            let wanted = contract.num_classes.or(units.filter(|_| sparse));
            if let Some(wanted) = wanted.filter(|w| *w != names.len() as u64) {
                return Err(self.field(
                    "class_names",
                    format!("{} names", names.len()),
                    format!("{wanted} names, one per class"),
                ));
            }
        }
        Ok(())
    }

    /// `default_mask` holds 0 or 1 per mask variable, agreeing with `trainable_by_default`.
    fn default_mask(&self) -> Result<()> {
        for (i, (value, variable)) in self.contract.default_mask.iter().zip(&self.contract.mask_variables).enumerate() {
            if *value != 0.0 && *value != 1.0 {
                return Err(self.field(format!("default_mask[{i}]"), value, "0 (frozen) or 1 (trained)"));
            }
            if let Some(trainable) = variable.trainable_by_default.filter(|t| *t != (*value > 0.0)) {
                return Err(self.field(
                    format!("mask_variables[{i}].trainable_by_default"),
                    trainable,
                    format!("{}, as default_mask[{i}] = {value} says", !trainable),
                ));
            }
        }
        Ok(())
    }

    /// Every listed variable exists in the checkpoint with the recorded dtype and shape, no key
    /// is listed twice, and every variable the checkpoint saves is listed.
    fn variables(&self) -> Result<()> {
        let contract = self.contract;
        let mut listed: BTreeMap<&str, String> = BTreeMap::new();
        let rows = contract
            .mask_variables
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("mask_variables[{i}]"), i, v.index, &v.name, &v.shape, &v.dtype, &v.checkpoint_key))
            .chain(contract.non_trainable_variables.iter().enumerate().map(|(i, v)| {
                (format!("non_trainable_variables[{i}]"), i, v.index, &v.name, &v.shape, &v.dtype, &v.checkpoint_key)
            }))
            .chain(contract.optimizer_variables.iter().enumerate().map(|(i, v)| {
                (format!("optimizer_variables[{i}]"), i, v.index, &v.name, &v.shape, &v.dtype, &v.checkpoint_key)
            }));
        for (field, position, index, name, shape, dtype, key) in rows {
            if index != position {
                return Err(self.field(format!("{field}.index"), index, position));
            }
            if name.is_empty() {
                return Err(self.field(format!("{field}.name"), "\"\"", "the variable's name"));
            }
            if let Some(other) = listed.insert(key, field.clone()) {
                return Err(self.field(
                    format!("{field}.checkpoint_key"),
                    format!("{}, also the key of {other}", quoted(key)),
                    "a key of its own",
                ));
            }
            let entry = self.entry(&field, key)?;
            self.saved_as(&field, dtype, shape, key, entry)?;
        }
        self.optimizer_slots()?;
        let unlisted: Vec<&str> = self
            .index
            .entries()
            .map(|(key, _)| key)
            .filter(|key| key.ends_with(VARIABLE_VALUE) && !listed.contains_key(key))
            .collect();
        if let Some(first) = unlisted.first() {
            let group = group_of(first);
            let count = listed.len() + unlisted.len();
            return Err(self.field(
                group,
                format!(
                    "missing {} of the checkpoint's {count} variables ({})",
                    unlisted.len(),
                    list(unlisted.iter().take(4))
                ),
                format!("an entry for every variable saved in {}", self.index.path().display()),
            ));
        }
        Ok(())
    }

    fn entry(&self, field: &str, key: &str) -> Result<&CheckpointEntry> {
        self.index.get(key).ok_or_else(|| {
            let near: Vec<&str> =
                self.index.entries().map(|(k, _)| k).filter(|k| k.ends_with(VARIABLE_VALUE)).take(3).collect();
            self.field(
                format!("{field}.checkpoint_key"),
                quoted(key),
                format!("a key of {} (such as {})", self.index.path().display(), list(&near)),
            )
        })
    }

    fn saved_as(&self, field: &str, dtype: &str, shape: &[u64], key: &str, entry: &CheckpointEntry) -> Result<()> {
        if dtype != entry.dtype.name() {
            return Err(self.field(
                format!("{field}.dtype"),
                quoted(dtype),
                format!("\"{}\", the dtype the checkpoint saves under `{key}`", entry.dtype.name()),
            ));
        }
        let record_shape = Shape::Known(shape.iter().map(|d| Some(*d)).collect());
        if record_shape != entry.shape {
            return Err(self.field(
                format!("{field}.shape"),
                record_shape,
                format!("{}, the shape the checkpoint saves under `{key}`", entry.shape),
            ));
        }
        Ok(())
    }

    /// Optimizer slots point at a mask variable, and moment slots have its shape.
    fn optimizer_slots(&self) -> Result<()> {
        let contract = self.contract;
        for (i, slot) in contract.optimizer_variables.iter().enumerate() {
            if slot.slot.is_empty() {
                return Err(self.field(
                    format!("optimizer_variables[{i}].slot"),
                    "\"\"",
                    "iterations, momentum, m, v, step, ...",
                ));
            }
            let Some(j) = slot.variable_index else { continue };
            let Some(variable) = contract.mask_variables.get(j) else {
                return Err(self.field(
                    format!("optimizer_variables[{i}].variable_index"),
                    j,
                    format!("an index into mask_variables (0..{})", contract.mask_variables.len()),
                ));
            };
            if ["momentum", "m", "v"].contains(&slot.slot.as_str()) && slot.shape != variable.shape {
                return Err(self.field(
                    format!("optimizer_variables[{i}].shape"),
                    dims_known(&slot.shape),
                    format!("{}, the shape of mask_variables[{j}] `{}`", dims_known(&variable.shape), variable.name),
                ));
            }
        }
        Ok(())
    }

    /// `batch_norm_layers` name layers of the mask and indices in range.
    fn batch_norm(&self) -> Result<()> {
        let contract = self.contract;
        for (i, layer) in contract.batch_norm_layers.iter().enumerate() {
            if let Some(&m) = layer
                .mask_indices
                .iter()
                .find(|&&m| contract.mask_variables.get(m).is_none_or(|v| v.layer != layer.layer))
            {
                return Err(self.field(
                    format!("batch_norm_layers[{i}].mask_indices"),
                    m,
                    format!("indices of mask_variables of layer `{}`", layer.layer),
                ));
            }
            if let Some(&s) = layer.state_indices.iter().find(|&&s| s >= contract.non_trainable_variables.len()) {
                return Err(self.field(
                    format!("batch_norm_layers[{i}].state_indices"),
                    s,
                    format!("indices into non_trainable_variables (0..{})", contract.non_trainable_variables.len()),
                ));
            }
        }
        Ok(())
    }
}

impl Check<'_> {
    /// `layers`: unique names, mask indices in range and in at most one layer.
    fn layers(&self) -> Result<()> {
        let Some(layers) = &self.contract.layers else {
            return Ok(());
        };
        let mut owner = vec![None; self.contract.mask_variables.len()];
        for (i, layer) in layers.iter().enumerate() {
            if layers[..i].iter().any(|l| l.name == layer.name) {
                return Err(self.field(format!("layers[{i}].name"), &layer.name, "a layer name not listed before"));
            }
            for &m in &layer.mask_indices {
                match owner.get_mut(m) {
                    Some(slot @ None) => *slot = Some(i),
                    _ => {
                        return Err(self.field(
                            format!("layers[{i}].mask_indices"),
                            m,
                            format!(
                                "indices into mask_variables (0..{}), each in one layer",
                                self.contract.mask_variables.len()
                            ),
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// The record list a checkpoint key belongs in, by the exporter's key layout.
fn group_of(key: &str) -> &'static str {
    if key.starts_with("optimizer_variables/") {
        "optimizer_variables"
    } else if key.starts_with("state_variables/") {
        "non_trainable_variables"
    } else {
        "mask_variables"
    }
}

fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn quoted(text: &str) -> String {
    format!("\"{text}\"")
}

fn dims(shape: &[Option<u64>]) -> String {
    list(shape.iter().map(|d| d.map_or("null".to_string(), |d| d.to_string())))
}

fn dims_known(shape: &[u64]) -> String {
    list(shape)
}

fn json_or_missing(value: Option<&serde_json::Value>) -> String {
    value.map_or("missing".to_string(), serde_json::Value::to_string)
}
