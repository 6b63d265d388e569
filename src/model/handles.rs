//! The one-handle-per-variable check. A model loaded through the C API trains correctly only if
//! its graph holds exactly one resource handle (`VarHandleOp`) per variable: with two (a Keras
//! model kept as a `tf.Module` attribute, or `keras.export.ExportArchive` with a train endpoint),
//! the functions update one set while the saver writes or restores the other, so training looks
//! fine and the saved model keeps the old weights. tfload refuses such a model before training.

use std::collections::BTreeSet;

use prost::Message;

use crate::error::{Error, Result};
use crate::model::meta_graph::MetaGraph;
use crate::proto;
use crate::tensor::dtype::DType;

/// Checks that the graph of `meta_graph` has no more variable handles than the model has
/// variables (asset-path handles, which are strings, do not count).
pub fn check_one_handle_per_variable(meta_graph: &MetaGraph) -> Result<()> {
    let path = meta_graph.dir().join("saved_model.pb");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let model = proto::SavedModelNodes::decode(bytes.as_slice())
        .map_err(|source| Error::CorruptSavedModel { path: path.clone(), source })?;
    let graph = model.meta_graphs.iter().find(|graph| {
        let mut tags = graph.meta_info_def.as_ref().map(|info| info.tags.clone()).unwrap_or_default();
        tags.sort();
        tags == meta_graph.tags()
    });
    let Some(nodes) = graph.and_then(|graph| graph.graph_def.as_ref()) else {
        return Ok(());
    };
    let handles = variable_handles(nodes);
    let variables = meta_graph.variables()?.len();
    if handles.len() <= variables {
        return Ok(());
    }
    let shown: Vec<&str> = handles.iter().take(6).map(String::as_str).collect();
    Err(Error::DuplicateVariableHandles { path, handles: handles.len(), variables, examples: shown.join(", ") })
}

/// The shared names of the graph's variable handles (string-typed asset handles left out).
fn variable_handles(graph: &proto::GraphNodes) -> BTreeSet<String> {
    graph
        .node
        .iter()
        .filter(|node| node.op == "VarHandleOp")
        .filter(|node| node.attr.get("dtype").is_none_or(|dtype| DType::from_proto(dtype.r#type) != DType::String))
        .map(|node| {
            let shared = node.attr.get("shared_name").map(|attr| String::from_utf8_lossy(&attr.s).into_owned());
            shared.filter(|name| !name.is_empty()).unwrap_or_else(|| node.name.clone())
        })
        .collect()
}
