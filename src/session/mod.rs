//! Everything that runs TensorFlow: a SavedModel loaded into a session, and its signatures bound
//! for calls with their input checks and the feed/fetch conversions.

pub mod call;
pub mod feed;
pub mod libtensorflow;
pub mod loaded_model;
pub mod run_metadata;
pub mod saver;
pub mod server;
pub mod specialize;
