//! Labels in the form a model's loss wants them, whatever form the data holds them in: class
//! indices for sparse categorical cross-entropy, one-hot (or soft) rows for categorical
//! cross-entropy, 0/1 floats for binary cross-entropy, as Keras's `image_dataset_from_directory`
//! gives them with `label_mode="int" | "categorical" | "binary"`.
//!
//! [`LabelTarget`] says what the model wants (from its record); [`with_labels_as`] wraps a data set
//! and converts each batch's labels: int labels become one-hot rows for a categorical model, exact
//! one-hot rows become class indices for a sparse model, anything ambiguous (soft labels for a
//! model that takes indices) is refused with what to do instead.

use std::sync::Arc;

use ndarray::{ArrayD, Axis, IxDyn};

use crate::data::{Batch, Dataset, MapBatches};
use crate::error::{Error, Result};
use crate::tensor::TensorData;

/// The three label forms of Keras's `image_dataset_from_directory` (`label_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelMode {
    /// Class indices, int64 `[batch]` (sparse categorical cross-entropy).
    Int,
    /// One-hot (or soft) float32 rows `[batch, classes]` (categorical cross-entropy).
    Categorical,
    /// 0/1 float32 `[batch, units]` (binary cross-entropy).
    Binary,
}

impl LabelMode {
    /// The `label_mode` name (`int`, `categorical`, `binary`).
    pub fn name(self) -> &'static str {
        match self {
            LabelMode::Int => "int",
            LabelMode::Categorical => "categorical",
            LabelMode::Binary => "binary",
        }
    }
}

/// The labels a model's `train_step` / `eval_step` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelTarget {
    /// Their form.
    pub mode: LabelMode,
    /// The labels' last dimension: classes (categorical) or output units (binary); 0 for int.
    pub units: usize,
}

impl LabelTarget {
    /// What a model with loss `loss` (the record's `loss.name`) and labels of shape
    /// `labels_shape` wants; `None` for losses whose labels are plain values (mean squared error).
    pub fn for_loss(loss: &str, labels_shape: &[Option<u64>]) -> Option<LabelTarget> {
        let units = labels_shape.last().copied().flatten().unwrap_or(1) as usize;
        match loss {
            "sparse_categorical_crossentropy" => Some(LabelTarget { mode: LabelMode::Int, units: 0 }),
            "categorical_crossentropy" => Some(LabelTarget { mode: LabelMode::Categorical, units }),
            "binary_crossentropy" if labels_shape.len() == 2 => Some(LabelTarget { mode: LabelMode::Binary, units }),
            _ => None,
        }
    }

    /// The target of a model that wants `target`, given the user's `mode` (`--label-mode`), which
    /// must agree with it; a model whose labels are plain values (`None`) takes no label mode.
    pub fn resolve(target: Option<LabelTarget>, mode: Option<LabelMode>) -> Result<Option<LabelTarget>> {
        match (target, mode) {
            (Some(target), Some(mode)) => target.check_mode(mode).map(|()| Some(target)),
            (None, Some(mode)) => Err(Error::LabelModeMismatch {
                given: mode.name(),
                wanted: "none",
                wanted_form: "the values of its outputs (a regression loss)".to_string(),
            }),
            (target, None) => Ok(target),
        }
    }

    /// Checks that `mode` (a user's `--label-mode`) is what this model takes.
    pub fn check_mode(&self, mode: LabelMode) -> Result<()> {
        if mode == self.mode {
            return Ok(());
        }
        Err(Error::LabelModeMismatch { given: mode.name(), wanted: self.mode.name(), wanted_form: self.form() })
    }

    /// The labels' dtype and shape, for messages (`float32 [batch, 3]`).
    pub fn form(&self) -> String {
        match self.mode {
            LabelMode::Int => "int64 [batch] class indices".to_string(),
            LabelMode::Categorical => format!("float32 [batch, {}] one-hot rows", self.units),
            LabelMode::Binary => format!("float32 [batch, {}] 0/1 values", self.units),
        }
    }

    /// `labels` (first axis the example) in this form, moved through when already in it.
    pub fn convert(&self, labels: TensorData) -> Result<TensorData> {
        match self.mode {
            LabelMode::Int => self.indices_of(labels),
            LabelMode::Categorical => self.one_hot_of(labels),
            LabelMode::Binary => self.binary_of(labels),
        }
    }

