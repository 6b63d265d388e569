//! TensorBoard event files: a TFRecord file of `tensorflow.Event` protos, a `file_version` event
//! (`brain.Event:2`) first, then one event per scalar, a `Summary` with a `simple_value`
//! (TensorBoard's scalars plugin and `tf.compat.v1.train.summary_iterator` read these). Files are
//! named `events.out.tfevents.<seconds>.<host>.<pid>.<n>.v2`, as TensorFlow names them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::{event, session_log, summary, Event, SessionLog, Summary};

/// The first event of every file, which TensorBoard checks.
pub(crate) const FILE_VERSION: &str = "brain.Event:2";
/// Longest time written events wait in memory before being flushed.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// One event file being written.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
    flushed: Instant,
}

impl EventWriter {
    /// Creates a new event file in `dir` (made if missing) and writes its version event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        static FILES: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let name = format!(
            "events.out.tfevents.{:010}.{}.{}.{}.v2",
            now().as_secs(),
            hostname(),
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = BufWriter::new(File::create(&path).map_err(io(&path))?);
        let mut writer = EventWriter { path, file, flushed: Instant::now() };
        writer.write(0, event::What::FileVersion(FILE_VERSION.to_string()))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one scalar summary.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        let value =
            summary::Value { tag: tag.to_string(), value: Some(summary::value::Value::SimpleValue(value as f32)) };
        self.write(step, event::What::Summary(Summary { value: vec![value] }))
    }

    /// Marks a restart at `step`: TensorBoard drops events of this run logged at `step` or later.
    pub fn restart_at(&mut self, step: u64) -> Result<()> {
        let log = SessionLog { status: session_log::SessionStatus::Start as i32, ..SessionLog::default() };
        self.write(step, event::What::SessionLog(log))
    }

    /// Writes buffered events to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.flushed = Instant::now();
        self.file.flush().map_err(io(&self.path))
    }

    fn write(&mut self, step: u64, what: event::What) -> Result<()> {
        let event = Event { wall_time: now().as_secs_f64(), step: step as i64, what: Some(what) };
        tensorflow::io::RecordWriter::new(&mut self.file)
            .write_record(&event.encode_to_vec())
            .map_err(io(&self.path))?;
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if status == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
