//! Rust types for the TensorFlow protobuf messages tfload decodes itself (see `proto/`), generated
//! by prost at build time. Private: the rest of the crate turns them into documented types.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));

/// The lossless messages `export-serving` edits and re-encodes (proto/tfload/serving.proto).
pub mod serving {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/tfload.serving.rs"));
}
