//! Class weights, as Keras's `fit(class_weight=...)` applies them: each training example is
//! weighted by its class's weight (its label, or the argmax of a one-hot row), classes without a
//! weight count 1.0. `balanced` is scikit-learn's `compute_class_weight("balanced")`:
//! `n_samples / (n_classes * count[class])` over the classes the data holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use crate::data::{Batch, Dataset, MapBatches};
use crate::error::{Error, Result};
use crate::tensor::TensorData;

/// Class weights as the user gives them (`--class-weight`).
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    /// `n_samples / (n_classes * count)`, counted on the training data.
    Balanced,
    /// `CLASS:WEIGHT` pairs, the class an index or a class name.
    Given(Vec<(String, f32)>),
}

impl ClassWeights {
    /// Parses `balanced` or `0:1.0,1:2.5` / `cars:1.0,trucks:2.5`.
    pub fn parse(text: &str) -> Result<ClassWeights> {
        if text.trim() == "balanced" {
            return Ok(ClassWeights::Balanced);
        }
        let bad = |problem: String| Error::ClassWeight { given: text.to_string(), problem };
        let mut pairs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (class, weight) = item
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("`{item}` is not CLASS:WEIGHT (write balanced, or e.g. 0:1.0,1:2.5)")))?;
            let weight: f32 = weight.trim().parse().map_err(|_| bad(format!("`{weight}` is not a number")))?;
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(bad(format!("weight {weight} of class `{class}` must be finite and >= 0")));
            }
            pairs.push((class.trim().to_string(), weight));
        }
        if pairs.is_empty() {
            return Err(bad("no CLASS:WEIGHT pair given".to_string()));
        }
        Ok(ClassWeights::Given(pairs))
    }

    /// The weight of each class index `0..classes`, for `data` whose classes are named
    /// `class_names` (the model's, else the data's).
    pub fn resolve(&self, data: &dyn Dataset, classes: usize, class_names: Option<&[String]>) -> Result<Vec<f32>> {
        let mut weights = vec![1.0f32; classes];
        match self {
            ClassWeights::Balanced => {
                let labels = data.all_labels().ok_or_else(|| Error::ClassWeight {
                    given: "balanced".into(),
                    problem: format!(
                        "{} does not hold its labels in memory to count them; give the weights per class",
                        data.describe()
                    ),
                })?;
                let counts = count_classes(&class_indices(&labels)?, classes)?;
                let present = counts.values().filter(|&&c| c > 0).count();
                let n: usize = counts.values().sum();
                for (&class, &count) in counts.iter().filter(|(_, &c)| c > 0) {
                    weights[class] = n as f32 / (present as f32 * count as f32);
                }
            }
            ClassWeights::Given(pairs) => {
                for (class, weight) in pairs {
                    weights[class_index(class, classes, class_names)?] = *weight;
                }
            }
        }
        Ok(weights)
    }
}

/// The class index `class` names: a number below `classes`, or one of `class_names`.
fn class_index(class: &str, classes: usize, class_names: Option<&[String]>) -> Result<usize> {
    if let Some(index) = class_names.and_then(|names| names.iter().position(|n| n == class)) {
        return Ok(index);
    }
    match class.parse::<usize>() {
        Ok(index) if index < classes => Ok(index),
        _ => Err(Error::ClassWeight {
            given: class.to_string(),
            problem: format!(
                "is no class of the model: give an index in 0..{}{}",
                classes.saturating_sub(1),
                class_names.map(|names| format!(" or one of {}", names.join(", "))).unwrap_or_default()
            ),
        }),
    }
}

