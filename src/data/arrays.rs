//! Data sets held in memory as arrays: features and labels from `.npz` (or two `.npy`) files,
//! the form Keras users get from `np.savez(path, x=..., y=...)`.

use std::path::{Path, PathBuf};

use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::formats::npy::header::{check_array_bytes, shape_text};
use crate::formats::npy::{ArrayHeader, ArraySource, NpzFile};
use crate::tensor::TensorData;

/// Features and labels in memory, first axis the example.
#[derive(Debug, Clone)]
pub struct ArrayDataset {
    features: TensorData,
    labels: TensorData,
    /// Per-example weights, float32 `[n]`, from a weight array of the file.
    weights: Option<TensorData>,
    origin: String,
}

impl ArrayDataset {
    /// A data set from arrays whose first axes agree.
    pub fn new(features: TensorData, labels: TensorData, origin: &str) -> Result<ArrayDataset> {
        let problem = if features.shape().is_empty() || labels.shape().is_empty() {
            Some("features and labels must have a first (example) axis".to_string())
        } else if features.shape()[0] != labels.shape()[0] {
            Some(format!(
                "{} feature rows but {} labels; they must have the same first dimension",
                features.shape()[0],
                labels.shape()[0]
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::Array { path: PathBuf::from(origin), problem });
        }
        Ok(ArrayDataset { features, labels, weights: None, origin: origin.to_string() })
    }

    /// Reads `x` and `y` (or `features` and `labels`, or the names given) from a `.npz` file.
    /// Both headers are read and checked against each other and against the memory limit
    /// before either array is inflated.
    pub fn from_npz(path: &Path, feature_key: Option<&str>, label_key: Option<&str>) -> Result<ArrayDataset> {
        let mut npz = NpzFile::open(path)?;
        let names = npz.names().to_vec();
        let pick = |given: Option<&str>, defaults: [&str; 2], what: &str| -> Result<String> {
            if let Some(given) = given {
                return Ok(given.to_string());
            }
            defaults.iter().find(|name| names.iter().any(|n| n == *name)).map(|name| name.to_string()).ok_or_else(
                || Error::Array {
                    path: path.to_path_buf(),
                    problem: format!(
                        "has no {what} array named {} (it has: {}); name it with --{what}-key",
                        defaults.join(" or "),
                        names.join(", ")
                    ),
                },
            )
        };
        let feature_key = pick(feature_key, ["x", "features"], "feature")?;
        let label_key = pick(label_key, ["y", "labels"], "label")?;
        check_headers(path, &npz.header(&feature_key)?, &npz.header(&label_key)?)?;
        let features = npz.read(&feature_key)?;
        let labels = npz.read(&label_key)?;
        ArrayDataset::new(features, labels, &path.display().to_string())
    }

    /// [`ArrayDataset::from_npz`], with each example's weight from the array `weight_key` of the
    /// same file (Keras's `sample_weight`): one number per example.
    pub fn from_npz_weighted(
        path: &Path,
        feature_key: Option<&str>,
        label_key: Option<&str>,
        weight_key: &str,
    ) -> Result<ArrayDataset> {
        let mut dataset = ArrayDataset::from_npz(path, feature_key, label_key)?;
        let mut npz = NpzFile::open(path)?;
        if !npz.names().iter().any(|n| n == weight_key) {
            return Err(Error::Array {
                path: path.to_path_buf(),
                problem: format!(
                    "has no sample-weight array named {weight_key} (it has: {}); name it with --sample-weight KEY",
                    npz.names().join(", ")
                ),
            });
        }
        let weights = npz.read(weight_key)?;
        let n = dataset.len();
        let column = match weights.shape() {
            [rows] | [rows, 1] if *rows == n => weights.to_f32(),
            _ => None,
        };
        let Some(column) = column else {
            return Err(Error::Array {
                path: path.to_path_buf(),
                problem: format!(
                    "sample weights `{weight_key}` are {} {:?}; they must be numbers of shape [{n}], one per example",
                    weights.dtype(),
                    weights.shape()
                ),
            });
        };
        if let Some(bad) = column.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(Error::Array {
                path: path.to_path_buf(),
                problem: format!("sample weight {bad} in `{weight_key}`: weights must be finite and >= 0"),
            });
        }
        let column = column.into_shape(ndarray::IxDyn(&[n])).expect("n values");
        dataset.weights = Some(TensorData::Float32(column));
        Ok(dataset)
    }

    /// Reads features and labels from two array sources (`x.npy`, `data.npz[y]`).
    pub fn from_sources(features: &ArraySource, labels: &ArraySource) -> Result<ArrayDataset> {
        let origin = features.path.display().to_string();
        ArrayDataset::new(features.read()?, labels.read()?, &origin)
    }

    /// The features.
    pub fn features(&self) -> &TensorData {
        &self.features
    }

    /// The labels.
    pub fn labels(&self) -> &TensorData {
        &self.labels
    }
}

/// Refuses features and labels whose headers disagree on the number of examples, or which
/// together exceed the memory limit, before either is read.
fn check_headers(path: &Path, features: &ArrayHeader, labels: &ArrayHeader) -> Result<()> {
    let array_error = |problem: String| Error::Array { path: path.to_path_buf(), problem };
    match (features.shape.first(), labels.shape.first()) {
        (Some(rows), Some(count)) if rows != count => {
            return Err(array_error(format!(
                "features have shape {} and labels shape {}: {rows} feature rows but {count} labels; they must have the same first dimension",
                shape_text(&features.shape),
                shape_text(&labels.shape)
            )))
        }
        _ => {}
    }
    check_array_bytes(features.data_len.saturating_add(labels.data_len), "its features and labels together declare")
        .map_err(array_error)
}

impl Dataset for ArrayDataset {
    fn len(&self) -> usize {
        self.features.shape()[0]
    }

    fn example_shape(&self) -> Vec<usize> {
        self.features.shape()[1..].to_vec()
    }

    fn label_classes(&self) -> Option<usize> {
        let labels = match &self.labels {
            TensorData::Int64(a) => a.iter().copied().max(),
            TensorData::Int32(a) => a.iter().map(|&v| i64::from(v)).max(),
            _ => None,
        }?;
        usize::try_from(labels + 1).ok()
    }

    fn describe(&self) -> String {
        format!("{} ({} examples)", self.origin, self.len())
    }

    fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let mut batch =
            Batch::new(self.features.select_rows(indices), self.labels.select_rows(indices), indices.to_vec());
        batch.weights = self.weights.as_ref().map(|w| w.select_rows(indices));
        Ok(batch)
    }

    fn all_labels(&self) -> Option<TensorData> {
        Some(self.labels.clone())
    }

    fn gather_into(&self, indices: &[usize], batch: &mut Batch) -> Result<()> {
        self.features.select_rows_into(indices, &mut batch.inputs);
        self.labels.select_rows_into(indices, &mut batch.labels);
        match (&self.weights, &mut batch.weights) {
            (Some(weights), Some(into)) => weights.select_rows_into(indices, into),
            (weights, into) => *into = weights.as_ref().map(|w| w.select_rows(indices)),
        }
        batch.indices.clear();
        batch.indices.extend_from_slice(indices);
        Ok(())
    }

    fn is_in_memory(&self) -> bool {
        true
    }
}
