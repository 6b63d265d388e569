//! A trainable SavedModel opened once: `saved_model.pb` decoded, the tfload record read and checked
//! against the graph and the checkpoint index. Everything a training run needs to know before it
//! loads a session comes from here: the input the data must fit, the default mask and learning
//! rate, the class names. Loading the session ([`TrainableModel::load`]) reuses the decoded graph.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::formats::images::{ImageSpec, UnfitImageInput};
use crate::model::meta_graph::MetaGraph;
use crate::model::record::{RECORD_PATH, SERVE_TAG, TRAIN_STEP};
use crate::model::saved_model::SavedModel;
use crate::model::signature::TensorSpec;
use crate::session::loaded_model::SessionConfig;
use crate::tensor::shape::Shape;
use crate::train::contract::TrainContract;
use crate::train::mask::{Mask, MaskSpec};
use crate::train::trainer::Trainer;

/// A trainable SavedModel, read and checked, not yet loaded into a session.
#[derive(Debug, Clone)]
pub struct TrainableModel {
    dir: PathBuf,
    meta_graph: MetaGraph,
    contract: TrainContract,
    /// The files as read, to recognise a byte-identical copy without decoding it again.
    graph_bytes: Arc<Vec<u8>>,
    record_bytes: Arc<Vec<u8>>,
}

impl TrainableModel {
    /// Reads the trainable SavedModel in `dir`: decodes `saved_model.pb` (tag set `serve`), reads
    /// the record and checks both against each other and against the checkpoint index.
    pub fn open(dir: impl AsRef<Path>) -> Result<TrainableModel> {
        let dir = dir.as_ref().to_path_buf();
        let graph_bytes = read_graph(&dir)?;
        let meta_graph = SavedModel::decode(dir.clone(), &graph_bytes)?.meta_graph(&[SERVE_TAG])?;
        let contract = TrainContract::read(&dir, &meta_graph)?;
        let record_bytes =
            std::fs::read(dir.join(RECORD_PATH)).map_err(|source| Error::Io { path: dir.join(RECORD_PATH), source })?;
        Ok(TrainableModel {
            dir,
            meta_graph,
            contract,
            graph_bytes: Arc::new(graph_bytes),
            record_bytes: Arc::new(record_bytes),
        })
    }

    /// The directory the model was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `serve` MetaGraph.
    pub fn meta_graph(&self) -> &MetaGraph {
        &self.meta_graph
    }

    /// The model's record: inputs, labels, mask variables, optimizer, defaults.
    pub fn contract(&self) -> &TrainContract {
        &self.contract
    }

    /// The `train_step` input that training data feeds (the model's one input).
    pub fn input_spec(&self) -> Result<TensorSpec> {
        let key = self.contract.input_key();
        self.meta_graph.signature(TRAIN_STEP)?.inputs.into_iter().find(|input| input.key == key).ok_or_else(|| {
            Error::MalformedSavedModel {
                path: self.dir.join("saved_model.pb"),
                problem: format!("its `{TRAIN_STEP}` signature has no input `{key}`, which the record names"),
            }
        })
    }

    /// How images must be read to feed the model: its input's height, width and channels; an
    /// error that says to train from arrays when the input is not a batch of images.
    pub fn image_spec(&self) -> Result<ImageSpec> {
        let shape = Shape::Known(self.contract.inputs[0].shape.clone());
        ImageSpec::for_input_shape(&shape, None).map_err(|problem| Error::NotAnImageModel {
            input: self.contract.input_key().to_string(),
            shape: shape.to_string(),
            why: match problem {
                UnfitImageInput::Channels => "whose channel count is not 1 (grayscale), 3 (RGB) or 4 (RGBA)",
                UnfitImageInput::NotImageBatch | UnfitImageInput::OpenSize => "not a batch of images of one size",
            },
        })
    }

    /// The learning rate the record suggests.
    pub fn default_learning_rate(&self) -> f32 {
        self.contract.learning_rate.default
    }

    /// The mask that `spec` gives on this model.
    pub fn mask(&self, spec: &MaskSpec) -> Result<Mask> {
        Mask::build(&self.contract, spec)
    }

    /// Loads the model into a session for training with `mask`, without decoding it again.
    pub fn load(&self, mask: Mask, session: SessionConfig) -> Result<Trainer> {
        Trainer::from_model(self, mask, session)
    }

    /// This model as read from `dir`, when `dir` holds the same `saved_model.pb` and record byte
    /// for byte (a copy of it, or a checkpoint of a run that started from it); `None` otherwise.
    pub fn same_files_in(&self, dir: &Path) -> Result<Option<TrainableModel>> {
        let same = |name: &str, bytes: &[u8]| -> Result<bool> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(found) => Ok(found == bytes),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(source) => Err(Error::Io { path, source }),
            }
        };
        if !same("saved_model.pb", &self.graph_bytes)? || !same(RECORD_PATH, &self.record_bytes)? {
            return Ok(None);
        }
        Ok(Some(TrainableModel {
            dir: dir.to_path_buf(),
            meta_graph: self.meta_graph.clone().relocated(dir),
            ..self.clone()
        }))
    }

    /// This model as read from `dir` (see [`TrainableModel::same_files_in`]), or `dir` opened and
    /// decoded when its files differ.
    pub fn reopen_in(&self, dir: &Path) -> Result<TrainableModel> {
        match self.same_files_in(dir)? {
            Some(model) => Ok(model),
            None => TrainableModel::open(dir),
        }
    }
}

/// Reads `dir/saved_model.pb`; when it cannot be read, the error says what `dir` is instead (not
/// a directory, not a SavedModel).
fn read_graph(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("saved_model.pb");
    std::fs::read(&path).or_else(|source| {
        SavedModel::open(dir)?;
        Err(Error::Io { path, source })
    })
}
