//! Where examples come from, as a user names them: an image folder (one sub-folder per class), a
//! `.npz` file of arrays, or TFRecord files of `tf.train.Example`. [`DataSource::detect`] decides
//! which a path is, in one order for training, evaluation and prediction alike, and
//! [`DataSource::open`] opens it for a model input.
//!
//! ```no_run
//! # fn main() -> Result<(), tfload::Error> {
//! use tfload::data::{DataSource, Purpose, SourceOptions};
//! use tfload::train::TrainableModel;
//!
//! let model = TrainableModel::open("saved_models/cnn_digits")?;
//! let source = DataSource::detect("data/digits_train.npz", &SourceOptions::default())?;
//! let train = source.open(&model.input_spec()?, || model.image_spec(), Purpose::Training)?;
//! println!("{}", train.describe());
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::tfrecord::first_record_features;
use crate::data::with_labels_as;
use crate::data::TfRecordOptions;
use crate::data::{ArrayDataset, Dataset, FeatureMapping, ImageFolderDataset, InputSpec, LabelTarget, TfRecordDataset};
use crate::error::{Error, Result};
use crate::formats::images::{is_image_file, ImageSpec};
use crate::formats::tfrecord::Compression;
use crate::model::signature::TensorSpec;

/// The kinds of data a path can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A folder with one sub-folder of images per class (classes sorted by name, as Keras reads them).
    ImageFolder,
    /// A `.npz` file with a feature array and a label array.
    Arrays,
    /// TFRecord files (a file or a glob) of serialized `tf.train.Example`.
    TfRecord,
}

/// What the data is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Training: labelled, and every class folder must hold images.
    Training,
    /// Evaluation: labelled.
    Evaluation,
    /// Prediction: inputs only (TFRecord data needs no label feature).
    Prediction,
}

/// How data is read, beyond its path.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// `.npz` data: the feature array's name (default `x`, then `features`).
    pub feature_key: Option<String>,
    /// `.npz` data: the label array's name (default `y`, then `labels`).
    pub label_key: Option<String>,
    /// TFRecord data: which features are the input and the label, and how files are read.
    pub tfrecord: TfRecordSettings,
    /// The model's class names in output order: image folders are labelled by these names,
    /// not by the folders' sorted order (see [`ImageFolderDataset::matched_to`]).
    pub class_names: Option<Vec<String>>,
    /// The labels the model takes: each batch's labels are converted to them (see
    /// [`LabelTarget::convert`]); `None` feeds them as the data holds them.
    pub labels: Option<LabelTarget>,
    /// `.npz` data: the array of per-example weights (Keras's `sample_weight`), where given.
    pub sample_weight: Option<String>,
}

/// How TFRecord data is read.
#[derive(Debug, Clone, Default)]
pub struct TfRecordSettings {
    /// The feature that is the model input: `KEY`, or `INPUT=KEY` to name the model input too.
    pub feature: Option<String>,
    /// The feature that holds the label.
    pub label: Option<String>,
    /// Compression and what to do with corrupt records.
    pub options: TfRecordOptions,
}

/// A path of data and the kind it was recognised as.
#[derive(Debug, Clone)]
pub struct DataSource {
    path: PathBuf,
    kind: SourceKind,
    options: SourceOptions,
}

