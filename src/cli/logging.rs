//! Logging set-up: `log` records through env_logger on stderr, and TensorFlow's own C++ logging
//! silenced unless the user asks for it with `-v` or `TF_CPP_MIN_LOG_LEVEL`.

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
    let rust_log_set = std::env::var_os("RUST_LOG").is_some();
    if verbose == 0 && !rust_log_set && std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        // TensorFlow reads this on its first log call, which comes after this point.
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "3");
    }
}
