//! Working out a serving export in memory: the rewritten `saved_model.pb`, the checkpoint with
//! only the kept variables, and the assets to copy. Writing it is the last, separate step.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use super::graph::{self, SavedVariable, OBJECT_GRAPH_KEY, SAVER_SCOPE};
use super::objects::{checkpoint_counterparts, prune_checkpoint_graph, ObjectPlan};
use crate::formats::checkpoint_writer::CheckpointWriter;
use crate::model::graph_cut::{sorted_tags, INIT_OP_KEY};
use crate::model::graph_reach::tensor_names;
use crate::output_dir::{copy_tree, io_error};
use crate::proto;
use crate::proto::{self as pb, editable_object::Kind};
use crate::{Error, MetaGraph, Result};

/// Attribute name of a variable's value in the checkpoint's object graph.
const VARIABLE_VALUE: &str = "VARIABLE_VALUE";

/// A serving export worked out in memory.
pub(super) struct ServingPlan {
    saved_model: pb::EditableSavedModel,
    checkpoint: CheckpointWriter,
    variables: Vec<(String, SavedVariable)>,
    /// Names of the variables left out.
    pub dropped_variables: Vec<String>,
    /// Asset files kept, as names under `assets/`.
    pub assets: Vec<String>,
}

/// The decoded graph pieces a plan is worked out from.
struct Source<'a> {
    dir: &'a Path,
    meta_graph: pb::EditableMetaGraphDef,
    objects: pb::EditableObjectGraph,
}

impl ServingPlan {
    /// Plans the export of `meta_graph` (read from `dir`) keeping `signatures`.
    pub fn build(dir: &Path, meta_graph: &MetaGraph, signatures: &[String]) -> Result<ServingPlan> {
        let mut source = Source::read(dir, meta_graph.tags())?;
        let mut kept_keys: Vec<String> = signatures.to_vec();
        kept_keys.push(INIT_OP_KEY.to_string());
        source.meta_graph.signature_def.retain(|key, _| kept_keys.contains(key));
        let signature_roots = source.signature_roots(signatures)?;
        let init_op = source.init_op()?;
        let saver = source.meta_graph.saver_def.clone().filter(|s| !s.filename_tensor_name.is_empty());
        let saver =
            saver.ok_or_else(|| source.problem("it has no SaverDef, so TF Serving could not restore its variables"))?;
        let filename_node = graph::node_of(&saver.filename_tensor_name).to_string();

        let used_handles: HashSet<String> = graph::reachable(source.nodes(), signature_roots.clone())
            .into_iter()
            .filter(|name| source.nodes().iter().any(|n| &n.name == name && n.op == "VarHandleOp"))
            .collect();
        if let Some(init_op) = &init_op {
            graph::trim_init_op(source.nodes_mut(), init_op, &used_handles);
        }
        let mut roots = signature_roots;
        roots.extend(init_op);
        roots.push(filename_node.clone());
        let reached = graph::reachable(source.nodes(), roots.clone());

        let (library, objects) = source.prune_functions(&reached);
        let mut checkpoint = CheckpointWriter::from_existing(dir)?;
        let checkpoint_graph = checkpoint_object_graph(&checkpoint, &source)?;
        let counterparts = checkpoint_counterparts(&source.objects, &checkpoint_graph);
        let variables = source.kept_variables(&objects, &reached, &counterparts, &checkpoint_graph)?;

        let kept_checkpoint: HashSet<usize> = objects.kept().filter_map(|id| counterparts.get(&id).copied()).collect();
        let (checkpoint_graph, keys) = prune_checkpoint_graph(&checkpoint_graph, &kept_checkpoint);
        let keys: HashSet<String> = keys.into_iter().chain([OBJECT_GRAPH_KEY.to_string()]).collect();
        checkpoint.retain(|key| keys.contains(key));
        let object_graph_bytes = checkpoint_graph.encode_to_vec();
        checkpoint.replace_string_scalar(OBJECT_GRAPH_KEY, &object_graph_bytes)?;

        roots.extend(variables.iter().map(|(_, v)| v.handle.clone()));
        let reached = graph::reachable(source.nodes(), roots);
        if reached.iter().any(|name| name.starts_with(SAVER_SCOPE)) {
            return Err(source.problem(&format!("its kept graph already has nodes under `{SAVER_SCOPE}/`")));
        }
        let saved: Vec<SavedVariable> = variables.iter().map(|(_, v)| v.clone()).collect();
        let saver_nodes = graph::saver_nodes(SAVER_SCOPE, &filename_node, &saved, &object_graph_bytes, false);
        let graph_def = source.meta_graph.graph_def.as_mut().expect("checked by Source::read");
        graph_def.node.retain(|n| reached.contains(&n.name));
        graph_def.node.extend(saver_nodes.nodes);
        graph_def.library = Some(library);
        source.meta_graph.saver_def = Some(pb::SaverDef {
            save_tensor_name: saver_nodes.save_tensor,
            restore_op_name: saver_nodes.restore_op,
            ..saver
        });

        let (asset_index, assets) = source.keep_assets(&reached);
        let dropped_variables = source.dropped_variables(&objects);
        source.meta_graph.object_graph_def = Some(objects.apply(&source.objects, &asset_index));
        let saved_model =
            pb::EditableSavedModel { saved_model_schema_version: 1, meta_graphs: vec![source.meta_graph] };
        Ok(ServingPlan { saved_model, checkpoint, variables, dropped_variables, assets })
    }

