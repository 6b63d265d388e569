//! Keras weights in HDF5 files, read without Python or the HDF5 C library (the pure-Rust
//! `hdf5-reader` crate). Two layouts are understood:
//!
//! * **Keras 3** `model.save_weights("w.weights.h5")`: `layers/<key>/vars/<i>`, one group per
//!   layer whose `vars` group carries the layer's real name in its `name` attribute (the group
//!   key is Keras's internal one, `dense_1`), weights numbered in the layer's order.
//! * **Keras 2 / tf.keras (legacy)** `model.save("m.h5")` (weights under `model_weights/`) and
//!   `model.save_weights("w.h5")` (weights at the root): the `layer_names` attribute lists the
//!   layers, each layer group's `weight_names` attribute its weights in order
//!   (`dense/kernel:0`), each a dataset at `<layer>/<weight name>`.
//!
//! In both, a layer's weights come in Keras's `layer.weights` order: trainable ones first, then
//! the others (BatchNormalization: gamma, beta, moving_mean, moving_variance).

mod keras3;
mod legacy;

use std::path::{Path, PathBuf};

use hdf5_reader::group::Group;
use hdf5_reader::{Datatype, Hdf5File};
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::tensor::dtype::DType;
use crate::tensor::TensorData;

/// The first bytes of a zip archive, which a `.keras` file is.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Which writer made the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Layout {
    /// Keras 3 `save_weights` (`*.weights.h5`).
    Keras3,
    /// Keras 2 / tf.keras, or Keras 3's legacy `.h5` writer.
    Legacy {
        /// The `keras_version` attribute, where present.
        keras_version: Option<String>,
        /// The `backend` attribute, where present.
        backend: Option<String>,
        /// Whether the file is a whole model (`model.save`, weights under `model_weights/`).
        full_model: bool,
    },
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Keras3 => f.write_str("Keras 3 weights"),
            Layout::Legacy { keras_version, full_model, .. } => {
                let what = if *full_model { "model" } else { "weights" };
                let version = keras_version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
                write!(f, "legacy Keras{version} {what}")
            }
        }
    }
}

/// One weight of a layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct H5Weight {
    /// Its name in the file: `dense/kernel:0` (legacy) or its number `0`, `1`, ... (Keras 3).
    pub name: String,
    /// The dataset's path in the file.
    pub dataset: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
}

/// One layer and its weights, in Keras's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct H5Layer {
    /// The Keras layer name (`dense_1`, `head`).
    pub name: String,
    /// Its weights; empty for layers without any (Flatten, InputLayer).
    pub weights: Vec<H5Weight>,
}

/// An opened Keras weights file.
pub struct KerasWeights {
    path: PathBuf,
    file: Hdf5File,
    layout: Layout,
    layers: Vec<H5Layer>,
}

impl std::fmt::Debug for KerasWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KerasWeights")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("layers", &self.layers)
            .finish()
    }
}

impl KerasWeights {
    /// Opens a Keras HDF5 weights file and lists its layers and weights (values are read later,
    /// one at a time, by [`KerasWeights::read`]).
    pub fn open(path: impl AsRef<Path>) -> Result<KerasWeights> {
        let path = path.as_ref();
        let file = open_hdf5(path)?;
        let root = file.root_group().map_err(|e| not_hdf5(path, &e))?;
        let (layout, layers) = if let Some(found) = keras3::read(&file, &root, path)? {
            (Layout::Keras3, found)
        } else if let Some(found) = legacy::read(&file, &root, path)? {
            found
        } else {
            return Err(Error::NotKerasWeights {
                path: path.to_path_buf(),
                problem: "it has neither a `layers` group nor a `layer_names` attribute".to_string(),
            });
        };
        Ok(KerasWeights { path: path.to_path_buf(), file, layout, layers })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which layout the file has.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Every layer, weights or not, in the file's order.
    pub fn layers(&self) -> &[H5Layer] {
        &self.layers
    }

    /// The layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&H5Layer> {
        self.layers.iter().find(|layer| layer.name == name)
    }

