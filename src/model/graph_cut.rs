//! `saved_model.pb` cut down, before TensorFlow imports it, to what a session runs: the graph
//! nodes that some signatures, the saver and the init op reach, and the library functions those
//! nodes call. TensorFlow imports the whole graph of a SavedModel and its first runs optimize
//! against the whole library; a trainable export holds a serving function, two training traces
//! (`train_step`, `train_step_allreduce`), an evaluation one and the feature cache's three, so a
//! command that runs one of them paid for all (MobileNetV2 0.35: 16 MB of graph, of which the
//! feature cache's run needs 1.6 MB). The cut copies every kept message byte for byte; the
//! object graph is kept whole (TensorFlow's session loader does not read it).
//!
//! The cut also swaps the model's traced saver (`__traced_restore`, `__traced_save`: one
//! function of one op per variable, which TensorFlow instantiates and optimizes at its first
//! run) for graph-level saver nodes that restore and write the same keys from the same handles
//! (`model::graph_saver`), when `model::traced_saver` can read exactly what the traced one does
//! and the kept signatures read no variable handle outside it.

use std::collections::HashSet;

use prost::Message;

use crate::model::graph_reach::{node_of, prune_library, reachable, tensor_names};
use crate::model::graph_saver::{dtype_attr, saver_nodes, SaverWrites};
use crate::model::meta_graph::SaverSpec;
use crate::model::traced_saver::{self, TracedSaver};
use crate::proto::{self as pb};
use crate::tensor::dtype::DType;

/// TensorFlow's init-op signature key; its op runs at every load.
pub(crate) const INIT_OP_KEY: &str = "__saved_model_init_op";
/// Prefix of the graph-level saver nodes a cut adds.
pub(crate) const GRAPH_SAVER_SCOPE: &str = "tfload_saver";

/// A `saved_model.pb` cut to some signatures, with what it kept.
#[derive(Debug)]
pub(crate) struct GraphCut {
    /// The encoded `SavedModel`: the one MetaGraph, cut.
    pub bytes: Vec<u8>,
    /// Graph nodes kept, of how many.
    pub nodes: (usize, usize),
    /// Library functions kept, of how many.
    pub functions: (usize, usize),
    /// The graph-level saver the cut's `SaverDef` names instead of the model's traced one, with
    /// what it saves; or why the model's own saver was kept.
    pub saver: Result<(SaverSpec, SaverWrites), String>,
}

/// `bytes` (a whole `saved_model.pb`) with only the MetaGraph of `tags` (sorted), cut to the
/// signatures `keep` (keys that are not signatures keep nothing). `None` when the bytes do not
/// decode losslessly or the cut would drop nothing: the model then loads as it is.
/// `checkpoint_has_object_graph`: the checkpoint the model loads holds
/// `_CHECKPOINTABLE_OBJECT_GRAPH`, which the graph-level restore then reads too (and checks).
pub(crate) fn cut_to_signatures(
    bytes: &[u8],
    tags: &[String],
    keep: &[String],
    checkpoint_has_object_graph: bool,
) -> Option<GraphCut> {
    let model = pb::EditableSavedModel::decode(bytes).ok()?;
    let mut meta_graph = model.meta_graphs.into_iter().find(|m| sorted_tags(m) == tags)?;
    let mut roots = roots(&meta_graph, keep);
    let saver = graph_saver(&meta_graph, &roots);
    let graph = meta_graph.graph_def.as_mut()?;
    let total_nodes = graph.node.len();
    let saver = saver.map(|traced| {
        let saver_def = meta_graph.saver_def.as_mut().expect("read by traced_saver");
        let nodes = saver_nodes(
            GRAPH_SAVER_SCOPE,
            &traced.filename_node,
            &traced.variables,
            &traced.object_graph,
            checkpoint_has_object_graph,
        );
        graph.node.extend(nodes.nodes);
        saver_def.restore_op_name = nodes.restore_op;
        saver_def.save_tensor_name = nodes.save_tensor;
        let spec = SaverSpec {
            filename_tensor: saver_def.filename_tensor_name.clone(),
            save_tensor: saver_def.save_tensor_name.clone(),
            restore_op: saver_def.restore_op_name.clone(),
        };
        (spec, nodes.writes)
    });
    if let Some(saver) = &meta_graph.saver_def {
        roots.extend(
            [&saver.filename_tensor_name, &saver.save_tensor_name, &saver.restore_op_name]
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(|t| node_of(t).to_string()),
        );
    }
    let library = graph.library.take().unwrap_or_default();
    let reached = reachable(&graph.node, roots);
    graph.node.retain(|node| reached.contains(&node.name));
    let nodes: Vec<&pb::NodeDef> = graph.node.iter().collect();
    let (pruned, kept) = prune_library(&library, &nodes, &[]);
    let added = graph.node.iter().filter(|n| n.name.starts_with(&format!("{GRAPH_SAVER_SCOPE}/"))).count();
    let cut = GraphCut {
        bytes: Vec::new(),
        nodes: (graph.node.len() - added, total_nodes),
        functions: (kept.len(), library.function.len()),
        saver,
    };
    if cut.nodes.0 == cut.nodes.1 && cut.functions.0 == cut.functions.1 && cut.saver.is_err() {
        return None;
    }
    graph.library = Some(pruned);
    let kept_keys: HashSet<&str> = keep.iter().map(String::as_str).chain([INIT_OP_KEY]).collect();
    meta_graph.signature_def.retain(|key, _| kept_keys.contains(key.as_str()));
    let cut_model = pb::EditableSavedModel {
        saved_model_schema_version: model.saved_model_schema_version,
        meta_graphs: vec![meta_graph],
    };
    Some(GraphCut { bytes: cut_model.encode_to_vec(), ..cut })
}