    /// The kept variables' names, in checkpoint-key order.
    pub fn variable_names(&self) -> Vec<String> {
        self.variables.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Writes `saved_model.pb`, `variables/` and the kept assets into the new directory `out`.
    pub fn write(&self, source: &Path, out: &Path) -> Result<()> {
        let pb_path = out.join("saved_model.pb");
        std::fs::write(&pb_path, self.saved_model.encode_to_vec()).map_err(io_error(&pb_path))?;
        self.checkpoint.write(out.join("variables"))?;
        for asset in &self.assets {
            let to = out.join("assets").join(asset);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            copy_tree(&source.join("assets").join(asset), &to)?;
        }
        Ok(())
    }
}

impl<'a> Source<'a> {
    /// Decodes the whole `saved_model.pb` of `dir` losslessly and picks the MetaGraph of `tags`.
    fn read(dir: &'a Path, tags: &[String]) -> Result<Source<'a>> {
        let pb_path = dir.join("saved_model.pb");
        let bytes = std::fs::read(&pb_path).map_err(io_error(&pb_path))?;
        let model = pb::EditableSavedModel::decode(bytes.as_slice())
            .map_err(|source| Error::CorruptSavedModel { path: pb_path.clone(), source })?;
        let meta_graph =
            model.meta_graphs.into_iter().find(|m| sorted_tags(m) == tags).ok_or_else(|| Error::ServingExport {
                dir: dir.to_path_buf(),
                problem: "its MetaGraph could not be decoded again".to_string(),
            })?;
        let problem =
            |what: &str| Error::ServingExport { dir: dir.to_path_buf(), problem: format!("it has no {what}") };
        if meta_graph.graph_def.is_none() {
            return Err(problem("GraphDef"));
        }
        let objects = meta_graph.object_graph_def.clone().ok_or_else(|| problem("object graph (a TF1 SavedModel?)"))?;
        Ok(Source { dir, meta_graph, objects })
    }

    fn problem(&self, problem: &str) -> Error {
        Error::ServingExport { dir: self.dir.to_path_buf(), problem: problem.to_string() }
    }

    fn nodes(&self) -> &[pb::NodeDef] {
        self.meta_graph.graph_def.as_ref().map(|g| g.node.as_slice()).unwrap_or_default()
    }

    fn nodes_mut(&mut self) -> &mut [pb::NodeDef] {
        self.meta_graph.graph_def.as_mut().map(|g| g.node.as_mut_slice()).unwrap_or_default()
    }

    /// The graph nodes of every tensor the kept signatures feed or fetch.
    fn signature_roots(&self, keys: &[String]) -> Result<Vec<String>> {
        let mut roots = Vec::new();
        for key in keys {
            let def = self.signature_def(key)?;
            for info in def.inputs.values().chain(def.outputs.values()) {
                tensor_names(info, &mut roots);
            }
        }
        Ok(roots.iter().map(|name| graph::node_of(name).to_string()).collect())
    }

    fn signature_def(&self, key: &str) -> Result<proto::SignatureDef> {
        let bytes = self
            .meta_graph
            .signature_def
            .get(key)
            .ok_or_else(|| self.problem(&format!("signature `{key}` vanished")))?;
        proto::SignatureDef::decode(bytes.as_slice())
            .map_err(|_| self.problem(&format!("signature `{key}` cannot be decoded")))
    }

    /// The node the init-op signature runs, if the model has one.
    fn init_op(&self) -> Result<Option<String>> {
        if !self.meta_graph.signature_def.contains_key(INIT_OP_KEY) {
            return Ok(None);
        }
        let mut names = Vec::new();
        for info in self.signature_def(INIT_OP_KEY)?.outputs.values() {
            tensor_names(info, &mut names);
        }
        Ok(names.first().map(|name| graph::node_of(name).to_string()))
    }

    /// The function library cut to what the `reached` nodes call and the kept objects name,
    /// and the object plan that goes with it: each decides what the other keeps, so both are
    /// worked out again until neither grows.
    fn prune_functions(&self, reached: &HashSet<String>) -> (pb::FunctionDefLibrary, ObjectPlan) {
        let nodes: Vec<&pb::NodeDef> = self.nodes().iter().filter(|n| reached.contains(&n.name)).collect();
        let library = self.meta_graph.graph_def.as_ref().and_then(|g| g.library.clone()).unwrap_or_default();
        let mut extra_roots: Vec<String> = Vec::new();
        loop {
            let (pruned, kept) = graph::prune_library(&library, &nodes, &extra_roots);
            let objects = ObjectPlan::new(&self.objects, &kept);
            let named = self.functions_named_by(&objects);
            if named.iter().all(|name| kept.contains(name)) {
                return (pruned, objects);
            }
            extra_roots = named;
        }
    }

    /// The concrete functions the kept function objects name.
    fn functions_named_by(&self, objects: &ObjectPlan) -> Vec<String> {
        let mut names = Vec::new();
        for id in objects.kept() {
            match &self.objects.nodes[id].kind {
                Some(Kind::Function(function)) => names.extend(function.concrete_functions.iter().cloned()),
                Some(Kind::BareConcreteFunction(bare)) => names.push(bare.concrete_function_name.clone()),
                _ => {}
            }
        }
        names.retain(|name| self.objects.concrete_functions.contains_key(name));
        names
    }

    /// Every kept variable object with its name, graph handle, dtype and checkpoint key,
    /// ordered by checkpoint key.
    fn kept_variables(
        &self,
        objects: &ObjectPlan,
        reached: &HashSet<String>,
        counterparts: &HashMap<usize, usize>,
        checkpoint_graph: &pb::TrackableObjectGraph,
    ) -> Result<Vec<(String, SavedVariable)>> {
        let handles = self.captured_handles(reached);
        let mut variables = Vec::new();
        for id in objects.kept() {
            let Some(Kind::Variable(bytes)) = &self.objects.nodes[id].kind else {
                continue;
            };
            let declared = proto::SavedVariable::decode(bytes.as_slice()).unwrap_or_default();
            let name = if declared.name.is_empty() { format!("object {id}") } else { declared.name.clone() };
            let handle = handles.get(&id).cloned().or_else(|| self.handle_named(&declared.name));
            let handle = handle
                .ok_or_else(|| self.problem(&format!("variable `{name}` has no resource handle in the graph")))?;
            let checkpoint_key = counterparts
                .get(&id)
                .and_then(|&c| checkpoint_graph.nodes[c].attributes.iter().find(|a| a.name == VARIABLE_VALUE))
                .map(|a| a.checkpoint_key.clone())
                .ok_or_else(|| {
                    self.problem(&format!("variable `{name}` has no value in the checkpoint's object graph"))
                })?;
            let node = self.nodes().iter().find(|n| n.name == handle);
            let dtype = node.and_then(graph::dtype_attr).unwrap_or(declared.dtype);
            variables.push((name, SavedVariable { handle, dtype, checkpoint_key }));
        }
        variables.sort_by(|a, b| a.1.checkpoint_key.cmp(&b.1.checkpoint_key));
        Ok(variables)
    }

    /// Object id to graph handle, from the calls of concrete functions: a call's last inputs
    /// are the function's captures, in the order of its `bound_inputs`.
    fn captured_handles(&self, reached: &HashSet<String>) -> HashMap<usize, String> {
        let mut handles = HashMap::new();
        for node in self.nodes().iter().filter(|n| reached.contains(&n.name)) {
            let called = node.attr.get("f").map(|f| graph::functions_in_attr(f)).unwrap_or_default();
            let Some(function) = called.first().and_then(|name| self.objects.concrete_functions.get(name)) else {
                continue;
            };
            let data_inputs: Vec<&String> = node.input.iter().filter(|i| !i.starts_with('^')).collect();
            let Some(start) = data_inputs.len().checked_sub(function.bound_inputs.len()) else {
                continue;
            };
            for (&object, input) in function.bound_inputs.iter().zip(&data_inputs[start..]) {
                if let Ok(object) = usize::try_from(object) {
                    handles.insert(object, graph::node_of(input).to_string());
                }
            }
        }
        handles
    }

    /// The `VarHandleOp` whose shared name is `name`, for a variable no call captures directly.
    fn handle_named(&self, name: &str) -> Option<String> {
        let handle = self
            .nodes()
            .iter()
            .find(|n| n.op == "VarHandleOp" && !name.is_empty() && graph::shared_name_attr(n).as_deref() == Some(name));
        handle.map(|n| n.name.clone())
    }

    /// Keeps the `asset_file_def` entries whose tensor is still in the graph; returns old to new
    /// indices and the kept file names.
    fn keep_assets(&mut self, reached: &HashSet<String>) -> (HashMap<i32, i32>, Vec<String>) {
        let mut index = HashMap::new();
        let mut kept = Vec::new();
        let mut names = Vec::new();
        for (old, bytes) in self.meta_graph.asset_file_def.iter().enumerate() {
            let asset = proto::AssetFileDef::decode(bytes.as_slice()).unwrap_or_default();
            let mut tensors = Vec::new();
            if let Some(info) = &asset.tensor_info {
                tensor_names(info, &mut tensors);
            }
            if tensors.iter().any(|t| reached.contains(graph::node_of(t))) {
                index.insert(old as i32, kept.len() as i32);
                kept.push(bytes.clone());
                names.push(asset.filename);
            }
        }
        self.meta_graph.asset_file_def = kept;
        (index, names)
    }

    /// Names of the variable objects the plan leaves out.
    fn dropped_variables(&self, objects: &ObjectPlan) -> Vec<String> {
        let kept: HashSet<usize> = objects.kept().collect();
        let dropped = self.objects.nodes.iter().enumerate().filter(|(id, _)| !kept.contains(id));
        dropped
            .filter_map(|(id, node)| match &node.kind {
                Some(Kind::Variable(bytes)) => {
                    let name = proto::SavedVariable::decode(bytes.as_slice()).unwrap_or_default().name;
                    Some(if name.is_empty() { format!("object {id}") } else { name })
                }
                _ => None,
            })
            .collect()
    }
}

/// The checkpoint's own object graph, which Python's loader matches objects against.
fn checkpoint_object_graph(checkpoint: &CheckpointWriter, source: &Source) -> Result<pb::TrackableObjectGraph> {
    let bytes = checkpoint.string_scalar(OBJECT_GRAPH_KEY).ok_or_else(|| {
        source.problem(&format!("its checkpoint has no `{OBJECT_GRAPH_KEY}` entry (a TF1 checkpoint?)"))
    })?;
    pb::TrackableObjectGraph::decode(bytes.as_slice())
        .map_err(|e| source.problem(&format!("its checkpoint's object graph cannot be decoded ({e})")))
}
