//! Rust types for the TensorFlow protobuf messages tfload decodes itself (see `proto/`), generated
//! by prost at build time. Private: the rest of the crate turns them into documented types.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
