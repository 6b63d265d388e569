//! A signature specialized on a constant input: a copy of the signature's function call node,
//! added to the loaded graph, that reads a `Const` where the original reads one of its
//! placeholders. The session picks the new node up on its next run; a TF1 session inlines the
//! function body there, so TensorFlow's graph optimizer folds everything the constant decides
//! (for a `train_step` and its mask: the `tf.where`s that keep frozen variables, their weight
//! gradients and optimizer updates; not the input gradients that a lowered `tf.cond` keeps alive). The function, its
//! variables and every other input are shared with the original call, so the two compute the
//! same thing and can be mixed in one session.

use tensorflow::{Graph, Operation, Output};

use crate::error::{Error, Result};
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
    for attr in CALL_ATTRS {
        if call.get_attr_metadata(attr).is_ok() {
            let value = call.get_attr_value_proto(attr).map_err(edit)?;
            copy.set_attr_value_proto(attr, &value).map_err(edit)?;
        }
    }
    copy.finish().map(Ok).map_err(edit)
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
