//! The variables of a SavedModel as its object graph records them (name, dtype, shape, trainable
//! flag), each matched with its entry in the checkpoint index so that a listing shows only what
//! the model really holds. [`list`] accounts for every entry of the checkpoint: variables
//! (from the graph's variable nodes in TF1 models), unread copies, optimizer slots, table
//! contents and the object graph.

use std::collections::VecDeque;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::checkpoint_index::{escape_local_name, CheckpointIndex};
use crate::model::meta_graph::MetaGraph;
use crate::proto;
use crate::tensor::dtype::DType;
use crate::tensor::shape::Shape;

/// Checkpoint key suffix of a variable's value.
const VALUE_SUFFIX: &str = "/.ATTRIBUTES/VARIABLE_VALUE";

/// One variable of a SavedModel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariableInfo {
    /// The variable's own name (`dense_1/kernel`), or its object path where it has none.
    pub name: String,
    /// Where the object graph keeps it, from the root (`layer_with_weights-0/kernel`).
    pub object_path: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
    /// Number of elements, where the shape is fully known.
    pub elements: Option<u64>,
    /// Bytes of the value, where dtype and shape fix it (strings have no fixed size).
    pub bytes: Option<u64>,
    /// The trainable flag the model was saved with.
    pub trainable: bool,
    /// The key of its value in the checkpoint index.
    pub checkpoint_key: String,
}

/// Sums over a list of variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct VariableTotals {
    /// Number of variables.
    pub count: usize,
    /// Number of trainable variables.
    pub trainable_count: usize,
    /// Elements in all variables.
    pub elements: u64,
    /// Elements in trainable variables.
    pub trainable_elements: u64,
    /// Bytes of all variables with a fixed size.
    pub bytes: u64,
}

impl VariableTotals {
    /// Adds up a listing.
    pub fn of(variables: &[VariableInfo]) -> VariableTotals {
        variables.iter().fold(VariableTotals::default(), |mut t, v| {
            t.count += 1;
            t.elements += v.elements.unwrap_or(0);
            t.bytes += v.bytes.unwrap_or(0);
            if v.trainable {
                t.trainable_count += 1;
                t.trainable_elements += v.elements.unwrap_or(0);
            }
            t
        })
    }
}

/// Lists the variables of `graph`, breadth first from the root so that each variable gets its
/// shortest object path, and checks each against the checkpoint index of `dir`.
pub(crate) fn from_object_graph(dir: &Path, graph: &proto::SavedObjectGraph) -> Result<Vec<VariableInfo>> {
    let index_path = CheckpointIndex::path_in(dir);
    if !index_path.is_file() {
        return Err(Error::MissingVariables { dir: dir.to_path_buf() });
    }
    let index = CheckpointIndex::read(&index_path)?;
    let mut variables = Vec::new();
    for (node_id, path) in paths_from_root(graph) {
        let Some(proto::saved_object::Kind::Variable(variable)) = &graph.nodes[node_id].kind else {
            continue;
        };
        variables.push(describe(variable, path, &index, dir)?);
    }
    Ok(variables)
}

/// The checkpoint key of each variable node of `graph`, by node id: the value key under the
/// node's shortest path from the root, as TensorFlow's saver names it.
pub(crate) fn value_keys(graph: &proto::SavedObjectGraph) -> std::collections::BTreeMap<usize, String> {
    paths_from_root(graph)
        .into_iter()
        .filter(|(node_id, _)| matches!(graph.nodes[*node_id].kind, Some(proto::saved_object::Kind::Variable(_))))
        .map(|(node_id, path)| (node_id, value_key(&path)))
        .collect()
}

/// `a/b/.ATTRIBUTES/VARIABLE_VALUE` for the object path `[a, b]`, each part escaped.
fn value_key(path: &[String]) -> String {
    let escaped: Vec<String> = path.iter().map(|p| escape_local_name(p)).collect();
    format!("{}{VALUE_SUFFIX}", escaped.join("/"))
}

