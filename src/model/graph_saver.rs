//! A saver made of plain graph ops: one `RestoreV2` and an `AssignVariableOp` per variable
//! handle, and `ReadVariableOp`s into one `SaveV2` with the checkpoint's object graph. The
//! serving export gives its cut-down model such a saver; a session loaded for some signatures
//! gets one instead of the SavedModel's traced `__traced_restore` / `__traced_save` functions
//! (see `model::traced_saver`), whose first runs instantiate and optimize a function of one op
//! per variable, which costs seconds on a large trainable export.

use prost::Message;

use crate::proto::{self as pb, attr_value};
use crate::tensor::dtype::DType;

/// `DataType` number of strings (filenames, keys, the object graph).
const DT_STRING: i32 = 7;
/// The checkpoint key under which TensorFlow keeps the checkpoint's object graph.
pub(crate) const OBJECT_GRAPH_KEY: &str = "_CHECKPOINTABLE_OBJECT_GRAPH";

/// The `dtype` attribute of a node (a `VarHandleOp`'s variable type), if it has one.
pub(crate) fn dtype_attr(node: &pb::NodeDef) -> Option<i32> {
    let value = pb::AttrValue::decode(node.attr.get("dtype")?.as_slice()).ok()?;
    match value.value {
        Some(attr_value::Value::Type(dtype)) => Some(dtype),
        _ => None,
    }
}

/// One variable the saver nodes restore and save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedVariable {
    /// Its `VarHandleOp` node.
    pub handle: String,
    /// Its `DataType` number.
    pub dtype: i32,
    /// Its checkpoint key.
    pub checkpoint_key: String,
}

/// The nodes of the new saver, and the names the `SaverDef` gives them.
pub(crate) struct SaverNodes {
    /// The new nodes, to add to the GraphDef.
    pub nodes: Vec<pb::NodeDef>,
    /// `SaverDef.restore_op_name`: the `NoOp` after every assignment.
    pub restore_op: String,
    /// `SaverDef.save_tensor_name`: the filename, once `SaveV2` has run.
    pub save_tensor: String,
    /// What its `SaveV2` writes, in order.
    pub writes: SaverWrites,
}

/// What a graph-level saver's `SaveV2` writes, in the order it writes them: each variable's value
/// (read by a `ReadVariableOp` the session can also fetch), then the checkpoint's object graph.
/// With it, a caller can write the same checkpoint from fetched values (see
/// `formats::linked_bundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaverWrites {
    /// The variables, in `SaveV2`'s order.
    pub reads: Vec<SavedRead>,
    /// The bytes saved under `_CHECKPOINTABLE_OBJECT_GRAPH`, after the variables.
    pub object_graph: Vec<u8>,
}

/// One variable value a graph-level saver writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRead {
    /// Its checkpoint key.
    pub key: String,
    /// Its element type.
    pub dtype: DType,
    /// The graph tensor (`tfload_saver/save/read_N:0`) that holds its value.
    pub tensor: String,
}

/// Builds restore (`RestoreV2` of every variable, and of the object graph when
/// `restore_reads_object_graph`, then one `AssignVariableOp` per variable, joined by a `NoOp`)
/// and save (`SaveV2` of every variable and the checkpoint's object graph, then the filename
/// through an `Identity`) for exactly `variables`, reading the prefix from `filename_node`,
/// every node named under `scope/`.
pub(crate) fn saver_nodes(
    scope: &str,
    filename_node: &str,
    variables: &[SavedVariable],
    object_graph: &[u8],
    restore_reads_object_graph: bool,
) -> SaverNodes {
    let scoped = |name: &str| format!("{scope}/{name}");
    let mut nodes = Vec::new();
    let keys: Vec<Vec<u8>> = variables.iter().map(|v| v.checkpoint_key.as_bytes().to_vec()).collect();
    let dtypes: Vec<i32> = variables.iter().map(|v| v.dtype).collect();

    // With `restore_reads_object_graph` (the checkpoint has one) the restore reads the object
    // graph too, its output unused: `RestoreV2` checks the length and CRC-32C of every tensor it
    // reads, so a checkpoint whose object graph is corrupt fails the load, as it did through the
    // model's traced saver.
    let mut restore_keys = keys.clone();
    let mut restore_dtypes = dtypes.clone();
    if restore_reads_object_graph {
        restore_keys.push(OBJECT_GRAPH_KEY.as_bytes().to_vec());
        restore_dtypes.push(DT_STRING);
    }
    nodes.extend(key_consts(&scoped("restore"), restore_keys));
    let restore = scoped("restore/RestoreV2");
    nodes.push(node(
        &restore,
        "RestoreV2",
        vec![filename_node.to_string(), scoped("restore/tensor_names"), scoped("restore/shape_and_slices")],
        vec![("dtypes", type_list(restore_dtypes))],
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
    nodes.extend(key_consts(&scoped("save"), save_keys));
    nodes.push(string_const(&scoped("save/object_graph"), vec![object_graph.to_vec()], None));
    let mut save_inputs = vec![filename_node.to_string(), scoped("save/tensor_names"), scoped("save/shape_and_slices")];
    let mut reads = Vec::with_capacity(variables.len());
    for (i, variable) in variables.iter().enumerate() {
        let read = scoped(&format!("save/read_{i}"));
        nodes.push(node(
            &read,
            "ReadVariableOp",
            vec![variable.handle.clone()],
            vec![("dtype", type_attr(variable.dtype))],
        ));
        reads.push(SavedRead {
            key: variable.checkpoint_key.clone(),
            dtype: DType::from_proto(variable.dtype),
            tensor: format!("{read}:0"),
        });
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
    let writes = SaverWrites { reads, object_graph: object_graph.to_vec() };
    SaverNodes { nodes, restore_op, save_tensor: format!("{save_tensor}:0"), writes }
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
/// The `tensor_names` and (whole-tensor) `shape_and_slices` constants of a `RestoreV2` or `SaveV2`
/// named under `prefix/`.
fn key_consts(prefix: &str, keys: Vec<Vec<u8>>) -> [pb::NodeDef; 2] {
    let n = keys.len();
    [
        string_const(&format!("{prefix}/tensor_names"), keys, Some(n)),
        string_const(&format!("{prefix}/shape_and_slices"), vec![Vec::new(); n], Some(n)),
    ]
}

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
