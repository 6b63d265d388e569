//! Evaluating a model on labelled data: loss and metrics through the model's `eval_step`
//! signature where it has one (averaged over batches weighted by their size, as Keras's
//! `evaluate` does), and the classes `serving_default` predicts counted into a confusion matrix.

use std::collections::BTreeMap;
use std::sync::Arc;

use ndarray::Axis;
use serde::Serialize;

use crate::data::{BatchLoader, Dataset, LoaderOptions};
use crate::error::{Error, Result};
use crate::infer::metrics::ConfusionMatrix;
use crate::infer::metrics::{Metrics, WeightedMean};
use crate::infer::predict::{top_k, Predictor};
use crate::session::call::{BoundSignature, Tensors};
use crate::tensor::TensorData;
use crate::train::trainer::{step_weights, SAMPLE_WEIGHT};

pub use crate::model::record::EVAL_STEP;

/// What an evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: usize,
    /// Batches run.
    pub batches: usize,
    /// The mean loss from `eval_step`; `None` when the model has no `eval_step`.
    pub loss: Option<f64>,
    /// The other `eval_step` outputs (`accuracy`, ...), batch-size weighted means.
    pub metrics: BTreeMap<String, f64>,
    /// Class names by index: the data's (image folders), else the model's record's, else the
    /// indices.
    pub class_names: Vec<String>,
    /// Labels against predicted classes (argmax of `serving_default`); `None` when the labels
    /// are not class indices.
    pub confusion: Option<ConfusionMatrix>,
}

impl Evaluation {
    /// Accuracy of the predicted classes, where the labels are classes.
    pub fn accuracy(&self) -> Option<f64> {
        self.confusion.as_ref().map(ConfusionMatrix::accuracy)
    }
}

/// Evaluates `serving` (a model's `serving_default`) and the model's `eval_step`, if it has one
/// and it was loaded ([`Predictor::load_for_evaluation`] loads both), on
/// `data` in order, `batch_size` examples at a time. `on_batch` is told the examples done so
/// far after each batch.
pub fn evaluate(
    serving: &Predictor,
    data: Arc<dyn Dataset>,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Evaluation> {
    let model = serving.model();
    let (input, output) = single_input_and_output(serving)?;
    let eval_step = model.can_run(EVAL_STEP).then(|| BoundSignature::bind(model, EVAL_STEP)).transpose()?;
    let classes = serving.signature().output(&output).and_then(|spec| spec.shape.dims()?.get(1).copied().flatten());
    let mut totals = MetricTotals::default();
    let mut confusion = classes.map(|c| ConfusionMatrix::new(c as usize));
    let options = LoaderOptions { batch_size, shuffle: false, ..LoaderOptions::default() };
    let loader = BatchLoader::new(data.clone(), options);
    let mut report = Evaluation {
        examples: 0,
        batches: 0,
        loss: None,
        metrics: BTreeMap::new(),
        class_names: Vec::new(),
        confusion: None,
    };
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let weights = eval_step.as_ref().map(|step| step_weights(step.signature(), &batch)).transpose()?.flatten();
        let weights = weights.map(std::borrow::Cow::into_owned);
        let inputs = Tensors::from([(input.clone(), batch.inputs)]);
        if let Some(eval_step) = &eval_step {
            let mut with_labels = inputs.clone();
            with_labels.insert("labels".to_string(), batch.labels.clone());
            with_labels.extend(weights.map(|w| (SAMPLE_WEIGHT.to_string(), w)));
            totals.add(&eval_step.run(model, &with_labels, None)?, batch.indices.len());
        }
        let scores = serving.run_outputs(&inputs, &[output.as_str()])?.remove(&output).and_then(|s| s.to_f32());
        confusion = count_classes(confusion, scores, &batch.labels);
        report.examples += batch.indices.len();
        report.batches += 1;
        on_batch(report.examples);
    }
    let classes = confusion.as_ref().map_or(0, ConfusionMatrix::classes);
    report.class_names = [data.class_names(), serving.record_class_names()]
        .into_iter()
        .flatten()
        .find(|names| names.len() == classes)
        .unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect());
    report.confusion = confusion;
    (report.loss, report.metrics) = totals.means();
    Ok(report)
}

/// The one input key and the class-score output key of `serving`.
fn single_input_and_output(serving: &Predictor) -> Result<(String, String)> {
    let signature = serving.signature();
    let [input] = signature.inputs.as_slice() else {
        return Err(Error::UnsuitableModel {
            dir: serving.model().dir().to_path_buf(),
            signature: signature.key.clone(),
            problem: format!(
                "evaluation feeds one input, and this signature takes {}; use `tfload run` per batch instead",
                signature.inputs.len()
            ),
        });
    };
    Ok((input.key.clone(), serving.score_output(None)?.key.clone()))
}

/// Counts a batch's (label, argmax) pairs; the matrix is made on the first batch when the model
/// does not say how many classes it has, and dropped when the labels are not class indices.
fn count_classes(
    confusion: Option<ConfusionMatrix>,
    scores: Option<ndarray::ArrayD<f32>>,
    labels: &TensorData,
) -> Option<ConfusionMatrix> {
    let scores = scores?.into_dimensionality::<ndarray::Ix2>().ok()?;
    let labels: Vec<usize> = match labels {
        TensorData::Int64(a) => a.iter().map(|&l| usize::try_from(l).ok()).collect::<Option<_>>()?,
        TensorData::Int32(a) => a.iter().map(|&l| usize::try_from(l).ok()).collect::<Option<_>>()?,
        // One-hot (or soft) rows of categorical cross-entropy: the class is their argmax, as
        // Keras's CategoricalAccuracy takes it.
        TensorData::Float32(a) if a.ndim() == 2 => a
            .outer_iter()
            .map(|row| {
                row.iter().enumerate().fold((0, f32::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
            })
            .collect(),
        _ => return None,
    };
    let mut confusion = confusion.unwrap_or_else(|| ConfusionMatrix::new(scores.ncols()));
    for (row, label) in scores.axis_iter(Axis(0)).zip(labels) {
        let predicted = top_k(row, 1).first().map_or(0, |&(index, _)| index);
        if !confusion.add(label, predicted) {
            log::warn!("label {label} is outside the model's {} classes; not counted", confusion.classes());
        }
    }
    Some(confusion)
}

/// Sums of `eval_step` outputs weighted by batch size.
#[derive(Default)]
struct MetricTotals(WeightedMean);

impl MetricTotals {
    fn add(&mut self, outputs: &Tensors, batch: usize) {
        let scalars: Metrics = outputs
            .iter()
            .filter_map(|(key, value)| {
                let value = value.to_f32().filter(|v| v.len() == 1)?;
                Some((key.clone(), f64::from(value.iter().next().copied().unwrap_or(f32::NAN))))
            })
            .collect();
        self.0.add(&scalars, batch);
    }

    /// (loss, other metrics), each a weighted mean.
    fn means(self) -> (Option<f64>, Metrics) {
        let mut means = self.0.mean();
        (means.remove("loss"), means)
    }
}