    fn indices_of(&self, labels: TensorData) -> Result<TensorData> {
        if matches!(&labels, TensorData::Int64(a) if a.ndim() == 1) {
            return Ok(labels);
        }
        if let Some(indices) = integer_column(&labels) {
            return Ok(TensorData::Int64(indices.into_dyn()));
        }
        let rows = float_rows(&labels).ok_or_else(|| self.refuse(&labels, "they are not class indices"))?;
        let mut indices = Vec::with_capacity(rows.nrows());
        for row in rows.axis_iter(Axis(0)) {
            let ones = row.iter().filter(|&&v| v == 1.0).count();
            let zeros = row.iter().filter(|&&v| v == 0.0).count();
            if ones != 1 || ones + zeros != row.len() {
                return Err(self.refuse(
                    &labels,
                    "they are soft (not exactly one-hot), which class indices cannot express; export the model \
                     with tfload-export --loss categorical_crossentropy to train on them",
                ));
            }
            indices.push(row.iter().position(|&v| v == 1.0).unwrap_or(0) as i64);
        }
        Ok(TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[indices.len()]), indices).expect("1-d")))
    }

    fn one_hot_of(&self, labels: TensorData) -> Result<TensorData> {
        if let Some(indices) = integer_column(&labels) {
            let mut one_hot = ArrayD::<f32>::zeros(IxDyn(&[indices.len(), self.units]));
            for (row, &class) in indices.iter().enumerate() {
                let Some(column) = usize::try_from(class).ok().filter(|&c| c < self.units) else {
                    return Err(self.refuse(
                        &labels,
                        &format!("label {class} is not a class index in 0..{}", self.units.saturating_sub(1)),
                    ));
                };
                one_hot[[row, column]] = 1.0;
            }
            return Ok(TensorData::Float32(one_hot));
        }
        self.floats_with_units(labels)
    }

    fn binary_of(&self, labels: TensorData) -> Result<TensorData> {
        if let Some(values) = integer_column(&labels) {
            if self.units != 1 || values.iter().any(|&v| v != 0 && v != 1) {
                return Err(
                    self.refuse(&labels, "int labels give binary labels only for one output unit and 0/1 values")
                );
            }
            let floats = values.mapv(|v| v as f32).into_shape((values.len(), 1)).expect("n x 1");
            return Ok(TensorData::Float32(floats.into_dyn()));
        }
        self.floats_with_units(labels)
    }

    /// Float labels of shape `[n, units]` (a `[n]` column too when there is one unit), as float32.
    fn floats_with_units(&self, labels: TensorData) -> Result<TensorData> {
        let shape = labels.shape().to_vec();
        let fits = match shape.as_slice() {
            [_, units] => *units == self.units,
            [_] => self.units == 1,
            _ => false,
        };
        let floats = match (&labels, fits) {
            (TensorData::Float32(_), true) if shape.len() == 2 => return Ok(labels),
            (TensorData::Float32(_) | TensorData::Float64(_) | TensorData::Float16(_), true) => labels.to_f32(),
            _ => None,
        };
        let floats = floats.ok_or_else(|| self.refuse(&labels, "they have another dtype or shape"))?;
        let n = shape[0];
        Ok(TensorData::Float32(floats.into_shape(IxDyn(&[n, self.units])).expect("same length")))
    }

    fn refuse(&self, labels: &TensorData, why: &str) -> Error {
        Error::LabelsUnfit {
            given: format!("{} {:?}", labels.dtype(), labels.shape()),
            wanted: self.form(),
            why: why.to_string(),
        }
    }
}

/// Integer labels of one value per example (`[n]` or `[n, 1]`), as int64.
fn integer_column(labels: &TensorData) -> Option<ndarray::Array1<i64>> {
    let shape = labels.shape();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return None;
    }
    let values: Vec<i64> = match labels {
        TensorData::Int64(a) => a.iter().copied().collect(),
        TensorData::Int32(a) => a.iter().map(|&v| i64::from(v)).collect(),
        TensorData::Int16(a) => a.iter().map(|&v| i64::from(v)).collect(),
        TensorData::Int8(a) => a.iter().map(|&v| i64::from(v)).collect(),
        TensorData::UInt8(a) => a.iter().map(|&v| i64::from(v)).collect(),
        TensorData::UInt16(a) => a.iter().map(|&v| i64::from(v)).collect(),
        TensorData::UInt32(a) => a.iter().map(|&v| i64::from(v)).collect(),
        _ => return None,
    };
    Some(ndarray::Array1::from(values))
}

