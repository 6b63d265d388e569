//! The frozen-base feature cache: when the mask freezes every variable below the cut the
//! exporter recorded (`feature_cut` in the record), the base's output for an example is the same
//! in every epoch (frozen BatchNormalization runs in inference mode, and the exporter records any
//! stochastic layer below the cut, which rules the cache out). A run then computes the base's
//! output once per example through the `features` signature and trains through
//! `head_train_step`, which changes exactly what `train_step` would (same variables, optimizer
//! slots, `iterations`, regularization losses): the same per-step losses at a fraction of the
//! cost. Features are kept in memory, or in a file under the run's working directory when they
//! exceed the memory budget; they are never part of a checkpoint and are rebuilt on resume.
//! Batches come from loaders with the training data's own options over the cached features, so
//! the batch order (a function of seed, epoch and example count) is that of the full path.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use crate::data::{Batch, BatchLoader, Dataset, LoaderOptions};
use crate::error::{Error, Result};
use crate::session::call::{BoundSignature, Tensors};
use crate::tensor::TensorData;
use crate::train::contract::{SignatureRecord, TrainContract};
use crate::train::fit::RunData;
use crate::train::mask::Mask;
use crate::train::trainer::{StepSet, Trainer};

/// The signature that computes the head's input from the model input.
pub const FEATURES: &str = "features";
/// The head's train step on features (feeds `features`, `labels`, the full `mask`, `learning_rate`).
pub const HEAD_TRAIN_STEP: &str = "head_train_step";
/// The head's evaluation step on features.
pub const HEAD_EVAL_STEP: &str = "head_eval_step";
/// The `feature_cut.version` this tfload reads.
pub const FEATURE_CUT_VERSION: u32 = 1;
/// Folder of the working directory that holds features beyond the memory budget.
pub const SPILL_DIR: &str = "feature_cache";

/// The record's `feature_cut`: where the exporter cut the model into base and head, and what it
/// found below the cut (absent in exports made before the cache existed).
#[derive(Debug, Clone, Deserialize)]
pub struct FeatureCut {
    /// Version of this entry (1).
    pub version: u32,
    /// The first layer of the head.
    pub layer: String,
    /// Its position in Keras's `model.layers`, where the source is a Keras model.
    #[serde(default)]
    pub layer_index: Option<usize>,
    /// Shape of the head's input, batch axis first (`null`).
    pub features_shape: Vec<Option<u64>>,
    /// Mask entries of the variables below the cut: all must be 0 for the cache.
    pub mask_indices_below: Vec<usize>,
    /// Stochastic layers below the cut (dropout, noise, random augmentation): any rules it out.
    #[serde(default)]
    pub stochastic_layers_below: Vec<String>,
    /// Other layers below the cut whose output is not fixed by frozen variables.
    #[serde(default)]
    pub other_blockers_below: Vec<String>,
    /// Input and output keys of `features`, `head_train_step` and `head_eval_step`.
    pub signatures: BTreeMap<String, SignatureRecord>,
}

/// Whether and how a run may use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureCacheOptions {
    /// Use the cache where the model and mask allow it (`--no-feature-cache` turns it off).
    pub enabled: bool,
    /// Bytes of features kept in memory; beyond, they go to a file in the working directory.
    pub memory_budget: u64,
    /// Whether the run augments its inputs (each epoch sees other inputs, so the cache is off).
    /// Nothing sets it yet: the hook for data augmentation.
    pub augmentation_enabled: bool,
}

impl Default for FeatureCacheOptions {
    fn default() -> FeatureCacheOptions {
        FeatureCacheOptions { enabled: true, memory_budget: 2 << 30, augmentation_enabled: false }
    }
}

/// Why the cache is not used, in words for the progress line; `None` when it can be.
pub fn fallback_reason(contract: &TrainContract, mask: &Mask, options: &FeatureCacheOptions) -> Option<String> {
    if !options.enabled {
        return Some("--no-feature-cache".into());
    }
    if options.augmentation_enabled {
        return Some("augmentation changes the inputs every epoch".into());
    }
    let Some(cut) = &contract.feature_cut else {
        return Some("the export records no base/head cut (export it again with this tfload-export)".into());
    };
    if cut.version != FEATURE_CUT_VERSION {
        return Some(format!(
            "the record's feature_cut is version {}, this tfload reads {FEATURE_CUT_VERSION}",
            cut.version
        ));
    }
    if let Some(layer) = cut.stochastic_layers_below.first().or(cut.other_blockers_below.first()) {
        return Some(format!("`{layer}` below the cut at `{}` is not deterministic in training", cut.layer));
    }
    let trained: Vec<&str> = mask
        .entries()
        .iter()
        .filter(|e| e.trainable && cut.mask_indices_below.contains(&e.index))
        .map(|e| e.name.as_str())
        .collect();
    if let Some(first) = trained.first() {
        return Some(format!(
            "the mask trains {} variable(s) below the cut at `{}`, e.g. `{first}`",
            trained.len(),
            cut.layer
        ));
    }
    None
}

