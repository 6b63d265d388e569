//! Importing Keras HDF5 weights into a SavedModel without a TensorFlow session: match the file's
//! weights to the model's variables ([`plan`]), then write a new SavedModel whose checkpoint holds
//! the imported values ([`ImportPlan::apply`]). The input model is never modified.
//!
//! Matching follows Keras's `load_weights(..., by_name=True)`: a layer of the file goes to the
//! model's layer of the same name (a variable `head/kernel` belongs to layer `head`), and within
//! a layer the weights pair up in Keras's order, trainable variables first. Layers of the file
//! the model lacks are ignored, and the model's variables no layer of the file names (optimizer
//! slots, step counters) keep their values; a model layer with trainable variables that the file
//! lacks (a truncated file, another model's file) is an error unless `skip_mismatch` keeps it. Unlike Keras, which skips single
//! weights, `skip_mismatch` leaves a whole layer untouched when any of its shapes differ: half a
//! layer from another model is never what is wanted.
//!
//! ```no_run
//! # fn main() -> Result<(), tfload::Error> {
//! use tfload::import_weights::{plan, ImportOptions};
//!
//! let options = ImportOptions { skip_mismatch: true, ..ImportOptions::default() };
//! let plan = plan("saved_models/cnn_digits", "pretrained.weights.h5", &options)?;
//! for row in plan.rows() {
//!     println!("{} -> {:?}: {}", row.layer, row.variable, row.action);
//! }
//! plan.apply("fine_tune_start", false)?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::checkpoint_writer::CheckpointWriter;
use crate::formats::keras_h5::{H5Layer, H5Weight, KerasWeights};
use crate::model::meta_graph::MetaGraph;
use crate::model::saved_model::SavedModel;
use crate::model::variables::VariableInfo;
use crate::tensor::dtype::DType;
use crate::tensor::shape::Shape;
use crate::tensor::TensorData;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Tag set of the MetaGraph whose variables are matched.
    pub tags: Vec<String>,
    /// Leave layers whose weight count or shapes differ untouched instead of failing.
    pub skip_mismatch: bool,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions { tags: vec![crate::model::record::SERVE_TAG.to_string()], skip_mismatch: false }
    }
}

/// What happens to one weight or variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The file's value replaces the variable's.
    Import,
    /// Kept: a weight of this layer has another shape in the file (skipped with `skip_mismatch`).
    KeepShapeMismatch,
    /// Kept: the layer has another number of weights in the file (skipped with `skip_mismatch`).
    KeepCountMismatch,
    /// Kept: the file has no layer of this name.
    KeepNotInFile,
    /// A weight of this layer has another shape in the file: the import fails (no `skip_mismatch`).
    ShapeMismatch,
    /// The layer has another number of weights in the file: the import fails (no `skip_mismatch`).
    CountMismatch,
    /// A weight of the file whose layer the model lacks.
    IgnoreNotInModel,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Import => "import",
            Action::KeepShapeMismatch => "keep (shape differs)",
            Action::KeepCountMismatch => "keep (weight count differs)",
            Action::KeepNotInFile => "keep (not in file)",
            Action::ShapeMismatch => "MISMATCH (shape differs)",
            Action::CountMismatch => "MISMATCH (weight count differs)",
            Action::IgnoreNotInModel => "ignore (no such layer in model)",
        })
    }
}

/// One line of the mapping: a weight of the file, a variable of the model, or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingRow {
    /// The layer name.
    pub layer: String,
    /// The weight's dataset path in the HDF5 file.
    pub h5_weight: Option<String>,
    /// The weight's shape in the file.
    pub h5_shape: Option<Vec<usize>>,
    /// The weight's dtype in the file.
    pub h5_dtype: Option<DType>,
    /// The variable's name in the model.
    pub variable: Option<String>,
    /// The variable's shape.
    pub variable_shape: Option<Shape>,
    /// The variable's dtype.
    pub variable_dtype: Option<DType>,
    /// What happens.
    pub action: Action,
    #[serde(skip)]
    checkpoint_key: Option<String>,
    #[serde(skip)]
    weight: Option<H5Weight>,
}