/// (node id, escaped path) of every node reachable from the root, each once, breadth first.
fn paths_from_root(graph: &proto::SavedObjectGraph) -> Vec<(usize, Vec<String>)> {
    let mut seen = vec![false; graph.nodes.len()];
    let mut order = Vec::new();
    let mut queue = VecDeque::from([(0usize, Vec::<String>::new())]);
    if let Some(root) = seen.first_mut() {
        *root = true;
    }
    while let Some((node_id, path)) = queue.pop_front() {
        for child in &graph.nodes[node_id].children {
            let child_id = usize::try_from(child.node_id).unwrap_or(usize::MAX);
            if child_id < seen.len() && !seen[child_id] {
                seen[child_id] = true;
                let mut child_path = path.clone();
                child_path.push(child.local_name.clone());
                queue.push_back((child_id, child_path));
            }
        }
        order.push((node_id, path));
    }
    order
}

fn describe(
    variable: &proto::SavedVariable,
    path: Vec<String>,
    index: &CheckpointIndex,
    dir: &Path,
) -> Result<VariableInfo> {
    let object_path = path.join("/");
    let checkpoint_key = value_key(&path);
    let entry = index.get(&checkpoint_key).ok_or_else(|| Error::MalformedSavedModel {
        path: index.path().to_path_buf(),
        problem: format!(
            "variable `{object_path}` of saved_model.pb has no value in the checkpoint (key `{checkpoint_key}`): saved_model.pb and variables/ come from different exports"
        ),
    })?;
    let dtype = DType::from_proto(variable.dtype);
    if entry.dtype != dtype {
        return Err(Error::MalformedSavedModel {
            path: dir.join("saved_model.pb"),
            problem: format!(
                "variable `{object_path}` is declared {dtype} but saved as {} in the checkpoint",
                entry.dtype
            ),
        });
    }
    // The checkpoint holds the real value; the declaration may leave dimensions open.
    let shape = entry.shape.clone();
    let elements = shape.num_elements();
    let name = if variable.name.is_empty() { object_path.clone() } else { variable.name.clone() };
    Ok(VariableInfo {
        name,
        object_path,
        dtype,
        bytes: elements.zip(dtype.size_in_bytes()).map(|(n, size)| n * size),
        elements,
        shape,
        trainable: variable.trainable,
        checkpoint_key,
    })
}

/// What a checkpoint entry that is not a model variable holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A slot of an optimizer (Adam's `m`, `v`) for one variable.
    OptimizerSlot,
    /// The keys or the values of a lookup table such as `MutableHashTable`.
    TableContents,
    /// The serialized object graph the checkpoint was written with.
    ObjectGraph,
    /// Anything else.
    Other,
}

/// A checkpoint entry that is not one of the model's variables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OtherEntry {
    /// Its checkpoint key.
    pub checkpoint_key: String,
    /// What it holds.
    pub kind: EntryKind,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
    /// Bytes it takes in the data shard.
    pub bytes: u64,
}

/// A variable saved twice: a copy that no function reads, beside the variable the functions read
/// (Keras 3 `export()` keeps both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadCopy {
    /// The checkpoint key of the copy.
    pub checkpoint_key: String,
    /// The checkpoint key of the variable the functions read.
    pub copy_of: String,
}

/// Everything a SavedModel's checkpoint holds, each entry accounted for once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariableListing {
    /// The model's variables, unread copies included (see `unread_copies`).
    pub variables: Vec<VariableInfo>,
    /// Variables of `variables` that are unread copies of another.
    pub unread_copies: Vec<UnreadCopy>,
    /// Checkpoint entries that are not variables of the model: optimizer slots, table contents,
    /// the object graph.
    pub other_entries: Vec<OtherEntry>,
    /// Number of entries in the checkpoint index; equals `variables` + `other_entries`.
    pub checkpoint_entries: usize,
}