/// Float labels of two dimensions, as float32.
fn float_rows(labels: &TensorData) -> Option<ndarray::Array2<f32>> {
    match labels {
        TensorData::Float32(_) | TensorData::Float64(_) | TensorData::Float16(_) if labels.shape().len() == 2 => {
            labels.to_f32()?.into_dimensionality().ok()
        }
        _ => None,
    }
}

/// `inner` with each batch's labels converted to `target`.
pub fn with_labels_as(inner: Arc<dyn Dataset>, target: LabelTarget) -> MapBatches {
    MapBatches::new(inner, move |batch: &mut Batch| {
        let labels = std::mem::replace(&mut batch.labels, TensorData::Int64(ArrayD::zeros(IxDyn(&[0]))));
        batch.labels = target.convert(labels)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    const CATEGORICAL: LabelTarget = LabelTarget { mode: LabelMode::Categorical, units: 3 };
    const INT: LabelTarget = LabelTarget { mode: LabelMode::Int, units: 0 };

    #[test]
    fn int_labels_become_one_hot_rows_for_a_categorical_model() {
        let labels = CATEGORICAL.convert(TensorData::Int64(arr1(&[2i64, 0]).into_dyn())).unwrap();
        assert_eq!(labels, TensorData::Float32(arr2(&[[0.0f32, 0.0, 1.0], [1.0, 0.0, 0.0]]).into_dyn()));
        let error = CATEGORICAL.convert(TensorData::Int32(arr1(&[3]).into_dyn())).unwrap_err().to_string();
        assert!(error.contains("label 3 is not a class index in 0..2"), "{error}");
    }

    #[test]
    fn one_hot_rows_pass_through_and_float64_becomes_float32() {
        let rows = TensorData::Float32(arr2(&[[0.2f32, 0.3, 0.5]]).into_dyn());
        assert_eq!(CATEGORICAL.convert(rows.clone()).unwrap(), rows);
        let doubles = TensorData::Float64(arr2(&[[0.2, 0.3, 0.5]]).into_dyn());
        assert_eq!(CATEGORICAL.convert(doubles).unwrap().dtype(), rows.dtype());
        let error = CATEGORICAL.convert(TensorData::Float32(arr2(&[[1.0f32, 0.0]]).into_dyn())).unwrap_err();
        assert!(error.to_string().contains("float32 [batch, 3]"), "{error}");
    }

    #[test]
    fn exact_one_hot_rows_become_indices_and_soft_rows_are_refused() {
        let labels = INT.convert(TensorData::Float32(arr2(&[[0.0f32, 1.0, 0.0], [0.0, 0.0, 1.0]]).into_dyn()));
        assert_eq!(labels.unwrap(), TensorData::Int64(arr1(&[1i64, 2]).into_dyn()));
        let error = INT.convert(TensorData::Float32(arr2(&[[0.5f32, 0.5, 0.0]]).into_dyn())).unwrap_err();
        assert!(error.to_string().contains("--loss categorical_crossentropy"), "{error}");
        assert_eq!(
            INT.convert(TensorData::Int32(arr1(&[4]).into_dyn())).unwrap(),
            TensorData::Int64(arr1(&[4i64]).into_dyn())
        );
    }

    #[test]
    fn binary_labels_are_float_columns() {
        let binary = LabelTarget { mode: LabelMode::Binary, units: 1 };
        let labels = binary.convert(TensorData::Int64(arr1(&[1i64, 0]).into_dyn())).unwrap();
        assert_eq!(labels, TensorData::Float32(arr2(&[[1.0f32], [0.0]]).into_dyn()));
        assert!(binary.convert(TensorData::Int64(arr1(&[2i64]).into_dyn())).is_err());
        let column = binary.convert(TensorData::Float64(arr1(&[1.0, 0.0]).into_dyn())).unwrap();
        assert_eq!(column, labels);
    }

    #[test]
    fn targets_follow_the_loss_and_a_given_mode_must_match() {
        let target = LabelTarget::for_loss("categorical_crossentropy", &[None, Some(3)]).unwrap();
        assert_eq!(target, CATEGORICAL);
        assert_eq!(LabelTarget::for_loss("sparse_categorical_crossentropy", &[None]), Some(INT));
        assert_eq!(LabelTarget::for_loss("mean_squared_error", &[None, Some(1)]), None);
        assert!(target.check_mode(LabelMode::Categorical).is_ok());
        let error = target.check_mode(LabelMode::Int).unwrap_err().to_string();
        assert!(error.contains("--label-mode int") && error.contains("categorical"), "{error}");
    }
}
