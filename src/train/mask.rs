//! Trainable masks: which of a model's mask variables `train_step` updates. Built from the
//! model's stored default (or all / none), then rules applied in a fixed, documented order:
//! `--train-last-layers`, then every `--freeze` pattern, then every `--train` pattern (so a
//! `--train` always wins over a `--freeze` that matches the same variable).

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::contract::{LayerRecord, TrainContract};

/// Where a mask starts before the rules apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskStart {
    /// The default stored in the model (for example "base frozen, head trainable").
    #[default]
    ModelDefault,
    /// Every mask variable trainable.
    AllTrainable,
    /// Every mask variable frozen.
    AllFrozen,
}

/// The rules that shape a mask, applied in the order documented on this module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskSpec {
    /// The starting point.
    pub start: MaskStart,
    /// Train only the variables of the last N layers (in model order), freeze the rest: the
    /// one-flag form of `for layer in model.layers[:-N]: layer.trainable = False`.
    pub train_last_layers: Option<usize>,
    /// Glob patterns (`conv*`, `dense_1/kernel`) to freeze; each matches variable paths and
    /// layer names and must match something.
    pub freeze: Vec<String>,
    /// Glob patterns to train, applied after `freeze`.
    pub train: Vec<String>,
}

/// One row of a mask: a variable and whether it trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskEntry {
    /// Position in the mask.
    pub index: usize,
    /// Keras path of the variable.
    pub name: String,
    /// Its layer.
    pub layer: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Whether `train_step` updates it.
    pub trainable: bool,
}

/// A resolved mask over a model's mask variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mask {
    entries: Vec<MaskEntry>,
    /// Keras's `model.layers` with their mask indices, where the record has them.
    #[serde(skip)]
    keras_layers: Option<Vec<LayerRecord>>,
}

impl Mask {
    /// Builds the mask of `contract` from `spec`.
    pub fn build(contract: &TrainContract, spec: &MaskSpec) -> Result<Mask> {
        let entries = contract
            .mask_variables
            .iter()
            .map(|v| MaskEntry {
                index: v.index,
                name: v.name.clone(),
                layer: v.layer.clone(),
                shape: v.shape.clone(),
                trainable: match spec.start {
                    MaskStart::ModelDefault => contract.default_mask[v.index] > 0.0,
                    MaskStart::AllTrainable => true,
                    MaskStart::AllFrozen => false,
                },
            })
            .collect();
        let mut mask = Mask { entries, keras_layers: contract.layers.clone() };
        if let Some(n) = spec.train_last_layers {
            mask.train_last_layers(n)?;
        }
        for pattern in &spec.freeze {
            mask.set_matching(pattern, false)?;
        }
        for pattern in &spec.train {
            mask.set_matching(pattern, true)?;
        }
        Ok(mask)
    }

    /// The rows, in mask order.
    pub fn entries(&self) -> &[MaskEntry] {
        &self.entries
    }

    /// The mask as `train_step` takes it: 1.0 = train, 0.0 = frozen.
    pub fn values(&self) -> Vec<f32> {
        self.entries.iter().map(|e| if e.trainable { 1.0 } else { 0.0 }).collect()
    }

    /// Number of trainable variables.
    pub fn trainable_count(&self) -> usize {
        self.entries.iter().filter(|e| e.trainable).count()
    }

    /// Layer names in model order, each once.
    pub fn layers(&self) -> Vec<&str> {
        let mut layers: Vec<&str> = Vec::new();
        for entry in &self.entries {
            if !layers.contains(&entry.layer.as_str()) {
                layers.push(&entry.layer);
            }
        }
        layers
    }

    /// Keras's `model.layers` (with or without variables) and whether each trains under this mask
    /// (all of its variables do), where the record lists them.
    pub fn keras_layers(&self) -> Option<Vec<(&str, usize, bool)>> {
        let layers = self.keras_layers.as_ref()?;
        Some(
            layers
                .iter()
                .map(|l| {
                    let trains =
                        !l.mask_indices.is_empty() && l.mask_indices.iter().all(|&i| self.entries[i].trainable);
                    (l.name.as_str(), l.mask_indices.len(), trains)
                })
                .collect(),
        )
    }

    /// Trains the variables of the last `n` layers and freezes the rest. With the record's
    /// `layers`, the layers are Keras's `model.layers`, variable-less ones included, so that this
    /// is exactly `for layer in model.layers[:-n]: layer.trainable = False`; without it (older
    /// records), the layers that hold variables.
    fn train_last_layers(&mut self, n: usize) -> Result<()> {
        if let Some(layers) = &self.keras_layers {
            if n == 0 || n > layers.len() {
                let last: Vec<&str> = layers.iter().rev().take(5).rev().map(|l| l.name.as_str()).collect();
                return Err(Error::InvalidOption(format!(
                    "--train-last-layers {n}: the model has {} layers (Keras's model.layers, with or without variables; the last: {}); give 1 to {}",
                    layers.len(),
                    last.join(", "),
                    layers.len()
                )));
            }
            let trained: Vec<usize> = layers[layers.len() - n..].iter().flat_map(|l| l.mask_indices.clone()).collect();
            for entry in &mut self.entries {
                entry.trainable = trained.contains(&entry.index);
            }
            return Ok(());
        }
        let layers: Vec<String> = self.layers().into_iter().map(str::to_string).collect();
        if n == 0 || n > layers.len() {
            return Err(Error::InvalidOption(format!(
                "--train-last-layers {n}: the model has {} layers with trainable variables ({}); give 1 to {}",
                layers.len(),
                layers.join(", "),
                layers.len()
            )));
        }
        let trained = &layers[layers.len() - n..];
        for entry in &mut self.entries {
            entry.trainable = trained.contains(&entry.layer);
        }
        Ok(())
    }

