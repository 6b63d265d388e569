//! The `tfload` command as users start it: a tiny launcher that does not link TensorFlow. It
//! finds `tfload-core` beside itself and checks that libtensorflow is where `tfload-core` will
//! load it from (naming what to run when either is missing), silences TensorFlow's C++ log (unless
//! `-v` or `RUST_LOG` ask for it) and then becomes `tfload-core`, the real program, installed
//! beside it. Without `-v` the log is off whatever `TF_CPP_MIN_LOG_LEVEL` says, as it must be for
//! the lines TensorFlow prints while it loads (the absl "before InitializeLog" warning, oneDNN's
//! notice), which come at every level; with `-v` the user's `TF_CPP_MIN_LOG_LEVEL` applies.
//!
//! Why a separate process image: libtensorflow logs from its static initializers, which run when
//! the library is loaded, before any code of a program linked against it, and before
//! `TF_CPP_MIN_LOG_LEVEL` applies. So the launcher sets the level and also hands `tfload-core` a
//! stderr pointing at /dev/null, keeping the real one on a spare descriptor that `tfload-core`
//! puts back first thing in `main` (src/cli/stderr.rs). Only output from before `main` is lost.
//!
//! Commands that need no session (`signatures`, `variables`) run here, in the launcher, and never load
//! libtensorflow: its start-up (static initializers, ~170 ms) is nearly all of their time. The
//! launcher shares `cli/` with `tfload-core` but reaches only `cli::run_without_tensorflow`, so
//! the linker keeps no TensorFlow symbol and drops the library (`--as-needed`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Parser;

// The same command line as tfload-core's; most of it is unused here.
#[allow(dead_code)]
#[path = "cli/mod.rs"]
mod cli;

/// The real program's file name, beside this launcher.
const CORE: &str = "tfload-core";
/// Where `tfload-core` finds the real stderr (see src/cli/stderr.rs).
const SAVED_STDERR_FD: i32 = 9;
/// The directory the build linked libtensorflow from (its rpath).
const TFLIB_DIR: &str = env!("TFLOAD_LINKED_TFLIB_DIR");
/// The library `tfload-core` needs first.
const TF_LIB: &str = "libtensorflow_cc.so.2";

fn main() -> ExitCode {
    if let Ok(parsed) = cli::Cli::try_parse() {
        cli::logging::init(parsed.global.verbose, parsed.global.quiet);
        if let Ok(result) = cli::run_without_tensorflow(parsed) {
            return cli::exit_code(result);
        }
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let core = match find_core() {
        Ok(core) => core,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(looked_in) = find_libtensorflow(&core) {
        eprintln!("error: {}", missing_libtensorflow(&looked_in));
        return ExitCode::FAILURE;
    }
    let mut command = Command::new(&core);
    command.args(&args);
    if !wants_tensorflow_log(&args) {
        command.env("TF_CPP_MIN_LOG_LEVEL", "3");
        command.env("TFLOAD_SAVED_STDERR_FD", SAVED_STDERR_FD.to_string());
        // SAFETY: the closure runs between fork/exec preparation and exec and only calls
        // async-signal-safe functions (open, dup2, close) on plain descriptors.
        unsafe {
            command.pre_exec(|| {
                if libc::dup2(2, SAVED_STDERR_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if null >= 0 {
                    libc::dup2(null, 2);
                    libc::close(null);
                }
                Ok(())
            });
        }
    }
    let error = command.exec(); // returns only on failure
    eprintln!("error: cannot start {}: {error}", core.display());
    ExitCode::FAILURE
}

/// `tfload-core` beside this launcher, wherever both were installed (target/, `cargo install`'s
/// bin folder, the release archive's bin/). /proc/self/exe is the resolved path, so a symlink to
/// the launcher elsewhere still finds it.
fn find_core() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|error| format!("cannot find the tfload executable's own path: {error}"))?;
    let core = exe.with_file_name(CORE);
    if core.is_file() {
        return Ok(core);
    }
    Err(format!(
        "{} is missing: the tfload launcher runs it for every command that loads TensorFlow, and it must sit beside \
         {}. `cargo build` and `cargo install --path .` put both in the same folder, and so does the release \
         archive (scripts/package.sh, bin/); copy tfload-core there too.",
        core.display(),
        exe.display()
    ))
}

/// The folders `tfload-core` can load libtensorflow from, in the order the loader tries them:
/// LD_LIBRARY_PATH, the release archive's lib/ beside bin/ (its `$ORIGIN/../lib` rpath), then the
/// folder the build linked (a plain build's rpath). Err: every folder looked in.
fn find_libtensorflow(core: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let mut folders: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|paths| std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    if let Some(bin) = core.parent() {
        folders.push(bin.join("../lib"));
    }
    folders.push(PathBuf::from(TFLIB_DIR));
    match folders.iter().find(|folder| folder.join(TF_LIB).exists()) {
        Some(folder) => Ok(folder.clone()),
        None => Err(folders),
    }
}

fn missing_libtensorflow(looked_in: &[PathBuf]) -> String {
    let folders: Vec<String> = looked_in.iter().map(|f| f.display().to_string()).collect();
    format!(
        "libtensorflow is missing: {TF_LIB} is in none of {}. In the tfload repository run `bash scripts/setup.sh` \
         (it installs the pinned tensorflow-cpu wheel into .venv and .tflib); elsewhere run `bash scripts/tflib.sh \
         FOLDER` and rebuild with TFLOAD_TFLIB_DIR=FOLDER and PKG_CONFIG_PATH=FOLDER, or use the release archive \
         (scripts/package.sh), which carries the library in lib/.",
        folders.join(", ")
    )
}

/// Whether TensorFlow's own log should stay on: `-v`/`--verbose` given, or a log asked for
/// through `RUST_LOG`.
fn wants_tensorflow_log(args: &[std::ffi::OsString]) -> bool {
    let env_set = std::env::var_os("RUST_LOG").is_some();
    env_set
        || args.iter().filter_map(|a| a.to_str()).take_while(|a| *a != "--").any(|arg| {
            arg == "--verbose"
                || (arg.starts_with('-')
                    && !arg.starts_with("--")
                    && arg.len() > 1
                    && arg[1..].chars().all(|c| c == 'v'))
        })
}
