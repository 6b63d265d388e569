//! What a TF2 SavedModel's own saver does, read from its traced functions: the `SaverDef`'s
//! restore op and save tensor are calls of `__traced_restore` and `__traced_save`, which take
//! every variable handle as an argument. [`read`] follows each `AssignVariableOp` of the restore
//! back to its `RestoreV2` output and each `SaveV2` input back to its `ReadVariableOp`, so that a
//! saver of plain graph ops (`model::graph_saver`) can restore and write exactly the same keys
//! from exactly the same handles. Anything else in those functions (a table, a custom saveable,
//! several shards) is refused: the model then keeps its own saver.

use std::collections::{BTreeMap, HashMap};

use prost::Message;

use crate::model::graph_reach::node_of;
use crate::model::graph_saver::{SavedVariable, OBJECT_GRAPH_KEY};
use crate::proto::{self as pb, attr_value};

/// Ops a traced restore may hold: it reads the checkpoint and assigns, nothing else.
const RESTORE_OPS: &[&str] = &["Const", "RestoreV2", "Identity", "AssignVariableOp", "NoOp"];
/// Ops a traced save may hold: the sharded write of variable reads and the object graph.
const SAVE_OPS: &[&str] = &[
    "Const",
    "StaticRegexFullMatch",
    "Select",
    "StringJoin",
    "ShardedFilename",
    "SaveV2",
    "Pack",
    "MergeV2Checkpoints",
    "NoOp",
    "Identity",
    "ReadVariableOp",
    "DisableCopyOnRead",
];

/// What the model's saver restores and writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TracedSaver {
    /// The filename placeholder node (`saver_filename`).
    pub filename_node: String,
    /// Every variable it restores and saves, in the order of the restore's arguments.
    pub variables: Vec<SavedVariable>,
    /// The `_CHECKPOINTABLE_OBJECT_GRAPH` value its save writes.
    pub object_graph: Vec<u8>,
}

/// Reads what the saver of `meta_graph` does; `Err` says why it cannot be replaced.
pub(crate) fn read(meta_graph: &pb::EditableMetaGraphDef) -> Result<TracedSaver, String> {
    let saver = meta_graph.saver_def.as_ref().ok_or("it has no SaverDef")?;
    let graph = meta_graph.graph_def.as_ref().ok_or("it has no GraphDef")?;
    let nodes: HashMap<&str, &pb::NodeDef> = graph.node.iter().map(|n| (n.name.as_str(), n)).collect();
    let call = |tensor: &str| -> Result<(&pb::NodeDef, String), String> {
        let node = nodes.get(node_of(tensor)).ok_or(format!("its SaverDef names `{tensor}`, which the graph lacks"))?;
        let function = called_function(node)
            .ok_or(format!("its saver node `{}` is a {} op, not a call of a traced function", node.name, node.op))?;
        Ok((node, function))
    };
    let (restore_call, restore_name) = call(&saver.restore_op_name)?;
    let (save_call, save_name) = call(&saver.save_tensor_name)?;
    let library = graph.library.as_ref().ok_or("it has no function library")?;
    let [restore_fn, save_fn] = find_functions(library, [&restore_name, &save_name])?;

    let restored = restored_handles(&restore_fn, restore_call)?;
    let (saved, object_graph) = saved_handles(&save_fn, save_call, &nodes)?;
    let restored_map: BTreeMap<&str, &str> =
        restored.iter().map(|v| (v.checkpoint_key.as_str(), v.handle.as_str())).collect();
    if restored_map.len() != restored.len() {
        return Err("its restore assigns one checkpoint key to two handles".to_string());
    }
    let mut handles: Vec<&str> = restored.iter().map(|v| v.handle.as_str()).collect();
    handles.sort_unstable();
    handles.dedup();
    if handles.len() != restored.len() {
        return Err("its restore assigns two checkpoint keys to one handle".to_string());
    }
    let saved_map: BTreeMap<&str, &str> = saved.iter().map(|(k, h)| (k.as_str(), h.as_str())).collect();
    if saved_map != restored_map || saved_map.len() != saved.len() {
        return Err(format!(
            "its save writes other keys or handles ({}) than its restore reads ({})",
            saved.len(),
            restored.len()
        ));
    }
    let filename_node = node_of(&saver.filename_tensor_name).to_string();
    Ok(TracedSaver { filename_node, variables: restored, object_graph })
}

