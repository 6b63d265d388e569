//! Gives this crate's binaries an rpath to the libtensorflow tfload's build found (tfload passes
//! it as `DEP_TFLOAD_TFLIB_DIR`): a library's own link arguments do not reach its dependents.

fn main() {
    if let Ok(dir) = std::env::var("DEP_TFLOAD_TFLIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
