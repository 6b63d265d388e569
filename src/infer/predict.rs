//! Inference for services and tools: a [`Predictor`] holds one loaded session and one bound
//! signature and is called from any number of threads; an [`ImageClassifier`] on top of it turns
//! image files into top-k classes with their names.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayView1, Axis, Ix2};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::images::{ImageSpec, UnfitImageInput};
use crate::model::record::{RecordView, EVAL_STEP};
use crate::model::signature::{Signature, TensorSpec};
use crate::serving_export::SERVING_DEFAULT;
use crate::session::call::{BoundSignature, Tensors};
use crate::session::loaded_model::{LoadScope, LoadedModel, SessionConfig};
use crate::tensor::dtype::DType;
use crate::tensor::TensorData;

/// One signature of a loaded model, ready to be called many times.
///
/// # Threads
///
/// `Predictor` is `Send + Sync`, and [`Predictor::run`] takes `&self`: share one predictor
/// between threads (in an `Arc`, or borrowed by scoped threads) rather than loading the model
/// once per thread. This holds because the tensorflow crate declares its `Session`, `Graph` and
/// `Operation` `Send + Sync`, and the TF C API documents `TF_SessionRun` as safe to call
/// concurrently on one session: each call gets its own feeds, fetches and run state, and the
/// model's variables are only read during inference. Calls run in parallel inside TensorFlow;
/// its thread pools (see [`SessionConfig`]) are shared by all of them.
pub struct Predictor {
    model: LoadedModel,
    signature: BoundSignature,
}

impl Predictor {
    /// Loads the MetaGraph with `tags` from `dir` and binds its signature `key`.
    pub fn load<S: AsRef<str>>(
        dir: impl AsRef<Path>,
        tags: &[S],
        key: &str,
        config: SessionConfig,
    ) -> Result<Predictor> {
        Predictor::new(LoadedModel::load_scoped(dir, tags, config, &LoadScope::signatures(&[key]))?, key)
    }

    /// Like [`Predictor::load`] for `serving_default`, with the model's `eval_step` (if it has
    /// one) also loaded, as [`evaluate`](crate::infer::evaluate::evaluate) runs both.
    pub fn load_for_evaluation<S: AsRef<str>>(
        dir: impl AsRef<Path>,
        tags: &[S],
        config: SessionConfig,
    ) -> Result<Predictor> {
        let scope = LoadScope::signatures(&[SERVING_DEFAULT, EVAL_STEP]);
        Predictor::new(LoadedModel::load_scoped(dir, tags, config, &scope)?, SERVING_DEFAULT)
    }

    /// Binds signature `key` of an already loaded model.
    pub fn new(model: LoadedModel, key: &str) -> Result<Predictor> {
        let signature = BoundSignature::bind(&model, key)?;
        Ok(Predictor { model, signature })
    }

    /// The loaded model.
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// The signature's specs.
    pub fn signature(&self) -> &Signature {
        self.signature.signature()
    }

    /// Runs the signature on `inputs` (by key), checked first, and returns every output by key.
    pub fn run(&self, inputs: &Tensors) -> Result<Tensors> {
        self.signature.run(&self.model, inputs, None)
    }

    /// Runs the signature and returns only the outputs named in `wanted`.
    pub fn run_outputs(&self, inputs: &Tensors, wanted: &[&str]) -> Result<Tensors> {
        self.signature.run(&self.model, inputs, Some(wanted))
    }

    /// The class names in the model's `assets/tfload_contract.json`, where it has them.
    pub fn record_class_names(&self) -> Option<Vec<String>> {
        RecordView::read(self.model.dir()).class_names
    }

    fn unsuitable(&self, problem: String) -> Error {
        Error::UnsuitableModel { dir: self.model.dir().to_path_buf(), signature: self.signature().key.clone(), problem }
    }
}

/// One class of a classification, with its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    /// Index of the class in the model's output.
    pub index: usize,
    /// The class name (the index as text when the model names no classes).
    pub class: String,
    /// The probability (or the model's raw score when it gives neither probabilities nor
    /// logits).
    pub score: f32,
}

/// How an [`ImageClassifier`] reads a model; every field can be left to the model.
#[derive(Debug, Clone, Default)]
pub struct ClassifierOptions {
    /// The output holding the class scores; default `outputs`, or the signature's only output.
    pub output: Option<String>,
    /// Height and width to resize to, needed when the model leaves them open.
    pub image_size: Option<(usize, usize)>,
    /// Class names in output order; default the model's `assets/tfload_contract.json`.
    pub class_names: Option<Vec<String>>,
}