/// Examples per class index, refusing labels outside `0..classes`.
fn count_classes(indices: &[i64], classes: usize) -> Result<BTreeMap<usize, usize>> {
    let mut counts = BTreeMap::new();
    for &label in indices {
        let class = usize::try_from(label).ok().filter(|&c| c < classes).ok_or_else(|| Error::ClassWeight {
            given: "balanced".into(),
            problem: format!("label {label} is not a class index in 0..{}", classes.saturating_sub(1)),
        })?;
        *counts.entry(class).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Each example's class: integer labels as they are, float rows by their argmax (as Keras's
/// `class_weight_to_sample_weights` takes them).
pub fn class_indices(labels: &TensorData) -> Result<Vec<i64>> {
    let shape = labels.shape();
    if shape.len() == 2 && shape[1] > 1 {
        let rows = labels.to_f32().ok_or_else(|| not_classes(labels))?;
        let rows = rows.into_dimensionality::<ndarray::Ix2>().expect("2-d");
        return Ok(rows
            .outer_iter()
            .map(|row| {
                row.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as i64
            })
            .collect());
    }
    let values = labels.to_f32().filter(|_| shape.len() == 1 || shape == [shape[0], 1]);
    Ok(values.ok_or_else(|| not_classes(labels))?.iter().map(|v| v.round() as i64).collect())
}

fn not_classes(labels: &TensorData) -> Error {
    Error::ClassWeight {
        given: String::new(),
        problem: format!("labels {} {:?} are not classes", labels.dtype(), labels.shape()),
    }
}

/// `inner` with each batch's weights set to its examples' class weights, `weights[class]`
/// (1.0 for a class beyond them).
pub fn class_weighted(inner: Arc<dyn Dataset>, weights: Vec<f32>) -> MapBatches {
    MapBatches::new(inner, move |batch: &mut Batch| {
        let of_class = |c: i64| usize::try_from(c).ok().and_then(|c| weights.get(c)).copied().unwrap_or(1.0);
        let each: Vec<f32> = class_indices(&batch.labels)?.into_iter().map(of_class).collect();
        batch.weights = Some(TensorData::Float32(ArrayD::from_shape_vec(IxDyn(&[each.len()]), each).expect("1-d")));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ArrayDataset;
    use ndarray::{arr1, arr2};

    fn data(labels: TensorData) -> ArrayDataset {
        let n = labels.shape()[0];
        ArrayDataset::new(TensorData::Float32(ArrayD::zeros(IxDyn(&[n, 2]))), labels, "test").unwrap()
    }

    #[test]
    fn balanced_is_sklearns_formula_over_the_classes_present() -> Result<()> {
        // 4 of class 0, 2 of class 2, none of class 1: 6 / (2 * 4) and 6 / (2 * 2).
        let labels = data(TensorData::Int64(arr1(&[0i64, 0, 2, 0, 2, 0]).into_dyn()));
        assert_eq!(ClassWeights::Balanced.resolve(&labels, 3, None)?, vec![0.75, 1.0, 1.5]);
        let one_hot = data(TensorData::Float32(arr2(&[[1.0f32, 0.0], [0.0, 1.0], [0.0, 1.0]]).into_dyn()));
        assert_eq!(ClassWeights::Balanced.resolve(&one_hot, 2, None)?, vec![1.5, 0.75]);
        Ok(())
    }

    #[test]
    fn given_weights_by_index_or_name_and_the_rest_count_one() -> Result<()> {
        let labels = data(TensorData::Int64(arr1(&[0i64, 1, 2]).into_dyn()));
        let names = ["cars".to_string(), "trucks".to_string(), "motorcycles".to_string()];
        let weights = ClassWeights::parse("trucks:2.5, 0:0.5")?.resolve(&labels, 3, Some(&names))?;
        assert_eq!(weights, vec![0.5, 2.5, 1.0]);
        let error = ClassWeights::parse("buses:1")?.resolve(&labels, 3, Some(&names)).unwrap_err().to_string();
        assert!(error.contains("one of cars, trucks, motorcycles"), "{error}");
        assert!(ClassWeights::parse("0:-1").is_err() && ClassWeights::parse("0=1").is_err());
        Ok(())
    }

    #[test]
    fn batches_carry_their_examples_class_weights() -> Result<()> {
        let labels = Arc::new(data(TensorData::Int64(arr1(&[2i64, 0, 1]).into_dyn())));
        let weighted = class_weighted(labels, vec![0.5, 2.0, 3.0]);
        let batch = weighted.gather(&[0, 2])?;
        assert_eq!(batch.weights, Some(TensorData::Float32(arr1(&[3.0f32, 2.0]).into_dyn())));
        Ok(())
    }
}