/// The matched weights of a file and variables of a model, ready to be written.
#[derive(Debug)]
pub struct ImportPlan {
    model_dir: PathBuf,
    weights: KerasWeights,
    rows: Vec<MappingRow>,
    /// Layers of the model with trainable variables that the file holds no weights for.
    missing_layers: Vec<String>,
    /// Why the import cannot go ahead (mismatches without `skip_mismatch`, nothing to import).
    problems: Vec<String>,
}

/// Matches the weights of the Keras HDF5 file `h5` to the variables of the SavedModel at
/// `model_dir`. Fails when the files cannot be read or no layer of the file matches one of the
/// model; a plan whose layers do not fit is returned (to be shown) and refused by
/// [`ImportPlan::check`] and [`ImportPlan::apply`].
pub fn plan(model_dir: impl AsRef<Path>, h5: impl AsRef<Path>, options: &ImportOptions) -> Result<ImportPlan> {
    let model = SavedModel::open(model_dir.as_ref())?;
    plan_for(&model.meta_graph(&options.tags)?, h5, options)
}

/// [`plan`] for the model whose MetaGraph the caller has already read (`options.tags` is not
/// used: the MetaGraph is the one matched).
pub fn plan_for(meta_graph: &MetaGraph, h5: impl AsRef<Path>, options: &ImportOptions) -> Result<ImportPlan> {
    let model_dir = meta_graph.dir();
    let variables = meta_graph.variables()?;
    let weights = KerasWeights::open(h5.as_ref())?;
    let model_layers = group_by_layer(&variables);
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut matched_layers = Vec::new();
    for layer in weights.layers().iter().filter(|layer| !layer.weights.is_empty()) {
        let Some((_, layer_variables)) = model_layers.iter().find(|(name, _)| *name == layer.name) else {
            rows.extend(layer.weights.iter().map(|w| row(&layer.name, Some(w), None, Action::IgnoreNotInModel)));
            continue;
        };
        matched_layers.push(layer.name.as_str());
        let action = compare_layer(layer, layer_variables).unwrap_or_else(|problem| {
            if !options.skip_mismatch {
                problems.push(problem);
            }
            mismatch_kind(layer, layer_variables, options.skip_mismatch)
        });
        rows.extend(pair_rows(layer, layer_variables, action));
    }
    let mut missing_layers = Vec::new();
    for (name, layer_variables) in &model_layers {
        if !matched_layers.contains(name) {
            rows.extend(layer_variables.iter().map(|v| row(name, None, Some(v), Action::KeepNotInFile)));
            if layer_variables.iter().any(|v| v.trainable) {
                missing_layers.push(name.to_string());
            }
        }
    }
    if matched_layers.is_empty() {
        return Err(no_matching_layers(&weights, model_dir, &model_layers));
    }
    if !missing_layers.is_empty() && !options.skip_mismatch {
        problems.push(missing_layers_problem(&missing_layers, &model_layers, &weights, &rows));
    }
    // The likely cause first, when the layers do not fit.
    if let Some(problem) = duplicated_variables(&variables).filter(|_| !problems.is_empty()) {
        problems.insert(0, problem);
    }
    if problems.is_empty() && !rows.iter().any(|r| r.action == Action::Import) {
        problems.push(format!(
            "every layer the two share ({}) differs in weight count or shape, so nothing would be imported",
            matched_layers.join(", ")
        ));
    }
    Ok(ImportPlan { model_dir: model_dir.to_path_buf(), weights, rows, missing_layers, problems })
}

impl ImportPlan {
    /// The SavedModel the plan imports into.
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// The weights file the plan imports from.
    pub fn weights(&self) -> &KerasWeights {
        &self.weights
    }

    /// The whole mapping: the file's weights in file order, then the model's other variables.
    pub fn rows(&self) -> &[MappingRow] {
        &self.rows
    }

    /// How many variables get a new value.
    pub fn imported(&self) -> usize {
        self.rows.iter().filter(|r| r.action == Action::Import).count()
    }

    /// Layers present in both but left untouched because they do not fit (with `skip_mismatch`).
    pub fn skipped_layers(&self) -> Vec<&str> {
        let skipped = |r: &&MappingRow| matches!(r.action, Action::KeepShapeMismatch | Action::KeepCountMismatch);
        let mut layers: Vec<&str> = self.rows.iter().filter(skipped).map(|r| r.layer.as_str()).collect();
        layers.dedup();
        layers
    }

