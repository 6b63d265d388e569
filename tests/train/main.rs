//! Training end to end: the CLI, parity with Python's train_step and Keras fit, safety under kills and full disks, TensorBoard logs.
//!
//! One test binary per area (fewer links, one support module: `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod augment;
mod distributed;
mod feature_cache;
mod frozen_base_step;
mod keras_layers;
mod linked_checkpoints_users;
mod output_size;
mod plateau_parity;
mod saved_model_source;
mod specialized_step;
mod tensorboard;
mod train_cli;
mod train_parity;
mod train_safety;
mod transfer_learning;
mod tutorial;
mod weights;
