//! Hostile inputs: corrupt, truncated or oversized arrays, records and files get clear errors, never a crash.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod hostile_arrays;
mod hostile_formats;
mod hostile_records;