    /// Layers of the model (with trainable variables) that the file has no weights for: kept as
    /// the model has them with `skip_mismatch`, an error without.
    pub fn missing_layers(&self) -> &[String] {
        &self.missing_layers
    }

    /// Fails if the import cannot go ahead: a layer does not fit (without `skip_mismatch`), or
    /// nothing would be imported. The error names every layer at fault.
    pub fn check(&self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        let mut problem = self.problems.iter().take(SHOWN_PROBLEMS).cloned().collect::<Vec<_>>().join("; ");
        if self.problems.len() > SHOWN_PROBLEMS {
            let more = self.problems.len() - SHOWN_PROBLEMS;
            problem.push_str(&format!("; and {more} more problem(s) (--dry-run shows the whole mapping)"));
        }
        Err(Error::WeightMismatch { h5: self.weights.path().to_path_buf(), model: self.model_dir.clone(), problem })
    }

    /// Writes the model with the imported weights as a new SavedModel at `out`, atomically (built
    /// beside it, then renamed); nothing is written if [`ImportPlan::check`] fails. An existing
    /// `out` is refused unless `overwrite`.
    pub fn apply(&self, out: impl AsRef<Path>, overwrite: bool) -> Result<()> {
        self.check()?;
        let mut writer = CheckpointWriter::from_existing(&self.model_dir)?;
        for row in self.rows.iter().filter(|r| r.action == Action::Import) {
            let (Some(weight), Some(key), Some(dtype)) = (&row.weight, &row.checkpoint_key, row.variable_dtype) else {
                continue;
            };
            let value = self.weights.read(weight)?;
            writer.replace(key, &cast_float(value, dtype))?;
        }
        writer.write_saved_model(&self.model_dir, out.as_ref(), overwrite)
    }
}

/// The model's variables by layer (the name up to its last `/`), layers in first-seen order,
/// each layer's variables in Keras's weight order: trainable first, then the others.
fn group_by_layer(variables: &[VariableInfo]) -> Vec<(&str, Vec<&VariableInfo>)> {
    let mut layers: Vec<(&str, Vec<&VariableInfo>)> = Vec::new();
    for variable in variables {
        let name = variable.name.strip_suffix(":0").unwrap_or(&variable.name);
        let Some((layer, _)) = name.rsplit_once('/') else {
            continue;
        };
        match layers.iter_mut().find(|(name, _)| *name == layer) {
            Some((_, members)) => members.push(variable),
            None => layers.push((layer, vec![variable])),
        }
    }
    for (_, members) in &mut layers {
        members.sort_by_key(|v| !v.trainable);
    }
    layers
}

/// `Ok(Action::Import)` when the layer fits, else what does not fit.
fn compare_layer(layer: &H5Layer, variables: &[&VariableInfo]) -> std::result::Result<Action, String> {
    if layer.weights.len() != variables.len() {
        return Err(format!(
            "layer `{}` has {} weight(s) in the file ({}) but {} variable(s) in the model ({})",
            layer.name,
            layer.weights.len(),
            list(layer.weights.iter().map(|w| format!("{} {:?}", w.dataset, w.shape))),
            variables.len(),
            list(variables.iter().map(|v| format!("{} {}", v.name, v.shape))),
        ));
    }
    for (weight, variable) in layer.weights.iter().zip(variables) {
        if !same_shape(&weight.shape, &variable.shape) {
            return Err(format!(
                "layer `{}`: weight {} has shape {:?} in the file, variable {} has shape {}",
                layer.name, weight.dataset, weight.shape, variable.name, variable.shape
            ));
        }
        if !convertible(weight.dtype, variable.dtype) {
            return Err(format!(
                "layer `{}`: weight {} is {} in the file, variable {} is {}",
                layer.name, weight.dataset, weight.dtype, variable.name, variable.dtype
            ));
        }
    }
    Ok(Action::Import)
}

fn mismatch_kind(layer: &H5Layer, variables: &[&VariableInfo], skip: bool) -> Action {
    match (layer.weights.len() == variables.len(), skip) {
        (true, true) => Action::KeepShapeMismatch,
        (false, true) => Action::KeepCountMismatch,
        (true, false) => Action::ShapeMismatch,
        (false, false) => Action::CountMismatch,
    }
}

