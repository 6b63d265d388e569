//! `tfload run`: parity with Python on every committed model, and its errors.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod run_errors;
mod run_parity;
