//! Loading a SavedModel into a TensorFlow session through the C API (restore and init op run),
//! with the session settings users tune (thread pools).

use std::path::{Path, PathBuf};

use prost::Message;
use tensorflow::{DataType, Graph, Operation, Output, SavedModelBundle, SessionOptions, SessionRunArgs, Tensor};

use crate::error::{Error, Result};
use crate::model::graph_saver::SaverWrites;
use crate::model::handles::{handles_to_fill, HandleToFill};
use crate::model::meta_graph::{MetaGraph, SaverSpec};
use crate::model::saved_model::SavedModel;
use crate::proto;

/// Session settings. The defaults let TensorFlow size its thread pools to the machine; every
/// session also turns off the Grappler passes that do nothing on CPU ([`lean_graph_options`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// Threads for one op's inner parallelism; 0 lets TensorFlow choose.
    pub intra_op_threads: u32,
    /// Threads for running independent ops at once; 0 lets TensorFlow choose.
    pub inter_op_threads: u32,
}

impl SessionConfig {
    /// These settings as a `tensorflow.ConfigProto` message (a multi-worker run adds its own).
    pub(crate) fn config_message(self) -> proto::ConfigProto {
        let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        proto::ConfigProto {
            intra_op_parallelism_threads: to_i32(self.intra_op_threads),
            inter_op_parallelism_threads: to_i32(self.inter_op_threads),
            graph_options: Some(lean_graph_options()),
            ..Default::default()
        }
    }

    pub(crate) fn to_options(self) -> Result<SessionOptions> {
        let mut options = SessionOptions::new();
        let config = config_proto(self.intra_op_threads, self.inter_op_threads);
        options
            .set_config(&config)
            .map_err(|status| Error::from_tensorflow("setting session options".to_string(), &status))?;
        Ok(options)
    }
}

/// Grappler passes that cannot speed up a CPU graph yet run on every new graph a session executes
/// (each signature's first call, the restore, each saver run): the memory optimizer (GPU swapping
/// and recomputation hints tfload's exports do not carry), and the TFG pipeline with its
/// conditional code motion (moving ops into `tf.cond` branches). Turned off, a frozen-base
/// tutorial run starts about 0.3 s sooner (BENCHMARKS.md, "The tutorial's workflow"); the
/// executed kernels are the same. And one pass of the meta-optimizer instead of two: the second
/// pass finds little after the first (13 of 344 executed nodes of the CNN's all-trainable step,
/// 2 of 1341 of MobileNetV2's frozen-base step), yet on ResNet50's restore, features and saver
/// graphs it cost about 0.6 s of CPU per run (measured side by side, 3 rounds).
fn lean_graph_options() -> proto::GraphOptions {
    const OFF: i32 = 2;
    const NO_MEM_OPT: i32 = 1;
    const ONE_PASS: i32 = 1;
    proto::GraphOptions {
        rewrite_options: Some(proto::RewriterConfig {
            memory_optimization: NO_MEM_OPT,
            meta_optimizer_iterations: ONE_PASS,
            experimental_conditional_code_motion: OFF,
            disable_tfg_optimizer: true,
        }),
    }
}

/// A serialized `tensorflow.ConfigProto`: the thread-pool fields set where non-zero, and
/// [`lean_graph_options`].
fn config_proto(intra: u32, inter: u32) -> Vec<u8> {
    SessionConfig { intra_op_threads: intra, inter_op_threads: inter }.config_message().encode_to_vec()
}

/// Which signatures a loaded session can run. TensorFlow imports the whole graph of a SavedModel,
/// and the first runs optimize against its whole function library; a session loaded for some
/// signatures gets the graph cut down to what they, the saver and the init op reach (see
/// `model::graph_cut`), which loads a large trainable export several times faster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LoadScope {
    /// Every signature (the whole graph).
    #[default]
    All,
    /// These signatures only: running another one fails as if the model did not have it.
    Signatures(Vec<String>),
}

impl LoadScope {
    /// A scope of the signatures `keys`.
    pub fn signatures<S: AsRef<str>>(keys: &[S]) -> LoadScope {
        LoadScope::Signatures(keys.iter().map(|key| key.as_ref().to_string()).collect())
    }

