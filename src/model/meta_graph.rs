//! One MetaGraph of a SavedModel (one tag set): its signatures, variables, saver and assets, read
//! from the decoded protobuf without a session.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::signature::{is_internal_key, Signature};
use crate::model::variables::{self, VariableInfo};
use crate::proto;

/// The MetaGraph of one tag set.
#[derive(Debug, Clone)]
pub struct MetaGraph {
    dir: PathBuf,
    tags: Vec<String>,
    proto: proto::MetaGraphDef,
}

/// Names of the graph tensors and ops that save and restore the model's variables (the
/// MetaGraph's `SaverDef`). Feeding a checkpoint prefix to `filename_tensor` and fetching
/// `save_tensor` writes every variable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SaverSpec {
    /// Placeholder that takes the checkpoint prefix (`saver_filename:0`).
    pub filename_tensor: String,
    /// Tensor whose evaluation writes the checkpoint.
    pub save_tensor: String,
    /// Op that restores the variables from the checkpoint prefix.
    pub restore_op: String,
}

impl MetaGraph {
    pub(crate) fn new(dir: &Path, tags: Vec<String>, proto: proto::MetaGraphDef) -> MetaGraph {
        MetaGraph { dir: dir.to_path_buf(), tags, proto }
    }

    /// The same MetaGraph, as read from `dir`, a byte-identical copy of the directory it was
    /// read from (variables and assets are then looked up there).
    pub fn relocated(mut self, dir: &Path) -> MetaGraph {
        self.dir = dir.to_path_buf();
        self
    }

    /// The SavedModel directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tag set, sorted.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The TensorFlow version that wrote the model, where recorded.
    pub fn tensorflow_version(&self) -> Option<&str> {
        self.proto.meta_info_def.as_ref().map(|info| info.tensorflow_version.as_str()).filter(|v| !v.is_empty())
    }

    /// The signatures: `serving_default` first, then the others by key. TensorFlow's internal
    /// ones (`__saved_model_init_op`) only when `include_internal`.
    pub fn signatures(&self, include_internal: bool) -> Vec<Signature> {
        let mut keys: Vec<&String> =
            self.proto.signature_def.keys().filter(|key| include_internal || !is_internal_key(key)).collect();
        keys.sort_by_key(|key| (key.as_str() != "serving_default", is_internal_key(key), *key));
        keys.into_iter().map(|key| Signature::from_proto(key, &self.proto.signature_def[key])).collect()
    }

    /// The signature with this key, or an error listing the keys there are.
    pub fn signature(&self, key: &str) -> Result<Signature> {
        match self.proto.signature_def.get(key) {
            Some(def) => Ok(Signature::from_proto(key, def)),
            None => Err(Error::SignatureNotFound {
                dir: self.dir.clone(),
                tags: self.tags.join(","),
                key: key.to_string(),
                available: self.signature_keys().join(", "),
            }),
        }
    }

    /// The keys of the signatures that are not internal, `serving_default` first.
    pub fn signature_keys(&self) -> Vec<String> {
        let keys: Vec<String> = self.signatures(false).into_iter().map(|s| s.key).collect();
        if keys.is_empty() {
            vec!["(none)".to_string()]
        } else {
            keys
        }
    }

    /// Every variable of the model: those its object graph records, in object-graph order, checked
    /// against the checkpoint index under `variables/`; for a TF1 model (no object graph), the
    /// graph's variable nodes that the checkpoint holds.
    pub fn variables(&self) -> Result<Vec<VariableInfo>> {
        match self.proto.object_graph_def.as_ref() {
            Some(graph) => variables::from_object_graph(&self.dir, graph),
            None => Ok(variables::list(self)?.variables),
        }
    }

    /// The object graph (TF2 SavedModels only).
    pub(crate) fn object_graph(&self) -> Option<&proto::SavedObjectGraph> {
        self.proto.object_graph_def.as_ref()
    }

    /// The saver's tensor names, used to write the variables back to a checkpoint.
    pub fn saver(&self) -> Option<SaverSpec> {
        let saver = self.proto.saver_def.as_ref()?;
        if saver.filename_tensor_name.is_empty() || saver.save_tensor_name.is_empty() {
            return None;
        }
        Some(SaverSpec {
            filename_tensor: saver.filename_tensor_name.clone(),
            save_tensor: saver.save_tensor_name.clone(),
            restore_op: saver.restore_op_name.clone(),
        })
    }

    /// Asset files the model declares, as names under `assets/`.
    pub fn asset_files(&self) -> Vec<String> {
        self.proto.asset_file_def.iter().map(|asset| asset.filename.clone()).collect()
    }
}