/// The cached features of a run's data, and the loaders that hand them out.
pub struct CachedData {
    train: BatchLoader,
    validation: Option<BatchLoader>,
    /// Bytes of features cached.
    pub bytes: u64,
    /// Whether some of them are in a file rather than in memory.
    pub spilled: bool,
    /// Seconds the features took to compute.
    pub seconds: f64,
    /// The cut.
    pub layer: String,
}

impl CachedData {
    /// The run's data as cached features, batched as the original loaders batch.
    pub fn run_data(&self) -> RunData<'_> {
        RunData { train: &self.train, validation: self.validation.as_ref() }
    }

    /// What the run's progress line reports.
    pub fn status(&self) -> FeatureCacheUse {
        FeatureCacheUse::On {
            layer: self.layer.clone(),
            examples: self.train.dataset().len() + self.validation.as_ref().map_or(0, |v| v.dataset().len()),
            bytes: self.bytes,
            spilled: self.spilled,
            seconds: self.seconds,
        }
    }
}

/// Whether a run trains its head on cached features of the frozen base.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum FeatureCacheUse {
    /// It does.
    On {
        /// The first layer of the head.
        layer: String,
        /// Examples whose features are cached (training and validation).
        examples: usize,
        /// Bytes of features.
        bytes: u64,
        /// Whether some are in a file under the working directory.
        spilled: bool,
        /// Seconds computing them took.
        seconds: f64,
    },
    /// It trains through the full `train_step`.
    Off {
        /// Why (`--no-feature-cache`, the mask trains a variable below the cut, ...).
        reason: String,
    },
}

/// Computes the features of `data` for a trainer loaded by [`Trainer::for_feature_cache`], when
/// the model, the mask and `options` allow it ([`fallback_reason`] says, before loading, whether
/// they do); else says why not. A trainer loaded for the full `train_step` has no head steps.
pub fn activate(
    trainer: &Trainer,
    data: &RunData<'_>,
    options: &FeatureCacheOptions,
    work: &Path,
) -> Result<std::result::Result<CachedData, String>> {
    if let Some(reason) = fallback_reason(trainer.contract(), trainer.mask(), options) {
        return Ok(Err(reason));
    }
    if trainer.steps() != StepSet::Head {
        return Ok(Err(
            "the trainer was loaded for the full train_step (Trainer::for_feature_cache loads the head steps)".into(),
        ));
    }
    let cut = trainer.contract().feature_cut.clone().expect("checked by fallback_reason");
    let features = BoundSignature::bind(trainer.model(), FEATURES)?;
    let started = Instant::now();
    let mut budget = options.memory_budget;
    let input_key = trainer.contract().input_key().to_string();
    let spill = work.join(SPILL_DIR);
    let mut build = |loader: &BatchLoader, name: &str| -> Result<(BatchLoader, u64, bool)> {
        let cached = compute(trainer, &features, &input_key, loader, budget, &spill.join(format!("{name}.f32")))?;
        let bytes = cached.bytes();
        budget = budget.saturating_sub(bytes);
        let spilled = cached.file.is_some();
        Ok((BatchLoader::new(Arc::new(cached), *loader.options()), bytes, spilled))
    };
    let (train, mut bytes, mut spilled) = build(data.train, "train")?;
    let validation = match data.validation {
        Some(v) => {
            let (loader, b, s) = build(v, "validation")?;
            bytes += b;
            spilled |= s;
            Some(loader)
        }
        None => None,
    };
    Ok(Ok(CachedData { train, validation, bytes, spilled, seconds: started.elapsed().as_secs_f64(), layer: cut.layer }))
}

/// Removes the features spilled to `work` (the cache is no part of the written model). Open
/// handles keep reading the removed files until they are dropped.
pub(crate) fn remove_spill(work: &Path) -> Result<()> {
    crate::output_dir::remove_dir_if_present(&work.join(SPILL_DIR))
}