    /// Reads one weight's values.
    pub fn read(&self, weight: &H5Weight) -> Result<TensorData> {
        let failed =
            |problem: String| Error::Hdf5Read { path: self.path.clone(), object: weight.dataset.clone(), problem };
        let dataset = self.file.dataset(&weight.dataset).map_err(|e| failed(e.to_string()))?;
        let shape = IxDyn(&weight.shape);
        macro_rules! read_as {
            ($variant:ident, $t:ty) => {{
                let mut values = vec![<$t>::default(); weight.shape.iter().product::<usize>()];
                dataset.read_into(&mut values).map_err(|e| failed(e.to_string()))?;
                TensorData::$variant(ArrayD::from_shape_vec(shape, values).map_err(|e| failed(e.to_string()))?)
            }};
        }
        Ok(match weight.dtype {
            DType::Float16 => {
                let bytes = dataset.read_native_bytes().map_err(|e| failed(e.to_string()))?;
                let values = bytes.chunks_exact(2).map(|b| half::f16::from_ne_bytes([b[0], b[1]])).collect();
                TensorData::Float16(ArrayD::from_shape_vec(shape, values).map_err(|e| failed(e.to_string()))?)
            }
            DType::Float32 => read_as!(Float32, f32),
            DType::Float64 => read_as!(Float64, f64),
            DType::Int8 => read_as!(Int8, i8),
            DType::Int16 => read_as!(Int16, i16),
            DType::Int32 => read_as!(Int32, i32),
            DType::Int64 => read_as!(Int64, i64),
            DType::UInt8 => read_as!(UInt8, u8),
            DType::UInt16 => read_as!(UInt16, u16),
            DType::UInt32 => read_as!(UInt32, u32),
            DType::UInt64 => read_as!(UInt64, u64),
            other => return Err(failed(format!("weights of dtype {other} are not supported"))),
        })
    }
}

fn open_hdf5(path: &Path) -> Result<Hdf5File> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if path.is_dir() {
        return Err(io(std::io::Error::other("is a directory, not a Keras weights file")));
    }
    let head = std::fs::read(path).map(|bytes| bytes.into_iter().take(4).collect::<Vec<u8>>()).map_err(io)?;
    if head.as_slice() == ZIP_MAGIC {
        return Err(Error::NotHdf5 {
            path: path.to_path_buf(),
            problem: "it is a zip archive, as a `.keras` file is; unzip it and give its model.weights.h5".to_string(),
        });
    }
    let file = Hdf5File::open(path).map_err(|e| not_hdf5(path, &e))?;
    check_stored_length(path, &file)?;
    Ok(file)
}

/// Refuses a file shorter than its superblock says it is, as libhdf5 (and so h5py) does: a cut
/// file can still parse up to its last complete object, silently losing the layers after it.
/// The superblock's own checksum (versions 2 and 3) and those of version-2 object headers are
/// verified by `hdf5-reader` as it parses them.
fn check_stored_length(path: &Path, file: &Hdf5File) -> Result<()> {
    let superblock = file.superblock();
    let actual = file.storage().len();
    let stored_end = superblock.base_address.checked_add(superblock.eof_address);
    match stored_end {
        Some(end) if end <= actual => Ok(()),
        _ => Err(Error::CorruptHdf5 {
            path: path.to_path_buf(),
            problem: format!(
                "its superblock says the file ends at byte {} (base address {} + end-of-file address {}), but it is {actual} bytes long",
                stored_end.map_or_else(|| "beyond 2^64".to_string(), |end| end.to_string()),
                superblock.base_address,
                superblock.eof_address
            ),
        }),
    }
}

fn not_hdf5(path: &Path, error: &dyn std::fmt::Display) -> Error {
    Error::NotHdf5 { path: path.to_path_buf(), problem: error.to_string() }
}

/// The dtype and shape of a dataset, as the import compares them with a variable's.
fn describe_dataset(path: &Path, dataset_path: &str, dataset: &hdf5_reader::Dataset) -> Result<(DType, Vec<usize>)> {
    let dtype = match dataset.dtype() {
        Datatype::FloatingPoint { size: 2, .. } => DType::Float16,
        Datatype::FloatingPoint { size: 4, .. } => DType::Float32,
        Datatype::FloatingPoint { size: 8, .. } => DType::Float64,
        Datatype::FixedPoint { size, signed, .. } => match (size, signed) {
            (1, true) => DType::Int8,
            (2, true) => DType::Int16,
            (4, true) => DType::Int32,
            (8, true) => DType::Int64,
            (1, false) => DType::UInt8,
            (2, false) => DType::UInt16,
            (4, false) => DType::UInt32,
            (8, false) => DType::UInt64,
            _ => DType::Invalid,
        },
        _ => DType::Invalid,
    };
    if dtype == DType::Invalid {
        return Err(Error::Hdf5Read {
            path: path.to_path_buf(),
            object: dataset_path.to_string(),
            problem: format!("it holds {:?}, not numbers; Keras weights are numeric arrays", dataset.dtype()),
        });
    }
    Ok((dtype, dataset.shape().iter().map(|&d| d as usize).collect()))
}

