//! The SavedModel as files, read without a TensorFlow session: `saved_model.pb`, its meta graphs and
//! signatures, the variables (from the object graph and the checkpoint index) and the variable handles
//! of the graph.

pub mod duplicate_assets;
pub(crate) mod graph_cut;
pub(crate) mod graph_reach;
pub(crate) mod graph_saver;
pub mod handles;
pub mod meta_graph;
pub mod record;
pub mod saved_model;
pub mod signature;
pub(crate) mod taken_branches;
pub(crate) mod traced_saver;
pub mod variables;
