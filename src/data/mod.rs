//! Training and evaluation data: data sets of (input, label) examples that hand out batches by
//! example index, and the loader that orders them per epoch (seeded, reproducible on resume) and
//! prepares batches: on a background thread while the session computes for data that decodes or
//! is augmented ([`augment`]), between steps for data already in memory.

pub mod arrays;
pub mod augment;
pub mod image_folder;
pub mod labels;
pub mod loader;
pub mod source;
pub mod tfrecord;
pub mod weights;

use std::sync::Arc;

use crate::error::Result;
use crate::tensor::TensorData;

pub use arrays::ArrayDataset;
pub use augment::Augmentation;
pub use image_folder::ImageFolderDataset;
pub use labels::{with_labels_as, LabelMode, LabelTarget};
pub use loader::{epoch_order, BatchLoader, LoaderOptions};
pub use source::{DataSource, Purpose, SourceKind, SourceOptions, TfRecordSettings};
pub use tfrecord::{FeatureMapping, InputSpec, TfRecordDataset, TfRecordOptions};
pub use weights::{class_weighted, ClassWeights};

/// One batch: the model input, the labels, and which examples they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Model input, first axis the batch.
    pub inputs: TensorData,
    /// Labels, first axis the batch.
    pub labels: TensorData,
    /// The data set indices of the examples, in batch order.
    pub indices: Vec<usize>,
    /// Each example's weight, float32 `[batch]` (sample or class weights), where the data has them.
    pub weights: Option<TensorData>,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// A batch without weights.
    pub fn new(inputs: TensorData, labels: TensorData, indices: Vec<usize>) -> Batch {
        Batch { inputs, labels, indices, weights: None }
    }

    /// Bytes of its inputs, labels and weights.
    pub fn nbytes(&self) -> usize {
        self.inputs.nbytes() + self.labels.nbytes() + self.weights.as_ref().map_or(0, TensorData::nbytes)
    }
}

/// A data set of labelled examples, addressed by index. Implementations decode or copy only the
/// examples asked for, so a loader can work ahead without holding the whole set twice.
pub trait Dataset: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;

    /// Whether there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one input example (`[8, 8, 1]`).
    fn example_shape(&self) -> Vec<usize>;

    /// Class names by label index, where the data set knows them (image folders do).
    fn class_names(&self) -> Option<Vec<String>> {
        None
    }

    /// Number of label classes the data holds (largest label + 1, or the class folders), where
    /// cheap to know; checked against the model's head before training.
    fn label_classes(&self) -> Option<usize> {
        None
    }

    /// What the data is, for messages (`saved_models/data/train.npz (717 examples)`).
    fn describe(&self) -> String;

    /// The examples at `indices`, as one batch in that order.
    fn gather(&self, indices: &[usize]) -> Result<Batch>;

    /// Like [`Dataset::gather`], written over `batch` (the batch before, in a loop). Data sets in
    /// memory copy into its arrays when they have the right type and shape, so a training loop
    /// allocates nothing per batch; the default replaces it.
    fn gather_into(&self, indices: &[usize], batch: &mut Batch) -> Result<()> {
        *batch = self.gather(indices)?;
        Ok(())
    }

    /// Whether gathering is a plain copy of data already in memory (no decoding, no reading).
    /// The loader gathers such data sets on the consumer's thread: a copy costs less than handing
    /// the batch over from a background thread, which on a 2-core machine competes with
    /// TensorFlow's own threads.
    fn is_in_memory(&self) -> bool {
        false
    }

    /// Records left out as corrupt when the data was opened (TFRecord data read with
    /// [`OnCorrupt::Skip`](crate::formats::tfrecord::OnCorrupt::Skip)); [`Dataset::describe`] says so too.
    fn skipped_records(&self) -> usize {
        0
    }

    /// Every example's label, first axis the example, where the data holds them all in memory
    /// (what `--class-weight balanced` counts).
    fn all_labels(&self) -> Option<TensorData> {
        None
    }

    /// What the user should know about how the data was read (classes matched to the model's
    /// by name, for example); empty for most data.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A view of some examples of another data set: a training or validation split.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    name: String,
}

