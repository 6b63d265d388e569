//! How the build finds libtensorflow (build/tflib.rs, the rules build.rs applies), on temporary
//! folders: the order TFLOAD_TFLIB_DIR, pkg-config, the repository's .tflib, and one clear
//! message for a folder without the libraries, another TensorFlow version, or nothing at all.

#[allow(dead_code)]
#[path = "../build/tflib.rs"]
mod tflib;

use std::path::{Path, PathBuf};

use tflib::{find, Inputs, PkgConfig, CC_LIB, FRAMEWORK_LIB};

const PINNED: &str = "2.21.0";

/// A folder with (empty stand-ins for) both libraries, and a tensorflow.pc of `version` if given.
fn lib_dir(root: &Path, name: &str, version: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for lib in [CC_LIB, FRAMEWORK_LIB] {
        std::fs::write(dir.join(lib), b"").unwrap();
    }
    if let Some(version) = version {
        std::fs::write(dir.join("tensorflow.pc"), format!("Name: tensorflow\nVersion: {version}\n")).unwrap();
    }
    dir
}

fn inputs(env_dir: Option<&Path>, pkg_dir: Option<&Path>, project: &Path) -> Inputs {
    Inputs {
        env_dir: env_dir.map(Path::to_path_buf),
        pkg_config: pkg_dir.map(|dir| PkgConfig { libdir: dir.to_path_buf(), version: PINNED.to_string() }),
        project_tflib: project.to_path_buf(),
        pinned: PINNED.to_string(),
    }
}

#[test]
fn tfload_tflib_dir_comes_first_then_pkg_config_then_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let env = lib_dir(tmp.path(), "env", None);
    let pkg = lib_dir(tmp.path(), "pkg", Some(PINNED));
    let project = lib_dir(tmp.path(), "project", Some(PINNED));
    let found = find(&inputs(Some(&env), Some(&pkg), &project)).unwrap();
    assert_eq!((found.dir, found.how.as_str()), (env, "TFLOAD_TFLIB_DIR"));
    let found = find(&inputs(None, Some(&pkg), &project)).unwrap();
    assert_eq!((found.dir, found.how.as_str()), (pkg, "pkg-config `tensorflow`"));
    // pkg-config names a folder without libtensorflow_cc.so.2 (only libtensorflow.so links).
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let found = find(&inputs(None, Some(&bare), &project)).unwrap();
    assert_eq!((found.dir, found.how.as_str()), (project, "this repository's .tflib"));
}

#[test]
fn a_tfload_tflib_dir_without_the_libraries_names_the_missing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = lib_dir(tmp.path(), "pkg", Some(PINNED));
    let env = tmp.path().join("env");
    std::fs::create_dir(&env).unwrap();
    std::fs::write(env.join(CC_LIB), b"").unwrap();
    let err = find(&inputs(Some(&env), Some(&pkg), &pkg)).unwrap_err();
    assert!(err.contains(&format!("{} (from TFLOAD_TFLIB_DIR) has no {FRAMEWORK_LIB}", env.display())), "{err}");
    assert!(err.contains("scripts/tflib.sh FOLDER"), "{err}");
}

#[test]
fn another_tensorflow_version_is_refused_in_the_folder_or_in_pkg_config() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = lib_dir(tmp.path(), "pkg", Some(PINNED));
    let old = lib_dir(tmp.path(), "old", Some("2.13.0"));
    let err = find(&inputs(Some(&old), Some(&pkg), &pkg)).unwrap_err();
    assert!(err.contains("the TFLOAD_TFLIB_DIR folder is TensorFlow 2.13.0"), "{err}");
    assert!(err.contains("pinned to 2.21.0"), "{err}");
    let mut old_pkg = inputs(None, Some(&pkg), &pkg);
    old_pkg.pkg_config.as_mut().unwrap().version = "2.20.0".to_string();
    let err = find(&old_pkg).unwrap_err();
    assert!(err.contains("pkg-config's `tensorflow` is TensorFlow 2.20.0"), "{err}");
}

#[test]
fn nothing_found_gives_one_message_with_the_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let env = lib_dir(tmp.path(), "env", Some(PINNED));
    let err = find(&inputs(None, None, &tmp.path().join(".tflib"))).unwrap_err();
    for command in ["bash scripts/setup.sh", "scripts/tflib.sh FOLDER --crate .", CC_LIB, "2.21.0"] {
        assert!(err.contains(command), "{command} missing from: {err}");
    }
    // The libraries alone are not enough: tensorflow-sys links through pkg-config.
    let err = find(&inputs(Some(&env), None, &env)).unwrap_err();
    assert!(err.contains("but PKG_CONFIG_PATH has no tensorflow.pc"), "{err}");
}

#[test]
fn the_pinned_version_is_read_from_requirements() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/requirements.txt")).unwrap();
    assert_eq!(tflib::pinned_version(&text).as_deref(), Some(env!("TFLOAD_TF_VERSION")));
    assert_eq!(tflib::pinned_version("# x\ntensorflow-cpu==2.13.0\n").as_deref(), Some("2.13.0"));
}
