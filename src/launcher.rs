//! The `tfload` command as users start it: a tiny launcher that does not link TensorFlow. It
//! checks that libtensorflow is where the build found it, silences TensorFlow's C++ log (unless
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
use std::path::Path;
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

fn main() -> ExitCode {
    if let Ok(parsed) = cli::Cli::try_parse() {
        cli::logging::init(parsed.global.verbose, parsed.global.quiet);
        if let Ok(result) = cli::run_without_tensorflow(parsed) {
            return cli::exit_code(result);
        }
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let lib = Path::new(TFLIB_DIR).join("libtensorflow_cc.so.2");
    if !lib.exists() {
        eprintln!(
            "error: libtensorflow is missing: {} does not exist. Run `scripts/setup.sh` in the tfload project folder (it installs the pinned tensorflow-cpu wheel into .venv), then try again.",
            lib.display()
        );
        return ExitCode::FAILURE;
    }
    let core = match std::env::current_exe() {
        Ok(path) => path.with_file_name(CORE),
        Err(error) => {
            eprintln!("error: cannot find the tfload executable's own path: {error}");
            return ExitCode::FAILURE;
        }
    };
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
    eprintln!(
        "error: cannot start {}: {error}. Install tfload-core beside tfload (cargo build puts both in target/).",
        core.display()
    );
    ExitCode::FAILURE
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