/// The model's traced saver, read, and the names of the graph-level saver that replaces it; or
/// why it cannot be replaced. It cannot when the nodes the signatures reach (`roots`) read a
/// variable handle that the traced saver does not restore: a model with two handles per
/// variable (Keras 3), whose functions read handles that only tfload's own fill after the load
/// gives values, must keep its saver so that the fill sees what it expects.
fn graph_saver(meta_graph: &pb::EditableMetaGraphDef, roots: &[String]) -> Result<TracedSaver, String> {
    let traced = traced_saver::read(meta_graph)?;
    let nodes = meta_graph.graph_def.as_ref().map(|g| g.node.as_slice()).unwrap_or_default();
    if let Some(node) = nodes.iter().find(|n| n.name.starts_with(&format!("{GRAPH_SAVER_SCOPE}/"))) {
        return Err(format!("its graph already has a node `{}` where tfload's saver would go", node.name));
    }
    let restored: HashSet<&str> = traced.variables.iter().map(|v| v.handle.as_str()).collect();
    let reached = reachable(nodes, roots.iter().cloned());
    let unrestored: Vec<&str> = nodes
        .iter()
        .filter(|n| n.op == "VarHandleOp" && reached.contains(&n.name) && !restored.contains(n.name.as_str()))
        .filter(|n| dtype_attr(n).map(DType::from_proto) != Some(DType::String))
        .map(|n| n.name.as_str())
        .collect();
    if !unrestored.is_empty() {
        let shown: Vec<&str> = unrestored.iter().take(4).copied().collect();
        return Err(format!(
            "its functions read {} variable handles that its saver does not restore ({}; two handles per variable, as Keras 3 writes)",
            unrestored.len(),
            shown.join(", ")
        ));
    }
    Ok(traced)
}

/// The tag set of a losslessly decoded MetaGraph, sorted.
pub(crate) fn sorted_tags(meta_graph: &pb::EditableMetaGraphDef) -> Vec<String> {
    let info = pb::meta_graph_def::MetaInfoDef::decode(meta_graph.meta_info_def.as_slice()).unwrap_or_default();
    let mut tags = info.tags;
    tags.sort();
    tags
}