impl VariableListing {
    /// Totals over the variables, unread copies left out so that nothing counts twice.
    pub fn totals(&self) -> VariableTotals {
        let copies: std::collections::BTreeSet<&str> =
            self.unread_copies.iter().map(|copy| copy.checkpoint_key.as_str()).collect();
        let originals: Vec<VariableInfo> =
            self.variables.iter().filter(|v| !copies.contains(v.checkpoint_key.as_str())).cloned().collect();
        VariableTotals::of(&originals)
    }

    /// The unread copy record of a variable, if it is one.
    pub fn copy_of(&self, variable: &VariableInfo) -> Option<&str> {
        self.unread_copies.iter().find(|c| c.checkpoint_key == variable.checkpoint_key).map(|c| c.copy_of.as_str())
    }
}

/// Lists every entry of the checkpoint of `meta_graph`: the variables from the object graph
/// (TF2) or from the graph's variable nodes (TF1, as `tf.train.list_variables` sees them), which
/// of them are unread copies, and every other entry by kind.
pub fn list(meta_graph: &MetaGraph) -> Result<VariableListing> {
    let dir = meta_graph.dir();
    let index_path = CheckpointIndex::path_in(dir);
    if !index_path.is_file() {
        return Err(Error::MissingVariables { dir: dir.to_path_buf() });
    }
    let index = CheckpointIndex::read(&index_path)?;
    let (variables, unread_copies) = match meta_graph.object_graph() {
        Some(graph) => {
            let listed = with_node_ids(dir, graph, &index)?;
            let copies = unread_copies(graph, &listed);
            (listed.into_iter().map(|(_, v)| v).collect(), copies)
        }
        None => (from_graph_nodes(meta_graph, &index)?, Vec::new()),
    };
    let listed: std::collections::BTreeSet<&str> = variables.iter().map(|v| v.checkpoint_key.as_str()).collect();
    let other_entries = index
        .entries()
        .filter(|(key, _)| !listed.contains(key))
        .map(|(key, entry)| OtherEntry {
            checkpoint_key: key.to_string(),
            kind: entry_kind(key),
            dtype: entry.dtype,
            shape: entry.shape.clone(),
            bytes: entry.size,
        })
        .collect();
    let checkpoint_entries = index.entries().count();
    Ok(VariableListing { variables, unread_copies, other_entries, checkpoint_entries })
}

/// What the checkpoint key of an entry that is no variable says it holds.
fn entry_kind(key: &str) -> EntryKind {
    if key == "_CHECKPOINTABLE_OBJECT_GRAPH" {
        EntryKind::ObjectGraph
    } else if key.contains("/.OPTIMIZER_SLOT/") {
        EntryKind::OptimizerSlot
    } else if key.ends_with("/.ATTRIBUTES/table-keys") || key.ends_with("/.ATTRIBUTES/table-values") {
        EntryKind::TableContents
    } else {
        EntryKind::Other
    }
}

/// The variables of the object graph with their node ids.
fn with_node_ids(
    dir: &Path,
    graph: &proto::SavedObjectGraph,
    index: &CheckpointIndex,
) -> Result<Vec<(usize, VariableInfo)>> {
    let mut variables = Vec::new();
    for (node_id, path) in paths_from_root(graph) {
        if let Some(proto::saved_object::Kind::Variable(variable)) = &graph.nodes[node_id].kind {
            variables.push((node_id, describe(variable, path, index, dir)?));
        }
    }
    Ok(variables)
}

/// The variables no function captures that have the name, dtype and shape of one a function
/// does capture. None where the object graph records no function captures at all.
fn unread_copies(graph: &proto::SavedObjectGraph, variables: &[(usize, VariableInfo)]) -> Vec<UnreadCopy> {
    let read: std::collections::BTreeSet<usize> = graph
        .concrete_functions
        .values()
        .flat_map(|f| f.bound_inputs.iter().filter_map(|id| usize::try_from(*id).ok()))
        .collect();
    let same = |a: &VariableInfo, b: &VariableInfo| a.name == b.name && a.dtype == b.dtype && a.shape == b.shape;
    variables
        .iter()
        .filter(|(id, _)| !read.contains(id))
        .filter_map(|(_, copy)| {
            let original = variables.iter().find(|(id, v)| read.contains(id) && same(v, copy))?;
            Some(UnreadCopy { checkpoint_key: copy.checkpoint_key.clone(), copy_of: original.1.checkpoint_key.clone() })
        })
        .collect()
}

