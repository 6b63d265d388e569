//! TFRecord files, the container of `tf.io.TFRecordWriter` and of TensorBoard event files: a
//! sequence of records, each framed as
//!
//! ```text
//! u64 length (little-endian) | u32 masked CRC32C of length | data | u32 masked CRC32C of data
//! ```
//!
//! [`Shard::open`] reads a file once from start to end, checking both checksums of every record
//! and noting where each record starts, so that records can afterwards be read in any order by
//! offset (the seeded shuffle of the batch loader) from several threads at once. The
//! `tensorflow` crate's `io::RecordReader` also checks the checksums, but it reads a file cut
//! inside a record header as a clean end of file and does not say where records are, so the
//! scanning here is tfload's own; writing uses that crate's `io::RecordWriter`.
//!
//! Compressed files (GZIP or ZLIB, `TFRecordOptions(compression_type=...)` in Python) cannot be
//! read by offset. They are decompressed once, on open, into an unnamed temporary file (the
//! operating system removes it when the shard is dropped, or if the process dies) and then read
//! like plain files, so memory use does not grow with the data; it costs the decompressed size
//! on the temporary folder's disk (`TMPDIR`). Offsets in messages about such files are offsets
//! in the decompressed stream.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::read::{MultiGzDecoder, ZlibDecoder};

use crate::error::{Error, Result};

/// Bytes of a record header: length and its checksum.
const HEADER: u64 = 12;
/// Bytes of the data checksum after each record.
const FOOTER: u64 = 4;

/// The most data one record may hold: 2 GiB, protobuf's own limit on a message such as a
/// `tf.train.Example` or an `Event`. The length field is checked against it and against what is
/// left of the (decompressed) file before anything is allocated.
pub const MAX_RECORD_BYTES: u64 = 2 << 30;

pub use crate::formats::crc::masked_crc32c;

/// How a TFRecord file is compressed (Python's `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Recognised from the first bytes: a valid record header is a plain file, else the GZIP
    /// or ZLIB magic bytes say which.
    #[default]
    Auto,
    /// Not compressed (`compression_type=""`).
    None,
    /// GZIP (`compression_type="GZIP"`).
    Gzip,
    /// ZLIB (`compression_type="ZLIB"`).
    Zlib,
}

impl Compression {
    /// Decides `Auto` from a file's first bytes (taking an unrecognised file as plain, whose
    /// first record then fails its check); other values are returned as they are.
    fn resolve(self, path: &Path) -> Result<Compression> {
        if self != Compression::Auto {
            return Ok(self);
        }
        Ok(Compression::detect(path)?.unwrap_or(Compression::None))
    }

    /// The compression of a TFRecord file recognised from its first bytes; `None` when they are
    /// neither a valid record header, nor GZIP or ZLIB magic bytes (not a TFRecord file). An
    /// empty file is a plain TFRecord file without records.
    pub fn detect(path: &Path) -> Result<Option<Compression>> {
        let mut head = Vec::with_capacity(HEADER as usize);
        File::open(path).map_err(io(path))?.take(HEADER).read_to_end(&mut head).map_err(io(path))?;
        Ok(match head.as_slice() {
            [] => Some(Compression::None),
            _ if valid_header(&head) => Some(Compression::None),
            [0x1f, 0x8b, ..] => Some(Compression::Gzip),
            [0x78, second, ..] if (0x7800u16 | u16::from(*second)).is_multiple_of(31) => Some(Compression::Zlib),
            _ => None,
        })
    }
}

/// A record length from a header whose checksum matched, as a buffer size: at most
/// [`MAX_RECORD_BYTES`], and with its data checksum within the `after_header` bytes left.
fn checked_record_len(len: u64, offset: u64, after_header: u64) -> std::result::Result<usize, String> {
    if len > MAX_RECORD_BYTES {
        return Err(format!(
            "the record at offset {offset} declares {len} bytes, over the limit of {MAX_RECORD_BYTES} bytes (2 GiB) a record may hold (corrupt)"
        ));
    }
    if len + FOOTER > after_header {
        return Err(format!(
            "the record at offset {offset} holds {len} bytes, but the file ends {after_header} bytes later (truncated)"
        ));
    }
    usize::try_from(len).map_err(|_| format!("the record at offset {offset} ({len} bytes) does not fit in memory"))
}

