//! `tfload run` (parity with Python on every committed model, and its errors) and `tfload export-serving`.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod export_serving;
mod run_errors;
mod run_parity;
