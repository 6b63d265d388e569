//! The variable handles of a SavedModel's graph, and which of them hold what.
//!
//! A model loaded through the C API trains correctly only if its graph holds exactly one resource
//! handle (`VarHandleOp`) per variable: with two (a Keras model kept as a `tf.Module` attribute, or
//! `keras.export.ExportArchive` with a train endpoint), the functions update one set while the
//! saver writes or restores the other, so training looks fine and the saved model keeps the old
//! weights. tfload refuses such a model before training.
//!
//! Keras 3 models saved with `tf.saved_model.save(model)` have two handles per variable too: the
//! restore op fills `Variable_N`, the functions read `conv/kernel`. [`handles_to_fill`] finds the
//! handles the functions capture (through the object graph's `bound_inputs`) that the restore does
//! not fill, with the checkpoint key of the value each must hold, as `tf.saved_model.load` does.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use crate::error::{Error, Result};
use crate::model::meta_graph::MetaGraph;
use crate::model::variables::value_keys;
use crate::proto;
use crate::tensor::dtype::DType;

/// A handle that the model's functions read but its restore op does not fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleToFill {
    /// The `VarHandleOp` node.
    pub handle: String,
    /// The checkpoint key of the value it must hold.
    pub checkpoint_key: String,
    /// TensorFlow's `DataType` number of the variable.
    pub dtype: i32,
}

/// Checks that the graph of `meta_graph` has no more variable handles than the model has
/// variables (asset-path handles, which are strings, do not count).
pub fn check_one_handle_per_variable(meta_graph: &MetaGraph) -> Result<()> {
    let path = meta_graph.dir().join("saved_model.pb");
    let Some(nodes) = graph_of(meta_graph)?.and_then(|graph| graph.graph_def) else {
        return Ok(());
    };
    let handles = variable_handles(&nodes);
    let variables = meta_graph.variables()?.len();
    if handles.len() <= variables {
        return Ok(());
    }
    let shown: Vec<&str> = handles.iter().take(6).map(String::as_str).collect();
    Err(Error::DuplicateVariableHandles { path, handles: handles.len(), variables, examples: shown.join(", ") })
}

/// The graph (nodes, saver, collections) of `meta_graph`, decoded from `saved_model.pb` again:
/// the ordinary decode skips the GraphDef to keep listings fast.
pub(crate) fn graph_of(meta_graph: &MetaGraph) -> Result<Option<proto::MetaGraphNodes>> {
    let path = meta_graph.dir().join("saved_model.pb");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let model = proto::SavedModelNodes::decode(bytes.as_slice())
        .map_err(|source| Error::CorruptSavedModel { path: path.clone(), source })?;
    Ok(model.meta_graphs.into_iter().find(|graph| {
        let mut tags = graph.meta_info_def.as_ref().map(|info| info.tags.clone()).unwrap_or_default();
        tags.sort();
        tags == meta_graph.tags()
    }))
}

/// The handles the functions of `meta_graph` read that its restore op leaves empty, each with its
/// checkpoint key, in graph order. Empty for TF1 models (no object graph) and for models whose
/// functions read the restored handles, which is most of them.
pub fn handles_to_fill(meta_graph: &MetaGraph) -> Result<Vec<HandleToFill>> {
    let Some(objects) = meta_graph.object_graph() else {
        return Ok(Vec::new());
    };
    let Some(graph) = graph_of(meta_graph)? else {
        return Ok(Vec::new());
    };
    let nodes = graph.graph_def.unwrap_or_default();
    let restore_op = graph.saver_def.map(|saver| node_name(&saver.restore_op_name).to_string()).unwrap_or_default();
    Ok(find_handles_to_fill(&nodes, &restore_op, objects))
}