    fn set_matching(&mut self, pattern: &str, trainable: bool) -> Result<()> {
        let matcher = compile(pattern)?;
        let mut matched = false;
        for entry in &mut self.entries {
            if matcher.is_match(&entry.name) || matcher.is_match(&entry.layer) {
                entry.trainable = trainable;
                matched = true;
            }
        }
        if matched {
            Ok(())
        } else {
            Err(self.no_match(pattern, trainable))
        }
    }

    fn no_match(&self, pattern: &str, trainable: bool) -> Error {
        let flag = if trainable { "--train" } else { "--freeze" };
        let mut candidates: Vec<&str> = self.layers();
        candidates.extend(self.entries.iter().map(|e| e.name.as_str()));
        let mut close: Vec<(f64, &str)> = candidates
            .iter()
            .map(|c| (strsim::jaro_winkler(pattern, c), *c))
            .filter(|(score, _)| *score > 0.75)
            .collect();
        close.sort_by(|a, b| b.0.total_cmp(&a.0));
        let suggestion = if close.is_empty() {
            format!("the layers are: {}", self.layers().join(", "))
        } else {
            let names: Vec<&str> = close.iter().take(5).map(|(_, name)| *name).collect();
            format!("close names: {}", names.join(", "))
        };
        Error::InvalidOption(format!(
            "{flag} `{pattern}` matches no variable or layer; {suggestion}. Patterns are globs over variable paths (conv1/kernel) and layer names (conv*); `tfload train DIR --show-mask` lists them."
        ))
    }
}

fn compile(pattern: &str) -> Result<GlobMatcher> {
    Glob::new(pattern)
        .map(|glob| glob.compile_matcher())
        .map_err(|e| Error::InvalidOption(format!("`{pattern}` is not a valid glob pattern: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> TrainContract {
        let variables = [
            ("conv1/kernel", "conv1"),
            ("bn1/gamma", "bn1"),
            ("conv2/kernel", "conv2"),
            ("head/kernel", "head"),
            ("head/bias", "head"),
        ];
        let mask_variables: Vec<serde_json::Value> = variables
            .iter()
            .enumerate()
            .map(|(index, (name, layer))| {
                serde_json::json!({"index": index, "name": name, "layer": layer, "shape": [1], "dtype": "float32",
                                   "checkpoint_key": format!("mask_variables/{index}/.ATTRIBUTES/VARIABLE_VALUE")})
            })
            .collect();
        crate::train::contract::test_contract(serde_json::json!([]), mask_variables, &[0.0, 0.0, 0.0, 1.0, 1.0])
    }

    fn build(spec: MaskSpec) -> Vec<f32> {
        Mask::build(&contract(), &spec).unwrap().values()
    }

    #[test]
    fn starts_from_the_model_default() {
        assert_eq!(build(MaskSpec::default()), vec![0.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(build(MaskSpec { start: MaskStart::AllTrainable, ..Default::default() }), vec![1.0; 5]);
    }

    #[test]
    fn train_wins_over_freeze_and_layers_match_by_name() {
        let spec = MaskSpec {
            start: MaskStart::AllTrainable,
            freeze: vec!["conv*".into(), "head".into()],
            train: vec!["head/bias".into()],
            ..Default::default()
        };
        assert_eq!(build(spec), vec![0.0, 1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn last_layers_counts_layers_not_variables() {
        let spec = MaskSpec { start: MaskStart::AllTrainable, train_last_layers: Some(2), ..Default::default() };
        assert_eq!(build(spec), vec![0.0, 0.0, 1.0, 1.0, 1.0]);
        let error =
            Mask::build(&contract(), &MaskSpec { train_last_layers: Some(9), ..Default::default() }).unwrap_err();
        assert!(error.to_string().contains("has 4 layers"), "{error}");
    }

    #[test]
    fn a_pattern_matching_nothing_lists_close_names() {
        let spec = MaskSpec { freeze: vec!["conv3".into()], ..Default::default() };
        let error = Mask::build(&contract(), &spec).unwrap_err().to_string();
        assert!(error.contains("--freeze `conv3` matches no variable or layer"), "{error}");
        assert!(error.contains("conv1"), "{error}");
    }

    #[test]
    fn last_layers_count_keras_layers_with_or_without_variables_where_recorded() {
        let mut contract = contract();
        // model.layers: conv1, bn1, pool (no variables), conv2, gap (no variables), head.
        let layers = serde_json::json!([
            {"name": "conv1", "mask_indices": [0]}, {"name": "bn1", "mask_indices": [1]},
            {"name": "pool", "mask_indices": []}, {"name": "conv2", "mask_indices": [2]},
            {"name": "gap", "mask_indices": []}, {"name": "head", "mask_indices": [3, 4]}
        ]);
        contract.layers = Some(serde_json::from_value(layers).unwrap());
        let last = |n| Mask::build(&contract, &MaskSpec { train_last_layers: Some(n), ..Default::default() });
        // As `for layer in model.layers[:-3]: layer.trainable = False`: conv2, gap, head.
        assert_eq!(last(3).unwrap().values(), vec![0.0, 0.0, 1.0, 1.0, 1.0]);
        // The last two are gap and head: conv2 stays frozen (counting only layers with variables would train it).
        assert_eq!(last(2).unwrap().values(), vec![0.0, 0.0, 0.0, 1.0, 1.0]);
        let mask = last(2).unwrap();
        let listed = mask.keras_layers().unwrap();
        assert_eq!(listed[4], ("gap", 0, false));
        assert_eq!(listed[5], ("head", 2, true));
        let error = last(7).unwrap_err().to_string();
        assert!(error.contains("has 6 layers (Keras's model.layers"), "{error}");
    }
}