/// The child group `name` of `group` (at `group_path`), `None` if it has none. Any other
/// failure (a cut or corrupt object) is an error: skipping it would silently lose layers.
fn optional_group(path: &Path, group: &Group, group_path: &str, name: &str) -> Result<Option<Group>> {
    match group.group(name) {
        Ok(child) => Ok(Some(child)),
        Err(hdf5_reader::error::Error::GroupNotFound(_)) => Ok(None),
        Err(e) => Err(Error::Hdf5Read {
            path: path.to_path_buf(),
            object: format!("{group_path}/{name}"),
            problem: e.to_string(),
        }),
    }
}

/// The strings of a group attribute, or `None` if it has no such attribute. An empty list saved
/// by NumPy (`np.asarray([])`, float64 with no elements) reads as no strings.
fn string_attribute(path: &Path, group: &Group, name: &str) -> Result<Option<Vec<String>>> {
    let Ok(attribute) = group.attribute(name) else {
        return Ok(None);
    };
    if attribute.num_elements().unwrap_or(1) == 0 {
        return Ok(Some(Vec::new()));
    }
    attribute.read_strings().map(Some).map_err(|e| Error::Hdf5Read {
        path: path.to_path_buf(),
        object: format!("{}@{name}", group.name()),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("saved_models/h5").join(name)
    }

    type LayerSummary = (String, Vec<(String, Vec<usize>)>);

    fn summary(weights: &KerasWeights) -> Vec<LayerSummary> {
        let with_weights = weights.layers().iter().filter(|l| !l.weights.is_empty());
        with_weights
            .map(|l| (l.name.clone(), l.weights.iter().map(|w| (w.name.clone(), w.shape.clone())).collect()))
            .collect()
    }

    #[test]
    fn reads_keras3_layer_names_from_the_vars_attribute() -> Result<()> {
        let weights = KerasWeights::open(fixture("mlp_keras3.weights.h5"))?;
        assert_eq!(weights.layout(), &Layout::Keras3);
        let layers = summary(&weights);
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].0, "hidden");
        assert_eq!(layers[0].1, vec![("0".to_string(), vec![64, 32]), ("1".to_string(), vec![32])]);
        assert_eq!(layers[1].0, "output");
        Ok(())
    }

    #[test]
    fn reads_tf_keras_weight_names_in_order() -> Result<()> {
        let weights = KerasWeights::open(fixture("cnn_tfkeras.h5"))?;
        assert!(matches!(weights.layout(), Layout::Legacy { full_model: false, .. }));
        let bn = weights.layer("bn1").expect("bn1");
        let names: Vec<&str> = bn.weights.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["bn1/gamma:0", "bn1/beta:0", "bn1/moving_mean:0", "bn1/moving_variance:0"]);
        let value = weights.read(&bn.weights[3])?;
        assert_eq!(value.shape(), &[8]);
        Ok(())
    }

    #[test]
    fn a_full_legacy_model_keeps_its_weights_under_model_weights() -> Result<()> {
        let weights = KerasWeights::open(fixture("mlp_legacy_model.h5"))?;
        assert!(matches!(weights.layout(), Layout::Legacy { full_model: true, .. }));
        let hidden = weights.layer("hidden").expect("hidden");
        assert!(hidden.weights[0].dataset.starts_with("/model_weights/hidden/"));
        Ok(())
    }

    #[test]
    fn refuses_every_fixture_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["cnn_keras3.weights.h5", "mlp_keras3.weights.h5", "cnn_tfkeras.h5", "mlp_legacy_model.h5"] {
            let bytes = std::fs::read(fixture(name)).unwrap();
            for cut in [bytes.len() / 4, bytes.len() / 2, bytes.len() * 3 / 4, bytes.len() * 9 / 10, bytes.len() - 1] {
                let path = dir.path().join(name);
                std::fs::write(&path, &bytes[..cut]).unwrap();
                match KerasWeights::open(&path) {
                    Err(Error::CorruptHdf5 { problem, .. }) => {
                        assert!(problem.contains(&format!("it is {cut} bytes long")), "{problem}")
                    }
                    other => panic!("{name} cut at {cut} of {}: {other:?}", bytes.len()),
                }
            }
        }
    }

    #[test]
    fn refuses_a_file_that_is_not_hdf5() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.h5");
        std::fs::write(&path, b"not an hdf5 file at all, just text").unwrap();
        assert!(matches!(KerasWeights::open(&path), Err(Error::NotHdf5 { .. })));
    }
}
