//! Writing a loaded model's current variables out as a complete SavedModel: the variables through
//! the model's own saver (the `SaverDef` in `saved_model.pb`, so every variable the graph reads is
//! the one written), beside a copy of `saved_model.pb` and `assets/` of the model it came from.
//! Directories appear whole or not at all: they are built under a temporary name and renamed.

use std::path::{Path, PathBuf};

use tensorflow::{SessionRunArgs, Tensor};

use crate::bundle::LoadedModel;
use crate::error::{Error, Result};

/// Files and folders of a SavedModel that are copied as they are; `variables/` is written anew
/// and `fingerprint.pb` is left out because it would describe the old variables.
const COPIED: [&str; 3] = ["saved_model.pb", "assets", "assets.extra"];

/// Writes `model`'s variables and `source`'s graph and assets as a SavedModel at `dest`, which
/// must not exist. Nothing is left at `dest` if any step fails.
pub fn write_saved_model(model: &LoadedModel, source: &Path, dest: &Path) -> Result<()> {
    write_atomically(dest, |tmp| {
        std::fs::create_dir_all(tmp.join("variables")).map_err(io(tmp))?;
        save_variables(model, &tmp.join("variables").join("variables"))?;
        for name in COPIED {
            let from = source.join(name);
            if from.exists() {
                copy_recursively(&from, &tmp.join(name))?;
            }
        }
        Ok(())
    })
}

/// Runs the model's save op with checkpoint prefix `prefix` (`.../variables/variables`).
pub fn save_variables(model: &LoadedModel, prefix: &Path) -> Result<()> {
    let saver = model.meta_graph().saver().ok_or_else(|| Error::MalformedSavedModel {
        path: model.dir().join("saved_model.pb"),
        problem: "it has no SaverDef, so its variables cannot be saved".to_string(),
    })?;
    let (filename_op, filename_index) = operation(model, &saver.filename_tensor)?;
    let (save_op, save_index) = operation(model, &saver.save_tensor)?;
    let prefix_tensor = Tensor::<String>::from(prefix.to_string_lossy().into_owned());
    let mut args = SessionRunArgs::new();
    args.add_feed(&filename_op, filename_index, &prefix_tensor);
    args.request_fetch(&save_op, save_index);
    model.session().run(&mut args).map_err(|status| Error::TensorFlow {
        during: format!("saving variables to {}", prefix.display()),
        message: status.to_string(),
    })
}

fn operation(model: &LoadedModel, tensor_name: &str) -> Result<(tensorflow::Operation, i32)> {
    let (name, index) = tensor_name.rsplit_once(':').unwrap_or((tensor_name, "0"));
    let op = model.graph().operation_by_name_required(name).map_err(|status| Error::MalformedSavedModel {
        path: model.dir().join("saved_model.pb"),
        problem: format!("its SaverDef names `{tensor_name}`, which the graph lacks ({status})"),
    })?;
    Ok((op, index.parse().unwrap_or(0)))
}

/// Builds a directory at `dest` through `build`, under a temporary name beside it, then renames
/// it into place. `dest` must not exist.
pub fn write_atomically(dest: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_sibling(dest);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let result = build(&tmp).and_then(|()| std::fs::rename(&tmp, dest).map_err(io(dest)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// `dir/.name.tmp-PID`, beside `path` so that the final rename stays on one file system.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Copies a file or a folder tree.
pub fn copy_recursively(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to).map_err(io(to))?;
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            copy_recursively(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ()).map_err(io(to))
    }
}

/// Maps an I/O error to one that names `path`.
pub fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
