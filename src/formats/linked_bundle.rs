//! Checkpoints that share the bytes of the variables that did not change. A run that freezes a
//! model's base changes only its head (and the head's optimizer slots), yet a checkpoint written
//! by `SaveV2` writes every variable again: 270 MB per epoch for ResNet50 with Adam slots, where
//! the head's values are 12 KB. A *linked* bundle is a complete TensorFlow checkpoint whose data
//! shards are the run's base bundle (the checkpoint the run started from), hard-linked, plus one
//! new shard with the values that differ from it. Its index names, for each key, the shard and
//! offset of its bytes, as TensorFlow's own multi-shard checkpoints do, so TensorFlow, Python and
//! tfload read it like any other. Whether a value is unchanged is decided by comparing its bytes
//! with the base's, byte for byte, never by assumption.
//!
//! A linked bundle is for a run's own checkpoints. [`copy_as_one_shard`] turns one into the usual
//! single-shard bundle (every checksum checked on the way) for the model a run publishes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read as _, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::checkpoint_index::CheckpointIndex;
use crate::formats::checkpoint_writer::{
    data_error, data_file_name, entry_crc32c, read_index, write_index, INDEX_FILE,
};
use crate::output_dir::io_error;
use crate::proto;
use crate::tensor::dtype::DType;

/// `BundleHeaderProto.endianness` of a big-endian bundle.
const BIG_ENDIAN: i32 = 1;

/// One value to save: its checkpoint key, dtype, dimensions and bytes as a bundle stores them.
#[derive(Debug, Clone, Copy)]
pub struct SavedValue<'a> {
    /// The checkpoint key.
    pub key: &'a str,
    /// Its element type.
    pub dtype: DType,
    /// Its dimensions.
    pub dims: &'a [u64],
    /// Its bytes in bundle layout (little-endian elements; TensorFlow's layout for strings).
    pub bytes: &'a [u8],
}

/// What one linked write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkedWrite {
    /// Values found unchanged, whose bytes stay in the base's shards.
    pub linked: usize,
    /// Values written into the new shard.
    pub written: usize,
    /// Bytes written into the new shard.
    pub written_bytes: u64,
}

/// The bundle a run's checkpoints link to: its index, read once, and its data shards, open.
#[derive(Debug)]
pub struct BaseBundle {
    dir: PathBuf,
    header: proto::BundleHeaderProto,
    entries: HashMap<String, proto::BundleEntryProto>,
    shards: Vec<File>,
    /// Keys whose base bytes have been checked against their stored checksum.
    checked: HashSet<String>,
    /// Reused for reading base bytes.
    buffer: Vec<u8>,
}

impl BaseBundle {
    /// Hard-links the bundle in `variables_dir` (its index and data shards) into the new folder
    /// `into` and opens the links, so that the base stays whole whatever later happens to
    /// `variables_dir` (a checkpoint pruned, an input copy removed). `into` must not exist.
    pub fn link(variables_dir: &Path, into: &Path) -> Result<BaseBundle> {
        let index = variables_dir.join(INDEX_FILE);
        let (header, _) = read_index(&index)?;
        std::fs::create_dir(into).map_err(io_error(into))?;
        let num_shards = header.num_shards.max(1);
        let names = (0..num_shards).map(|shard| data_file_name(shard, num_shards)).chain([INDEX_FILE.to_string()]);
        for name in names {
            let (from, to) = (variables_dir.join(&name), into.join(&name));
            std::fs::hard_link(&from, &to).map_err(io_error(&from))?;
        }
        BaseBundle::open(into)
    }

    /// Opens the bundle in `variables_dir` as a base. Big-endian and partitioned bundles are
    /// refused (tfload writes neither).
    pub fn open(variables_dir: &Path) -> Result<BaseBundle> {
        let index = variables_dir.join(INDEX_FILE);
        let (header, records) = read_index(&index)?;
        if header.endianness == BIG_ENDIAN {
            return Err(Error::CorruptCheckpointIndex {
                path: index,
                problem: "the bundle is big-endian, which tfload does not write".to_string(),
            });
        }
        let num_shards = header.num_shards.max(1);
        let shards = (0..num_shards)
            .map(|shard| {
                let path = variables_dir.join(data_file_name(shard, num_shards));
                File::open(&path).map_err(io_error(&path))
            })
            .collect::<Result<Vec<File>>>()?;
        Ok(BaseBundle {
            dir: variables_dir.to_path_buf(),
            header: proto::BundleHeaderProto { num_shards, ..header },
            entries: records.into_iter().collect(),
            shards,
            checked: HashSet::new(),
            buffer: Vec::new(),
        })
    }