/// One row per position of the longer of the two lists.
fn pair_rows(layer: &H5Layer, variables: &[&VariableInfo], action: Action) -> Vec<MappingRow> {
    (0..layer.weights.len().max(variables.len()))
        .map(|i| row(&layer.name, layer.weights.get(i), variables.get(i).copied(), action))
        .collect()
}

fn row(layer: &str, weight: Option<&H5Weight>, variable: Option<&VariableInfo>, action: Action) -> MappingRow {
    MappingRow {
        layer: layer.to_string(),
        h5_weight: weight.map(|w| w.dataset.clone()),
        h5_shape: weight.map(|w| w.shape.clone()),
        h5_dtype: weight.map(|w| w.dtype),
        variable: variable.map(|v| v.name.clone()),
        variable_shape: variable.map(|v| v.shape.clone()),
        variable_dtype: variable.map(|v| v.dtype),
        action,
        checkpoint_key: variable.map(|v| v.checkpoint_key.clone()),
        weight: weight.cloned(),
    }
}

/// The error for model layers the file has no weights for: which, the file's layers no model
/// layer takes (the same layers under other names, often: a new head called `head` where the
/// file says `dense_1`), and the two ways out.
fn missing_layers_problem(
    missing: &[String],
    model_layers: &[(&str, Vec<&VariableInfo>)],
    weights: &KerasWeights,
    rows: &[MappingRow],
) -> String {
    let mut unused: Vec<&str> =
        rows.iter().filter(|r| r.action == Action::IgnoreNotInModel).map(|r| r.layer.as_str()).collect();
    unused.dedup();
    let mut problem = format!(
        "the file holds no weights for {} layer(s) of the model ({})",
        missing.len(),
        summarize(missing, SHOWN_NAMES)
    );
    if unused.is_empty() {
        problem.push_str(
            ": it may be truncated, or saved from another model. Pass --skip-mismatch to keep those layers' values",
        );
        return problem;
    }
    let names = renaming(missing, model_layers, weights, &unused)
        .map_or_else(|| "NAME,...".to_string(), |names| names.join(","));
    problem.push_str(&format!(
        ", and its layer(s) {} match no layer of the model. If they are the same layers under other names, export the model with the file's names (tfload-export --head-names {names} names a new head's Dense layers); or pass --skip-mismatch to keep those layers' values",
        summarize(&unused, SHOWN_NAMES)
    ));
    problem
}

/// For each missing model layer, the one unused file layer whose weights have its variables'
/// shapes, in the model's order; `None` unless every missing layer has exactly one.
fn renaming<'a>(
    missing: &[String],
    model_layers: &[(&str, Vec<&VariableInfo>)],
    weights: &'a KerasWeights,
    unused: &[&str],
) -> Option<Vec<&'a str>> {
    let mut chosen: Vec<&str> = Vec::new();
    for name in missing {
        let (_, variables) = model_layers.iter().find(|(layer, _)| layer == name)?;
        let fits = |layer: &&H5Layer| {
            unused.contains(&layer.name.as_str())
                && !chosen.contains(&layer.name.as_str())
                && layer.weights.len() == variables.len()
                && layer.weights.iter().zip(variables).all(|(w, v)| same_shape(&w.shape, &v.shape))
        };
        let mut candidates = weights.layers().iter().filter(fits);
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => chosen.push(only.name.as_str()),
            _ => return None,
        }
    }
    Some(chosen)
}