/// Whether `head` starts with a record header whose length checksum matches.
fn valid_header(head: &[u8]) -> bool {
    head.len() >= HEADER as usize
        && masked_crc32c(&head[..8]) == u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"))
}

/// What to do with a record that fails its checksum or is cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorrupt {
    /// Fail, naming the file and the record's offset.
    #[default]
    Fail,
    /// Leave it out and count it. A damaged length field or a cut-off end leaves out the rest of
    /// the file (there is no way to find the next record), counted as one.
    Skip,
}

/// Where one record's data is in a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    /// Offset of the record's header (what messages name).
    pub offset: u64,
    /// Bytes of data.
    pub len: u64,
}

/// One TFRecord file, indexed: its records can be read by position, from any thread.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    file: File,
    compression: Compression,
    records: Vec<RecordSpan>,
    skipped: usize,
}

impl Shard {
    /// Opens and indexes `path`, checking every record's checksums; `visit` sees each good
    /// record's position, span and data in file order (to read labels on the way, say).
    pub fn open(
        path: &Path,
        compression: Compression,
        on_corrupt: OnCorrupt,
        mut visit: impl FnMut(usize, RecordSpan, &[u8]) -> Result<()>,
    ) -> Result<Shard> {
        let compression = compression.resolve(path)?;
        let (file, mut skipped) = readable_file(path, compression, on_corrupt)?;
        let size = file.metadata().map_err(io(path))?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        reader.rewind().map_err(io(path))?;
        let mut records = Vec::new();
        let mut scan = Scan { path, compression, reader, offset: 0, size, buffer: Vec::new() };
        loop {
            match scan.next_record() {
                Ok(None) => break,
                Ok(Some(span)) => {
                    visit(records.len(), span, &scan.buffer)?;
                    records.push(span);
                }
                Err(Corrupt { problem, resumable }) if on_corrupt == OnCorrupt::Skip => {
                    log::warn!("{}: skipping {problem}", path.display());
                    skipped += 1;
                    if !resumable {
                        break;
                    }
                }
                Err(Corrupt { problem, .. }) => return Err(corrupt_error(path, compression, &problem)),
            }
        }
        Ok(Shard { path: path.to_path_buf(), file, compression, records, skipped })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its compression (never `Auto`).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Number of good records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no good record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Where record `index` is.
    pub fn span(&self, index: usize) -> RecordSpan {
        self.records[index]
    }

    /// Records left out as corrupt (with [`OnCorrupt::Skip`]).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The data of record `index` (checked on open; read again from disk, not re-checked).
    pub fn read(&self, index: usize) -> Result<Vec<u8>> {
        let span = self.records[index];
        let mut data = vec![0; span.len as usize];
        self.file.read_exact_at(&mut data, span.offset + HEADER).map_err(io(&self.path))?;
        Ok(data)
    }
}

/// The file to read records from: `path` itself, or a temporary file with its decompressed
/// content; and 1 if a damaged compressed stream was cut short (with [`OnCorrupt::Skip`]).
fn readable_file(path: &Path, compression: Compression, on_corrupt: OnCorrupt) -> Result<(File, usize)> {
    let file = File::open(path).map_err(io(path))?;
    let mut decoder: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zlib => Box::new(ZlibDecoder::new(BufReader::new(file))),
        Compression::None | Compression::Auto => return Ok((file, 0)),
    };
    let mut plain = tempfile::tempfile().map_err(io(&std::env::temp_dir()))?;
    match std::io::copy(&mut decoder, &mut plain) {
        Ok(_) => Ok((plain, 0)),
        // What was decompressed before the damage is kept; the record it cut shows as truncated.
        Err(e) if on_corrupt == OnCorrupt::Skip => {
            log::warn!("{}: the compressed stream is damaged ({e}); reading what precedes the damage", path.display());
            Ok((plain, 1))
        }
        Err(e) => Err(Error::TfRecord {
            path: path.to_path_buf(),
            problem: format!(
                "is not a readable {} stream ({e}). The file is truncated or corrupt; write it again, or pass --skip-corrupt to read the records before the damage",
                compression_name(compression)
            ),
        }),
    }
}

fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => "GZIP",
        Compression::Zlib => "ZLIB",
        Compression::None | Compression::Auto => "uncompressed",
    }
}

fn corrupt_error(path: &Path, compression: Compression, problem: &str) -> Error {
    let stream = if compression == Compression::None { "" } else { " (offsets in the decompressed stream)" };
    Error::TfRecord {
        path: path.to_path_buf(),
        problem: format!(
            "{problem}{stream}. Write the file again, or pass --skip-corrupt to leave out corrupt records (they are counted)"
        ),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// A record that cannot be read; `resumable` when the next record can still be found.
struct Corrupt {
    problem: String,
    resumable: bool,
}

/// A sequential pass over a (plain) record file.
struct Scan<'a, R> {
    path: &'a Path,
    compression: Compression,
    reader: R,
    offset: u64,
    size: u64,
    /// The data of the last record read.
    buffer: Vec<u8>,
}

impl<R: Read> Scan<'_, R> {
    /// The next record (its data left in `buffer`), `None` at a clean end of file.
    fn next_record(&mut self) -> std::result::Result<Option<RecordSpan>, Corrupt> {
        let offset = self.offset;
        let left = self.size - offset;
        if left == 0 {
            return Ok(None);
        }
        let stop = |problem: String| Corrupt { problem, resumable: false };
        if left < HEADER {
            return Err(stop(format!(
                "the file ends {left} bytes into the header of the record at offset {offset} (truncated)"
            )));
        }
        let mut header = [0u8; HEADER as usize];
        self.fill(&mut header).map_err(stop)?;
        if !valid_header(&header) {
            return Err(stop(format!(
                "the length of the record at offset {offset} fails its CRC check (the file is corrupt{})",
                if offset == 0 && self.compression == Compression::None { ", or not a TFRecord file" } else { "" }
            )));
        }
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let len = checked_record_len(len, offset, left - HEADER).map_err(stop)?;
        self.buffer.resize(len, 0);
        let mut crc = [0u8; FOOTER as usize];
        let mut data = std::mem::take(&mut self.buffer);
        let read = self.fill(&mut data).and_then(|()| self.fill(&mut crc));
        self.buffer = data;
        read.map_err(stop)?;
        self.offset += HEADER + len as u64 + FOOTER;
        if masked_crc32c(&self.buffer) != u32::from_le_bytes(crc) {
            return Err(Corrupt {
                problem: format!(
                    "the data of the record at offset {offset} ({len} bytes) fails its CRC check (corrupt)"
                ),
                resumable: true,
            });
        }
        Ok(Some(RecordSpan { offset, len: len as u64 }))
    }

    fn fill(&mut self, buf: &mut [u8]) -> std::result::Result<(), String> {
        self.reader
            .read_exact(buf)
            .map_err(|e| format!("reading {} at offset {} failed ({e})", self.path.display(), self.offset))
    }
}

/// The files a `--data` argument names: the path itself, or, when it holds `*`, `?` or `[`,
/// every file matching it (the pattern may span folders: `shards/*/train-*.tfrecord`), sorted as
/// `tf.io.gfile.glob` sorts them.
pub fn expand(pattern: &Path) -> Result<Vec<PathBuf>> {
    let text = pattern.to_string_lossy();
    if !text.contains(['*', '?', '[']) || pattern.exists() {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let matcher = globset::GlobBuilder::new(&text)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::InvalidOption(format!("`{text}` is not a valid file pattern ({e})")))?
        .compile_matcher();
    // Walk from the longest folder prefix without pattern characters.
    let literal: PathBuf =
        pattern.components().take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '['])).collect();
    let depth = pattern.components().count() - literal.components().count();
    let mut found = Vec::new();
    walk(if literal.as_os_str().is_empty() { Path::new(".") } else { &literal }, depth, &mut |path| {
        let relative = path.strip_prefix("./").unwrap_or(path);
        if matcher.is_match(relative) && path.is_file() {
            found.push(relative.to_path_buf());
        }
    });
    found.sort();
    if found.is_empty() {
        return Err(Error::TfRecord {
            path: pattern.to_path_buf(),
            problem: "matches no file. Check the pattern (quote it so that the shell does not expand it)".to_string(),
        });
    }
    Ok(found)
}

