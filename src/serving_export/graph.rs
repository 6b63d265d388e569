//! The GraphDef side of a serving export: which nodes the kept signatures reach, the function
//! library cut down to what those nodes call, and the init op trimmed to the kept variables. The
//! saver nodes that restore and save exactly the kept variables (TF Serving and the C++ loader
//! run `SaverDef.restore_op_name`) come from `model::graph_saver`.

use std::collections::HashSet;

use prost::Message;

use crate::proto::{self as pb, attr_value};

pub(super) use crate::model::graph_reach::{functions_in_attr, node_of, prune_library, reachable};
pub(super) use crate::model::graph_saver::{dtype_attr, saver_nodes, SavedVariable, OBJECT_GRAPH_KEY};

/// Prefix of every node the export's saver adds; the nodes it replaces are never kept.
pub(super) const SAVER_SCOPE: &str = "tfload_serving_saver";

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

/// The `shared_name` attribute of a node, if it has one.
pub(super) fn shared_name_attr(node: &pb::NodeDef) -> Option<String> {
    let value = pb::AttrValue::decode(node.attr.get("shared_name")?.as_slice()).ok()?;
    match value.value {
        Some(attr_value::Value::S(bytes)) => String::from_utf8(bytes).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(name: &str, op: &str, input: &[&str]) -> pb::NodeDef {
        pb::NodeDef {
            name: name.to_string(),
            op: op.to_string(),
            input: input.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
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
