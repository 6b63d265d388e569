//! A signature specialized on a constant input: a copy of the signature's function call node,
//! added to the loaded graph, that reads a `Const` where the original reads one of its
//! placeholders. The session picks the new node up on its next run; a TF1 session inlines the
//! function body there, so TensorFlow's graph optimizer folds everything the constant decides
//! (for a `train_step` and its mask: the `tf.where`s that keep frozen variables, their weight
//! gradients and optimizer updates; not the input gradients that a lowered `tf.cond` keeps alive).
//! The `tf.cond` of each fused optimizer update, which TensorFlow does not fold, is resolved here
//! instead: the copy calls renamed copies of the step's functions in which each takes the branch
//! the constant decides ([`crate::model::taken_branches`]). The variables and every other input
//! are shared with the original call, so the two compute the same thing and can be mixed in one
//! session.

use std::collections::HashMap;

use prost::Message;
use tensorflow::{Function, Graph, Operation, Output};

use crate::error::{Error, Result};
use crate::model::taken_branches::{self, NotResolved};
use crate::proto;
use crate::session::loaded_model::const_node;

/// The op types whose copy is a call of the same function (what `tf.saved_model.save` writes
/// for a signature).
const CALL_OPS: [&str; 2] = ["StatefulPartitionedCall", "PartitionedCall"];

/// The attributes of a call node that the copy takes over where the original has them. The
/// private ones matter: `_read_only_resource_inputs` lets TensorFlow order variable reads, and
/// `_collective_manager_ids` names the collectives of a distributed step.
const CALL_ATTRS: [&str; 8] = [
    "f",
    "Tin",
    "Tout",
    "config",
    "config_proto",
    "executor_type",
    "_read_only_resource_inputs",
    "_collective_manager_ids",
];

/// Why a call cannot be specialized (a signature tfload did not see the exporter write); the
/// caller then runs the signature as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSpecializable(pub String);

/// Adds to `graph` a node `name` that calls the same function as `call` with the same inputs,
/// except that the one fed by `placeholder` reads a new `Const` holding `value` (shape `dims`).
/// Returns the new call node, whose outputs stand for `call`'s, or why `call` is not a call
/// node with `placeholder` as a direct input.
pub fn call_with_constant(
    graph: &mut Graph,
    call: &Operation,
    placeholder: &Operation,
    value: &[f32],
    dims: &[u64],
    name: &str,
) -> Result<std::result::Result<Operation, NotSpecializable>> {
    let op_type = call.op_type().unwrap_or_default();
    if !CALL_OPS.contains(&op_type.as_str()) {
        return Ok(Err(NotSpecializable(format!("its outputs come from a `{op_type}` node, not a function call"))));
    }
    let inputs: Vec<Output> = (0..call.num_inputs())
        .map(|i| {
            let (operation, index) = call.input(i);
            Output { operation, index: index as i32 }
        })
        .collect();
    let fed = |input: &Output| input.operation.name().ok() == placeholder.name().ok();
    if inputs.iter().filter(|input| fed(input)).count() != 1 {
        return Ok(Err(NotSpecializable(format!(
            "placeholder `{}` is not one direct input of `{}`",
            placeholder.name().unwrap_or_default(),
            call.name().unwrap_or_default()
        ))));
    }
    let edit = |status: tensorflow::Status| {
        Error::from_tensorflow(
            format!("adding the specialized copy `{name}` of `{}`", call.name().unwrap_or_default()),
            &status,
        )
    };
    let constant = const_node(graph, &format!("{name}/constant"), value, dims).map_err(edit)?;
    let inputs: Vec<Output> = inputs
        .into_iter()
        .map(|input| if fed(&input) { Output { operation: constant.clone(), index: 0 } } else { input })
        .collect();
    let mut attrs = Vec::new();
    for attr in CALL_ATTRS.into_iter().filter(|attr| call.get_attr_metadata(attr).is_ok()) {
        let proto = call.get_attr_value_proto(attr).map_err(edit)?;
        let proto = if attr == "f" { with_taken_branches(graph, &proto, value, name)? } else { proto };
        attrs.push((attr, proto));
    }
    let mut copy = graph.new_operation(&op_type, name).map_err(|error| edit(error.into()))?;
    copy.add_input_list(&inputs);
    for control in call.control_inputs() {
        copy.add_control_input(&control);
    }
    if let Ok(device) = call.device() {
        if !device.is_empty() {
            copy.set_device(&device).map_err(|error| edit(error.into()))?;
        }
    }
    for (attr, proto) in &attrs {
        copy.set_attr_value_proto(attr, proto).map_err(edit)?;
    }
    copy.finish().map(Ok).map_err(edit)
}

/// The call's `f` attribute (a serialized `AttrValue`) pointing at a copy of its function whose
/// masked updates take the branch `mask` decides (see [`crate::model::taken_branches`]), the
/// copies added to `graph`; `f` as it is when the function has no such update or the copy
/// cannot be made (then logged: the step runs with its `tf.cond`s, as exported).
fn with_taken_branches(graph: &mut Graph, f: &[u8], mask: &[f32], name: &str) -> Result<Vec<u8>> {
    let Ok(mut attr) = proto::AttrValue::decode(f) else {
        return Ok(f.to_vec());
    };
    let Some(proto::attr_value::Value::Func(call)) = &mut attr.value else {
        return Ok(f.to_vec());
    };
    let library: HashMap<String, Function> = graph
        .get_functions()
        .map_err(|status| Error::from_tensorflow(format!("listing the functions for `{name}`"), &status))?
        .into_iter()
        .filter_map(|function| Some((function.get_name().ok()?, function)))
        .collect();
    let lookup = |function: &str| library.get(function).and_then(|f| f.to_function_def().ok());
    let resolved = match taken_branches::resolve_masked_updates(&lookup, &call.name, mask) {
        Ok(Some(resolved)) => resolved,
        Ok(None) => return Ok(f.to_vec()),
        Err(NotResolved(why)) => {
            log::warn!("`{name}` keeps its masked updates' tf.conds: {why}");
            return Ok(f.to_vec());
        }
    };
    for (function, bytes) in &resolved.functions {
        if library.contains_key(function) {
            continue; // the same mask specialized before: the same copy
        }
        let added = Function::import_function_def(bytes).and_then(|copy| graph.copy_function(&copy, None));
        if let Err(status) = added {
            log::warn!("`{name}` keeps its masked updates' tf.conds: adding `{function}` failed: {status}");
            return Ok(f.to_vec());
        }
    }
    log::debug!("`{name}`: {} masked updates replaced with the branch the mask takes", resolved.resolved);
    call.name = resolved.root;
    Ok(attr.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholder(graph: &mut Graph, name: &str) -> Operation {
        let mut op = graph.new_operation("Placeholder", name).unwrap();
        op.set_attr_type("dtype", tensorflow::DataType::Float).unwrap();
        op.finish().unwrap()
    }

    #[test]
    fn only_a_function_call_fed_by_the_placeholder_is_specialized() {
        let mut graph = Graph::new();
        let mask = placeholder(&mut graph, "mask");
        let identity = {
            let mut op = graph.new_operation("Identity", "not_a_call").unwrap();
            op.add_input(Output { operation: mask.clone(), index: 0 });
            op.finish().unwrap()
        };
        let refused = call_with_constant(&mut graph, &identity, &mask, &[1.0], &[1], "copy").unwrap();
        assert!(refused.unwrap_err().0.contains("`Identity` node"));
        assert!(graph.operation_by_name("copy").unwrap().is_none(), "nothing added when refused");
    }
}
