//! Puts back the stderr that the `tfload` launcher set aside while libtensorflow loaded (see
//! src/launcher.rs): the one piece of descriptor juggling in the program, kept here.

/// Restores stderr from the descriptor named by `TFLOAD_SAVED_STDERR_FD`, if the launcher set one.
pub fn restore_from_launcher() {
    let Some(fd) = std::env::var("TFLOAD_SAVED_STDERR_FD").ok().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    std::env::remove_var("TFLOAD_SAVED_STDERR_FD");
    // SAFETY: `fd` is the launcher's duplicate of the user's stderr, inherited across exec and
    // used by nothing else; dup2 onto 2 and close are plain descriptor calls.
    unsafe {
        if libc::dup2(fd, 2) >= 0 {
            libc::close(fd);
        }
    }
}
