//! The variables of a SavedModel as its object graph records them (name, dtype, shape, trainable
//! flag), each matched with its entry in the checkpoint index so that a listing shows only what
//! the model really holds.

use std::collections::VecDeque;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::checkpoint_index::{escape_local_name, CheckpointIndex};
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