impl DataSource {
    /// Recognises what `path` holds. TFRecord data is a glob, a file that starts as a TFRecord
    /// file does, or any file when a TFRecord feature is named; a folder is an image folder;
    /// anything else is read as `.npz`.
    pub fn detect(path: impl AsRef<Path>, options: &SourceOptions) -> Result<DataSource> {
        let path = path.as_ref().to_path_buf();
        let kind = if DataSource::is_tfrecord(&path, &options.tfrecord) {
            SourceKind::TfRecord
        } else if !path.exists() {
            return Err(Error::DataNotFound { path });
        } else if path.is_dir() {
            SourceKind::ImageFolder
        } else {
            SourceKind::Arrays
        };
        Ok(DataSource { path, kind, options: options.clone() })
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the path was recognised as.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Opens the data for the model input `input`, its labels converted to
    /// [`SourceOptions::labels`] where given. `image` says how images must be read to feed it; it
    /// is asked only for image folders.
    pub fn open(
        &self,
        input: &TensorSpec,
        image: impl FnOnce() -> Result<ImageSpec>,
        purpose: Purpose,
    ) -> Result<Arc<dyn Dataset>> {
        if let (Some(key), false) = (&self.options.sample_weight, self.kind == SourceKind::Arrays) {
            return Err(Error::SampleWeightsUnavailable { data: self.path.clone(), key: key.clone() });
        }
        let dataset = self.open_as_stored(input, image, purpose)?;
        Ok(match self.options.labels.filter(|_| purpose != Purpose::Prediction) {
            Some(target) => Arc::new(with_labels_as(dataset, target)),
            None => dataset,
        })
    }

    /// Opens the data with its labels as the data holds them.
    fn open_as_stored(
        &self,
        input: &TensorSpec,
        image: impl FnOnce() -> Result<ImageSpec>,
        purpose: Purpose,
    ) -> Result<Arc<dyn Dataset>> {
        match self.kind {
            SourceKind::TfRecord => Ok(Arc::new(self.open_tfrecord(input, purpose)?)),
            SourceKind::ImageFolder => {
                let mut folder = ImageFolderDataset::open(&self.path, image()?)?;
                if let Some(model_classes) = &self.options.class_names {
                    folder = folder.matched_to(model_classes)?;
                }
                if purpose == Purpose::Training {
                    refuse_empty_classes(&folder)?;
                }
                Ok(Arc::new(folder))
            }
            SourceKind::Arrays => {
                let (features, labels) = (self.options.feature_key.as_deref(), self.options.label_key.as_deref());
                Ok(Arc::new(match &self.options.sample_weight {
                    Some(key) => ArrayDataset::from_npz_weighted(&self.path, features, labels, key)?,
                    None => ArrayDataset::from_npz(&self.path, features, labels)?,
                }))
            }
        }
    }

    /// Opens TFRecord data, with the label feature unless `purpose` is prediction.
    pub fn open_tfrecord(&self, input: &TensorSpec, purpose: Purpose) -> Result<TfRecordDataset> {
        let settings = &self.options.tfrecord;
        let labelled = purpose != Purpose::Prediction;
        let (Some(feature), true) = (&settings.feature, settings.label.is_some() || !labelled) else {
            let features = first_record_features(&self.path, settings.options)?;
            return Err(Error::TfRecordFeaturesUnnamed {
                path: self.path.clone(),
                features: if features.is_empty() { "no features".to_string() } else { features.join(", ") },
            });
        };
        let key = match feature.split_once('=') {
            Some((name, key)) if name == input.key => key,
            Some((name, _)) => {
                return Err(Error::NoSuchModelInput {
                    given: feature.clone(),
                    name: name.to_string(),
                    input: input.key.clone(),
                })
            }
            None => feature.as_str(),
        };
        let mapping = FeatureMapping { input: key.to_string(), label: settings.label.clone() };
        TfRecordDataset::open(&self.path, mapping, InputSpec::of(input)?, settings.options)
    }
}

impl DataSource {
    /// Whether `path` is TFRecord data under `settings` (see [`DataSource::detect`]).
    pub fn is_tfrecord(path: &Path, settings: &TfRecordSettings) -> bool {
        if path.is_dir() || path.extension().is_some_and(|e| e == "npz" || e == "npy") || is_image_file(path) {
            return false;
        }
        let glob = !path.exists() && path.to_string_lossy().contains(['*', '?', '[']);
        // An empty file is a valid TFRecord file of no records, but nobody means that: left to the
        // other readers, it is reported as the empty file it is.
        let non_empty = || std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0);
        let sniffed = || non_empty() && matches!(Compression::detect(path), Ok(Some(_)));
        glob || settings.feature.is_some() || settings.label.is_some() || sniffed()
    }
}

/// A class folder without images would train a class never seen.
fn refuse_empty_classes(folder: &ImageFolderDataset) -> Result<()> {
    let names = folder.class_names().unwrap_or_default();
    let empty: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(label, _)| !folder.labels().contains(&(*label as i64)))
        .map(|(_, name)| name.as_str())
        .collect();
    if empty.is_empty() {
        return Ok(());
    }
    Err(Error::EmptyClassFolders { data: folder.describe(), classes: empty.join(", ") })
}
