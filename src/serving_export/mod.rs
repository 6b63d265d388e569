//! The serving form of a trainable SavedModel, in TF Serving's layout (`BASE/N/`): only
//! `serving_default` and the signatures asked for, only the variables those read (no optimizer
//! slots, step counters or tfload bookkeeping), the graph, function library and object graph cut
//! down to match, a new saver that restores exactly the kept variables, and optionally a
//! warm-up file. No TensorFlow session is involved: everything is rewritten from the protobufs
//! and the checkpoint, so kept variables keep their bytes exactly.
//!
//! ```no_run
//! # fn main() -> Result<(), tfload::Error> {
//! use tfload::serving_export::{export_serving, ServingExportOptions};
//!
//! let options = ServingExportOptions { base: "/srv/models/digits".into(), ..Default::default() };
//! let export = export_serving("saved_models/mlp_digits", &options)?;
//! println!("version {} at {}", export.version, export.path.display());
//! # Ok(())
//! # }
//! ```

mod graph;
mod objects;
mod plan;
pub mod warmup;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::output_dir::{build_then_place, check_not_input, io_error};
use crate::train::contract::{EVAL_STEP, TRAIN_STEP};
use crate::{Error, MetaGraph, Result, SavedModel};

pub use warmup::{WarmupInput, WARMUP_FILE};

/// The signature every serving export keeps.
pub const SERVING_DEFAULT: &str = "serving_default";
/// The tag set a serving export reads and writes.
pub const SERVE_TAG: &str = "serve";

