//! Logging set-up: `log` records through env_logger on stderr. TensorFlow's own C++ log is
//! silenced before the library loads, by the `tfload` launcher (src/launcher.rs).

/// Sets up logging for a verbosity count (`-v` = 1) or `--quiet`.
pub fn init(verbose: u8, quiet: bool) {
    let default_level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp(None)
        .init();
}