/// An image classifier: a [`Predictor`] whose signature takes one batch of images
/// `[batch, height, width, channels]` (float32, raw 0..255 pixels) and gives class scores
/// `[batch, classes]`. `Send + Sync` like the predictor it wraps.
pub struct ImageClassifier {
    predictor: Predictor,
    input: String,
    output: String,
    image: ImageSpec,
    class_names: Option<Vec<String>>,
    softmax: bool,
}

impl ImageClassifier {
    /// Checks that `predictor`'s signature is an image classifier and reads its classes.
    pub fn new(predictor: Predictor, options: ClassifierOptions) -> Result<ImageClassifier> {
        let (input, image) = predictor.image_input(options.image_size)?;
        let output = predictor.score_output(options.output.as_deref())?;
        let record = RecordView::read(predictor.model.dir());
        let class_names = options.class_names.or_else(|| record.class_names.clone());
        let classes = output.shape.dims().and_then(|dims| dims[1]);
        if let (Some(names), Some(classes)) = (&class_names, classes) {
            if names.len() as u64 != classes {
                return Err(predictor.unsuitable(format!(
                    "{} class names given for the {classes} classes of output `{}`",
                    names.len(),
                    output.key
                )));
            }
        }
        let softmax = record.output_kind(&output.key) == Some("logits");
        Ok(ImageClassifier { input, output: output.key.clone(), image, class_names, softmax, predictor })
    }

    /// The predictor.
    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// What one input image becomes: size and channels.
    pub fn image_spec(&self) -> ImageSpec {
        self.image
    }

    /// The input and output keys used.
    pub fn keys(&self) -> (&str, &str) {
        (&self.input, &self.output)
    }

    /// The class names, where the model or the options give them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Class scores `[batch, classes]` of a batch `[batch, height, width, channels]`, as
    /// probabilities when the model's record says its output is logits.
    pub fn scores(&self, images: ArrayD<f32>) -> Result<ndarray::Array2<f32>> {
        let inputs = Tensors::from([(self.input.clone(), TensorData::Float32(images))]);
        let mut outputs = self.predictor.run_outputs(&inputs, &[self.output.as_str()])?;
        let scores = outputs.remove(&self.output).and_then(|data| data.to_f32());
        let scores = scores.and_then(|s| s.into_dimensionality::<Ix2>().ok());
        let mut scores = scores
            .ok_or_else(|| self.predictor.unsuitable(format!("output `{}` is not [batch, classes]", self.output)))?;
        if self.softmax {
            scores.axis_iter_mut(Axis(0)).for_each(|mut row| softmax(row.view_mut()));
        }
        Ok(scores)
    }

    /// The `k` best classes of each image of a batch, best first.
    pub fn classify(&self, images: ArrayD<f32>, k: usize) -> Result<Vec<Vec<ClassScore>>> {
        let scores = self.scores(images)?;
        Ok(scores.axis_iter(Axis(0)).map(|row| self.named(top_k(row, k))).collect())
    }

    /// Reads, resizes and classifies image files (decoded in parallel), one result per file.
    pub fn classify_files(&self, paths: &[PathBuf], k: usize) -> Result<Vec<Vec<ClassScore>>> {
        refuse_empty_files(paths)?;
        self.classify(self.image.load_batch(paths)?, k)
    }

    fn named(&self, top: Vec<(usize, f32)>) -> Vec<ClassScore> {
        top.into_iter()
            .map(|(index, score)| ClassScore {
                index,
                class: self
                    .class_names
                    .as_ref()
                    .and_then(|names| names.get(index).cloned())
                    .unwrap_or_else(|| index.to_string()),
                score,
            })
            .collect()
    }
}

impl Predictor {
    /// The key of the signature's one image input `[batch, height, width, channels]` and what
    /// an image must become to feed it; `size` (height, width) where the model leaves it open.
    pub fn image_input(&self, size: Option<(usize, usize)>) -> Result<(String, ImageSpec)> {
        image_input(self, size)
    }

    /// The output with class scores `[batch, classes]`: `wanted`, else `outputs`, else the
    /// signature's only output.
    pub fn score_output(&self, wanted: Option<&str>) -> Result<&TensorSpec> {
        score_output(self, wanted)
    }
}

