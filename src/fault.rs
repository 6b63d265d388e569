//! Fault injection for the crash tests: with `TFLOAD_FAULT_AT=<point>` in the environment, the
//! process kills itself with SIGKILL when it reaches that point, exactly as `kill -9` at that
//! moment would. Unset (always, outside tests), every point is a no-op that costs one load.
//!
//! Points: `checkpoint-built` (a checkpoint's folder is complete but not yet renamed into
//! place), `model-assembled` (the trained model's files are in the working directory),
//! `input-copy-removed`, `output-moved-aside` (`--overwrite`: the old output renamed away, the
//! new one not yet in place), `output-placed` (the new output in place, the old one not yet
//! removed). `<point>:N` dies the N-th time the point is reached (counting from 1).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const FAULT_VARIABLE: &str = "TFLOAD_FAULT_AT";

/// Dies by SIGKILL here when `TFLOAD_FAULT_AT` names `point`.
pub(crate) fn point(point: &str) {
    static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let target = TARGET.get_or_init(|| {
        let value = std::env::var(FAULT_VARIABLE).ok()?;
        Some(match value.split_once(':') {
            Some((name, nth)) => (name.to_string(), nth.parse().unwrap_or(1)),
            None => (value, 1),
        })
    });
    let Some((name, nth)) = target else {
        return;
    };
    if name == point && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        log::warn!("{FAULT_VARIABLE}={point}: killing this process");
        // SAFETY: raise() has no memory-safety preconditions; SIGKILL ends the process here.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