/// The variables of a TF1 graph: its `VariableV2`, `Variable` and `VarHandleOp` nodes whose names
/// are checkpoint keys, trainable where the `trainable_variables` collection lists them.
fn from_graph_nodes(meta_graph: &MetaGraph, index: &CheckpointIndex) -> Result<Vec<VariableInfo>> {
    let Some(graph) = crate::model::handles::graph_of(meta_graph)? else {
        return Ok(Vec::new());
    };
    let trainable = trainable_names(&graph);
    let nodes = graph.graph_def.unwrap_or_default();
    let variables = nodes
        .node
        .iter()
        .filter(|node| matches!(node.op.as_str(), "VariableV2" | "Variable" | "VarHandleOp"))
        .filter_map(|node| {
            let entry = index.get(&node.name)?;
            let elements = entry.shape.num_elements();
            Some(VariableInfo {
                name: node.name.clone(),
                object_path: String::new(),
                dtype: entry.dtype,
                shape: entry.shape.clone(),
                elements,
                bytes: elements.zip(entry.dtype.size_in_bytes()).map(|(n, size)| n * size),
                trainable: trainable.contains(node.name.as_str()),
                checkpoint_key: node.name.clone(),
            })
        })
        .collect();
    Ok(variables)
}

/// The op names of the variables in a TF1 graph's `trainable_variables` collection.
fn trainable_names(graph: &proto::MetaGraphNodes) -> std::collections::BTreeSet<String> {
    use prost::Message;
    let Some(collection) = graph.collection_def.get("trainable_variables") else {
        return Default::default();
    };
    let defs = collection.bytes_list.as_ref().map(|list| list.value.as_slice()).unwrap_or_default();
    defs.iter()
        .filter_map(|bytes| proto::VariableDefSummary::decode(bytes.as_slice()).ok())
        .map(|def| def.variable_name.rsplit_once(':').map_or(def.variable_name.clone(), |(n, _)| n.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_are_no_variables_are_named_by_their_key() {
        assert_eq!(entry_kind("_CHECKPOINTABLE_OBJECT_GRAPH"), EntryKind::ObjectGraph);
        assert_eq!(entry_kind("b/.OPTIMIZER_SLOT/opt/m/.ATTRIBUTES/VARIABLE_VALUE"), EntryKind::OptimizerSlot);
        assert_eq!(entry_kind("counts/.ATTRIBUTES/table-keys"), EntryKind::TableContents);
        assert_eq!(entry_kind("save_counter"), EntryKind::Other);
    }

    fn info(name: &str, key: &str) -> VariableInfo {
        VariableInfo {
            name: name.into(),
            object_path: key.into(),
            dtype: DType::Float32,
            shape: Shape::from_proto(None),
            elements: Some(1),
            bytes: Some(4),
            trainable: true,
            checkpoint_key: key.into(),
        }
    }

    #[test]
    fn a_variable_no_function_reads_is_a_copy_only_beside_one_of_its_name_that_is_read() {
        let captures = proto::ConcreteFunctionCaptures { bound_inputs: vec![1] };
        let graph = proto::SavedObjectGraph {
            nodes: Vec::new(),
            concrete_functions: [("f".to_string(), captures)].into_iter().collect(),
        };
        let variables = vec![(1, info("dense/kernel", "a")), (2, info("dense/kernel", "b")), (3, info("seed", "c"))];
        let copies = unread_copies(&graph, &variables);
        assert_eq!(copies, vec![UnreadCopy { checkpoint_key: "b".into(), copy_of: "a".into() }]);
    }
}