fn no_matching_layers(weights: &KerasWeights, model_dir: &Path, model_layers: &[(&str, Vec<&VariableInfo>)]) -> Error {
    let with_weights = weights.layers().iter().filter(|l| !l.weights.is_empty());
    Error::NoMatchingLayers {
        h5: weights.path().to_path_buf(),
        model: model_dir.to_path_buf(),
        h5_layers: summarize(&with_weights.map(|l| l.name.as_str()).collect::<Vec<_>>(), SHOWN_NAMES),
        model_layers: summarize(&model_layers.iter().map(|(name, _)| *name).collect::<Vec<_>>(), SHOWN_NAMES),
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Names shown before "and N more" in messages and summaries.
pub const SHOWN_NAMES: usize = 8;
/// Problems an import error shows before "and N more".
const SHOWN_PROBLEMS: usize = 2;

/// The first `shown` names joined by ", ", then "and N more" when there are more: a message that
/// stays readable for a model of hundreds of layers.
pub fn summarize<S: AsRef<str>>(names: &[S], shown: usize) -> String {
    let head = names.iter().take(shown).map(AsRef::as_ref).collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(shown) {
        0 => head,
        more => format!("{head} and {more} more"),
    }
}

/// Why weights cannot be matched when the model holds variables under the same name twice, as
/// Keras 3's `model.export()` writes them (two resource handles per variable).
fn duplicated_variables(variables: &[VariableInfo]) -> Option<String> {
    let mut names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
    names.sort_unstable();
    let mut twice: Vec<&str> = names.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    twice.dedup();
    if twice.is_empty() {
        return None;
    }
    Some(format!(
        "the model holds {} variable name(s) twice ({}), as Keras 3's `model.export()` writes them, so its \
         layers cannot be matched one to one; export the Keras model with tfload-export and \
         import into that",
        twice.len(),
        summarize(&twice, SHOWN_NAMES)
    ))
}

fn same_shape(h5: &[usize], variable: &Shape) -> bool {
    let dims: Vec<Option<u64>> = h5.iter().map(|&d| Some(d as u64)).collect();
    variable.dims() == Some(dims.as_slice())
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::Float16 | DType::Float32 | DType::Float64)
}

/// Keras casts a loaded value to the variable's dtype; tfload does so between float types only.
fn convertible(from: DType, to: DType) -> bool {
    from == to || (is_float(from) && is_float(to))
}

/// `value` as `dtype`, for the float types `convertible` admits.
fn cast_float(value: TensorData, dtype: DType) -> TensorData {
    if value.dtype() == dtype {
        return value;
    }
    let as_f64 = match &value {
        TensorData::Float16(a) => a.mapv(f64::from),
        TensorData::Float32(a) => a.mapv(f64::from),
        TensorData::Float64(a) => a.clone(),
        _ => return value,
    };
    match dtype {
        DType::Float16 => TensorData::Float16(as_f64.mapv(half::f16::from_f64)),
        DType::Float32 => TensorData::Float32(as_f64.mapv(|v| v as f32)),
        DType::Float64 => TensorData::Float64(as_f64),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_name_lists_are_summarized() {
        assert_eq!(summarize(&["a", "b"], 3), "a, b");
        assert_eq!(summarize(&["a", "b", "c", "d", "e"], 2), "a, b and 3 more");
        assert_eq!(summarize::<&str>(&[], 2), "");
    }

    use super::*;

    fn variable(name: &str, trainable: bool) -> VariableInfo {
        VariableInfo {
            name: name.to_string(),
            object_path: name.to_string(),
            dtype: DType::Float32,
            shape: Shape::from_proto(None),
            elements: None,
            bytes: None,
            trainable,
            checkpoint_key: String::new(),
        }
    }

    #[test]
    fn layers_list_trainable_variables_first() {
        let variables = [
            variable("bn/moving_mean", false),
            variable("bn/gamma", true),
            variable("dense/kernel", true),
            variable("bn/beta", true),
            variable("optimizer/iterations", false),
            variable("step", false),
        ];
        let layers = group_by_layer(&variables);
        let names: Vec<(&str, Vec<&str>)> =
            layers.iter().map(|(l, vs)| (*l, vs.iter().map(|v| v.name.as_str()).collect())).collect();
        assert_eq!(
            names,
            [
                ("bn", vec!["bn/gamma", "bn/beta", "bn/moving_mean"]),
                ("dense", vec!["dense/kernel"]),
                ("optimizer", vec!["optimizer/iterations"]),
            ]
        );
    }

    #[test]
    fn floats_convert_and_other_types_must_match() {
        assert!(convertible(DType::Float64, DType::Float32));
        assert!(convertible(DType::Int64, DType::Int64));
        assert!(!convertible(DType::Int32, DType::Float32));
        let value = TensorData::Float64(ndarray::arr1(&[0.5, -2.0]).into_dyn());
        assert_eq!(cast_float(value, DType::Float32), TensorData::Float32(ndarray::arr1(&[0.5f32, -2.0]).into_dyn()));
    }
}
