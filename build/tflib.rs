//! Where libtensorflow comes from, decided once at build time. Shared by `build.rs` (which feeds
//! it the environment) and `tests/tflib_find.rs` (which feeds it temporary folders), so the rules
//! and their messages are tested without running a build.
//!
//! Order: `TFLOAD_TFLIB_DIR`, then pkg-config's `tensorflow` from the caller's environment, then
//! this repository's `.tflib`. pkg-config must find `tensorflow` in every case: tensorflow-sys's
//! build script (which runs before ours) links through it, and downloads a TensorFlow 2.13 of its
//! own when it does not find it; tfload would then link one library and run another.

use std::path::{Path, PathBuf};

/// The C API library inside the tensorflow-cpu wheel.
pub const CC_LIB: &str = "libtensorflow_cc.so.2";
/// The framework library it needs, beside it.
pub const FRAMEWORK_LIB: &str = "libtensorflow_framework.so.2";
/// The variable naming a folder with both libraries.
pub const DIR_VAR: &str = "TFLOAD_TFLIB_DIR";

/// What the build found out about its environment.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `TFLOAD_TFLIB_DIR`, when set and not empty.
    pub env_dir: Option<PathBuf>,
    /// What pkg-config said about `tensorflow`, when it found it.
    pub pkg_config: Option<PkgConfig>,
    /// This repository's `.tflib` (written by scripts/setup.sh).
    pub project_tflib: PathBuf,
    /// The TensorFlow version scripts/requirements.txt pins.
    pub pinned: String,
}

/// pkg-config's answer for `tensorflow`.
#[derive(Debug, Clone)]
pub struct PkgConfig {
    /// Its library folder (`libdir`, else the first `-L`).
    pub libdir: PathBuf,
    /// Its `Version:`.
    pub version: String,
}

/// The libtensorflow folder the binaries get as rpath, and how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The folder holding both libraries.
    pub dir: PathBuf,
    /// How it was chosen, for `tfload --version`.
    pub how: String,
}

/// Chooses the folder, or says in one message what is wrong and what to run.
pub fn find(inputs: &Inputs) -> Result<Found, String> {
    let Some(pkg) = &inputs.pkg_config else {
        return Err(not_found(inputs));
    };
    let (dir, how) = match &inputs.env_dir {
        Some(dir) => (dir.clone(), DIR_VAR.to_string()),
        None if !has_libraries(&pkg.libdir) && has_libraries(&inputs.project_tflib) => {
            (inputs.project_tflib.clone(), "this repository's .tflib".to_string())
        }
        None => (pkg.libdir.clone(), "pkg-config `tensorflow`".to_string()),
    };
    if let Some(missing) = missing_library(&dir) {
        return Err(format!(
            "libtensorflow: {} (from {how}) has no {missing}. Point {DIR_VAR} at a folder holding both \
             {CC_LIB} and {FRAMEWORK_LIB} (`bash scripts/tflib.sh FOLDER` puts the pinned TensorFlow {} there), \
             or unset it.",
            dir.display(),
            inputs.pinned
        ));
    }
    let version = pc_version(&dir).unwrap_or_else(|| pkg.version.clone());
    for (what, found) in [("pkg-config's `tensorflow`", &pkg.version), (dir_label(&how), &version)] {
        if *found != inputs.pinned {
            return Err(version_mismatch(what, found, &inputs.pinned, &dir));
        }
    }
    Ok(Found { dir, how })
}

fn dir_label(how: &str) -> &'static str {
    if how == DIR_VAR {
        "the TFLOAD_TFLIB_DIR folder"
    } else {
        "the libtensorflow folder"
    }
}

fn version_mismatch(what: &str, found: &str, pinned: &str, dir: &Path) -> String {
    format!(
        "libtensorflow: {what} is TensorFlow {found}, but tfload is pinned to {pinned} (scripts/requirements.txt: \
         its protos and Python exporter match that version). Set up the pinned one with \
         `bash scripts/tflib.sh FOLDER` and point {DIR_VAR} and PKG_CONFIG_PATH at FOLDER (now: {}).",
        dir.display()
    )
}

/// The one message for "no libtensorflow anywhere", with the commands that provide it.
fn not_found(inputs: &Inputs) -> String {
    let env = match &inputs.env_dir {
        Some(dir) => format!(" ({DIR_VAR} is {}, but PKG_CONFIG_PATH has no tensorflow.pc)", dir.display()),
        None => String::new(),
    };
    format!(
        "libtensorflow not found{env}: pkg-config finds no `tensorflow`, so tensorflow-sys cannot link it (and \
         tries to download TensorFlow 2.13). Provide TensorFlow {pinned} in one of these ways, then build again:\n  \
         - in the tfload repository: `bash scripts/setup.sh` (writes .tflib, one time, about 300 MB);\n  \
         - for a crate that depends on tfload: `bash <tfload>/scripts/tflib.sh FOLDER --crate .` (downloads the \
         pinned tensorflow-cpu wheel's libraries into FOLDER and writes .cargo/config.toml);\n  \
         - a folder already holding {CC_LIB} and {FRAMEWORK_LIB}: `bash <tfload>/scripts/tflib.sh FOLDER --crate .` \
         adopts it without a download (it writes FOLDER/tensorflow.pc; PKG_CONFIG_PATH and {DIR_VAR} = FOLDER).\n\
         (looked in: {DIR_VAR}, pkg-config, {})",
        inputs.project_tflib.display(),
        pinned = inputs.pinned
    )
}

/// Whether `dir` holds both libraries.
pub fn has_libraries(dir: &Path) -> bool {
    missing_library(dir).is_none()
}

fn missing_library(dir: &Path) -> Option<&'static str> {
    [CC_LIB, FRAMEWORK_LIB].into_iter().find(|lib| !dir.join(lib).exists())
}

/// The `Version:` of `dir/tensorflow.pc`, when there is one.
pub fn pc_version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("tensorflow.pc")).ok()?;
    text.lines().find_map(|line| line.strip_prefix("Version:")).map(|v| v.trim().to_string())
}

/// The version `tensorflow-cpu==X` in requirements.txt's text.
pub fn pinned_version(requirements: &str) -> Option<String> {
    requirements.lines().find_map(|line| line.trim().strip_prefix("tensorflow-cpu==")).map(|v| v.trim().to_string())
}