/// What to export and where.
#[derive(Debug, Clone, Default)]
pub struct ServingExportOptions {
    /// The model's base directory; the version goes to `BASE/N/`.
    pub base: PathBuf,
    /// The version number; the next free one when `None`.
    pub version: Option<u64>,
    /// Signatures to keep besides `serving_default`.
    pub signatures: Vec<String>,
    /// Inputs of a warm-up request for `serving_default`; no warm-up file when empty.
    pub warmup_inputs: Vec<WarmupInput>,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ServingExport {
    /// The version directory, `BASE/N`.
    pub path: PathBuf,
    /// Its version number.
    pub version: u64,
    /// The signatures kept, `serving_default` first.
    pub signatures: Vec<String>,
    /// The variables kept, by name.
    pub variables: Vec<String>,
    /// The variables left out (optimizer state, counters, unused ones), by name.
    pub dropped_variables: Vec<String>,
    /// Asset files kept, as names under `assets/`.
    pub assets: Vec<String>,
    /// Number of warm-up requests written to `assets.extra/tf_serving_warmup_requests`.
    pub warmup_requests: usize,
    /// Bytes of the source model's files (graph, variables, assets).
    pub source_bytes: u64,
    /// Bytes of the files written.
    pub written_bytes: u64,
}

/// Writes the serving form of the SavedModel at `dir` to `BASE/N/` (see the module docs). Every
/// refusal (no `serving_default`, an existing version, an unknown or training signature, a bad
/// warm-up input, `dir` not a SavedModel) comes before anything is written; the version
/// directory is built under a hidden name in `BASE`, which TF Serving ignores, and renamed
/// into place whole.
pub fn export_serving(dir: impl AsRef<Path>, options: &ServingExportOptions) -> Result<ServingExport> {
    let dir = dir.as_ref();
    let model = SavedModel::open(dir)?;
    let meta_graph = model.meta_graph(&[SERVE_TAG])?;
    let signatures = chosen_signatures(&meta_graph, &options.signatures)?;
    let warmup = match options.warmup_inputs.as_slice() {
        [] => None,
        inputs => Some(warmup::read_inputs(inputs, &meta_graph.signature(SERVING_DEFAULT)?)?),
    };
    let (version, out) = version_dir(&options.base, options.version)?;
    check_not_input(dir, &out)?;
    let plan = plan::ServingPlan::build(dir, &meta_graph, &signatures)?;
    std::fs::create_dir_all(&options.base).map_err(io_error(&options.base))?;
    let model_name = options.base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    build_then_place(&out, |tmp| {
        plan.write(dir, tmp)?;
        if let Some(inputs) = &warmup {
            let record = warmup::prediction_log(&model_name, SERVING_DEFAULT, inputs)?;
            warmup::write_tfrecord(&tmp.join(WARMUP_FILE), &[record])?;
        }
        Ok(())
    })?;
    Ok(ServingExport {
        path: out.clone(),
        version,
        signatures,
        variables: plan.variable_names(),
        dropped_variables: plan.dropped_variables.clone(),
        assets: plan.assets.clone(),
        warmup_requests: usize::from(warmup.is_some()),
        source_bytes: model_size(dir)?,
        written_bytes: tree_size(&out)?,
    })
}

/// `serving_default` and the named signatures, each once; refuses unknown and training ones.
fn chosen_signatures(meta_graph: &MetaGraph, named: &[String]) -> Result<Vec<String>> {
    let available = meta_graph.signature_keys().join(", ");
    meta_graph
        .signature(SERVING_DEFAULT)
        .map_err(|_| Error::NoServingDefault { dir: meta_graph.dir().to_path_buf(), available: available.clone() })?;
    let mut chosen = vec![SERVING_DEFAULT.to_string()];
    for key in named {
        if key == TRAIN_STEP || key == EVAL_STEP {
            return Err(Error::TrainingSignatureNotServable { key: key.clone(), available });
        }
        meta_graph.signature(key)?;
        if !chosen.contains(key) {
            chosen.push(key.clone());
        }
    }
    Ok(chosen)
}

/// The version to write and its directory; an existing one is refused.
fn version_dir(base: &Path, requested: Option<u64>) -> Result<(u64, PathBuf)> {
    if base.exists() && !base.is_dir() {
        return Err(Error::Output {
            path: base.to_path_buf(),
            problem: "is a file; --out names the model's base directory, which holds one folder per version"
                .to_string(),
        });
    }
    let next = next_free_version(base)?;
    let version = requested.unwrap_or(next);
    let path = base.join(version.to_string());
    if path.exists() {
        return Err(Error::ServingVersionExists { path, next });
    }
    Ok((version, path))
}

/// One more than the highest all-digit entry of `base` (the names TF Serving loads), or 1.
pub fn next_free_version(base: &Path) -> Result<u64> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Ok(1);
    };
    let mut highest = 0;
    for entry in entries {
        let entry = entry.map_err(io_error(base))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            highest = highest.max(name.parse::<u64>().unwrap_or(u64::MAX - 1));
        }
    }
    Ok(highest + 1)
}

/// Bytes of a SavedModel's own files (graph, variables, assets), leaving out what else its folder
/// holds (a training run's metrics and checkpoints).
pub fn model_size(dir: &Path) -> Result<u64> {
    let parts = ["saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra"];
    parts.iter().map(|part| dir.join(part)).filter(|path| path.exists()).map(|path| tree_size(&path)).sum()
}

/// Bytes of every file under `path`.
pub fn tree_size(path: &Path) -> Result<u64> {
    let metadata = std::fs::symlink_metadata(path).map_err(io_error(path))?;
    if !metadata.is_dir() {
        return Ok(metadata.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(io_error(path))? {
        total += tree_size(&entry.map_err(io_error(path))?.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_follows_the_highest_numbered_folder() -> Result<()> {
        let base = tempfile::tempdir().unwrap();
        assert_eq!(next_free_version(&base.path().join("missing"))?, 1);
        for name in ["1", "7", ".8.tfload-tmp-1", "9a", "003"] {
            std::fs::create_dir(base.path().join(name)).unwrap();
        }
        assert_eq!(next_free_version(base.path())?, 8);
        let error = version_dir(base.path(), Some(7)).unwrap_err();
        assert!(matches!(error, Error::ServingVersionExists { next: 8, .. }), "{error}");
        assert_eq!(version_dir(base.path(), None)?.0, 8);
        Ok(())
    }
}