    /// Whether a session loaded for this scope holds signature `key` (if the model has it).
    pub fn includes(&self, key: &str) -> bool {
        match self {
            LoadScope::All => true,
            LoadScope::Signatures(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// A SavedModel loaded into a session: graph, session and the MetaGraph it came from.
pub struct LoadedModel {
    dir: PathBuf,
    meta_graph: MetaGraph,
    graph: Graph,
    bundle: SavedModelBundle,
    scope: LoadScope,
    /// The graph-level saver the corrected copy has instead of the model's traced one, and what
    /// it writes.
    graph_saver: Option<(SaverSpec, SaverWrites)>,
    /// The corrected copy TensorFlow loaded instead of `dir`, kept while the session lives.
    _corrected: Option<tempfile::TempDir>,
}

impl LoadedModel {
    /// Loads the MetaGraph with `tags` from `dir`, restoring its variables.
    pub fn load<S: AsRef<str>>(dir: impl AsRef<Path>, tags: &[S], config: SessionConfig) -> Result<LoadedModel> {
        LoadedModel::load_scoped(dir, tags, config, &LoadScope::All)
    }

    /// Like [`LoadedModel::load`], for the signatures of `scope` only.
    pub fn load_scoped<S: AsRef<str>>(
        dir: impl AsRef<Path>,
        tags: &[S],
        config: SessionConfig,
        scope: &LoadScope,
    ) -> Result<LoadedModel> {
        let dir = dir.as_ref().to_path_buf();
        let meta_graph = SavedModel::open(&dir)?.meta_graph(tags)?;
        LoadedModel::load_meta_graph_with(dir, meta_graph, &config.to_options()?, scope)
    }

    /// Loads `meta_graph`, already read from `dir`'s `saved_model.pb`, restoring its variables
    /// (so that a caller that decoded the file does not decode it again).
    pub fn load_meta_graph(dir: PathBuf, meta_graph: MetaGraph, config: SessionConfig) -> Result<LoadedModel> {
        LoadedModel::load_meta_graph_with(dir, meta_graph, &config.to_options()?, &LoadScope::All)
    }

    /// Like [`LoadedModel::load_meta_graph`] with ready session options (a multi-worker run's,
    /// whose target is its TensorFlow server), for the signatures of `scope`.
    pub fn load_meta_graph_with(
        dir: PathBuf,
        meta_graph: MetaGraph,
        options: &SessionOptions,
        scope: &LoadScope,
    ) -> Result<LoadedModel> {
        let index = crate::formats::checkpoint_index::CheckpointIndex::path_in(&dir);
        if !index.is_file() {
            return Err(Error::MissingVariables { dir });
        }
        // TensorFlow's own table reader trusts the index's block sizes (a corrupt footer made it
        // allocate 2 GiB and abort): the strict reader checks the index before TensorFlow sees it.
        let checkpoint = crate::formats::checkpoint_index::CheckpointIndex::read(&index)?;
        let has_object_graph = checkpoint.get(crate::model::graph_saver::OBJECT_GRAPH_KEY).is_some();
        crate::session::libtensorflow::check_version()?;
        let tag_list: Vec<&str> = meta_graph.tags().iter().map(String::as_str).collect();
        let (corrected, graph_saver) = match corrected_copy(&dir, meta_graph.tags(), scope, has_object_graph)? {
            Some((copy, saver)) => (Some(copy), saver),
            None => (None, None),
        };
        let load_dir = corrected.as_ref().map_or(dir.as_path(), |copy| copy.path());
        let mut graph = Graph::new();
        let bundle = SavedModelBundle::load(options, &tag_list, &mut graph, load_dir).map_err(|status| {
            Error::Load { dir: dir.clone(), tags: tag_list.join(","), message: status.to_string() }
        })?;
        let mut fills = handles_to_fill(&meta_graph)?;
        if scope != &LoadScope::All {
            // A cut graph keeps only the handles its signatures read.
            fills.retain(|fill| graph.operation_by_name(&fill.handle).ok().flatten().is_some());
        }
        if !fills.is_empty() {
            log::info!(
                "{} variable handles that the functions read are not filled by the restore op (two handles per variable, as Keras 3's tf.saved_model.save writes); restoring them from the checkpoint",
                fills.len()
            );
            fill_handles(&mut graph, &bundle.session, &dir, &fills)?;
        }
        Ok(LoadedModel { dir, meta_graph, graph, bundle, scope: scope.clone(), graph_saver, _corrected: corrected })
    }

    /// The signatures the session was loaded for.
    pub fn scope(&self) -> &LoadScope {
        &self.scope
    }

    /// `Error::SignatureNotLoaded` when the session was loaded for other signatures than `key`.
    pub(crate) fn check_loaded(&self, key: &str) -> Result<()> {
        match &self.scope {
            LoadScope::Signatures(loaded) if !self.scope.includes(key) => Err(Error::SignatureNotLoaded {
                dir: self.dir.clone(),
                key: key.to_string(),
                loaded: loaded.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the model has signature `key` and its session was loaded for it.
    pub fn can_run(&self, key: &str) -> bool {
        self.scope.includes(key) && self.meta_graph.signature(key).is_ok()
    }

    /// The SavedModel directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saver that writes this session's variables: the graph-level one that a load for some
    /// signatures puts in place of the model's traced `__traced_save` (same keys, same handles,
    /// same object graph; see `model::graph_cut`), else the model's own.
    pub fn saver(&self) -> Option<SaverSpec> {
        self.graph_saver.as_ref().map(|(spec, _)| spec.clone()).or_else(|| self.meta_graph.saver())
    }

    /// What the graph-level saver writes, in its order, when the session has one (`None` with the
    /// model's own traced saver, whose values the graph does not expose).
    pub(crate) fn saver_writes(&self) -> Option<&SaverWrites> {
        self.graph_saver.as_ref().map(|(_, writes)| writes)
    }

    /// Whether the session saves through graph-level saver nodes whose values it can fetch.
    pub fn has_graph_level_saver(&self) -> bool {
        self.graph_saver.is_some()
    }

    /// The checkpoint keys in the order the session's `SaveV2` writes them, when it has a
    /// graph-level saver (empty otherwise).
    pub fn saver_write_order(&self) -> Vec<&str> {
        let Some(writes) = self.saver_writes() else {
            return Vec::new();
        };
        writes.reads.iter().map(|read| read.key.as_str()).chain([crate::model::graph_saver::OBJECT_GRAPH_KEY]).collect()
    }

    /// The MetaGraph (signatures, variables, saver) of the loaded tag set.
    pub fn meta_graph(&self) -> &MetaGraph {
        &self.meta_graph
    }

    /// The TensorFlow graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The TensorFlow graph, to add nodes to; the session runs them from its next run on.
    pub(crate) fn graph_mut(&mut self) -> &mut Graph {
        &mut self.graph
    }

    /// The TensorFlow session.
    pub fn session(&self) -> &tensorflow::Session {
        &self.bundle.session
    }
}

/// A corrected copy of a SavedModel directory and, if it has one, its graph-level saver.
type CorrectedCopy = (tempfile::TempDir, Option<(SaverSpec, SaverWrites)>);

/// A temporary SavedModel directory with `variables/` and `assets/` linked to those of `dir` and
/// a `saved_model.pb` that TensorFlow loads instead of `dir`'s: cut to the signatures of `scope`
/// (see [`LoadScope`]) with a graph-level saver where it can have one, and listing each asset
/// once where `dir`'s lists one twice (TensorFlow's C++ loader refuses that). With the copy, the
/// names of its graph-level saver, if it has one. `None` when `dir` loads as it is. The input is
/// never modified.
fn corrected_copy(
    dir: &Path,
    tags: &[String],
    scope: &LoadScope,
    checkpoint_has_object_graph: bool,
) -> Result<Option<CorrectedCopy>> {
    let pb = dir.join("saved_model.pb");
    let bytes = std::fs::read(&pb).map_err(|source| Error::Io { path: pb.clone(), source })?;
    // Bytes that do not parse are left to TensorFlow, whose message is the one to show.
    let (bytes, notes) = match crate::model::duplicate_assets::without_duplicate_assets(&bytes) {
        Ok(Some((fixed, notes))) => (fixed, notes),
        _ => (bytes, Vec::new()),
    };
    let cut = match scope {
        LoadScope::All => None,
        LoadScope::Signatures(keys) => {
            let cut = crate::model::graph_cut::cut_to_signatures(&bytes, tags, keys, checkpoint_has_object_graph);
            if let Some(cut) = &cut {
                let ((nodes, all_nodes), (functions, all_functions)) = (cut.nodes, cut.functions);
                log::debug!(
                    "{}: loading {nodes} of {all_nodes} graph nodes and {functions} of {all_functions} functions, what {} need",
                    dir.display(),
                    keys.join(", ")
                );
                match &cut.saver {
                    Ok((_, writes)) => log::debug!(
                        "{}: restoring and saving its {} variables through graph-level RestoreV2/SaveV2 nodes instead of its traced saver functions",
                        dir.display(),
                        writes.reads.len()
                    ),
                    Err(reason) => log::info!("{}: keeping the model's own saver: {reason}", dir.display()),
                }
            }
            cut
        }
    };
    let graph_saver = cut.as_ref().and_then(|cut| cut.saver.as_ref().ok()).cloned();
    if cut.is_none() && notes.is_empty() {
        return Ok(None);
    }
    let copy = tempfile::Builder::new()
        .prefix("tfload-corrected-")
        .tempdir()
        .map_err(|source| Error::Io { path: std::env::temp_dir(), source })?;
    let io = |path: PathBuf| move |source| Error::Io { path, source };
    let written = cut.map_or(bytes, |cut| cut.bytes);
    std::fs::write(copy.path().join("saved_model.pb"), written).map_err(io(copy.path().join("saved_model.pb")))?;
    for name in ["variables", "assets", "assets.extra"] {
        let original = dir.join(name);
        if original.exists() {
            let original = original.canonicalize().map_err(io(original.clone()))?;
            std::os::unix::fs::symlink(&original, copy.path().join(name)).map_err(io(copy.path().join(name)))?;
        }
    }
    for note in notes {
        log::info!(
            "{}: loading a corrected copy of saved_model.pb, which TensorFlow's C++ loader refuses as it is: {note}",
            dir.display()
        );
    }
    Ok(Some((copy, graph_saver)))
}

/// Restores the checkpoint values of `fills` into their handles: one `RestoreV2` of all their keys
/// and an `AssignVariableOp` per handle, added to the graph under `tfload_fill/` and run once. The
/// functions then read the restored values, and training updates those same handles.
fn fill_handles(graph: &mut Graph, session: &tensorflow::Session, dir: &Path, fills: &[HandleToFill]) -> Result<()> {
    let prefix = crate::formats::checkpoint_index::CheckpointIndex::path_in(dir).with_extension("");
    let keys: Vec<String> = fills.iter().map(|fill| fill.checkpoint_key.clone()).collect();
    let slices = vec![String::new(); fills.len()];
    let prefix =
        const_node(graph, "tfload_fill/prefix", &[prefix.display().to_string()], &[]).map_err(tf_error("prefix"))?;
    let names = const_node(graph, "tfload_fill/names", &keys, &[keys.len() as u64]).map_err(tf_error("names"))?;
    let slices = const_node(graph, "tfload_fill/slices", &slices, &[keys.len() as u64]).map_err(tf_error("slices"))?;
    // The crate names only the types it knows; the C API takes any number through this variant.
    let dtypes: Vec<DataType> = fills.iter().map(|fill| DataType::UnrecognizedEnumValue(fill.dtype as u32)).collect();
    let restore = {
        let mut op = graph.new_operation("RestoreV2", "tfload_fill/restore").map_err(tf_error("RestoreV2"))?;
        for input in [&prefix, &names, &slices] {
            op.add_input(Output { operation: input.clone(), index: 0 });
        }
        op.set_attr_type_list("dtypes", &dtypes).map_err(tf_error("RestoreV2"))?;
        op.finish().map_err(tf_error("RestoreV2"))?
    };
    let mut assigns = Vec::with_capacity(fills.len());
    for (i, fill) in fills.iter().enumerate() {
        let handle = graph.operation_by_name_required(&fill.handle).map_err(tf_error(&fill.handle))?;
        let mut op = graph
            .new_operation("AssignVariableOp", &format!("tfload_fill/assign_{i}"))
            .map_err(tf_error(&fill.handle))?;
        op.add_input(Output { operation: handle, index: 0 });
        op.add_input(Output { operation: restore.clone(), index: i as i32 });
        op.set_attr_type("dtype", dtypes[i]).map_err(tf_error(&fill.handle))?;
        assigns.push(op.finish().map_err(tf_error(&fill.handle))?);
    }
    let mut run = SessionRunArgs::new();
    for assign in &assigns {
        run.add_target(assign);
    }
    session.run(&mut run).map_err(tf_error("running the restore"))
}

/// Turns a failed graph edit or run of [`fill_handles`] into an error naming `what` failed.
fn tf_error<E: Into<tensorflow::Status>>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |status| Error::from_tensorflow(format!("restoring the handles the functions read ({what})"), &status.into())
}

/// A `Const` node holding `values` with `dims`.
pub(crate) fn const_node<T: tensorflow::TensorType>(
    graph: &mut Graph,
    name: &str,
    values: &[T],
    dims: &[u64],
) -> std::result::Result<Operation, tensorflow::Status> {
    let tensor = Tensor::<T>::new(dims).with_values(values)?;
    let mut op = graph.new_operation("Const", name)?;
    op.set_attr_type("dtype", T::data_type())?;
    op.set_attr_tensor("value", tensor)?;
    op.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_proto_sets_the_given_thread_pools_and_the_lean_grappler_passes() {
        let decoded = |intra, inter| proto::ConfigProto::decode(config_proto(intra, inter).as_slice()).unwrap();
        let default = decoded(0, 0);
        assert_eq!((default.intra_op_parallelism_threads, default.inter_op_parallelism_threads), (0, 0));
        let given = decoded(300, 3);
        assert_eq!((given.intra_op_parallelism_threads, given.inter_op_parallelism_threads), (300, 3));
        let rewrite = given.graph_options.unwrap().rewrite_options.unwrap();
        assert_eq!(rewrite.memory_optimization, 1, "NO_MEM_OPT");
        assert_eq!(rewrite.meta_optimizer_iterations, 1, "ONE");
        assert_eq!(rewrite.experimental_conditional_code_motion, 2, "OFF");
        assert!(rewrite.disable_tfg_optimizer);
    }
}