/// The function a call node (`StatefulPartitionedCall`, `PartitionedCall`) runs.
fn called_function(node: &pb::NodeDef) -> Option<String> {
    let attr = pb::AttrValue::decode(node.attr.get("f")?.as_slice()).ok()?;
    match attr.value {
        Some(attr_value::Value::Func(f)) => Some(f.name),
        _ => None,
    }
}

/// The bodies of the functions named `names`, in that order.
fn find_functions<const N: usize>(
    library: &pb::FunctionDefLibrary,
    names: [&str; N],
) -> Result<[pb::FunctionBody; N], String> {
    let mut found: [Option<pb::FunctionBody>; N] = std::array::from_fn(|_| None);
    for bytes in &library.function {
        let Ok(name) = pb::FunctionName::decode(bytes.as_slice()) else {
            continue;
        };
        let name = name.signature.map(|s| s.name).unwrap_or_default();
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i] = Some(pb::FunctionBody::decode(bytes.as_slice()).map_err(|e| format!("`{name}`: {e}"))?);
        }
    }
    let mut missing = names.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| *n);
    if let Some(name) = missing.next() {
        return Err(format!("its library lacks the saver function `{name}`"));
    }
    Ok(found.map(|f| f.expect("checked above")))
}

/// A function body with lookups by node and argument name.
struct Body<'a> {
    name: &'a str,
    nodes: HashMap<&'a str, &'a pb::NodeDef>,
    args: HashMap<&'a str, usize>,
}

/// Where a value inside a function comes from, once `Identity` ops are looked through.
#[derive(Debug, PartialEq)]
enum Source<'a> {
    /// The function's argument number `n`.
    Arg(usize),
    /// Output `index` of node `node`.
    Output { node: &'a pb::NodeDef, index: usize },
}

