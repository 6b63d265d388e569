//! Loading a SavedModel into a TensorFlow session through the C API (restore and init op run),
//! with the session settings users tune (thread pools).

use std::path::{Path, PathBuf};

use prost::Message;
use tensorflow::{Graph, SavedModelBundle, SessionOptions};

use crate::error::{Error, Result};
use crate::model::meta_graph::MetaGraph;
use crate::model::saved_model::SavedModel;
use crate::proto;

/// Session settings. The defaults let TensorFlow size its thread pools to the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// Threads for one op's inner parallelism; 0 lets TensorFlow choose.
    pub intra_op_threads: u32,
    /// Threads for running independent ops at once; 0 lets TensorFlow choose.
    pub inter_op_threads: u32,
}

impl SessionConfig {
    fn to_options(self) -> Result<SessionOptions> {
        let mut options = SessionOptions::new();
        let config = config_proto(self.intra_op_threads, self.inter_op_threads);
        if !config.is_empty() {
            options
                .set_config(&config)
                .map_err(|status| Error::from_tensorflow("setting session options".to_string(), &status))?;
        }
        Ok(options)
    }
}

/// A serialized `tensorflow.ConfigProto` with the thread-pool fields set where non-zero.
fn config_proto(intra: u32, inter: u32) -> Vec<u8> {
    let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    proto::ConfigProto { intra_op_parallelism_threads: to_i32(intra), inter_op_parallelism_threads: to_i32(inter) }
        .encode_to_vec()
}

/// A SavedModel loaded into a session: graph, session and the MetaGraph it came from.
pub struct LoadedModel {
    dir: PathBuf,
    meta_graph: MetaGraph,
    graph: Graph,
    bundle: SavedModelBundle,
}

impl LoadedModel {
    /// Loads the MetaGraph with `tags` from `dir`, restoring its variables.
    pub fn load<S: AsRef<str>>(dir: impl AsRef<Path>, tags: &[S], config: SessionConfig) -> Result<LoadedModel> {
        let dir = dir.as_ref().to_path_buf();
        let meta_graph = SavedModel::open(&dir)?.meta_graph(tags)?;
        LoadedModel::load_meta_graph(dir, meta_graph, config)
    }

    /// Loads `meta_graph`, already read from `dir`'s `saved_model.pb`, restoring its variables
    /// (so that a caller that decoded the file does not decode it again).
    pub fn load_meta_graph(dir: PathBuf, meta_graph: MetaGraph, config: SessionConfig) -> Result<LoadedModel> {
        let index = crate::formats::checkpoint_index::CheckpointIndex::path_in(&dir);
        if !index.is_file() {
            return Err(Error::MissingVariables { dir });
        }
        // TensorFlow's own table reader trusts the index's block sizes (a corrupt footer made it
        // allocate 2 GiB and abort): the strict reader checks the index before TensorFlow sees it.
        crate::formats::checkpoint_index::CheckpointIndex::read(&index)?;
        crate::session::libtensorflow::check_version()?;
        let tag_list: Vec<&str> = meta_graph.tags().iter().map(String::as_str).collect();
        let mut graph = Graph::new();
        let bundle = SavedModelBundle::load(&config.to_options()?, &tag_list, &mut graph, &dir).map_err(|status| {
            Error::Load { dir: dir.clone(), tags: tag_list.join(","), message: status.to_string() }
        })?;
        Ok(LoadedModel { dir, meta_graph, graph, bundle })
    }

    /// The SavedModel directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The MetaGraph (signatures, variables, saver) of the loaded tag set.
    pub fn meta_graph(&self) -> &MetaGraph {
        &self.meta_graph
    }

    /// The TensorFlow graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The TensorFlow session.
    pub fn session(&self) -> &tensorflow::Session {
        &self.bundle.session
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_proto_sets_only_given_fields() {
        assert!(config_proto(0, 0).is_empty());
        assert_eq!(config_proto(2, 0), vec![0x10, 2]);
        assert_eq!(config_proto(0, 1), vec![0x28, 1]);
        assert_eq!(config_proto(300, 3), vec![0x10, 0xac, 0x02, 0x28, 3]);
    }
}
