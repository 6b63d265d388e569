//! Writing output directories whole or not at all: a directory is built under a temporary name
//! beside its destination and renamed into place (an existing one moved aside first and removed
//! only after), and outputs may never be, lie inside, or hold the model they were made from.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a SavedModel copy takes from its source besides a new `variables/`: the graph and the
/// assets. `fingerprint.pb` is left out because it would describe the old variables, and
/// anything else (a tfload output's checkpoints and metrics) is not part of the model.
const MODEL_FILES: [&str; 3] = ["saved_model.pb", "assets", "assets.extra"];

/// Builds the directory `out` through `build`, which fills the temporary directory it is given;
/// then renames it into place. On failure nothing is left but what `out` held before.
pub fn build_then_place(out: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(out, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
    let placed = build(&tmp).and_then(|()| move_into_place(&tmp, out));
    if placed.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    placed
}

/// Adds files to the directory `out`: `write` fills a temporary directory beside `out`, then its
/// files are renamed in, each replacing the file of its name at once. A failure while writing
/// leaves `out` as it was; a new `out` appears whole or not at all. Into an existing `out` the
/// renames are one per file, so a failure between two of them (a full or read-only disk cannot
/// cause one: nothing is written then) leaves some new files beside old ones. For outputs that
/// are a few files in a folder the user names (`tfload run --out`), where [`build_then_place`]
/// would replace the folder.
pub fn write_files_into(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    if !out.exists() {
        return build_then_place(out, write);
    }
    let staging = sibling(out, "tmp");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    let moved = write(&staging).and_then(|()| {
        for entry in std::fs::read_dir(&staging).map_err(io_error(&staging))? {
            let entry = entry.map_err(io_error(&staging))?;
            let target = out.join(entry.file_name());
            std::fs::rename(entry.path(), &target).map_err(io_error(&target))?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&staging);
    moved
}

/// Renames the finished directory `tmp` to `out`; an existing `out` is moved aside first and
/// removed once the new one is in place.
pub fn move_into_place(tmp: &Path, out: &Path) -> Result<()> {
    let old = sibling(out, "old");
    let replacing = out.exists();
    if replacing {
        std::fs::rename(out, &old).map_err(io_error(out))?;
        crate::fault::point("output-moved-aside");
    }
    std::fs::rename(tmp, out).map_err(io_error(out))?;
    if replacing {
        crate::fault::point("output-placed");
        std::fs::remove_dir_all(&old).map_err(io_error(&old))?;
    }
    Ok(())
}

/// Removes what an interrupted `build_then_place` or `move_into_place` of `path` left beside it
/// (`.NAME.tfload-tmp-PID`, `.NAME.tfload-old-PID` of any process). Only call this while holding
/// the run's lock, so that no live process owns them.
pub fn remove_leftovers(path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    let prefixes = [format!(".{name}.tfload-tmp-"), format!(".{name}.tfload-old-")];
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| file_name.starts_with(p.as_str())) {
            let leftover = entry.path();
            log::info!("removing {}, left by an interrupted run", leftover.display());
            std::fs::remove_dir_all(&leftover).map_err(io_error(&leftover))?;
        }
    }
    Ok(())
}

/// Copies the graph and assets of the SavedModel `source` into `dest` (see `MODEL_FILES`).
/// `saved_model.pb` must be there: a SavedModel without its graph is never written.
pub fn copy_model_files(source: &Path, dest: &Path) -> Result<()> {
    let graph = source.join("saved_model.pb");
    if !graph.is_file() {
        return Err(Error::MissingSavedModelPb {
            dir: source.to_path_buf(),
            hint: "tfload copies the graph from there into every model it writes, and writes none without it. Was the folder removed or changed while tfload ran?".to_string(),
        });
    }
    for name in MODEL_FILES {
        let from = source.join(name);
        if from.exists() {
            copy_tree(&from, &dest.join(name))?;
        }
    }
    Ok(())
}

/// Copies a whole SavedModel (graph, assets and `variables/`) from `source` into `dest`.
pub fn copy_saved_model(source: &Path, dest: &Path) -> Result<()> {
    let variables = source.join("variables");
    if !variables.join("variables.index").is_file() {
        return Err(Error::MissingVariables { dir: source.to_path_buf() });
    }
    copy_model_files(source, dest)?;
    copy_tree(&variables, &dest.join("variables"))
}

/// Fails if `out` is the input model `source`, lies inside it, or holds it.
pub fn check_not_input(source: &Path, out: &Path) -> Result<()> {
    let source_abs = std::fs::canonicalize(source).map_err(io_error(source))?;
    let out_abs = absolute(out);
    if out_abs.starts_with(&source_abs) || source_abs.starts_with(&out_abs) {
        return Err(Error::Output {
            path: out.to_path_buf(),
            problem: "is the input model, inside it, or holds it; the input is never modified. Give another --out"
                .to_string(),
        });
    }
    Ok(())
}

/// `path` made absolute against the working directory, its existing part canonicalized.
fn absolute(path: &Path) -> PathBuf {
    if let Ok(resolved) = std::fs::canonicalize(path) {
        return resolved;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    absolute(parent).join(name)
}

/// `.NAME.tfload-KIND-PID` beside `path`, so that renames stay on one file system.
pub fn sibling(path: &Path, kind: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tfload-{kind}-{}", std::process::id()))
}

/// Removes the folder `dir` and everything in it; nothing to do when there is no such folder.
pub fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io_error(dir)(error)),
        _ => Ok(()),
    }
}

/// Copies a file or a folder tree.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if !from.is_dir() {
        return std::fs::copy(from, to).map(drop).map_err(io_error(to));
    }
    std::fs::create_dir_all(to).map_err(io_error(to))?;
    for entry in std::fs::read_dir(from).map_err(io_error(from))? {
        let entry = entry.map_err(io_error(from))?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Maps an I/O error to one that names `path`.
pub fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_build_leaves_the_old_directory_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old.txt"), "old").unwrap();
        let failed = build_then_place(&out, |tmp| {
            std::fs::write(tmp.join("half.txt"), "half").unwrap();
            Err(Error::InvalidOption("boom".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(out.join("old.txt")).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary was left");
    }

    #[test]
    fn a_finished_build_replaces_the_old_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old.txt"), "old").unwrap();
        build_then_place(&out, |tmp| std::fs::write(tmp.join("new.txt"), "new").map_err(io_error(tmp))).unwrap();
        assert!(!out.join("old.txt").exists());
        assert_eq!(std::fs::read_to_string(out.join("new.txt")).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn outputs_inside_or_around_the_input_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        assert!(check_not_input(&model, &model).is_err());
        assert!(check_not_input(&model, &model.join("inner")).is_err());
        assert!(check_not_input(&model, dir.path()).is_err());
        assert!(check_not_input(&model, &dir.path().join("other")).is_ok());
    }
}