impl<'a> Body<'a> {
    /// Indexes `function`, refusing it if it runs an op outside `allowed`.
    fn new(function: &'a pb::FunctionBody, allowed: &[&str]) -> Result<Body<'a>, String> {
        let signature = function.signature.as_ref();
        let name = signature.map_or("", |s| s.name.as_str());
        if let Some(node) = function.node_def.iter().find(|n| !allowed.contains(&n.op.as_str())) {
            return Err(format!(
                "its saver function `{name}` runs a {} op ({}), not only variable reads and writes",
                node.op, node.name
            ));
        }
        let args = signature.map(|s| s.input_arg.iter().enumerate().map(|(i, a)| (a.name.as_str(), i)).collect());
        Ok(Body {
            name,
            nodes: function.node_def.iter().map(|n| (n.name.as_str(), n)).collect(),
            args: args.unwrap_or_default(),
        })
    }

    /// The source of a function input (`arg`, `node:out:index`), through any `Identity` ops.
    fn source(&self, input: &'a str) -> Result<Source<'a>, String> {
        let mut input = input;
        loop {
            if let Some(&arg) = self.args.get(input) {
                return Ok(Source::Arg(arg));
            }
            let mut parts = input.split(':');
            let node_name = parts.next().unwrap_or_default();
            let index = parts.nth(1).and_then(|i| i.parse().ok()).unwrap_or(0);
            let node = self.nodes.get(node_name).ok_or(format!("`{}` reads `{input}`, which it lacks", self.name))?;
            if node.op != "Identity" {
                return Ok(Source::Output { node, index });
            }
            input = node.input.first().ok_or(format!("`{}`: `{node_name}` has no input", self.name))?;
        }
    }

    /// The one node of type `op`; several or none are refused.
    fn only(&self, op: &str) -> Result<&'a pb::NodeDef, String> {
        let mut found = self.nodes.values().filter(|n| n.op == op);
        match (found.next(), found.next()) {
            (Some(node), None) => Ok(node),
            _ => Err(format!("its saver function `{}` has not exactly one {op}", self.name)),
        }
    }

    /// The strings of the `Const` that feeds input `i` of `node`.
    fn strings(&self, node: &'a pb::NodeDef, i: usize) -> Result<Vec<String>, String> {
        let input = node.input.get(i).ok_or(format!("`{}`: {} lacks input {i}", self.name, node.op))?;
        match self.source(input)? {
            Source::Output { node, .. } if node.op == "Const" => {
                const_strings(node).ok_or(format!("`{}`: `{}` is not a string constant", self.name, node.name))
            }
            _ => Err(format!("`{}`: the {} names are not a constant", self.name, node.op)),
        }
    }
}

/// The data inputs of a call node, whose position is the function's argument number.
fn call_inputs(call: &pb::NodeDef) -> Vec<&str> {
    call.input.iter().filter(|i| !i.starts_with('^')).map(|i| node_of(i)).collect()
}

/// Every handle the traced restore assigns, with the key it assigns it from.
fn restored_handles(function: &pb::FunctionBody, call: &pb::NodeDef) -> Result<Vec<SavedVariable>, String> {
    let body = Body::new(function, RESTORE_OPS)?;
    let restore = body.only("RestoreV2")?;
    let keys = body.strings(restore, 1)?;
    if list_len(restore, "dtypes") != Some(keys.len()) {
        return Err(format!("`{}`: RestoreV2 has {} keys for another number of dtypes", body.name, keys.len()));
    }
    let inputs = call_inputs(call);
    let mut variables = Vec::new();
    for node in function.node_def.iter().filter(|n| n.op == "AssignVariableOp") {
        let (Some(resource), Some(value)) = (node.input.first(), node.input.get(1)) else {
            return Err(format!("`{}`: `{}` lacks an input", body.name, node.name));
        };
        let handle = match body.source(resource)? {
            Source::Arg(arg) => inputs.get(arg).copied(),
            Source::Output { .. } => None,
        };
        let handle = handle.ok_or(format!("`{}`: `{}` assigns no argument handle", body.name, node.name))?;
        let key = match body.source(value)? {
            Source::Output { node: read, index } if read.name == restore.name => keys.get(index),
            _ => None,
        };
        let key = key.ok_or(format!("`{}`: `{}` assigns no restored value", body.name, node.name))?;
        let dtype = type_attr(node, "dtype").ok_or(format!("`{}`: `{}` has no dtype", body.name, node.name))?;
        variables.push(SavedVariable { handle: handle.to_string(), dtype, checkpoint_key: key.clone() });
    }
    Ok(variables)
}

/// (key, handle) of every variable a traced save writes, and the object graph it writes.
type SavedByTrace = (Vec<(String, String)>, Vec<u8>);

/// (key, handle) of every variable the traced save writes, and the object graph it writes.
fn saved_handles(
    function: &pb::FunctionBody,
    call: &pb::NodeDef,
    graph: &HashMap<&str, &pb::NodeDef>,
) -> Result<SavedByTrace, String> {
    let body = Body::new(function, SAVE_OPS)?;
    let save = body.only("SaveV2")?;
    let keys = body.strings(save, 1)?;
    let tensors = save.input.iter().filter(|i| !i.starts_with('^')).skip(3);
    let inputs = call_inputs(call);
    if tensors.clone().count() != keys.len() {
        return Err(format!("`{}`: SaveV2 has {} keys for another number of tensors", body.name, keys.len()));
    }
    let mut saved = Vec::new();
    let mut object_graph = None;
    for (key, tensor) in keys.iter().zip(tensors) {
        let constant = match body.source(tensor)? {
            Source::Output { node, .. } if node.op == "ReadVariableOp" && key != OBJECT_GRAPH_KEY => {
                let resource = node.input.first().ok_or(format!("`{}`: `{}` has no input", body.name, node.name))?;
                let handle = match body.source(resource)? {
                    Source::Arg(arg) => inputs.get(arg),
                    Source::Output { .. } => None,
                };
                let handle = handle.ok_or(format!("`{}`: `{}` reads no argument handle", body.name, node.name))?;
                saved.push((key.clone(), handle.to_string()));
                continue;
            }
            Source::Arg(arg) => inputs.get(arg).and_then(|name| graph.get(name)).copied(),
            Source::Output { node, .. } => Some(node),
        };
        let value = constant.filter(|n| n.op == "Const").and_then(const_strings_bytes);
        match value {
            Some(mut value) if key == OBJECT_GRAPH_KEY && value.len() == 1 => object_graph = Some(value.remove(0)),
            _ => return Err(format!("`{}` saves `{key}` from something else than a variable read", body.name)),
        }
    }
    let object_graph = object_graph.ok_or(format!("`{}` writes no constant {OBJECT_GRAPH_KEY}", body.name))?;
    Ok((saved, object_graph))
}

/// The `type` attribute `name` of a node.
fn type_attr(node: &pb::NodeDef, name: &str) -> Option<i32> {
    match pb::AttrValue::decode(node.attr.get(name)?.as_slice()).ok()?.value {
        Some(attr_value::Value::Type(dtype)) => Some(dtype),
        _ => None,
    }
}

/// The length of the list attribute `name` of a node.
fn list_len(node: &pb::NodeDef, name: &str) -> Option<usize> {
    match pb::AttrValue::decode(node.attr.get(name)?.as_slice()).ok()?.value {
        Some(attr_value::Value::List(list)) => Some(list.r#type.len()),
        _ => None,
    }
}

/// The values of a string `Const`, as bytes.
fn const_strings_bytes(node: &pb::NodeDef) -> Option<Vec<Vec<u8>>> {
    let value = pb::AttrValue::decode(node.attr.get("value")?.as_slice()).ok()?;
    let Some(attr_value::Value::Tensor(bytes)) = value.value else {
        return None;
    };
    let tensor = pb::TensorProto::decode(bytes.as_slice()).ok()?;
    (tensor.dtype == 7 && tensor.tensor_content.is_empty()).then_some(tensor.string_val)
}

/// The values of a string `Const`, as UTF-8 text.
pub(crate) fn const_strings(node: &pb::NodeDef) -> Option<Vec<String>> {
    const_strings_bytes(node)?.into_iter().map(|s| String::from_utf8(s).ok()).collect()
}

/// A tiny MetaGraph with a saver traced the way TensorFlow 2.21 traces one, for tests here and
/// in `model::graph_cut`.
#[cfg(test)]
pub(crate) mod fixture {
    use prost::Message;

    use crate::model::graph_saver::OBJECT_GRAPH_KEY;
    use crate::proto::{self as pb, attr_value};

    pub(crate) fn attr(value: attr_value::Value) -> Vec<u8> {
        pb::AttrValue { value: Some(value) }.encode_to_vec()
    }

    pub(crate) fn node(name: &str, op: &str, input: &[&str], attrs: Vec<(&str, Vec<u8>)>) -> pb::NodeDef {
        pb::NodeDef {
            name: name.into(),
            op: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Default::default()
        }
    }

    pub(crate) fn call(name: &str, function: &str, input: &[&str]) -> pb::NodeDef {
        let f = pb::NameAttrList { name: function.into(), attr: Default::default() };
        node(name, "StatefulPartitionedCall", input, vec![("f", attr(attr_value::Value::Func(f)))])
    }

    pub(crate) fn strings(name: &str, values: &[&[u8]]) -> pb::NodeDef {
        let tensor =
            pb::TensorProto { dtype: 7, string_val: values.iter().map(|v| v.to_vec()).collect(), ..Default::default() };
        node(name, "Const", &[], vec![("value", attr(attr_value::Value::Tensor(tensor.encode_to_vec())))])
    }

    fn float_dtype() -> Vec<u8> {
        attr(attr_value::Value::Type(1))
    }

    fn dtypes(n: usize) -> Vec<u8> {
        attr(attr_value::Value::List(attr_value::ListValue { r#type: vec![1; n], ..Default::default() }))
    }

    pub(crate) fn function(name: &str, args: &[&str], nodes: Vec<pb::NodeDef>) -> Vec<u8> {
        let input_arg = args.iter().map(|a| pb::ArgName { name: a.to_string() }).collect();
        pb::FunctionBody { signature: Some(pb::FunctionArgs { name: name.into(), input_arg }), node_def: nodes }
            .encode_to_vec()
    }

    /// `__traced_restore`: restores `b` then `a` (keys in another order than the arguments).
    pub(crate) fn restore_function() -> Vec<u8> {
        let nodes = vec![
            strings("RestoreV2/tensor_names", &[b"b/.ATTRIBUTES/VARIABLE_VALUE", b"a/.ATTRIBUTES/VARIABLE_VALUE"]),
            strings("RestoreV2/shape_and_slices", &[b"", b""]),
            node(
                "RestoreV2",
                "RestoreV2",
                &["file_prefix", "RestoreV2/tensor_names:output:0", "RestoreV2/shape_and_slices:output:0"],
                vec![("dtypes", dtypes(2))],
            ),
            node("Identity", "Identity", &["RestoreV2:tensors:0"], vec![]),
            node(
                "AssignVariableOp",
                "AssignVariableOp",
                &["assign_b", "Identity:output:0"],
                vec![("dtype", float_dtype())],
            ),
            node("Identity_1", "Identity", &["RestoreV2:tensors:1"], vec![]),
            node(
                "AssignVariableOp_1",
                "AssignVariableOp",
                &["assign_a", "Identity_1:output:0"],
                vec![("dtype", float_dtype())],
            ),
            node("NoOp", "NoOp", &["^AssignVariableOp", "^AssignVariableOp_1"], vec![]),
            node("Identity_2", "Identity", &["file_prefix", "^NoOp"], vec![]),
        ];
        function("restore_fn", &["file_prefix", "assign_a", "assign_b"], nodes)
    }

    /// `__traced_save`: a sharded write of both variables and the object graph argument.
    pub(crate) fn save_function(first: &str) -> Vec<u8> {
        let keys: [&[u8]; 3] =
            [b"a/.ATTRIBUTES/VARIABLE_VALUE", b"b/.ATTRIBUTES/VARIABLE_VALUE", OBJECT_GRAPH_KEY.as_bytes()];
        let nodes = vec![
            node("StringJoin", "StringJoin", &["file_prefix"], vec![]),
            node("ShardedFilename", "ShardedFilename", &["StringJoin:output:0"], vec![]),
            node("Read/DisableCopyOnRead", "DisableCopyOnRead", &[first], vec![]),
            node("Read/ReadVariableOp", "ReadVariableOp", &[first, "^Read/DisableCopyOnRead"], vec![]),
            node("Identity", "Identity", &["Read/ReadVariableOp:value:0"], vec![]),
            node("Read_1/ReadVariableOp", "ReadVariableOp", &["read_b"], vec![]),
            strings("SaveV2/tensor_names", &keys),
            strings("SaveV2/shape_and_slices", &[b"", b"", b""]),
            node(
                "SaveV2",
                "SaveV2",
                &[
                    "ShardedFilename:filename:0",
                    "SaveV2/tensor_names:output:0",
                    "SaveV2/shape_and_slices:output:0",
                    "Identity:output:0",
                    "Read_1/ReadVariableOp:value:0",
                    "savev2_const",
                ],
                vec![],
            ),
            node("MergeV2Checkpoints", "MergeV2Checkpoints", &["ShardedFilename:filename:0", "file_prefix"], vec![]),
        ];
        function("save_fn", &["file_prefix", "read_a", "read_b", "savev2_const"], nodes)
    }

    /// Variables `a` and `b`, a serving call that reads them (and `extra`, when given), the
    /// traced saver and a node nothing reads; the save's first read is of argument `first_read`.
    pub(crate) fn meta_graph(first_read: &str, extra: Option<&str>) -> pb::EditableMetaGraphDef {
        let meta_info = pb::meta_graph_def::MetaInfoDef { tags: vec!["serve".into()], ..Default::default() };
        let var = |name: &str| node(name, "VarHandleOp", &[], vec![("dtype", float_dtype())]);
        let mut serve_inputs = vec!["x", "a", "b"];
        serve_inputs.extend(extra);
        let mut nodes = vec![
            node("x", "Placeholder", &[], vec![]),
            var("a"),
            var("b"),
            call("serve_call", "serve", &serve_inputs),
            node("saver_filename", "Placeholder", &[], vec![]),
            strings("Const", &[b"object graph bytes"]),
            call("save_call", "save_fn", &["saver_filename", "a", "b", "Const"]),
            call("restore_call", "restore_fn", &["saver_filename", "a", "b"]),
            node("unused", "Placeholder", &[], vec![]),
        ];
        nodes.extend(extra.map(var));
        let serve = function("serve", &["x", "a", "b"], vec![]);
        let graph = pb::GraphDef {
            node: nodes,
            library: Some(pb::FunctionDefLibrary {
                function: vec![serve, save_function(first_read), restore_function()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let output = pb::TensorInfo {
            encoding: Some(pb::tensor_info::Encoding::Name("serve_call:0".into())),
            ..Default::default()
        };
        let signature = pb::SignatureDef { outputs: [("y".to_string(), output)].into(), ..Default::default() };
        pb::EditableMetaGraphDef {
            meta_info_def: meta_info.encode_to_vec(),
            graph_def: Some(graph),
            saver_def: Some(pb::SaverDef {
                filename_tensor_name: "saver_filename:0".into(),
                save_tensor_name: "save_call:0".into(),
                restore_op_name: "restore_call".into(),
                ..Default::default()
            }),
            signature_def: [("serving_default".to_string(), signature.encode_to_vec())].into(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(saver: &TracedSaver) -> Vec<(&str, &str)> {
        saver.variables.iter().map(|v| (v.handle.as_str(), v.checkpoint_key.as_str())).collect()
    }

    #[test]
    fn each_handle_gets_the_key_the_traced_restore_assigns_it_from() {
        let saver = read(&fixture::meta_graph("read_a", None)).unwrap();
        assert_eq!(pairs(&saver), [("b", "b/.ATTRIBUTES/VARIABLE_VALUE"), ("a", "a/.ATTRIBUTES/VARIABLE_VALUE")]);
        assert_eq!(saver.object_graph, b"object graph bytes");
        assert_eq!(saver.filename_node, "saver_filename");
        assert!(saver.variables.iter().all(|v| v.dtype == 1));
    }

    #[test]
    fn a_save_that_writes_a_key_from_another_handle_than_the_restore_fills_is_refused() {
        let error = read(&fixture::meta_graph("read_b", None)).unwrap_err();
        assert!(error.contains("other keys or handles"), "{error}");
    }

    /// Why `read` refuses the fixture once `edit` has changed its traced restore's body.
    fn refusal_with_restore_edited(edit: impl FnOnce(&mut pb::FunctionBody)) -> String {
        let mut meta_graph = fixture::meta_graph("read_a", None);
        let library = meta_graph.graph_def.as_mut().unwrap().library.as_mut().unwrap();
        let mut body = pb::FunctionBody::decode(library.function[2].as_slice()).unwrap();
        edit(&mut body);
        library.function[2] = body.encode_to_vec();
        read(&meta_graph).unwrap_err()
    }

    #[test]
    fn a_handle_assigned_from_two_keys_is_refused() {
        let error = refusal_with_restore_edited(|body| {
            let assign = body.node_def.iter_mut().find(|n| n.name == "AssignVariableOp_1").unwrap();
            assign.input[0] = "assign_b".into();
        });
        assert!(error.contains("two checkpoint keys to one handle"), "{error}");
    }

    #[test]
    fn a_restore_that_does_more_than_assign_variables_is_refused() {
        let error = refusal_with_restore_edited(|body| {
            body.node_def.push(fixture::node("table", "LookupTableImportV2", &["RestoreV2:tensors:1"], vec![]));
        });
        assert!(error.contains("LookupTableImportV2"), "{error}");
    }

    #[test]
    fn a_saver_def_that_is_no_function_call_is_refused() {
        let mut meta_graph = fixture::meta_graph("read_a", None);
        meta_graph.saver_def.as_mut().unwrap().restore_op_name = "x".into();
        assert!(read(&meta_graph).unwrap_err().contains("not a call"));
    }
}
