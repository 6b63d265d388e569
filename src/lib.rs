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

#![warn(missing_docs)]

pub mod data;
pub mod error;
mod fault;
pub mod formats;
pub mod import_weights;
pub mod infer;
pub mod model;
pub mod output_dir;
mod proto;
pub mod serving_export;
pub mod session;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use model::meta_graph::MetaGraph;
pub use model::saved_model::SavedModel;
pub use model::signature::{Signature, TensorEncoding, TensorSpec};
pub use model::variables::{VariableInfo, VariableTotals};
pub use session::call::{BoundSignature, Tensors};
pub use session::loaded_model::{LoadScope, LoadedModel, SessionConfig};
pub use tensor::dtype::DType;
pub use tensor::shape::Shape;
pub use tensor::TensorData;

/// The TensorFlow version of the C library tfload runs on (the pinned tensorflow-cpu wheel's).
pub fn tensorflow_version() -> String {
    tensorflow::version().unwrap_or_else(|_| "unknown".to_string())
}