/// The features of every example of `loader`'s data set, in index order, batched as it batches.
fn compute(
    trainer: &Trainer,
    features: &BoundSignature,
    input_key: &str,
    loader: &BatchLoader,
    budget: u64,
    spill: &Path,
) -> Result<CachedFeatures> {
    let dataset = loader.dataset();
    let in_order =
        BatchLoader::new(dataset.clone(), LoaderOptions { shuffle: false, drop_remainder: false, ..*loader.options() });
    let mut store: Option<RowStore> = None;
    let mut labels = Vec::new();
    for batch in in_order.epoch(0, 0) {
        let batch = batch?;
        let inputs = Tensors::from([(input_key.to_string(), batch.inputs)]);
        let out = features.run(trainer.model(), &inputs, Some(&[FEATURES]))?;
        let Some(TensorData::Float32(rows)) = out.get(FEATURES) else {
            return Err(cache_error("the `features` signature did not return float32 `features`".into()));
        };
        let store = match &mut store {
            Some(store) => store,
            None => store.insert(RowStore::new(rows.shape()[1..].to_vec(), dataset.len(), budget, spill)?),
        };
        store.push(rows)?;
        labels.push(batch.labels);
    }
    let store = store.ok_or_else(|| cache_error(format!("{} holds no examples", dataset.describe())))?;
    Ok(CachedFeatures {
        row_shape: store.row_shape,
        memory: store.memory,
        file: store.file.map(|(file, _)| file),
        spill: store.spill,
        memory_rows: store.memory_rows,
        labels: concat_rows(labels)?,
        origin: format!("features of {}", dataset.describe()),
    })
}

/// Features being written: the first rows (up to the budget) in memory, the rest in a file.
struct RowStore {
    row_shape: Vec<usize>,
    row_len: usize,
    memory: Vec<f32>,
    memory_rows: usize,
    file: Option<(File, u64)>,
    spill: PathBuf,
}

impl RowStore {
    fn new(row_shape: Vec<usize>, rows: usize, budget: u64, spill: &Path) -> Result<RowStore> {
        let row_len: usize = row_shape.iter().product();
        let row_bytes = (row_len.max(1) * 4) as u64;
        let memory_rows = rows.min((budget / row_bytes) as usize);
        let file = if memory_rows < rows {
            std::fs::create_dir_all(spill.parent().expect("in the spill folder"))
                .map_err(|source| Error::Io { path: spill.to_path_buf(), source })?;
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(spill)
                .map_err(|source| Error::Io { path: spill.to_path_buf(), source })?;
            Some((file, 0))
        } else {
            None
        };
        Ok(RowStore {
            row_shape,
            row_len,
            memory: Vec::with_capacity(memory_rows * row_len),
            memory_rows,
            file,
            spill: spill.to_path_buf(),
        })
    }

    fn push(&mut self, rows: &ArrayD<f32>) -> Result<()> {
        let values: Vec<f32> = rows.iter().copied().collect();
        let room = (self.memory_rows * self.row_len).saturating_sub(self.memory.len());
        let (kept, rest) = values.split_at(room.min(values.len()));
        self.memory.extend_from_slice(kept);
        if rest.is_empty() {
            return Ok(());
        }
        let (file, written) = self.file.as_mut().expect("opened when rows exceed the budget");
        let bytes: Vec<u8> = rest.iter().flat_map(|v| v.to_le_bytes()).collect();
        file.write_all_at(&bytes, *written).map_err(|source| Error::Io { path: self.spill.clone(), source })?;
        *written += bytes.len() as u64;
        Ok(())
    }
}

/// Cached features with their labels: a data set of (features, label) examples.
struct CachedFeatures {
    row_shape: Vec<usize>,
    memory: Vec<f32>,
    memory_rows: usize,
    file: Option<File>,
    spill: PathBuf,
    labels: TensorData,
    origin: String,
}

impl CachedFeatures {
    fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }

    fn bytes(&self) -> u64 {
        (self.len() * self.row_len() * 4) as u64
    }

    fn read_row(&self, index: usize, out: &mut [f32]) -> Result<()> {
        let n = self.row_len();
        if index < self.memory_rows {
            out.copy_from_slice(&self.memory[index * n..(index + 1) * n]);
            return Ok(());
        }
        let file = self.file.as_ref().expect("rows beyond the memory rows are in the file");
        let mut bytes = vec![0u8; n * 4];
        file.read_exact_at(&mut bytes, ((index - self.memory_rows) * n * 4) as u64)
            .map_err(|source| Error::Io { path: self.spill.clone(), source })?;
        for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        }
        Ok(())
    }
}

