//! `tfload signatures` and `tfload variables`: the CLI, and parity with Python's view of the same models.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod inspect_cli;
mod inspect_parity;
