//! Data formats end to end: TFRecord data sets and Keras HDF5 weight import.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod checkpoint_bytes;
mod import_weights;
mod import_weights_messages;
mod missing_weights;
mod tfrecord;