    /// The folder of the base's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes into `variables_dir` (created; it must not exist) a bundle of exactly `values`:
    /// the base's shards hard-linked as its first shards, and one more shard with every value
    /// whose bytes differ from the base's (or that the base lacks, or whose base bytes fail their
    /// checksum). The new shard and the index are synced before this returns.
    pub fn write_linked(&mut self, values: &[SavedValue<'_>], variables_dir: &Path) -> Result<LinkedWrite> {
        let base_shards = self.header.num_shards;
        let num_shards = base_shards + 1;
        std::fs::create_dir(variables_dir).map_err(io_error(variables_dir))?;
        for shard in 0..base_shards {
            let from = self.dir.join(data_file_name(shard, base_shards));
            let to = variables_dir.join(data_file_name(shard, num_shards));
            std::fs::hard_link(&from, &to).map_err(io_error(&from))?;
        }
        let data_path = variables_dir.join(data_file_name(base_shards, num_shards));
        let mut data = BufWriter::new(File::create(&data_path).map_err(io_error(&data_path))?);
        let mut records = Vec::with_capacity(values.len());
        let mut done = LinkedWrite::default();
        for value in values {
            let record = match self.unchanged(value) {
                Some(record) => {
                    done.linked += 1;
                    record
                }
                None => {
                    let record = new_record(value, base_shards, done.written_bytes)?;
                    data.write_all(value.bytes).map_err(io_error(&data_path))?;
                    done.written += 1;
                    done.written_bytes += value.bytes.len() as u64;
                    record
                }
            };
            records.push((value.key, record));
        }
        data.into_inner().map_err(|e| e.into_error()).and_then(|file| file.sync_all()).map_err(io_error(&data_path))?;
        records.sort_by(|a, b| a.0.cmp(b.0));
        let header = proto::BundleHeaderProto { num_shards, ..self.header.clone() };
        let index = variables_dir.join(INDEX_FILE);
        write_index(&index, &header, &records)?;
        File::open(&index).and_then(|file| file.sync_all()).map_err(io_error(&index))?;
        Ok(done)
    }

    /// The base's record of `value` when the base holds the same dtype, shape and bytes under its
    /// key, and those bytes pass their stored checksum.
    fn unchanged(&mut self, value: &SavedValue<'_>) -> Option<proto::BundleEntryProto> {
        let record = self.entries.get(value.key)?;
        let dims: Vec<u64> = record.shape.iter().flat_map(|s| &s.dim).map(|d| d.size as u64).collect();
        let same_kind = DType::from_proto(record.dtype) == value.dtype
            && dims == value.dims
            && record.size as u64 == value.bytes.len() as u64;
        let shard = self.shards.get(usize::try_from(record.shard_id).ok()?)?;
        if !same_kind {
            return None;
        }
        self.buffer.resize(value.bytes.len(), 0);
        shard.read_exact_at(&mut self.buffer, record.offset as u64).ok()?;
        if self.buffer != value.bytes {
            return None;
        }
        if !self.checked.contains(value.key) {
            if entry_crc32c(record, value.bytes) != Some(record.crc32c) {
                return None;
            }
            self.checked.insert(value.key.to_string());
        }
        Some(record.clone())
    }
}

/// The index record of `value`, written at `offset` of shard `shard`.
fn new_record(value: &SavedValue<'_>, shard: i32, offset: u64) -> Result<proto::BundleEntryProto> {
    let dim = value.dims.iter().map(|&size| proto::tensor_shape_proto::Dim { size: size as i64, name: String::new() });
    let mut record = proto::BundleEntryProto {
        dtype: value.dtype.to_proto(),
        shape: Some(proto::TensorShapeProto { dim: dim.collect(), unknown_rank: false }),
        shard_id: shard,
        offset: offset as i64,
        size: value.bytes.len() as i64,
        ..Default::default()
    };
    record.crc32c = entry_crc32c(&record, value.bytes).ok_or_else(|| Error::CheckpointReplace {
        key: value.key.to_string(),
        problem: "its bytes are not a string tensor of its shape".to_string(),
    })?;
    Ok(record)
}

/// Copies the bundle in `from` (a `variables/` folder, linked or not) into the new single-shard
/// bundle in `to` (created if needed): the entries of `order` first, in that order, then the
/// rest by key, each checked against its stored checksum on the way. With `order` the order in
/// which a `SaveV2` writes, the result is the bundle that `SaveV2` would have written.
///
/// With `draft` (see [`crate::formats::output_draft`]), that file becomes the new data shard:
/// each value's bytes are compared with the draft's at their place and written only where they
/// differ, so the result is the same bundle, byte for byte, whatever the draft held.
pub fn copy_as_one_shard(from: &Path, to: &Path, order: &[&str], draft: Option<&Path>) -> Result<()> {
    let index_path = from.join(INDEX_FILE);
    let (header, records) = read_index(&index_path)?;
    let num_shards = header.num_shards.max(1);
    let shards = (0..num_shards)
        .map(|shard| {
            let path = from.join(data_file_name(shard, num_shards));
            File::open(&path).map(|file| (path.clone(), file)).map_err(io_error(&path))
        })
        .collect::<Result<Vec<(PathBuf, File)>>>()?;
    let position: HashMap<&str, usize> = order.iter().enumerate().map(|(i, key)| (*key, i)).collect();
    let mut sorted: Vec<&(String, proto::BundleEntryProto)> = records.iter().collect();
    sorted.sort_by_key(|(key, _)| (position.get(key.as_str()).copied().unwrap_or(usize::MAX), key.clone()));

    std::fs::create_dir_all(to).map_err(io_error(to))?;
    let data_path = to.join(data_file_name(0, 1));
    let (mut data, mut patch) = open_shard(&data_path, draft)?;
    let mut buffer = Vec::new();
    let mut written = Vec::with_capacity(sorted.len());
    let mut run: Option<Run> = None;
    let mut offset = 0u64;
    for (key, record) in sorted {
        let Some((shard_path, shard)) = usize::try_from(record.shard_id).ok().and_then(|s| shards.get(s)) else {
            return Err(Error::CorruptCheckpointIndex {
                path: index_path,
                problem: format!("entry `{key}` names data shard {}, which the header does not count", record.shard_id),
            });
        };
        let length = shard.metadata().map_err(io_error(shard_path))?.len();
        let (start, size) = (record.offset as u64, record.size as u64);
        if start.checked_add(size).is_none_or(|end| end > length) {
            return Err(data_error(
                shard_path,
                key,
                format!(
                    "lies past the end of the file ({size} bytes at offset {start}, the file has {length}); the data file is truncated"
                ),
            ));
        }
        buffer.resize(size as usize, 0);
        shard.read_exact_at(&mut buffer, start).map_err(io_error(shard_path))?;
        if entry_crc32c(record, &buffer) != Some(record.crc32c) {
            return Err(data_error(
                shard_path,
                key,
                "fails its checksum (the masked CRC32C stored in variables.index)".to_string(),
            ));
        }
        let shard_index = record.shard_id as usize;
        match (&mut patch, &mut run) {
            (Some(patch), _) => patch.put(&data, &data_path, offset, &buffer)?,
            (None, Some(open)) if open.shard == shard_index && open.start + open.length == start => open.length += size,
            (None, _) => {
                if let Some(done) = run.take() {
                    done.copy(&shards[done.shard], &mut data, &data_path)?;
                }
                run = Some(Run { shard: shard_index, start, length: size });
            }
        }
        written.push((key.as_str(), proto::BundleEntryProto { shard_id: 0, offset: offset as i64, ..record.clone() }));
        offset += size;
    }
    if let Some(done) = run {
        done.copy(&shards[done.shard], &mut data, &data_path)?;
    }
    if let Some(patch) = &patch {
        data.set_len(offset).map_err(io_error(&data_path))?;
        log::debug!("{}: {} of {offset} bytes differed from the draft", data_path.display(), patch.written_bytes);
    }
    data.sync_all().map_err(io_error(&data_path))?;
    written.sort_by(|a, b| a.0.cmp(b.0));
    let header = proto::BundleHeaderProto { num_shards: 1, ..header };
    write_index(&to.join(INDEX_FILE), &header, &written)?;
    CheckpointIndex::read(&to.join(INDEX_FILE)).map(|_| ())
}

/// The new data shard at `data_path`: the draft moved there and opened to be patched, or, without
/// a draft (or when it cannot be moved), a new empty file to append to.
fn open_shard(data_path: &Path, draft: Option<&Path>) -> Result<(File, Option<Patch>)> {
    if let Some(draft) = draft.filter(|draft| draft.is_file()) {
        match std::fs::rename(draft, data_path) {
            Ok(()) => {
                let file = std::fs::OpenOptions::new().read(true).write(true).open(data_path);
                let file = file.map_err(io_error(data_path))?;
                let length = file.metadata().map_err(io_error(data_path))?.len();
                return Ok((file, Some(Patch { length, found: Vec::new(), written_bytes: 0 })));
            }
            Err(error) => {
                log::debug!("writing {} anew: the draft cannot be moved there ({error})", data_path.display())
            }
        }
    }
    Ok((File::create(data_path).map_err(io_error(data_path))?, None))
}

/// Writes values into a draft in place, only where its bytes differ.
struct Patch {
    /// The file's length.
    length: u64,
    /// The draft's bytes at a value's place, reused.
    found: Vec<u8>,
    /// Bytes written so far.
    written_bytes: u64,
}

impl Patch {
    /// Makes `bytes` the content of `data` at `offset`.
    fn put(&mut self, data: &File, data_path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
        let end = offset + bytes.len() as u64;
        let same = end <= self.length && {
            self.found.resize(bytes.len(), 0);
            data.read_exact_at(&mut self.found, offset).map_err(io_error(data_path))?;
            self.found == bytes
        };
        if !same {
            data.write_all_at(bytes, offset).map_err(io_error(data_path))?;
            self.written_bytes += bytes.len() as u64;
            self.length = self.length.max(end);
        }
        Ok(())
    }
}

/// Consecutive bytes of one source shard that go to the new shard as they are: a frozen base's
/// values lie in the base shard in the order the copy writes them, so copying them is a few
/// kernel-side copies (`copy_file_range`, through `std::io::copy`) instead of a write per value
/// (ResNet50 with Adam slots: 280 MB in about 0.1 s instead of 0.8 s on this machine).
struct Run {
    shard: usize,
    start: u64,
    length: u64,
}

impl Run {
    /// Appends this run's bytes of `shard` to `data`.
    fn copy(&self, (shard_path, shard): &(PathBuf, File), data: &mut File, data_path: &Path) -> Result<()> {
        let mut source = shard;
        source.seek(SeekFrom::Start(self.start)).map_err(io_error(shard_path))?;
        let copied = std::io::copy(&mut source.take(self.length), data).map_err(io_error(data_path))?;
        if copied != self.length {
            return Err(Error::Io {
                path: shard_path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{copied} of {} bytes at offset {} could be read", self.length, self.start),
                ),
            });
        }
        Ok(())
    }
}

