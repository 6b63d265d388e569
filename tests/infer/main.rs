//! Inference end to end: `predict` on images and TFRecords, `eval`, concurrency, parity with Python.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod eval_parity;
mod jpeg_parity;
mod load_scope;
mod predict_cli;
mod predict_concurrency;
mod predict_image_parity;
mod predict_tfrecord;
