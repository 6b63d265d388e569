//! The libtensorflow this process runs with, checked against the TensorFlow version tfload was
//! built for (scripts/requirements.txt pins it; build.rs passes it in). A library from another
//! release may load and even run, but its SavedModel protos and the Python exporter's output are
//! not what tfload was tested with, so a model load refuses it with one clear message.

use crate::error::{Error, Result};

/// The TensorFlow version this tfload is pinned to.
pub const PINNED_VERSION: &str = env!("TFLOAD_TF_VERSION");
/// The file the C API lives in.
const CC_LIB: &str = "libtensorflow_cc.so.2";

/// Fails when the loaded libtensorflow is not the pinned version.
pub fn check_version() -> Result<()> {
    let found = tensorflow::version().unwrap_or_else(|_| "(unreadable)".to_string());
    check(&found, PINNED_VERSION, loaded_library().as_deref())
}

/// Where this process mapped libtensorflow from, read from /proc/self/maps.
pub fn loaded_library() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with(CC_LIB))
        .map(str::to_string)
}

fn check(found: &str, pinned: &str, loaded: Option<&str>) -> Result<()> {
    if found == pinned {
        return Ok(());
    }
    let loaded = loaded.map(|path| format!(", loaded from {path}")).unwrap_or_default();
    Err(Error::LibtensorflowVersion { found: found.to_string(), pinned: pinned.to_string(), loaded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_version_passes() {
        assert!(check(PINNED_VERSION, PINNED_VERSION, None).is_ok());
        assert!(check_version().is_ok(), "the library this test links is the pinned one");
    }

    #[test]
    fn another_version_is_refused_naming_both_and_the_file() {
        let err = check("2.13.0", "2.21.0", Some("/opt/tf/libtensorflow_cc.so.2")).unwrap_err().to_string();
        assert!(err.contains("TensorFlow 2.13.0") && err.contains("pinned to 2.21.0"), "{err}");
        assert!(err.contains("loaded from /opt/tf/libtensorflow_cc.so.2"), "{err}");
        assert!(err.contains("scripts/tflib.sh"), "{err}");
    }

    #[test]
    fn the_loaded_library_is_found_in_the_process_maps() {
        let _ = tensorflow::version();
        assert!(loaded_library().is_some_and(|path| path.ends_with(CC_LIB)));
    }
}