/// The number of data shards of the bundle in `variables_dir`.
pub fn shard_count(variables_dir: &Path) -> Result<i32> {
    Ok(read_index(&variables_dir.join(INDEX_FILE))?.0.num_shards.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::checkpoint_writer::CheckpointWriter;
    use std::os::unix::fs::MetadataExt;

    const MLP_VARIABLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/saved_models/mlp_digits/variables");

    /// One entry of a bundle, read back: key, dtype, dims, bytes, and where it lies.
    struct Read {
        key: String,
        dtype: DType,
        dims: Vec<u64>,
        bytes: Vec<u8>,
        shard: i32,
        offset: i64,
    }

    impl Read {
        fn value(&self) -> SavedValue<'_> {
            SavedValue { key: &self.key, dtype: self.dtype, dims: &self.dims, bytes: &self.bytes }
        }
    }

    /// Every entry of the bundle in `variables_dir`, in key order (checksums not checked).
    fn entries(variables_dir: &Path) -> Vec<Read> {
        let (header, records) = read_index(&variables_dir.join(INDEX_FILE)).unwrap();
        let num_shards = header.num_shards.max(1);
        let shards: Vec<Vec<u8>> = (0..num_shards)
            .map(|s| std::fs::read(variables_dir.join(data_file_name(s, num_shards))).unwrap())
            .collect();
        records
            .into_iter()
            .map(|(key, record)| {
                let (start, size) = (record.offset as usize, record.size as usize);
                Read {
                    dtype: DType::from_proto(record.dtype),
                    dims: record.shape.iter().flat_map(|s| &s.dim).map(|d| d.size as u64).collect(),
                    bytes: shards[record.shard_id as usize][start..start + size].to_vec(),
                    shard: record.shard_id,
                    offset: record.offset,
                    key,
                }
            })
            .collect()
    }

    /// A copy of mlp_digits' variables in a temp dir (so no link ever points into the repository).
    fn base_copy() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let variables = dir.path().join("variables");
        std::fs::create_dir(&variables).unwrap();
        for name in [INDEX_FILE.to_string(), data_file_name(0, 1)] {
            std::fs::copy(Path::new(MLP_VARIABLES).join(&name), variables.join(&name)).unwrap();
        }
        (dir, variables)
    }

    /// The key of mlp_digits' `[10]` float entry that is not an optimizer slot (a bias).
    fn bias(reads: &[Read]) -> usize {
        reads
            .iter()
            .position(|r| r.dims == [10] && r.dtype == DType::Float32 && !r.key.starts_with("optimizer"))
            .unwrap()
    }

    #[test]
    fn only_changed_values_are_written_and_the_rest_stay_in_the_linked_base() {
        let (dir, variables) = base_copy();
        let mut base = BaseBundle::link(&variables, &dir.path().join("base")).unwrap();
        let mut reads = entries(&variables);
        let changed = bias(&reads);
        reads[changed].bytes = (0..10).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
        let values: Vec<SavedValue> = reads.iter().map(Read::value).collect();

        let out = dir.path().join("checkpoint");
        let done = base.write_linked(&values, &out).unwrap();
        assert_eq!(done, LinkedWrite { linked: reads.len() - 1, written: 1, written_bytes: 40 });
        assert_eq!(shard_count(&out).unwrap(), 2);
        let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();
        assert_eq!(inode(&out.join(data_file_name(0, 2))), inode(&variables.join(data_file_name(0, 1))));
        assert_eq!(std::fs::metadata(out.join(data_file_name(1, 2))).unwrap().len(), 40);

        // TensorFlow's layout throughout: every checksum holds, every value is the one given.
        let saved_model = dir.path().join("as_model");
        std::fs::create_dir(&saved_model).unwrap();
        std::fs::rename(&out, saved_model.join("variables")).unwrap();
        CheckpointWriter::from_existing(&saved_model).unwrap();
        let back = entries(&saved_model.join("variables"));
        assert_eq!(back.len(), reads.len());
        for (read, expected) in back.iter().zip(&reads) {
            assert_eq!(
                (&read.key, &read.bytes, read.dtype, &read.dims),
                (&expected.key, &expected.bytes, expected.dtype, &expected.dims)
            );
            assert_eq!(read.shard, i32::from(read.key == reads[changed].key), "{}: its shard", read.key);
        }
    }

    #[test]
    fn another_dtype_shape_or_key_is_written_not_linked() {
        let (dir, variables) = base_copy();
        let mut base = BaseBundle::link(&variables, &dir.path().join("base")).unwrap();
        let reads = entries(&variables);
        let at = bias(&reads);
        let same = reads[at].value();
        let other_dims = [5u64, 2];
        let other_key = format!("{}_new", same.key);
        let cases = [
            SavedValue { dtype: DType::Int32, ..same },
            SavedValue { dims: &other_dims, ..same },
            SavedValue { key: &other_key, ..same },
        ];
        for (i, value) in cases.iter().enumerate() {
            let done = base.write_linked(&[*value], &dir.path().join(format!("out{i}"))).unwrap();
            assert_eq!(done.written, 1, "case {i}");
        }
        assert_eq!(base.write_linked(&[same], &dir.path().join("same")).unwrap().linked, 1);
    }

    #[test]
    fn a_base_value_that_fails_its_checksum_is_never_linked() {
        let (dir, variables) = base_copy();
        let reads = entries(&variables);
        let at = bias(&reads);
        let data = variables.join(data_file_name(0, 1));
        let mut bytes = std::fs::read(&data).unwrap();
        bytes[reads[at].offset as usize] ^= 0x01;
        std::fs::write(&data, bytes).unwrap();
        // The session holds what the corrupt base says (as if it were restored without a check).
        let corrupt = entries(&variables);
        let values: Vec<SavedValue> = corrupt.iter().map(Read::value).collect();
        let mut base = BaseBundle::link(&variables, &dir.path().join("base")).unwrap();
        let done = base.write_linked(&values, &dir.path().join("checkpoint")).unwrap();
        assert_eq!((done.linked, done.written), (reads.len() - 1, 1));
    }

    #[test]
    fn one_shard_copy_of_a_linked_bundle_is_the_bundle_savev2_writes() {
        let (dir, variables) = base_copy();
        let mut base = BaseBundle::link(&variables, &dir.path().join("base")).unwrap();
        let reads = entries(&variables);
        let values: Vec<SavedValue> = reads.iter().map(Read::value).collect();
        let linked = dir.path().join("linked");
        base.write_linked(&values, &linked).unwrap();
        // SaveV2's order: the order in which the original shard holds the entries.
        let mut by_offset: Vec<&Read> = reads.iter().collect();
        by_offset.sort_by_key(|r| r.offset);
        let order: Vec<&str> = by_offset.iter().map(|r| r.key.as_str()).collect();
        let copy = dir.path().join("copy");
        copy_as_one_shard(&linked, &copy, &order, None).unwrap();
        let name = data_file_name(0, 1);
        let (ours, original) =
            (std::fs::read(copy.join(&name)).unwrap(), std::fs::read(variables.join(&name)).unwrap());
        assert!(ours == original, "the data shard differs from the one TensorFlow wrote");
        let index = |dir: &Path| std::fs::read(dir.join(INDEX_FILE)).unwrap();
        assert!(index(&copy) == index(&variables), "the index differs from the one TensorFlow wrote");
    }

    /// A base copy and a linked checkpoint of it in which one bias changed:
    /// `(dir, base variables, linked checkpoint)`.
    fn linked_with_a_changed_bias() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let (dir, variables) = base_copy();
        let mut base = BaseBundle::link(&variables, &dir.path().join("base")).unwrap();
        let mut reads = entries(&variables);
        let at = bias(&reads);
        reads[at].bytes[0] ^= 0x40;
        let values: Vec<SavedValue> = reads.iter().map(Read::value).collect();
        let linked = dir.path().join("linked");
        base.write_linked(&values, &linked).unwrap();
        (dir, variables, linked)
    }

    #[test]
    fn a_draft_of_any_content_becomes_the_same_one_shard_copy() {
        use std::os::unix::fs::MetadataExt;
        let (dir, variables, linked) = linked_with_a_changed_bias();
        let name = data_file_name(0, 1);
        let expected = dir.path().join("expected");
        copy_as_one_shard(&linked, &expected, &[], None).unwrap();
        let base_shard = std::fs::read(variables.join(&name)).unwrap();
        let mut longer = base_shard.clone();
        longer.extend_from_slice(b"bytes past the end");
        let drafts: [(&str, &[u8]); 4] =
            [("the base shard", &base_shard), ("empty", b""), ("garbage", &[0xa5; 100]), ("longer", &longer)];
        for (i, (what, content)) in drafts.into_iter().enumerate() {
            let draft = dir.path().join(format!("draft-{i}"));
            std::fs::write(&draft, content).unwrap();
            let inode = std::fs::metadata(&draft).unwrap().ino();
            let copy = dir.path().join(format!("copy-{i}"));
            copy_as_one_shard(&linked, &copy, &[], Some(&draft)).unwrap();
            assert!(!draft.exists(), "{what}: the draft was taken over");
            assert_eq!(std::fs::metadata(copy.join(&name)).unwrap().ino(), inode, "{what}: written in place");
            let read = |dir: &Path, file: &str| std::fs::read(dir.join(file)).unwrap();
            assert!(read(&copy, &name) == read(&expected, &name), "{what}: the data shard differs");
            assert!(read(&copy, INDEX_FILE) == read(&expected, INDEX_FILE), "{what}: the index differs");
        }
        assert!(std::fs::read(variables.join(&name)).unwrap() == base_shard, "the base is untouched");
    }

    #[test]
    fn a_corrupt_or_truncated_linked_shard_is_refused_by_the_copy() {
        let (dir, _, linked) = linked_with_a_changed_bias();
        let new_shard = linked.join(data_file_name(1, 2));
        let mut bytes = std::fs::read(&new_shard).unwrap();
        bytes[3] ^= 0x01;
        std::fs::write(&new_shard, &bytes).unwrap();
        let error = copy_as_one_shard(&linked, &dir.path().join("copy"), &[], None).unwrap_err();
        assert!(
            matches!(error, Error::CorruptCheckpointData { .. }) && error.to_string().contains("checksum"),
            "{error}"
        );
        std::fs::write(&new_shard, &bytes[..20]).unwrap();
        let error = copy_as_one_shard(&linked, &dir.path().join("copy2"), &[], None).unwrap_err();
        assert!(error.to_string().contains("truncated"), "{error}");
    }
}
