//! Build script: finds libtensorflow (build/tflib.rs has the rules), gives every binary an rpath
//! to it, records where it came from for `tfload --version` and the launcher, and compiles the
//! TensorFlow protobuf schemas that tfload reads without a session.

#[path = "build/tflib.rs"]
mod tflib;

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let found = match tflib::find(&inputs(&root)) {
        Ok(found) => found,
        Err(message) => {
            // One message, without a panic's backtrace noise around it.
            eprintln!("\n{message}\n");
            std::process::exit(1);
        }
    };
    // pkg-config's rpath is dropped by tensorflow-sys; without ours the binary would need
    // LD_LIBRARY_PATH to find libtensorflow_cc.so.2. scripts/package.sh rewrites it to $ORIGIN.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", found.dir.display());
    // The launcher checks the library is still there before starting the real program.
    println!("cargo:rustc-env=TFLOAD_LINKED_TFLIB_DIR={}", found.dir.display());
    println!("cargo:rustc-env=TFLOAD_TFLIB_HOW={}", found.how);
    // For crates that depend on tfload: DEP_TFLOAD_TFLIB_DIR in their build scripts.
    println!("cargo:tflib_dir={}", found.dir.display());
    println!("cargo:rerun-if-env-changed={}", tflib::DIR_VAR);
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-changed=.tflib/tensorflow.pc");
    println!("cargo:rerun-if-changed={}", found.dir.join("tensorflow.pc").display());
    compile_protos(&root.join("proto"));
}

/// The environment as build/tflib.rs sees it; also sets TFLOAD_TF_VERSION, the pinned version.
fn inputs(root: &Path) -> tflib::Inputs {
    let requirements = root.join("scripts/requirements.txt");
    println!("cargo:rerun-if-changed={}", requirements.display());
    let pinned = std::fs::read_to_string(&requirements)
        .ok()
        .and_then(|text| tflib::pinned_version(&text))
        .expect("scripts/requirements.txt pins tensorflow-cpu==VERSION");
    println!("cargo:rustc-env=TFLOAD_TF_VERSION={pinned}");
    tflib::Inputs {
        env_dir: std::env::var_os(tflib::DIR_VAR).filter(|v| !v.is_empty()).map(PathBuf::from),
        pkg_config: pkg_config(),
        project_tflib: root.join(".tflib"),
        pinned,
    }
}

/// What the `pkg-config` command says about `tensorflow`, exactly as tensorflow-sys saw it.
fn pkg_config() -> Option<tflib::PkgConfig> {
    let query = |args: &[&str]| -> Option<String> {
        let output = Command::new("pkg-config").args(args).arg("tensorflow").output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let version = query(&["--modversion"])?;
    let libdir = query(&["--variable=libdir"]).filter(|d| !d.is_empty()).or_else(|| {
        let flags = query(&["--libs-only-L"])?;
        flags.split_whitespace().find_map(|f| f.strip_prefix("-L")).map(str::to_string)
    })?;
    Some(tflib::PkgConfig { libdir: PathBuf::from(libdir), version })
}

fn compile_protos(proto_dir: &Path) {
    let files =
        ["tfload/saved_model.proto", "tfload/serving.proto", "tfload/cluster.proto", "tfload/run_metadata.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let descriptors = protox::compile(files, [proto_dir]).expect("proto/ schemas compile");
    prost_build::Config::new().compile_fds(descriptors).expect("prost generates Rust for proto/ schemas");
}
