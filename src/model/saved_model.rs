//! Opening a SavedModel directory: reading and decoding `saved_model.pb`, listing its tag sets and
//! picking the MetaGraph of one of them. No session, no variable restore: this is what keeps
//! `tfload signatures` fast on models with large variables.

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;

use crate::error::{Error, Result};
use crate::model::meta_graph::MetaGraph;
use crate::proto;

/// Count of `saved_model.pb` decodes in this process.
static DECODED: AtomicUsize = AtomicUsize::new(0);

/// A SavedModel directory whose `saved_model.pb` has been read and decoded.
#[derive(Debug, Clone)]
pub struct SavedModel {
    dir: PathBuf,
    proto: proto::SavedModel,
}

impl SavedModel {
    /// Reads `DIR/saved_model.pb`. Fails with a message saying what the path holds instead when
    /// it is not a SavedModel directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<SavedModel> {
        let dir = dir.as_ref().to_path_buf();
        check_is_saved_model_dir(&dir)?;
        let pb_path = dir.join("saved_model.pb");
        let bytes = std::fs::read(&pb_path).map_err(|source| Error::Io { path: pb_path.clone(), source })?;
        SavedModel::decode(dir, &bytes)
    }

    /// Decodes `bytes`, the contents of `dir`'s `saved_model.pb` that the caller has read (to
    /// keep them, as training does to check copies of the model byte for byte).
    pub fn decode(dir: PathBuf, bytes: &[u8]) -> Result<SavedModel> {
        let pb_path = dir.join("saved_model.pb");
        let count = DECODED.fetch_add(1, Ordering::Relaxed) + 1;
        log::debug!(
            "decoding {} ({} bytes; saved_model.pb decodes in this process: {count})",
            pb_path.display(),
            bytes.len()
        );
        let proto = proto::SavedModel::decode(bytes)
            .map_err(|source| Error::CorruptSavedModel { path: pb_path.clone(), source })?;
        if proto.meta_graphs.is_empty() {
            return Err(Error::MalformedSavedModel { path: pb_path, problem: "it holds no MetaGraph".to_string() });
        }
        Ok(SavedModel { dir, proto })
    }

    /// How many times this process has decoded a `saved_model.pb` (to prove that a command
    /// decodes its model once; also in the debug log).
    pub fn decode_count() -> usize {
        DECODED.load(Ordering::Relaxed)
    }

    /// The directory the model was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tag sets of the model's MetaGraphs, in file order, each sorted (`[["serve"]]` for most
    /// TF2 models).
    pub fn tag_sets(&self) -> Vec<Vec<String>> {
        self.proto.meta_graphs.iter().map(tags_of).collect()
    }

    /// The MetaGraph whose tag set equals `tags` (order does not matter).
    pub fn meta_graph<S: AsRef<str>>(&self, tags: &[S]) -> Result<MetaGraph> {
        let mut wanted: Vec<String> = tags.iter().map(|t| t.as_ref().to_string()).collect();
        wanted.sort();
        wanted.dedup();
        let found = self.proto.meta_graphs.iter().find(|meta_graph| tags_of(meta_graph) == wanted);
        match found {
            Some(meta_graph) => Ok(MetaGraph::new(&self.dir, wanted, meta_graph.clone())),
            None => Err(Error::TagSetNotFound {
                dir: self.dir.clone(),
                wanted: wanted.join(","),
                available: describe_tag_sets(&self.tag_sets()),
            }),
        }
    }
}

fn tags_of(meta_graph: &proto::MetaGraphDef) -> Vec<String> {
    let mut tags = meta_graph.meta_info_def.as_ref().map(|info| info.tags.clone()).unwrap_or_default();
    tags.sort();
    tags
}

/// `[serve], [serve,gpu]`, as the tag-set lists in error messages and listings read.
pub fn describe_tag_sets(tag_sets: &[Vec<String>]) -> String {
    tag_sets.iter().map(|tags| format!("[{}]", tags.join(","))).collect::<Vec<_>>().join(", ")
}

fn check_is_saved_model_dir(dir: &Path) -> Result<()> {
    let metadata = std::fs::metadata(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: dir.to_path_buf() },
        _ => Error::Io { path: dir.to_path_buf(), source },
    })?;
    if !metadata.is_dir() {
        return Err(Error::NotADirectory { path: dir.to_path_buf(), hint: hint_for_file(dir) });
    }
    if !dir.join("saved_model.pb").is_file() {
        return Err(Error::MissingSavedModelPb { dir: dir.to_path_buf(), hint: hint_for_directory(dir) });
    }
    Ok(())
}

fn hint_for_file(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let export = "Turn it into a trainable SavedModel with `.venv/bin/tfload-export`.";
    if name.ends_with(".keras") {
        format!("It looks like a Keras 3 model file. {export}")
    } else if name.ends_with(".h5") || name.ends_with(".hdf5") {
        format!("It looks like a Keras HDF5 file. {export}")
    } else if name == "saved_model.pb" {
        "Give the directory that holds it instead.".to_string()
    } else if name.ends_with(".pb") {
        "It may be a frozen TF1 GraphDef, which tfload does not read; give a SavedModel directory.".to_string()
    } else {
        "Give the path of a SavedModel directory (the folder that holds saved_model.pb and variables/).".to_string()
    }
}

fn hint_for_directory(dir: &Path) -> String {
    if dir.join("saved_model.pbtxt").is_file() {
        return "It has saved_model.pbtxt, the text format, which tfload does not read; save the model again with the binary format (tf.saved_model.save does).".to_string();
    }
    let nested: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("saved_model.pb").is_file())
        .map(|entry| entry.path().display().to_string())
        .collect();
    if !nested.is_empty() {
        let mut nested = nested;
        nested.sort();
        return format!(
            "SavedModels were found one level down (TF Serving keeps versions that way): {}.",
            nested.join(", ")
        );
    }
    if dir.join("variables").is_dir() {
        return "It has variables/ but the graph file is missing: copy saved_model.pb from where the model was exported.".to_string();
    }
    "Give the folder that tf.saved_model.save or model.export wrote.".to_string()
}