fn image_input(predictor: &Predictor, size: Option<(usize, usize)>) -> Result<(String, ImageSpec)> {
    let signature = predictor.signature();
    let [spec] = signature.inputs.as_slice() else {
        return Err(predictor.unsuitable(format!(
            "an image classifier takes one input, and this signature takes {}",
            signature.inputs.len()
        )));
    };
    let fitted = match spec.dtype {
        DType::Float32 => ImageSpec::for_input_shape(&spec.shape, size),
        _ => Err(UnfitImageInput::NotImageBatch),
    };
    let problem = match fitted {
        Ok(image) => return Ok((spec.key.clone(), image)),
        Err(UnfitImageInput::NotImageBatch) => format!(
            "input `{}` is {} {}, not a float32 batch of images [batch, height, width, channels]",
            spec.key, spec.dtype, spec.shape
        ),
        Err(UnfitImageInput::Channels) => {
            format!("input `{}` has {} channels; images have 1, 3 or 4", spec.key, spec.shape)
        }
        Err(UnfitImageInput::OpenSize) => format!(
            "input `{}` has shape {}, which leaves the image size open; give one (--image-size HxW)",
            spec.key, spec.shape
        ),
    };
    Err(predictor.unsuitable(problem))
}

fn score_output<'p>(predictor: &'p Predictor, wanted: Option<&str>) -> Result<&'p TensorSpec> {
    let signature = predictor.signature();
    let keys: Vec<&str> = signature.outputs.iter().map(|o| o.key.as_str()).collect();
    let found = match wanted {
        Some(key) => signature.output(key),
        None => signature.output("outputs").or(match signature.outputs.as_slice() {
            [only] => Some(only),
            _ => None,
        }),
    };
    let spec = found.ok_or_else(|| {
        predictor.unsuitable(format!(
            "choose the output with class scores (--output KEY); its outputs are: {}",
            keys.join(", ")
        ))
    })?;
    let is_scores = matches!(spec.dtype, DType::Float16 | DType::Float32 | DType::Float64)
        && spec.shape.dims().is_none_or(|dims| dims.len() == 2);
    if !is_scores {
        return Err(predictor.unsuitable(format!(
            "output `{}` is {} {}, not class scores [batch, classes]",
            spec.key, spec.dtype, spec.shape
        )));
    }
    Ok(spec)
}

/// The `k` largest values of `scores` with their indices, largest first (ties: lower index
/// first; NaN last).
pub fn top_k(scores: ArrayView1<f32>, k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.retain(|(_, score)| !score.is_nan());
    ranked.truncate(k);
    ranked
}

/// Turns logits into probabilities in place.
fn softmax(mut row: ndarray::ArrayViewMut1<f32>) {
    let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    row.mapv_inplace(|v| (v - max).exp());
    let sum = row.sum();
    row.mapv_inplace(|v| v / sum);
}

/// Refuses zero-byte files by name before decoding: the decoder would only say that it cannot
/// tell the format.
fn refuse_empty_files(paths: &[PathBuf]) -> Result<()> {
    match paths.iter().find(|path| std::fs::metadata(path).is_ok_and(|m| m.len() == 0)) {
        Some(path) => {
            Err(Error::Image { path: path.clone(), problem: "empty file (0 bytes), not an image".to_string() })
        }
        None => Ok(()),
    }
}

/// Reads class names from a text file, one per line (blank lines at the end ignored).
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let names: Vec<String> = text.trim_end().lines().map(|line| line.trim().to_string()).collect();
    if names.iter().all(String::is_empty) {
        return Err(Error::Labels {
            path: path.to_path_buf(),
            problem: "holds no class names; write one name per line, in the model's output order".to_string(),
        });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn top_k_orders_best_first_and_skips_nan() {
        let scores = arr1(&[0.1f32, f32::NAN, 0.5, 0.5, 0.2]);
        assert_eq!(top_k(scores.view(), 3), vec![(2, 0.5), (3, 0.5), (4, 0.2)]);
        assert_eq!(top_k(scores.view(), 10).len(), 4);
    }

    #[test]
    fn softmax_gives_probabilities() {
        let mut row = arr1(&[1000.0f32, 1000.0, f32::NEG_INFINITY]);
        softmax(row.view_mut());
        assert_eq!(row.to_vec(), vec![0.5, 0.5, 0.0]);
    }

    #[test]
    fn predictor_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Predictor>();
        shared::<ImageClassifier>();
    }

    #[test]
    fn class_names_file_needs_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.txt");
        std::fs::write(&path, "cat\ndog\n\n").unwrap();
        assert_eq!(read_class_names(&path).unwrap(), vec!["cat", "dog"]);
        std::fs::write(&path, "\n\n").unwrap();
        assert!(read_class_names(&path).unwrap_err().to_string().contains("holds no class names"));
    }
}
