//! The GraphDef side of a serving export: which nodes the kept signatures reach, the function
//! library cut down to what those nodes call, and the saver nodes that restore and save exactly
//! the kept variables (TF Serving and the C++ loader run `SaverDef.restore_op_name`).

use std::collections::HashSet;

use prost::Message;

use crate::proto::{self as pb, attr_value};

pub(super) use crate::model::graph_reach::{functions_in_attr, node_of, prune_library, reachable};

/// `DataType` numbers of the dtypes the saver nodes use.
const DT_STRING: i32 = 7;
/// Prefix of every node this module adds; the nodes it replaces are never kept.
pub(super) const SAVER_SCOPE: &str = "tfload_serving_saver";
/// The checkpoint key under which TensorFlow keeps the checkpoint's object graph.
pub(super) const OBJECT_GRAPH_KEY: &str = "_CHECKPOINTABLE_OBJECT_GRAPH";

/// Drops the init op's control inputs that exist only to initialise state the export drops
/// (an asset path variable no kept signature reads): those whose inputs reach a `VarHandleOp`
/// outside `kept_handles`.
pub(super) fn trim_init_op(nodes: &mut [pb::NodeDef], init_op: &str, kept_handles: &HashSet<String>) {
    let dropped_handles: HashSet<String> = nodes
        .iter()
        .filter(|n| n.op == "VarHandleOp" && !kept_handles.contains(&n.name))
        .map(|n| n.name.clone())
        .collect();
    let Some(index) = nodes.iter().position(|n| n.name == init_op) else {
        return;
    };
    let inputs = nodes[index].input.clone();
    let keep: Vec<String> = inputs
        .into_iter()
        .filter(|input| {
            let reached = reachable(nodes, [node_of(input).to_string()]);
            reached.is_disjoint(&dropped_handles)
        })
        .collect();
    nodes[index].input = keep;
}

pub(super) fn dtype_attr(node: &pb::NodeDef) -> Option<i32> {
    let value = pb::AttrValue::decode(node.attr.get("dtype")?.as_slice()).ok()?;
    match value.value {
        Some(attr_value::Value::Type(dtype)) => Some(dtype),
        _ => None,
    }
}

