//! The object-graph side of a serving export: the SavedModel's `SavedObjectGraph` and the
//! checkpoint's `TrackableObjectGraph` cut down to the objects the kept functions use, and
//! renumbered so that Python's `tf.saved_model.load` finds every kept variable by the same path
//! from the root in both.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::proto::{self as pb, editable_object::Kind};

/// Which objects of a `SavedObjectGraph` survive, and their new numbers.
#[derive(Debug)]
pub(super) struct ObjectPlan {
    /// `new_id[old]`, for kept objects.
    pub new_id: Vec<Option<i32>>,
    /// The concrete functions kept (named in the kept library).
    pub functions: HashSet<String>,
}

impl ObjectPlan {
    /// Keeps the root, the function objects whose concrete functions are in `library`, what
    /// those functions capture (with everything under a captured non-user object, such as a
    /// resource's own functions), and every object on a path from the root to a kept one.
    pub fn new(graph: &pb::EditableObjectGraph, library: &HashSet<String>) -> ObjectPlan {
        let functions: HashSet<String> =
            graph.concrete_functions.keys().filter(|name| library.contains(*name)).cloned().collect();
        let count = graph.nodes.len();
        let mut keep = vec![false; count];
        if let Some(root) = keep.first_mut() {
            *root = true;
        }
        for (id, node) in graph.nodes.iter().enumerate() {
            keep[id] |= match &node.kind {
                Some(Kind::BareConcreteFunction(bare)) => functions.contains(&bare.concrete_function_name),
                Some(Kind::Function(function)) => function.concrete_functions.iter().any(|f| functions.contains(f)),
                _ => false,
            };
        }
        let captured = functions.iter().flat_map(|name| graph.concrete_functions[name].bound_inputs.iter());
        let mut queue: VecDeque<usize> = captured.filter_map(|&id| usize::try_from(id).ok()).collect();
        while let Some(id) = queue.pop_front() {
            if id >= count || keep[id] {
                continue;
            }
            keep[id] = true;
            if !matches!(graph.nodes[id].kind, Some(Kind::UserObject(_))) {
                queue.extend(children_ids(&graph.nodes[id]));
            }
        }
        keep_ancestors(&mut keep, |id| children_ids(&graph.nodes[id]).collect());
        ObjectPlan { new_id: renumber(&keep), functions }
    }

    /// The new id of object `old`, if it is kept.
    pub fn get(&self, old: i32) -> Option<i32> {
        usize::try_from(old).ok().and_then(|i| self.new_id.get(i).copied().flatten())
    }

    /// The old ids of the kept objects, in order.
    pub fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        self.new_id.iter().enumerate().filter(|(_, new)| new.is_some()).map(|(old, _)| old)
    }

    /// The pruned graph. `asset_index` maps old `asset_file_def` indices to new ones; an asset
    /// object whose file is dropped is dropped with it.
    pub fn apply(&self, graph: &pb::EditableObjectGraph, asset_index: &HashMap<i32, i32>) -> pb::EditableObjectGraph {
        let nodes = self.kept().map(|old| self.prune_object(&graph.nodes[old], asset_index)).collect();
        let concrete_functions = graph
            .concrete_functions
            .iter()
            .filter(|(name, _)| self.functions.contains(*name))
            .map(|(name, function)| {
                let mut function = function.clone();
                function.bound_inputs = function.bound_inputs.iter().filter_map(|&id| self.get(id)).collect();
                (name.clone(), function)
            })
            .collect();
        pb::EditableObjectGraph { nodes, concrete_functions }
    }

    fn prune_object(&self, node: &pb::EditableObject, asset_index: &HashMap<i32, i32>) -> pb::EditableObject {
        let mut node = node.clone();
        node.children = self.references(&node.children);
        node.dependencies = self.references(&node.dependencies);
        node.slot_variables = slot_references(&node.slot_variables, |id| self.get(id));
        node.saveable_objects.retain(|_, saveable| {
            match (self.get(saveable.save_function), self.get(saveable.restore_function)) {
                (Some(save), Some(restore)) => {
                    saveable.save_function = save;
                    saveable.restore_function = restore;
                    true
                }
                _ => false,
            }
        });
        match &mut node.kind {
            Some(Kind::Function(function)) => function.concrete_functions.retain(|f| self.functions.contains(f)),
            Some(Kind::Asset(asset)) => {
                asset.asset_file_def_index = asset_index.get(&asset.asset_file_def_index).copied().unwrap_or(-1);
            }
            _ => {}
        }
        node
    }

    fn references(&self, references: &[pb::ObjectReference]) -> Vec<pb::ObjectReference> {
        references
            .iter()
            .filter_map(|r| {
                Some(pb::ObjectReference { node_id: self.get(r.node_id)?, local_name: r.local_name.clone() })
            })
            .collect()
    }
}

