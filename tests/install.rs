//! The `tfload` launcher installed elsewhere (`cargo install --path .` copies both binaries into
//! one bin folder): it finds `tfload-core` beside itself, and says what to do when `tfload-core`
//! or libtensorflow is missing.

use std::path::Path;
use std::process::{Command, Output};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_tfload");
const CORE: &str = env!("CARGO_BIN_EXE_tfload-core");

/// Copies the given built binaries into `dir`, as an installer would.
fn install(dir: &Path, binaries: &[&str]) {
    for binary in binaries {
        let name = Path::new(binary).file_name().unwrap();
        std::fs::copy(binary, dir.join(name)).unwrap();
    }
}

fn run(command: &mut Command) -> (Output, String) {
    let output = command.env_remove("LD_LIBRARY_PATH").env_remove("RUST_LOG").output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

#[test]
fn an_installed_launcher_finds_tfload_core_beside_it() {
    let bin = tempfile::tempdir().unwrap();
    install(bin.path(), &[LAUNCHER, CORE]);
    let (output, stderr) = run(Command::new(bin.path().join("tfload")).arg("--version"));
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("libtensorflow: TensorFlow 2.21.0, built against "), "{stdout}");
    assert!(stdout.contains("(found through "), "{stdout}");
}

#[test]
fn a_launcher_without_tfload_core_says_where_it_must_be() {
    let bin = tempfile::tempdir().unwrap();
    install(bin.path(), &[LAUNCHER]);
    let (output, stderr) = run(Command::new(bin.path().join("tfload")).arg("--version"));
    assert!(!output.status.success());
    let core = bin.path().join("tfload-core");
    assert!(stderr.contains(&format!("{} is missing", core.display())), "{stderr}");
    assert!(stderr.contains("cargo install --path ."), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
}

#[test]
fn a_missing_libtensorflow_is_named_with_the_commands_that_provide_it() {
    // A private mount namespace hides the folder the build linked (root only; skipped otherwise).
    let linked = env!("TFLOAD_LINKED_TFLIB_DIR");
    let probe = Command::new("unshare").args(["-m", "true"]).status();
    if !probe.is_ok_and(|status| status.success()) {
        eprintln!("skipped: `unshare -m` is not permitted here");
        return;
    }
    let script = r#"mount -t tmpfs tmpfs "$1" && exec "$2" --version"#;
    let (output, stderr) = run(Command::new("unshare").args(["-m", "sh", "-c", script, "sh", linked, LAUNCHER]));
    assert!(!output.status.success());
    assert!(stderr.contains("libtensorflow is missing: libtensorflow_cc.so.2 is in none of"), "{stderr}");
    assert!(stderr.contains(linked), "{stderr}");
    assert!(stderr.contains("scripts/setup.sh") && stderr.contains("scripts/tflib.sh FOLDER"), "{stderr}");
}
