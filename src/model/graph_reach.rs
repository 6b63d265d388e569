//! What a part of a GraphDef needs: the nodes reachable from some roots through data and control
//! inputs, and the library functions those nodes call, directly or through other functions. The
//! serving export and the load-time cut (`graph_cut`) both keep exactly that.

use std::collections::{HashMap, HashSet, VecDeque};

use prost::Message;

use crate::proto::{self as pb, attr_value, tensor_info::Encoding};

/// The attribute by which Grappler's implementation selector swaps a function for another one
/// that implements the same API (Keras 2's LSTM/GRU register a CPU and a GPU body this way; the
/// graph calls only one of them).
const API_IMPLEMENTS: &str = "api_implements";

/// The graph node a tensor or control input names: `^a` and `a:1` both name `a`.
pub(crate) fn node_of(input: &str) -> &str {
    let name = input.strip_prefix('^').unwrap_or(input);
    name.rsplit_once(':').map_or(name, |(node, _)| node)
}

/// The names of the nodes reachable from `roots` through data and control inputs.
pub(crate) fn reachable(nodes: &[pb::NodeDef], roots: impl IntoIterator<Item = String>) -> HashSet<String> {
    let by_name: HashMap<&str, &pb::NodeDef> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut seen = HashSet::new();
    let mut queue: VecDeque<String> = roots.into_iter().collect();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(node) = by_name.get(name.as_str()) {
            queue.extend(node.input.iter().map(|input| node_of(input).to_string()));
        }
    }
    seen
}

/// Every graph tensor name a `TensorInfo` uses (one for dense tensors, more for sparse and
/// composite ones).
pub(crate) fn tensor_names(info: &pb::TensorInfo, names: &mut Vec<String>) {
    match &info.encoding {
        Some(Encoding::Name(name)) => names.push(name.clone()),
        Some(Encoding::CooSparse(sparse)) => names.extend([
            sparse.values_tensor_name.clone(),
            sparse.indices_tensor_name.clone(),
            sparse.dense_shape_tensor_name.clone(),
        ]),
        Some(Encoding::CompositeTensor(composite)) => {
            composite.components.iter().for_each(|component| tensor_names(component, names))
        }
        None => {}
    }
}

/// The function names one attribute value refers to (`f` of a call, lists of functions, and
/// functions named inside those).
pub(crate) fn functions_in_attr(bytes: &[u8]) -> Vec<String> {
    let Ok(value) = pb::AttrValue::decode(bytes) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    collect_functions(&value, &mut names);
    names
}

fn collect_functions(value: &pb::AttrValue, names: &mut Vec<String>) {
    let from_list = |func: &pb::NameAttrList, names: &mut Vec<String>| {
        names.push(func.name.clone());
        for nested in func.attr.values() {
            collect_functions(nested, names);
        }
    };
    match &value.value {
        Some(attr_value::Value::Func(func)) => from_list(func, names),
        Some(attr_value::Value::List(list)) => list.func.iter().for_each(|func| from_list(func, names)),
        _ => {}
    }
}

/// The functions a node calls: its op when that is a library function, and those its
/// attributes name.
fn functions_called_by(node: &pb::NodeDef, library: &HashMap<String, usize>) -> Vec<String> {
    let mut names: Vec<String> = node.attr.values().flat_map(|bytes| functions_in_attr(bytes)).collect();
    if library.contains_key(&node.op) {
        names.push(node.op.clone());
    }
    names
}

