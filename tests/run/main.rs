//! `tfload run` (parity with Python on every committed model and on SavedModels made the ordinary
//! ways, and its errors) and `tfload export-serving`.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod bytes_inputs;
mod export_serving;
mod foreign_models;
mod run_errors;
mod run_parity;