/// The nodes a load and the kept signatures run, the saver aside: every tensor the kept
/// signatures and the init-op signature feed or fetch, the nodes that TF1 collections name (main
/// op, legacy init op, table initializers) and the asset tensors.
fn roots(meta_graph: &pb::EditableMetaGraphDef, keep: &[String]) -> Vec<String> {
    let mut tensors = Vec::new();
    for key in keep.iter().map(String::as_str).chain([INIT_OP_KEY]) {
        let Some(def) = meta_graph.signature_def.get(key).and_then(|b| pb::SignatureDef::decode(b.as_slice()).ok())
        else {
            continue;
        };
        for info in def.inputs.values().chain(def.outputs.values()) {
            tensor_names(info, &mut tensors);
        }
    }
    for collection in meta_graph.collection_def.values() {
        if let Some(list) = pb::CollectionSummary::decode(collection.as_slice()).ok().and_then(|c| c.node_list) {
            tensors.extend(list.value);
        }
    }
    for asset in &meta_graph.asset_file_def {
        if let Some(info) = pb::AssetFileDef::decode(asset.as_slice()).ok().and_then(|a| a.tensor_info) {
            tensor_names(&info, &mut tensors);
        }
    }
    tensors.iter().filter(|t| !t.is_empty()).map(|t| node_of(t).to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::attr_value;

    fn node(name: &str, op: &str, input: &[&str], function: Option<&str>) -> pb::NodeDef {
        let attr = function
            .map(|f| {
                let list = pb::NameAttrList { name: f.into(), attr: Default::default() };
                ("f".to_string(), pb::AttrValue { value: Some(attr_value::Value::Func(list)) }.encode_to_vec())
            })
            .into_iter()
            .collect();
        pb::NodeDef {
            name: name.into(),
            op: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            attr,
            ..Default::default()
        }
    }

    fn function(name: &str) -> Vec<u8> {
        pb::FunctionSummary { signature: Some(pb::OpDefName { name: name.into() }), ..Default::default() }
            .encode_to_vec()
    }

    fn signature(inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let info = |name: &&str| pb::TensorInfo {
            encoding: Some(pb::tensor_info::Encoding::Name(name.to_string())),
            ..Default::default()
        };
        pb::SignatureDef {
            inputs: inputs.iter().map(|n| (n.to_string(), info(n))).collect(),
            outputs: outputs.iter().map(|n| (n.to_string(), info(n))).collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Two signatures (serve, train) sharing a variable, a saver and an init op.
    fn model() -> Vec<u8> {
        let meta_info = pb::meta_graph_def::MetaInfoDef { tags: vec!["serve".into()], ..Default::default() };
        let graph = pb::GraphDef {
            node: vec![
                node("x", "Placeholder", &[], None),
                node("v", "VarHandleOp", &[], None),
                node("serve_call", "StatefulPartitionedCall", &["x", "v"], Some("serve")),
                node("train_call", "StatefulPartitionedCall", &["x", "v"], Some("train")),
                node("file", "Placeholder", &[], None),
                node("restore", "StatefulPartitionedCall", &["file", "v"], Some("restore")),
                node("init", "NoOp", &[], None),
            ],
            library: Some(pb::FunctionDefLibrary {
                function: ["serve", "train", "restore"].map(function).to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let meta_graph = pb::EditableMetaGraphDef {
            meta_info_def: meta_info.encode_to_vec(),
            graph_def: Some(graph),
            saver_def: Some(pb::SaverDef {
                filename_tensor_name: "file:0".into(),
                restore_op_name: "restore".into(),
                ..Default::default()
            }),
            signature_def: [
                ("serving_default".to_string(), signature(&["x:0"], &["serve_call:0"])),
                ("train_step".to_string(), signature(&["x:0"], &["train_call:0"])),
                (INIT_OP_KEY.to_string(), signature(&[], &["init"])),
            ]
            .into(),
            ..Default::default()
        };
        pb::EditableSavedModel { saved_model_schema_version: 1, meta_graphs: vec![meta_graph] }.encode_to_vec()
    }

    #[test]
    fn a_cut_keeps_the_signatures_asked_for_with_the_saver_and_init_op() {
        let cut = cut_to_signatures(&model(), &["serve".into()], &["serving_default".into()], true).expect("cut");
        assert_eq!((cut.nodes, cut.functions), ((6, 7), (2, 3)));
        let decoded = pb::EditableSavedModel::decode(cut.bytes.as_slice()).unwrap();
        let meta_graph = &decoded.meta_graphs[0];
        let graph = meta_graph.graph_def.as_ref().unwrap();
        let names: Vec<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["x", "v", "serve_call", "file", "restore", "init"]);
        let mut keys: Vec<&String> = meta_graph.signature_def.keys().collect();
        keys.sort();
        assert_eq!(keys, [INIT_OP_KEY, "serving_default"]);
        let functions: Vec<String> = graph
            .library
            .as_ref()
            .unwrap()
            .function
            .iter()
            .map(|f| pb::FunctionName::decode(f.as_slice()).unwrap().signature.unwrap().name)
            .collect();
        assert_eq!(functions, ["serve", "restore"]);
    }

    #[test]
    fn nothing_to_drop_or_other_tags_or_bad_bytes_load_as_they_are() {
        let all = ["serving_default".to_string(), "train_step".to_string()];
        assert!(cut_to_signatures(&model(), &["serve".into()], &all, true).is_none());
        assert!(cut_to_signatures(&model(), &["train".into()], &all[..1], true).is_none());
        assert!(cut_to_signatures(b"\xff\xff not a model", &["serve".into()], &all[..1], true).is_none());
    }

    fn traced_model(extra: Option<&str>) -> Vec<u8> {
        let meta_graph = crate::model::traced_saver::fixture::meta_graph("read_a", extra);
        pb::EditableSavedModel { saved_model_schema_version: 1, meta_graphs: vec![meta_graph] }.encode_to_vec()
    }

    #[test]
    fn a_cut_swaps_the_traced_saver_for_graph_level_nodes_of_the_same_keys() {
        let cut =
            cut_to_signatures(&traced_model(None), &["serve".into()], &["serving_default".into()], true).expect("cut");
        let (spec, writes) = cut.saver.clone().expect("graph-level saver");
        assert_eq!(writes.reads.len(), 2);
        assert!(writes.reads.iter().all(|read| read.tensor.starts_with("tfload_saver/save/read_")), "{writes:?}");
        assert_eq!(spec.restore_op, "tfload_saver/restore_all");
        let decoded = pb::EditableSavedModel::decode(cut.bytes.as_slice()).unwrap();
        let meta_graph = &decoded.meta_graphs[0];
        let saver = meta_graph.saver_def.as_ref().unwrap();
        assert_eq!(
            (saver.restore_op_name.as_str(), saver.save_tensor_name.as_str()),
            ("tfload_saver/restore_all", "tfload_saver/save_all:0")
        );
        let graph = meta_graph.graph_def.as_ref().unwrap();
        let names: Vec<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
        assert!(!names.contains(&"restore_call") && !names.contains(&"save_call"), "{names:?}");
        let keys = graph.node.iter().find(|n| n.name == "tfload_saver/restore/tensor_names").unwrap();
        let keys = crate::model::traced_saver::const_strings(keys).unwrap();
        // The object graph is read too, so that a corrupt one fails the load.
        assert_eq!(
            keys,
            ["b/.ATTRIBUTES/VARIABLE_VALUE", "a/.ATTRIBUTES/VARIABLE_VALUE", "_CHECKPOINTABLE_OBJECT_GRAPH"]
        );
        let assign = graph.node.iter().find(|n| n.name == "tfload_saver/restore/assign_0").unwrap();
        assert_eq!(assign.input, ["b", "tfload_saver/restore/RestoreV2:0"]);
        assert_eq!(cut.functions, (1, 3), "the traced saver functions are dropped");
    }

    #[test]
    fn a_handle_the_traced_saver_does_not_restore_keeps_the_model_saver() {
        let cut = cut_to_signatures(&traced_model(Some("a_1")), &["serve".into()], &["serving_default".into()], true)
            .expect("cut");
        let reason = cut.saver.unwrap_err();
        assert!(reason.contains("1 variable handles") && reason.contains("a_1"), "{reason}");
        let decoded = pb::EditableSavedModel::decode(cut.bytes.as_slice()).unwrap();
        assert_eq!(decoded.meta_graphs[0].saver_def.as_ref().unwrap().restore_op_name, "restore_call");
    }
}
