//! Build script: checks that libtensorflow was set up, gives every binary an rpath to it, and
//! compiles the TensorFlow protobuf schemas that tfload reads without a session.

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let tflib = root.join(".tflib");
    require_libtensorflow(&tflib);
    // pkg-config's rpath is dropped by tensorflow-sys; without ours the binary would need
    // LD_LIBRARY_PATH to find libtensorflow_cc.so.2.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", tflib.display());
    // The launcher checks the library is still there before starting the real program.
    println!("cargo:rustc-env=TFLOAD_TFLIB_DIR={}", tflib.display());
    println!("cargo:rerun-if-changed=.tflib/tensorflow.pc");
    compile_protos(&root.join("proto"));
}

/// Stops the build with the command to run, instead of letting tensorflow-sys try a download.
fn require_libtensorflow(tflib: &Path) {
    if tflib.join("tensorflow.pc").is_file() && tflib.join("libtensorflow_cc.so.2").exists() {
        return;
    }
    println!(
        "cargo:warning=libtensorflow is not set up in {}. Run `scripts/setup.sh` once \
         (it installs the pinned tensorflow-cpu wheel into .venv), then build again.",
        tflib.display()
    );
    panic!(
        "\n\nlibtensorflow is not set up: {} is missing.\n\
         Run `scripts/setup.sh` from the project folder (one time, about 300 MB), then build again.\n",
        tflib.join("tensorflow.pc").display()
    );
}

fn compile_protos(proto_dir: &Path) {
    let files = ["tfload/saved_model.proto", "tfload/serving.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let descriptors = protox::compile(files, [proto_dir]).expect("proto/ schemas compile");
    prost_build::Config::new().compile_fds(descriptors).expect("prost generates Rust for proto/ schemas");
}
