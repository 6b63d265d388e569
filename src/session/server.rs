//! A TensorFlow gRPC server in this process (`TF_NewServer` and friends, which the `tensorflow`
//! crate does not wrap): what a multi-worker run starts before it loads its model, so that the
//! model's session, whose target is [`Server::target`], runs its collective ops with the other
//! tasks of the cluster. The unsafe C calls stay inside this module.

use std::ffi::CStr;

use tensorflow_sys as tf;

use crate::error::{Error, Result};

/// A started TensorFlow server (`TF_NewServer` + `TF_ServerStart`).
///
/// # Threads
///
/// The server runs on TensorFlow's own threads; this handle only starts it, names its target
/// and stops it. It is `Send + Sync`: TensorFlow's server object is thread-safe.
///
/// # Shutdown
///
/// TensorFlow's gRPC server cannot be stopped cleanly (`TF_ServerStop` answers "Unimplemented"
/// while it runs) and deleting a running one is not safe, so dropping a `Server` asks it to stop
/// and, unless it did, leaves it to the end of the process.
pub struct Server {
    raw: *mut tf::TF_Server,
    target: String,
}

// SAFETY: TF_Server is a C++ ServerInterface, whose methods are safe to call from any thread;
// the pointer is owned by this value alone and used only through &self / Drop.
unsafe impl Send for Server {}
// SAFETY: as above; `target` is an owned String.
unsafe impl Sync for Server {}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("target", &self.target).finish()
    }
}

impl Server {
    /// Creates and starts a server from a serialized `tensorflow.ServerDef`; `what` names it in
    /// errors (e.g. "task worker:1 at localhost:2223").
    pub fn start(server_def: &[u8], what: &str) -> Result<Server> {
        let status = Status::new();
        // SAFETY: `server_def` is a valid buffer of its length for the call; `status` is live.
        let raw = unsafe { tf::TF_NewServer(server_def.as_ptr().cast(), server_def.len(), status.raw) };
        status.check(&format!("creating the TensorFlow server of {what}"))?;
        if raw.is_null() {
            return Err(Error::Server { what: what.to_string(), message: "TF_NewServer returned nothing".into() });
        }
        // SAFETY: `raw` is a server TF_NewServer just returned.
        let target = unsafe { CStr::from_ptr(tf::TF_ServerTarget(raw)) }.to_string_lossy().into_owned();
        let server = Server { raw, target };
        let status = Status::new();
        // SAFETY: `server.raw` is a live, not yet started server.
        unsafe { tf::TF_ServerStart(server.raw, status.raw) };
        status.check(&format!("starting the TensorFlow server of {what}"))?;
        Ok(server)
    }

    /// The session target of this server (`grpc://localhost:PORT`).
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let status = Status::new();
        // SAFETY: `self.raw` is live until here; stopping a started server is allowed.
        unsafe { tf::TF_ServerStop(self.raw, status.raw) };
        if status.code() == tf::TF_Code::TF_OK {
            // SAFETY: the server is stopped, so deleting it joins no running thread.
            unsafe { tf::TF_DeleteServer(self.raw) };
        }
    }
}

/// An owned `TF_Status`.
struct Status {
    raw: *mut tf::TF_Status,
}

impl Status {
    fn new() -> Status {
        // SAFETY: TF_NewStatus has no preconditions.
        Status { raw: unsafe { tf::TF_NewStatus() } }
    }

    fn code(&self) -> tf::TF_Code {
        // SAFETY: `self.raw` is live.
        unsafe { tf::TF_GetCode(self.raw) }
    }

    /// `Ok` for TF_OK, else an error saying what was being done and TensorFlow's message.
    fn check(&self, what: &str) -> Result<()> {
        if self.code() == tf::TF_Code::TF_OK {
            return Ok(());
        }
        // SAFETY: `self.raw` is live; TF_Message returns a NUL-terminated string it owns.
        let message = unsafe { CStr::from_ptr(tf::TF_Message(self.raw)) }.to_string_lossy().into_owned();
        Err(Error::Server { what: what.to_string(), message })
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        // SAFETY: `self.raw` came from TF_NewStatus and is deleted once.
        unsafe { tf::TF_DeleteStatus(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_server_def_is_an_error_not_a_crash() {
        let error = Server::start(&[0xff, 0xff, 0xff], "a test server").unwrap_err().to_string();
        assert!(error.contains("a test server"), "{error}");
    }
}