impl Dataset for CachedFeatures {
    fn len(&self) -> usize {
        self.labels.shape().first().copied().unwrap_or(0)
    }

    fn example_shape(&self) -> Vec<usize> {
        self.row_shape.clone()
    }

    fn describe(&self) -> String {
        self.origin.clone()
    }

    fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let n = self.row_len();
        let mut values = vec![0f32; indices.len() * n];
        for (k, &index) in indices.iter().enumerate() {
            self.read_row(index, &mut values[k * n..(k + 1) * n])?;
        }
        let mut shape = vec![indices.len()];
        shape.extend(&self.row_shape);
        let inputs = ArrayD::from_shape_vec(IxDyn(&shape), values).expect("rows times row shape");
        // Weights never reach here: an export with a `sample_weight` input has no feature cut.
        Ok(Batch::new(TensorData::Float32(inputs), self.labels.select_rows(indices), indices.to_vec()))
    }

    fn is_in_memory(&self) -> bool {
        self.file.is_none()
    }
}

/// The label batches of a data set as one tensor, first axis the example.
fn concat_rows(parts: Vec<TensorData>) -> Result<TensorData> {
    macro_rules! concat {
        ($variant:ident) => {{
            let arrays: Vec<_> = parts
                .iter()
                .map(|p| match p {
                    TensorData::$variant(a) => Ok(a.view()),
                    other => Err(cache_error(format!("label batches of mixed dtypes ({:?})", other.dtype()))),
                })
                .collect::<Result<_>>()?;
            ndarray::concatenate(Axis(0), &arrays)
                .map(TensorData::$variant)
                .map_err(|e| cache_error(format!("label batches of different shapes ({e})")))
        }};
    }
    match parts.first() {
        Some(TensorData::Int64(_)) => concat!(Int64),
        Some(TensorData::Int32(_)) => concat!(Int32),
        Some(TensorData::Float32(_)) => concat!(Float32),
        Some(TensorData::Float64(_)) => concat!(Float64),
        Some(other) => Err(cache_error(format!("labels of dtype {:?} cannot be cached", other.dtype()))),
        None => Err(cache_error("no labels".into())),
    }
}

fn cache_error(problem: String) -> Error {
    Error::FeatureCache { problem }
}

/// Parses a size such as `2GiB`, `512MiB`, `1.5G`, `1000000` (bytes) for `--feature-cache-memory`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a size such as 2GiB, 512MiB or 1000000"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown unit `{other}` in `{text}`; use B, KiB, MiB, GiB or TiB")),
    };
    Ok((number * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn rows_beyond_the_budget_go_to_the_file_and_read_back() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io { path: PathBuf::from("tmp"), source })?;
        let spill = dir.path().join(SPILL_DIR).join("train.f32");
        // 3 values a row, 12 bytes: a budget of 30 bytes keeps 2 rows in memory.
        let mut store = RowStore::new(vec![3], 5, 30, &spill)?;
        let rows = ArrayD::from_shape_vec(IxDyn(&[5, 3]), (0..15).map(|v| v as f32).collect()).expect("5x3");
        store.push(&rows)?;
        assert_eq!(store.memory_rows, 2);
        let cached = CachedFeatures {
            row_shape: store.row_shape,
            memory: store.memory,
            memory_rows: store.memory_rows,
            file: store.file.map(|(f, _)| f),
            spill: store.spill,
            labels: TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[5]), vec![0, 1, 2, 3, 4]).expect("5")),
            origin: "test".into(),
        };
        assert!(!cached.is_in_memory());
        let batch = cached.gather(&[4, 0, 3])?;
        assert_eq!(
            batch.inputs.to_f32().expect("f32").iter().copied().collect::<Vec<_>>(),
            vec![12.0, 13.0, 14.0, 0.0, 1.0, 2.0, 9.0, 10.0, 11.0]
        );
        assert_eq!(batch.labels, TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![4, 0, 3]).expect("3")));
        Ok(())
    }

    #[test]
    fn label_batches_concatenate() -> Result<()> {
        let part = |v: Vec<i64>| TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-d"));
        assert_eq!(concat_rows(vec![part(vec![1, 2]), part(vec![3])])?, part(vec![1, 2, 3]));
        assert!(concat_rows(vec![part(vec![1]), TensorData::Float32(ArrayD::zeros(IxDyn(&[1])))]).is_err());
        Ok(())
    }
}