/// Calls `found` for every entry `depth` levels under `dir`.
fn walk(dir: &Path, depth: usize, found: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if depth <= 1 {
            found(&path);
        } else if path.is_dir() {
            walk(&path, depth - 1, found);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Writes `records` as a plain TFRecord file.
    pub(crate) fn write_records(path: &Path, records: &[&[u8]]) {
        let mut file = File::create(path).unwrap();
        let mut writer = tensorflow::io::RecordWriter::new(&mut file);
        for record in records {
            writer.write_record(record).unwrap();
        }
    }

    fn read_all(shard: &Shard) -> Vec<Vec<u8>> {
        (0..shard.len()).map(|i| shard.read(i).unwrap()).collect()
    }

    fn open(path: &Path, on_corrupt: OnCorrupt) -> Result<Shard> {
        Shard::open(path, Compression::Auto, on_corrupt, |_, _, _| Ok(()))
    }

    #[test]
    fn records_are_indexed_and_read_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tfrecord");
        write_records(&path, &[b"first", b"", b"third record"]);
        let mut seen = Vec::new();
        let shard = Shard::open(&path, Compression::Auto, OnCorrupt::Fail, |i, span, data| {
            seen.push((i, span.offset, data.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(shard.compression(), Compression::None);
        assert_eq!(shard.read(2).unwrap(), b"third record");
        assert_eq!(read_all(&shard), vec![b"first".to_vec(), vec![], b"third record".to_vec()]);
        assert_eq!(seen[1], (1, 21, vec![]));
    }

    #[test]
    fn gzip_and_zlib_files_are_recognised_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.tfrecord");
        write_records(&plain, &[b"one", b"two"]);
        let bytes = std::fs::read(&plain).unwrap();
        let gz = dir.path().join("a.tfrecord.gz");
        let mut encoder = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
        encoder.write_all(&bytes).unwrap();
        encoder.finish().unwrap();
        let zlib = dir.path().join("a.tfrecord.zz");
        let mut encoder = flate2::write::ZlibEncoder::new(File::create(&zlib).unwrap(), flate2::Compression::default());
        encoder.write_all(&bytes).unwrap();
        encoder.finish().unwrap();
        for (path, expected) in [(&gz, Compression::Gzip), (&zlib, Compression::Zlib)] {
            let shard = open(path, OnCorrupt::Fail).unwrap();
            assert_eq!(shard.compression(), expected);
            assert_eq!(read_all(&shard), vec![b"one".to_vec(), b"two".to_vec()]);
        }
    }

    #[test]
    fn a_bad_data_checksum_names_the_offset_or_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tfrecord");
        write_records(&path, &[b"aaaa", b"bbbb", b"cccc"]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20 + 12] ^= 1; // the data of the second record, at offset 20
        std::fs::write(&path, &bytes).unwrap();
        let error = open(&path, OnCorrupt::Fail).unwrap_err().to_string();
        assert!(error.contains("a.tfrecord") && error.contains("record at offset 20"), "{error}");
        assert!(error.contains("CRC") && error.contains("--skip-corrupt"), "{error}");
        let shard = open(&path, OnCorrupt::Skip).unwrap();
        assert_eq!((shard.skipped(), read_all(&shard)), (1, vec![b"aaaa".to_vec(), b"cccc".to_vec()]));
    }

    #[test]
    fn a_truncated_file_is_an_error_or_loses_only_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tfrecord");
        write_records(&path, &[b"aaaa", b"bbbb"]);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [bytes.len() - 2, 25] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let error = open(&path, OnCorrupt::Fail).unwrap_err().to_string();
            assert!(error.contains("offset 20") && error.contains("truncated"), "cut at {cut}: {error}");
            let shard = open(&path, OnCorrupt::Skip).unwrap();
            assert_eq!((shard.skipped(), shard.len()), (1, 1));
        }
    }

    /// A record header declaring `len` bytes, with a valid length checksum.
    fn header_declaring(len: u64) -> Vec<u8> {
        let mut header = len.to_le_bytes().to_vec();
        header.extend(masked_crc32c(&header).to_le_bytes());
        header
    }

    #[test]
    fn a_length_near_2_64_with_a_valid_crc_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.tfrecord");
        for len in [u64::MAX, u64::MAX - 3, u64::MAX - 15, 1 << 40, MAX_RECORD_BYTES + 1] {
            let mut bytes = header_declaring(len);
            bytes.extend([0u8; 64]);
            std::fs::write(&path, &bytes).unwrap();
            for on_corrupt in [OnCorrupt::Fail, OnCorrupt::Skip] {
                let result = open(&path, on_corrupt);
                if on_corrupt == OnCorrupt::Skip {
                    assert_eq!(result.map(|s| (s.len(), s.skipped())).unwrap(), (0, 1));
                    continue;
                }
                let error = result.unwrap_err().to_string();
                assert!(error.contains("huge.tfrecord") && error.contains(&len.to_string()), "{len}: {error}");
            }
        }
    }

    #[test]
    fn a_gzip_stream_declaring_a_huge_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.tfrecord.gz");
        let mut encoder = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::default());
        encoder.write_all(&header_declaring(u64::MAX - 3)).unwrap();
        encoder.write_all(&[0u8; 100]).unwrap();
        encoder.finish().unwrap();
        let error = open(&path, OnCorrupt::Fail).unwrap_err().to_string();
        assert!(error.contains("over the limit") && error.contains("decompressed"), "{error}");
    }

    #[test]
    fn every_single_byte_change_of_a_record_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tfrecord");
        write_records(&path, &[b"first record", b"", b"third"]);
        let original = std::fs::read(&path).unwrap();
        for at in 0..original.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bytes = original.clone();
                bytes[at] ^= flip;
                std::fs::write(&path, &bytes).unwrap();
                assert!(open(&path, OnCorrupt::Fail).is_err(), "byte {at} ^ {flip:#04x} accepted");
                let skipped = open(&path, OnCorrupt::Skip).unwrap();
                assert!(skipped.skipped() >= 1 && skipped.len() < 3, "byte {at} ^ {flip:#04x}");
            }
        }
    }

    #[test]
    fn a_record_a_little_longer_than_the_file_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tfrecord");
        let mut bytes = header_declaring(1000);
        bytes.extend([7u8; 500]);
        std::fs::write(&path, &bytes).unwrap();
        let error = open(&path, OnCorrupt::Fail).unwrap_err().to_string();
        assert!(error.contains("holds 1000 bytes") && error.contains("truncated"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_a_tfrecord_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "just some text, long enough for a header").unwrap();
        let error = open(&path, OnCorrupt::Fail).unwrap_err().to_string();
        assert!(error.contains("or not a TFRecord file"), "{error}");
    }

    #[test]
    fn globs_match_sorted_files_across_folders() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b/train-1.tfrecord", "a/train-2.tfrecord", "a/train-0.tfrecord", "a/val-0.tfrecord"] {
            std::fs::create_dir_all(dir.path().join(name).parent().unwrap()).unwrap();
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found = expand(&dir.path().join("*/train-*.tfrecord")).unwrap();
        let names: Vec<String> =
            found.iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a/train-0.tfrecord", "a/train-2.tfrecord", "b/train-1.tfrecord"]);
        let error = expand(&dir.path().join("*/test-*.tfrecord")).unwrap_err().to_string();
        assert!(error.contains("matches no file"), "{error}");
    }
}
