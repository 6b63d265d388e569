//! One training run per output at a time: an OS file lock beside `--out`, held for the whole run
//! and released by the operating system when the process ends, however it ends (kill -9
//! included), so a stale lock can never block a later run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::output_dir::io_error as io;

/// An exclusive lock on the output `out` (and so on its working directory `OUT.partial`).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `out`, or fails naming the process that holds it.
    pub fn acquire(out: &Path) -> Result<RunLock> {
        let path = lock_path(out);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Output {
                path: out.to_path_buf(),
                problem: format!("its folder cannot be created ({source}). Choose a writable --out"),
            })?;
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(out, &holder(&mut file))),
            Err(TryLockError::Error(source)) => return Err(Error::Io { path, source }),
        }
        file.set_len(0).map_err(io(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        write!(file, "{}", std::process::id()).map_err(io(&path))?;
        file.flush().map_err(io(&path))?;
        Ok(RunLock { file, path })
    }
}

impl Drop for RunLock {
    /// Removes the lock file, then closes it (which releases the lock).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// `.NAME.tfload-lock` beside `out`: outside both `out` and `OUT.partial`, which are renamed and
/// replaced during a run.
pub fn lock_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.tfload-lock"))
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("process {pid}"),
        Err(_) => "another process".to_string(),
    }
}

fn in_use(out: &Path, holder: &str) -> Error {
    Error::Output {
        path: out.to_path_buf(),
        problem: format!(
            "is in use: {holder} is training into it (or into {}). Wait for that run to end or stop it, or choose another --out; the lock is released when that process exits",
            crate::train::state::partial_dir(out).display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_output_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = RunLock::acquire(&out).unwrap();
        let error = RunLock::acquire(&out).unwrap_err().to_string();
        assert!(error.contains(&format!("process {}", std::process::id())), "{error}");
        assert!(error.contains("is in use"), "{error}");
        drop(first);
        assert!(!lock_path(&out).exists());
        drop(RunLock::acquire(&out).unwrap());
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::write(lock_path(&out), "999999").unwrap();
        drop(RunLock::acquire(&out).unwrap());
    }
}
