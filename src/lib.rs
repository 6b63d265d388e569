//! tfload: inspect, run and fine-tune TensorFlow SavedModels from Rust, with no Python at run time.
//!
//! The library does all the work; the `tfload` binary only parses arguments and prints.
//!
//! ```no_run
//! use tfload::SavedModel;
//!
//! # fn main() -> Result<(), tfload::Error> {
//! let model = SavedModel::open("saved_models/mlp_digits")?;
//! let graph = model.meta_graph(&["serve"])?;
//! let serving = graph.signature("serving_default")?;
//! for input in &serving.inputs {
//!     println!("{} {} {}", input.key, input.dtype, input.shape);
//! }
//! # Ok(())
//! # }
//! ```

pub mod bundle;
pub mod call;
pub mod checkpoint_index;
pub mod checkpoint_writer;
pub mod data;
pub mod dtype;
pub mod error;
pub mod evaluate;
mod fault;
pub mod handles;
pub mod images;
pub mod import_weights;
pub mod keras_h5;
pub mod meta_graph;
pub mod metrics;
pub mod npy;
pub mod output_dir;
pub mod predict;
mod proto;
pub mod saved_model;
pub mod serving_export;
pub mod shape;
pub mod signature;
pub mod tensor;
pub mod tensorboard;
pub mod tfrecord;
pub mod train;
pub mod variables;

pub use bundle::{LoadedModel, SessionConfig};
pub use call::{BoundSignature, Tensors};
pub use dtype::DType;
pub use error::{Error, Result};
pub use meta_graph::MetaGraph;
pub use saved_model::SavedModel;
pub use shape::Shape;
pub use signature::{Signature, TensorEncoding, TensorSpec};
pub use tensor::TensorData;
pub use variables::{VariableInfo, VariableTotals};

/// The TensorFlow version of the C library tfload runs on (the pinned tensorflow-cpu wheel's).
pub fn tensorflow_version() -> String {
    tensorflow::version().unwrap_or_else(|_| "unknown".to_string())
}