impl Subset {
    /// The examples of `inner` at `indices`, called `name` in messages.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>, name: &str) -> Subset {
        Subset { inner, indices, name: name.to_string() }
    }

    /// The indices in the inner data set of the subset's examples at `indices`.
    fn inner_indices(&self, indices: &[usize]) -> Vec<usize> {
        indices.iter().map(|&i| self.indices[i]).collect()
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn example_shape(&self) -> Vec<usize> {
        self.inner.example_shape()
    }

    fn class_names(&self) -> Option<Vec<String>> {
        self.inner.class_names()
    }

    fn label_classes(&self) -> Option<usize> {
        self.inner.label_classes()
    }

    fn notes(&self) -> Vec<String> {
        self.inner.notes()
    }

    fn all_labels(&self) -> Option<TensorData> {
        Some(self.inner.all_labels()?.select_rows(&self.indices))
    }

    fn describe(&self) -> String {
        format!("{} of {} ({} examples)", self.name, self.inner.describe(), self.indices.len())
    }

    fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let mut batch = self.inner.gather(&self.inner_indices(indices))?;
        batch.indices = indices.to_vec();
        Ok(batch)
    }

    fn gather_into(&self, indices: &[usize], batch: &mut Batch) -> Result<()> {
        self.inner.gather_into(&self.inner_indices(indices), batch)?;
        batch.indices.clear();
        batch.indices.extend_from_slice(indices);
        Ok(())
    }

    fn is_in_memory(&self) -> bool {
        self.inner.is_in_memory()
    }
}

/// The batches of another data set, each changed by a function after it is gathered: labels
/// converted to the model's form, class weights added. Everything else is the inner set's.
pub struct MapBatches {
    inner: Arc<dyn Dataset>,
    map: BatchMap,
}

/// What [`MapBatches`] does to each batch.
type BatchMap = Box<dyn Fn(&mut Batch) -> Result<()> + Send + Sync>;

impl MapBatches {
    /// `inner`, each batch passed through `map`.
    pub fn new(inner: Arc<dyn Dataset>, map: impl Fn(&mut Batch) -> Result<()> + Send + Sync + 'static) -> MapBatches {
        MapBatches { inner, map: Box::new(map) }
    }
}

impl Dataset for MapBatches {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn example_shape(&self) -> Vec<usize> {
        self.inner.example_shape()
    }

    fn class_names(&self) -> Option<Vec<String>> {
        self.inner.class_names()
    }

    fn label_classes(&self) -> Option<usize> {
        self.inner.label_classes()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let mut batch = self.inner.gather(indices)?;
        (self.map)(&mut batch)?;
        Ok(batch)
    }

    fn gather_into(&self, indices: &[usize], batch: &mut Batch) -> Result<()> {
        self.inner.gather_into(indices, batch)?;
        (self.map)(batch)
    }

    fn is_in_memory(&self) -> bool {
        self.inner.is_in_memory()
    }

    fn skipped_records(&self) -> usize {
        self.inner.skipped_records()
    }

    fn notes(&self) -> Vec<String> {
        self.inner.notes()
    }

    fn all_labels(&self) -> Option<TensorData> {
        self.inner.all_labels()
    }
}

/// Splits a data set into (training, validation) as Keras's `image_dataset_from_directory` does
/// with `validation_split` and `seed`: the indices are shuffled with `seed`, the last
/// `fraction` becomes validation. The split is the same on every run with the same seed.
pub fn split(dataset: Arc<dyn Dataset>, fraction: f64, seed: u64) -> (Subset, Subset) {
    let order = epoch_order(dataset.len(), seed, u64::MAX, true);
    let validation_len = ((dataset.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let cut = dataset.len() - validation_len;
    (
        Subset::new(dataset.clone(), order[..cut].to_vec(), "training split"),
        Subset::new(dataset, order[cut..].to_vec(), "validation split"),
    )
}