/// For each SavedModel object, the checkpoint object at the same path of child names from the
/// root (Python's restore matches objects that way).
pub(super) fn checkpoint_counterparts(
    saved: &pb::EditableObjectGraph,
    checkpoint: &pb::TrackableObjectGraph,
) -> HashMap<usize, usize> {
    let mut pairs = HashMap::new();
    if saved.nodes.is_empty() || checkpoint.nodes.is_empty() {
        return pairs;
    }
    let mut queue = VecDeque::from([(0usize, 0usize)]);
    while let Some((saved_id, checkpoint_id)) = queue.pop_front() {
        if pairs.contains_key(&saved_id) {
            continue;
        }
        pairs.insert(saved_id, checkpoint_id);
        let checkpoint_children: HashMap<&str, i32> =
            checkpoint.nodes[checkpoint_id].children.iter().map(|c| (c.local_name.as_str(), c.node_id)).collect();
        for child in &saved.nodes[saved_id].children {
            let counterpart = checkpoint_children.get(child.local_name.as_str());
            let ids = (usize::try_from(child.node_id).ok(), counterpart.and_then(|&id| usize::try_from(id).ok()));
            if let (Some(s), Some(c)) = ids {
                if s < saved.nodes.len() && c < checkpoint.nodes.len() {
                    queue.push_back((s, c));
                }
            }
        }
    }
    pairs
}

/// The checkpoint's object graph cut down to `kept` (old checkpoint ids) and their ancestors,
/// renumbered, with the checkpoint keys its kept objects still name.
pub(super) fn prune_checkpoint_graph(
    graph: &pb::TrackableObjectGraph,
    kept: &HashSet<usize>,
) -> (pb::TrackableObjectGraph, Vec<String>) {
    let mut keep: Vec<bool> = (0..graph.nodes.len()).map(|id| id == 0 || kept.contains(&id)).collect();
    let children =
        |id: usize| graph.nodes[id].children.iter().filter_map(|c| usize::try_from(c.node_id).ok()).collect();
    keep_ancestors(&mut keep, children);
    let new_id = renumber(&keep);
    let get = |old: i32| usize::try_from(old).ok().and_then(|i| new_id.get(i).copied().flatten());
    let mut keys = Vec::new();
    let mut nodes = Vec::new();
    for node in graph.nodes.iter().zip(&keep).filter(|(_, kept)| **kept).map(|(node, _)| node) {
        let mut node = node.clone();
        node.children = node
            .children
            .iter()
            .filter_map(|c| Some(pb::ObjectReference { node_id: get(c.node_id)?, local_name: c.local_name.clone() }))
            .collect();
        node.slot_variables = slot_references(&node.slot_variables, get);
        keys.extend(node.attributes.iter().map(|a| a.checkpoint_key.clone()));
        nodes.push(node);
    }
    (pb::TrackableObjectGraph { nodes }, keys)
}

fn children_ids(node: &pb::EditableObject) -> impl Iterator<Item = usize> + '_ {
    node.children.iter().filter_map(|c| usize::try_from(c.node_id).ok())
}

/// Marks every node with a marked descendant, so that each kept object stays reachable.
fn keep_ancestors(keep: &mut [bool], children: impl Fn(usize) -> Vec<usize>) {
    let mut changed = true;
    while changed {
        changed = false;
        for id in 0..keep.len() {
            if !keep[id] && children(id).iter().any(|&c| c < keep.len() && keep[c]) {
                keep[id] = true;
                changed = true;
            }
        }
    }
}