/// The `shared_name` attribute of a node, if it has one.
pub(super) fn shared_name_attr(node: &pb::NodeDef) -> Option<String> {
    let value = pb::AttrValue::decode(node.attr.get("shared_name")?.as_slice()).ok()?;
    match value.value {
        Some(attr_value::Value::S(bytes)) => String::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// One variable the saver nodes restore and save.
#[derive(Debug, Clone)]
pub(super) struct SavedVariable {
    /// Its `VarHandleOp` node.
    pub handle: String,
    /// Its `DataType` number.
    pub dtype: i32,
    /// Its checkpoint key.
    pub checkpoint_key: String,
}

/// The nodes of the new saver, and the names the `SaverDef` gives them.
pub(super) struct SaverNodes {
    pub nodes: Vec<pb::NodeDef>,
    pub restore_op: String,
    pub save_tensor: String,
}

/// Builds restore (`RestoreV2` then one `AssignVariableOp` per variable, joined by a `NoOp`)
/// and save (`SaveV2` of every variable and the checkpoint's object graph, then the filename
/// through an `Identity`) for exactly `variables`, reading the prefix from `filename_node`.
pub(super) fn saver_nodes(filename_node: &str, variables: &[SavedVariable], object_graph: &[u8]) -> SaverNodes {
    let scoped = |name: &str| format!("{SAVER_SCOPE}/{name}");
    let mut nodes = Vec::new();
    let keys: Vec<Vec<u8>> = variables.iter().map(|v| v.checkpoint_key.as_bytes().to_vec()).collect();
    let dtypes: Vec<i32> = variables.iter().map(|v| v.dtype).collect();

    nodes.push(string_const(&scoped("restore/tensor_names"), keys.clone(), Some(keys.len())));
    nodes.push(string_const(&scoped("restore/shape_and_slices"), vec![Vec::new(); keys.len()], Some(keys.len())));
    let restore = scoped("restore/RestoreV2");
    nodes.push(node(
        &restore,
        "RestoreV2",
        vec![filename_node.to_string(), scoped("restore/tensor_names"), scoped("restore/shape_and_slices")],
        vec![("dtypes", type_list(dtypes.clone()))],
    ));
    let mut assigns = Vec::new();
    for (i, variable) in variables.iter().enumerate() {
        let assign = scoped(&format!("restore/assign_{i}"));
        nodes.push(node(
            &assign,
            "AssignVariableOp",
            vec![variable.handle.clone(), format!("{restore}:{i}")],
            vec![("dtype", type_attr(variable.dtype)), ("validate_shape", bool_attr(false))],
        ));
        assigns.push(format!("^{assign}"));
    }
    let restore_op = scoped("restore_all");
    nodes.push(node(&restore_op, "NoOp", assigns, vec![]));

    let mut save_keys = keys;
    save_keys.push(OBJECT_GRAPH_KEY.as_bytes().to_vec());
    nodes.push(string_const(&scoped("save/tensor_names"), save_keys.clone(), Some(save_keys.len())));
    nodes.push(string_const(
        &scoped("save/shape_and_slices"),
        vec![Vec::new(); save_keys.len()],
        Some(save_keys.len()),
    ));
    nodes.push(string_const(&scoped("save/object_graph"), vec![object_graph.to_vec()], None));
    let mut save_inputs = vec![filename_node.to_string(), scoped("save/tensor_names"), scoped("save/shape_and_slices")];
    for (i, variable) in variables.iter().enumerate() {
        let read = scoped(&format!("save/read_{i}"));
        nodes.push(node(
            &read,
            "ReadVariableOp",
            vec![variable.handle.clone()],
            vec![("dtype", type_attr(variable.dtype))],
        ));
        save_inputs.push(read);
    }
    save_inputs.push(scoped("save/object_graph"));
    let mut save_dtypes = dtypes;
    save_dtypes.push(DT_STRING);
    nodes.push(node(&scoped("save/SaveV2"), "SaveV2", save_inputs, vec![("dtypes", type_list(save_dtypes))]));
    let save_tensor = scoped("save_all");
    nodes.push(node(
        &save_tensor,
        "Identity",
        vec![filename_node.to_string(), format!("^{}", scoped("save/SaveV2"))],
        vec![("T", type_attr(DT_STRING))],
    ));
    SaverNodes { nodes, restore_op, save_tensor: format!("{save_tensor}:0") }
}

fn node(name: &str, op: &str, input: Vec<String>, attrs: Vec<(&str, pb::AttrValue)>) -> pb::NodeDef {
    pb::NodeDef {
        name: name.to_string(),
        op: op.to_string(),
        input,
        attr: attrs.into_iter().map(|(key, value)| (key.to_string(), value.encode_to_vec())).collect(),
        ..Default::default()
    }
}

/// A string `Const`: a vector of `len` values, or a scalar when `len` is `None`.
fn string_const(name: &str, values: Vec<Vec<u8>>, len: Option<usize>) -> pb::NodeDef {
    let dim = len.map(|n| pb::tensor_shape_proto::Dim { size: n as i64, name: String::new() });
    let tensor = pb::TensorProto {
        dtype: DT_STRING,
        tensor_shape: Some(pb::TensorShapeProto { dim: dim.into_iter().collect(), unknown_rank: false }),
        tensor_content: Vec::new(),
        string_val: values,
    };
    let value = pb::AttrValue { value: Some(attr_value::Value::Tensor(tensor.encode_to_vec())) };
    node(name, "Const", vec![], vec![("dtype", type_attr(DT_STRING)), ("value", value)])
}

fn type_attr(dtype: i32) -> pb::AttrValue {
    pb::AttrValue { value: Some(attr_value::Value::Type(dtype)) }
}

fn bool_attr(value: bool) -> pb::AttrValue {
    pb::AttrValue { value: Some(attr_value::Value::B(value)) }
}

fn type_list(types: Vec<i32>) -> pb::AttrValue {
    let list = attr_value::ListValue { r#type: types, ..Default::default() };
    pb::AttrValue { value: Some(attr_value::Value::List(list)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(name: &str, op: &str, input: &[&str]) -> pb::NodeDef {
        node(name, op, input.iter().map(|s| s.to_string()).collect(), vec![])
    }

    #[test]
    fn the_init_op_loses_only_initialisers_of_dropped_variables() {
        let mut nodes = vec![
            plain("asset_var", "VarHandleOp", &[]),
            plain("path", "Placeholder", &[]),
            plain("asset_var/Assign", "AssignVariableOp", &["asset_var", "path"]),
            plain("table_init", "InitializeTableV2", &[]),
            plain("init", "NoOp", &["^asset_var/Assign", "^table_init"]),
        ];
        trim_init_op(&mut nodes, "init", &HashSet::new());
        assert_eq!(nodes[4].input, ["^table_init"]);
    }
}