/// The pure part of [`handles_to_fill`].
fn find_handles_to_fill(
    nodes: &proto::GraphNodes,
    restore_op: &str,
    objects: &proto::SavedObjectGraph,
) -> Vec<HandleToFill> {
    let by_name: BTreeMap<&str, &proto::NodeSummary> = nodes.node.iter().map(|n| (n.name.as_str(), n)).collect();
    let restored: BTreeSet<&str> =
        by_name.get(restore_op).map(|restore| data_inputs(restore).collect()).unwrap_or_default();
    let keys = value_keys(objects);
    let mut seen = BTreeSet::new();
    let mut fills = Vec::new();
    for (handle, object_id) in captured_handles(nodes, objects) {
        let Some(node) = by_name.get(handle).filter(|node| node.op == "VarHandleOp") else {
            continue;
        };
        let Some(key) = keys.get(&object_id) else {
            continue;
        };
        if restored.contains(handle) || !seen.insert(handle) {
            continue;
        }
        let dtype = node.attr.get("dtype").map_or(0, |attr| attr.r#type);
        fills.push(HandleToFill { handle: handle.to_string(), checkpoint_key: key.clone(), dtype });
    }
    fills
}

/// (graph node, object-graph node id) of every value a function call captures: the trailing data
/// inputs of each call node whose function the object graph records, paired with that
/// function's `bound_inputs`.
fn captured_handles<'a>(
    nodes: &'a proto::GraphNodes,
    objects: &'a proto::SavedObjectGraph,
) -> impl Iterator<Item = (&'a str, usize)> + 'a {
    nodes.node.iter().flat_map(move |node| {
        let function = node.attr.get("f").and_then(|attr| attr.func.as_ref()).map(|f| f.name.as_str());
        let bound = function.and_then(|name| objects.concrete_functions.get(name));
        let bound = bound.map(|f| f.bound_inputs.as_slice()).unwrap_or_default();
        let inputs: Vec<&str> = data_inputs(node).collect();
        let start = inputs.len().saturating_sub(bound.len());
        let captured = if inputs.len() >= bound.len() { &inputs[start..] } else { &[][..] };
        captured
            .iter()
            .zip(bound)
            .filter_map(|(input, id)| usize::try_from(*id).ok().map(|id| (*input, id)))
            .collect::<Vec<_>>()
    })
}

/// The node names of a node's data inputs (control inputs left out).
fn data_inputs(node: &proto::NodeSummary) -> impl Iterator<Item = &str> {
    node.input.iter().filter(|input| !input.starts_with('^')).map(|input| node_name(input))
}

/// `name` of `name:0` or `^name`.
fn node_name(tensor: &str) -> &str {
    let tensor = tensor.trim_start_matches('^');
    tensor.rsplit_once(':').map_or(tensor, |(name, _)| name)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str], function: Option<&str>) -> proto::NodeSummary {
        let mut attr = std::collections::HashMap::new();
        attr.insert("dtype".to_string(), proto::AttrSummary { r#type: 1, ..Default::default() });
        if let Some(f) = function {
            let func = Some(proto::NameAttrListSummary { name: f.to_string() });
            attr.insert("f".to_string(), proto::AttrSummary { func, ..Default::default() });
        }
        proto::NodeSummary {
            name: name.into(),
            op: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            attr,
        }
    }

    /// Root -> `dense` -> `kernel` (a variable, node 2); the serving call captures `dense/kernel`
    /// while the restore fills `Variable`.
    fn keras3_like() -> (proto::GraphNodes, proto::SavedObjectGraph) {
        let nodes = proto::GraphNodes {
            node: vec![
                node("dense/kernel", "VarHandleOp", &[], None),
                node("Variable", "VarHandleOp", &[], None),
                node("x", "Placeholder", &[], None),
                node("StatefulPartitionedCall", "StatefulPartitionedCall", &["x", "dense/kernel", "^x"], Some("serve")),
                node("restore", "StatefulPartitionedCall", &["saver_filename", "Variable:0"], Some("restore_fn")),
            ],
        };
        let child = |id: i32, name: &str| proto::ObjectReference { node_id: id, local_name: name.into() };
        let variable = proto::saved_object::Kind::Variable(proto::SavedVariable::default());
        let objects = proto::SavedObjectGraph {
            nodes: vec![
                proto::SavedObject { children: vec![child(1, "dense")], ..Default::default() },
                proto::SavedObject { children: vec![child(2, "kernel")], ..Default::default() },
                proto::SavedObject { kind: Some(variable), ..Default::default() },
            ],
            concrete_functions: [("serve".to_string(), proto::ConcreteFunctionCaptures { bound_inputs: vec![2] })]
                .into_iter()
                .collect(),
        };
        (nodes, objects)
    }

    #[test]
    fn a_captured_handle_the_restore_leaves_empty_gets_its_checkpoint_key() {
        let (nodes, objects) = keras3_like();
        let fills = find_handles_to_fill(&nodes, "restore", &objects);
        assert_eq!(
            fills,
            vec![HandleToFill {
                handle: "dense/kernel".into(),
                checkpoint_key: "dense/kernel/.ATTRIBUTES/VARIABLE_VALUE".into(),
                dtype: 1
            }]
        );
    }

    #[test]
    fn a_captured_handle_the_restore_fills_needs_nothing() {
        let (mut nodes, objects) = keras3_like();
        nodes.node[4].input.push("dense/kernel".into());
        assert!(find_handles_to_fill(&nodes, "restore", &objects).is_empty());
    }

    #[test]
    fn node_names_drop_output_index_and_control_mark() {
        assert_eq!(node_name("a/b:3"), "a/b");
        assert_eq!(node_name("^a/b"), "a/b");
        assert_eq!(node_name("a"), "a");
    }
}