/// The `api_implements` name of a function, if it has one.
fn api_implements(summary: &pb::FunctionSummary) -> Option<&[u8]> {
    match &summary.attr.get(API_IMPLEMENTS)?.value {
        Some(attr_value::Value::S(name)) if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// The library cut down to the functions `nodes` call, directly or through other functions,
/// with every function that implements the same API as a kept one (Grappler may call it
/// instead); also returns the names kept. `extra_roots` are functions kept whether or not a node
/// calls them (those the object graph's kept objects name). Only the kept functions are decoded
/// beyond their names, so cutting a large library to a small part of it is cheap.
pub(crate) fn prune_library(
    library: &pb::FunctionDefLibrary,
    nodes: &[&pb::NodeDef],
    extra_roots: &[String],
) -> (pb::FunctionDefLibrary, HashSet<String>) {
    let index: HashMap<String, usize> = library
        .function
        .iter()
        .enumerate()
        .filter_map(|(i, bytes)| Some((pb::FunctionName::decode(bytes.as_slice()).ok()?.signature?.name, i)))
        .collect();
    let mut queue: VecDeque<String> = nodes.iter().flat_map(|n| functions_called_by(n, &index)).collect();
    queue.extend(extra_roots.iter().cloned());
    let mut kept = HashSet::new();
    let mut implemented: HashSet<Vec<u8>> = HashSet::new();
    let mut alternatives: Option<Vec<(String, Vec<u8>)>> = None;
    loop {
        while let Some(name) = queue.pop_front() {
            let Some(&i) = index.get(&name) else {
                continue;
            };
            if !kept.insert(name) {
                continue;
            }
            let Ok(summary) = pb::FunctionSummary::decode(library.function[i].as_slice()) else {
                continue;
            };
            queue.extend(summary.node_def.iter().flat_map(|n| functions_called_by(n, &index)));
            implemented.extend(api_implements(&summary).map(<[u8]>::to_vec));
        }
        if implemented.is_empty() {
            break;
        }
        // Decoded once, and only for a library that has such functions.
        let alternatives = alternatives.get_or_insert_with(|| implementations(library));
        queue.extend(
            alternatives
                .iter()
                .filter(|(name, api)| implemented.contains(api) && !kept.contains(name))
                .map(|(name, _)| name.clone()),
        );
        if queue.is_empty() {
            break;
        }
    }
    let mut indices: Vec<usize> = kept.iter().map(|name| index[name]).collect();
    indices.sort_unstable();
    let pruned = pb::FunctionDefLibrary {
        function: indices.into_iter().map(|i| library.function[i].clone()).collect(),
        gradient: library
            .gradient
            .iter()
            .filter(|g| kept.contains(&g.function_name) && kept.contains(&g.gradient_func))
            .cloned()
            .collect(),
        registered_gradients: library.registered_gradients.clone(),
    };
    (pruned, kept)
}

/// (name, API) of every function of `library` that names the API it implements.
fn implementations(library: &pb::FunctionDefLibrary) -> Vec<(String, Vec<u8>)> {
    library
        .function
        .iter()
        .filter_map(|bytes| {
            let summary = pb::FunctionSummary::decode(bytes.as_slice()).ok()?;
            let api = api_implements(&summary)?.to_vec();
            Some((summary.signature?.name, api))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(name: &str, op: &str, input: &[&str]) -> pb::NodeDef {
        pb::NodeDef {
            name: name.into(),
            op: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn call(name: &str, function: &str) -> pb::NodeDef {
        let f = pb::AttrValue {
            value: Some(attr_value::Value::Func(pb::NameAttrList { name: function.into(), attr: Default::default() })),
        };
        pb::NodeDef { attr: [("f".to_string(), f.encode_to_vec())].into(), ..plain(name, "PartitionedCall", &[]) }
    }

    fn function(name: &str, nodes: Vec<pb::NodeDef>, api: Option<&str>) -> Vec<u8> {
        let attr = api
            .map(|api| {
                let value = pb::AttrValue { value: Some(attr_value::Value::S(api.as_bytes().to_vec())) };
                (API_IMPLEMENTS.to_string(), value)
            })
            .into_iter()
            .collect();
        pb::FunctionSummary { signature: Some(pb::OpDefName { name: name.into() }), node_def: nodes, attr }
            .encode_to_vec()
    }

    #[test]
    fn inputs_name_their_node() {
        assert_eq!(node_of("^a/b"), "a/b");
        assert_eq!(node_of("call:1"), "call");
        assert_eq!(node_of("x"), "x");
    }

    #[test]
    fn reachability_follows_data_and_control_inputs_only_backwards() {
        let nodes = vec![
            plain("x", "Placeholder", &[]),
            plain("v", "VarHandleOp", &[]),
            plain("w", "VarHandleOp", &[]),
            plain("call", "StatefulPartitionedCall", &["x", "v:0"]),
            plain("train", "StatefulPartitionedCall", &["x", "v", "w"]),
            plain("init", "NoOp", &["^call"]),
        ];
        let reached = reachable(&nodes, ["init".to_string()]);
        let mut reached: Vec<_> = reached.into_iter().collect();
        reached.sort();
        assert_eq!(reached, ["call", "init", "v", "x"]);
    }

    #[test]
    fn function_references_are_found_in_lists_and_nested_attrs() {
        let inner = pb::NameAttrList { name: "inner".into(), attr: Default::default() };
        let nested = pb::AttrValue { value: Some(attr_value::Value::Func(inner)) };
        let outer =
            pb::NameAttrList { name: "outer".into(), attr: [("body".to_string(), nested)].into_iter().collect() };
        let list = attr_value::ListValue { func: vec![outer], ..Default::default() };
        let value = pb::AttrValue { value: Some(attr_value::Value::List(list)) };
        assert_eq!(functions_in_attr(&value.encode_to_vec()), ["outer", "inner"]);
    }

    #[test]
    fn the_library_keeps_what_is_called_transitively_and_alternative_implementations() {
        let library = pb::FunctionDefLibrary {
            function: vec![
                function("serve", vec![call("c", "lstm_cpu")], None),
                function("lstm_cpu", vec![plain("op", "MatMul", &[])], Some("lstm_abc")),
                function("lstm_gpu", vec![call("c", "gpu_helper")], Some("lstm_abc")),
                function("gpu_helper", vec![], None),
                function("train", vec![call("c", "train_body")], None),
                function("train_body", vec![], None),
                function("other_api", vec![], Some("gru_xyz")),
            ],
            gradient: vec![pb::GradientDef { function_name: "lstm_cpu".into(), gradient_func: "train_body".into() }],
            registered_gradients: vec![],
        };
        let root = call("sig", "serve");
        let (pruned, kept) = prune_library(&library, &[&root], &[]);
        let mut kept: Vec<_> = kept.into_iter().collect();
        kept.sort();
        assert_eq!(kept, ["gpu_helper", "lstm_cpu", "lstm_gpu", "serve"]);
        assert_eq!(pruned.function.len(), 4);
        assert!(pruned.gradient.is_empty(), "a gradient whose function is dropped goes too");
        let (_, kept) = prune_library(&library, &[&root], &["train".to_string()]);
        assert!(kept.contains("train_body") && !kept.contains("other_api"));
    }
}