fn renumber(keep: &[bool]) -> Vec<Option<i32>> {
    let mut next = 0;
    keep.iter()
        .map(|&kept| {
            kept.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

fn slot_references(
    slots: &[pb::SlotVariableReference],
    get: impl Fn(i32) -> Option<i32>,
) -> Vec<pb::SlotVariableReference> {
    slots
        .iter()
        .filter_map(|s| {
            Some(pb::SlotVariableReference {
                original_variable_node_id: get(s.original_variable_node_id)?,
                slot_name: s.slot_name.clone(),
                slot_variable_node_id: get(s.slot_variable_node_id)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(children: &[(i32, &str)], kind: Option<Kind>) -> pb::EditableObject {
        pb::EditableObject {
            children: children
                .iter()
                .map(|&(id, name)| pb::ObjectReference { node_id: id, local_name: name.into() })
                .collect(),
            kind,
            ..Default::default()
        }
    }

    fn bare(name: &str) -> Option<Kind> {
        Some(Kind::BareConcreteFunction(pb::SavedBareConcreteFunction {
            concrete_function_name: name.into(),
            ..Default::default()
        }))
    }

    /// root: vars [0,1], optimizer [slot], signatures {serve, train}; serve reads var 0 only.
    fn graph() -> pb::EditableObjectGraph {
        let user = || Some(Kind::UserObject(Vec::new()));
        let var = || Some(Kind::Variable(Vec::new()));
        let mut root = object(&[(1, "vars"), (2, "optimizer"), (3, "signatures")], user());
        root.slot_variables = vec![pb::SlotVariableReference {
            original_variable_node_id: 4,
            slot_name: "m".into(),
            slot_variable_node_id: 6,
        }];
        let nodes = vec![
            root,
            object(&[(4, "0"), (5, "1")], user()),
            object(&[(6, "0")], user()),
            object(&[(7, "serving_default"), (8, "train_step")], user()),
            object(&[], var()),
            object(&[], var()),
            object(&[], var()),
            object(&[], bare("serve_fn")),
            object(&[], bare("train_fn")),
        ];
        let function = |ids: &[i32]| pb::SavedConcreteFunction { bound_inputs: ids.to_vec(), ..Default::default() };
        let concrete_functions =
            [("serve_fn".to_string(), function(&[4])), ("train_fn".to_string(), function(&[4, 5, 6]))]
                .into_iter()
                .collect();
        pb::EditableObjectGraph { nodes, concrete_functions }
    }

    #[test]
    fn keeps_what_the_kept_functions_capture_and_the_paths_to_it() {
        let graph = graph();
        let plan = ObjectPlan::new(&graph, &["serve_fn".to_string()].into_iter().collect());
        assert_eq!(plan.kept().collect::<Vec<_>>(), [0, 1, 3, 4, 7]);
        let pruned = plan.apply(&graph, &HashMap::new());
        let names: Vec<_> = pruned.nodes[0].children.iter().map(|c| (c.node_id, c.local_name.as_str())).collect();
        assert_eq!(names, [(1, "vars"), (2, "signatures")]);
        assert!(pruned.nodes[0].slot_variables.is_empty(), "the slot's variable is dropped");
        assert_eq!(pruned.concrete_functions.keys().collect::<Vec<_>>(), ["serve_fn"]);
        assert_eq!(pruned.concrete_functions["serve_fn"].bound_inputs, [3]);
        assert_eq!(pruned.nodes[1].children.len(), 1);
    }

    #[test]
    fn checkpoint_objects_are_matched_by_path_and_pruned_with_their_keys() {
        let saved = graph();
        let attribute = |key: &str| pb::trackable_object::SerializedTensor {
            name: "VARIABLE_VALUE".into(),
            full_name: String::new(),
            checkpoint_key: key.into(),
        };
        let tracked = |children: &[(i32, &str)], key: Option<&str>| pb::TrackableObject {
            children: children
                .iter()
                .map(|&(id, name)| pb::ObjectReference { node_id: id, local_name: name.into() })
                .collect(),
            attributes: key.map(attribute).into_iter().collect(),
            ..Default::default()
        };
        // The checkpoint numbers its objects differently and has no signatures.
        let checkpoint = pb::TrackableObjectGraph {
            nodes: vec![
                tracked(&[(1, "optimizer"), (2, "vars")], None),
                tracked(&[(5, "0")], None),
                tracked(&[(3, "0"), (4, "1")], None),
                tracked(&[], Some("vars/0/.ATTRIBUTES/VARIABLE_VALUE")),
                tracked(&[], Some("vars/1/.ATTRIBUTES/VARIABLE_VALUE")),
                tracked(&[], Some("optimizer/0/.ATTRIBUTES/VARIABLE_VALUE")),
            ],
        };
        let pairs = checkpoint_counterparts(&saved, &checkpoint);
        assert_eq!(pairs[&4], 3);
        assert_eq!(pairs[&6], 5);
        assert!(!pairs.contains_key(&7));
        let (pruned, keys) = prune_checkpoint_graph(&checkpoint, &[pairs[&4]].into_iter().collect());
        assert_eq!(keys, ["vars/0/.ATTRIBUTES/VARIABLE_VALUE"]);
        assert_eq!(pruned.nodes.len(), 3);
        assert_eq!(pruned.nodes[0].children.len(), 1);
        assert_eq!(pruned.nodes[0].children[0].local_name, "vars");
    }
}
