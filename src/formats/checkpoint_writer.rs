//! Writing a TensorFlow checkpoint bundle (`variables.index` + `variables.data-00000-of-00001`)
//! without a TensorFlow session: start from a SavedModel's existing checkpoint, replace the
//! values of some entries, and write the whole bundle again.
//!
//! Every entry that is not replaced keeps its bytes and checksum verbatim, the
//! `_CHECKPOINTABLE_OBJECT_GRAPH` string entry included, so the result restores into the same
//! graph. The format is TensorFlow's tensor bundle: a LevelDB table mapping each key to a
//! `BundleEntryProto` (dtype, shape, shard, offset, size, masked CRC32C), the
//! `BundleHeaderProto` under the empty key, and the raw little-endian tensor bytes in a data
//! shard. The output always has one shard.
//!
//! ```no_run
//! # fn main() -> Result<(), tfload::Error> {
//! use tfload::formats::checkpoint_writer::CheckpointWriter;
//! use tfload::TensorData;
//!
//! let mut writer = CheckpointWriter::from_existing("saved_models/mlp_digits")?;
//! let bias = TensorData::Float32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[10])));
//! writer.replace("mask_variables/3/.ATTRIBUTES/VARIABLE_VALUE", &bias)?; // output/bias
//! writer.write("/tmp/new_model/variables")?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};
use crate::formats::checkpoint_index::{read_records, CheckpointIndex};
use crate::formats::crc::mask as mask_crc;
pub use crate::formats::crc::masked_crc32c;
use crate::output_dir::{build_then_place, check_not_input, copy_model_files, io_error};
use crate::proto;
use crate::tensor::dtype::DType;
use crate::tensor::shape::Shape;
use crate::tensor::TensorData;

/// File name of the single data shard the writer produces.
pub const DATA_FILE: &str = "variables.data-00000-of-00001";
/// File name of the index the writer produces.
pub const INDEX_FILE: &str = "variables.index";

/// `BundleHeaderProto.endianness` of a big-endian bundle.
const BIG_ENDIAN: i32 = 1;

/// One entry of the bundle being written: its index record and its bytes.
#[derive(Debug, Clone)]
struct Entry {
    proto: proto::BundleEntryProto,
    bytes: Vec<u8>,
}

/// A checkpoint bundle held in memory, read from a SavedModel and written out again with some
/// entries replaced.
#[derive(Debug, Clone)]
pub struct CheckpointWriter {
    source: PathBuf,
    header: proto::BundleHeaderProto,
    entries: BTreeMap<String, Entry>,
}

impl CheckpointWriter {
    /// Reads the whole checkpoint of the SavedModel at `saved_model_dir` (index and every data
    /// shard) into memory.
    pub fn from_existing(saved_model_dir: impl AsRef<Path>) -> Result<CheckpointWriter> {
        let dir = saved_model_dir.as_ref();
        let index_path = CheckpointIndex::path_in(dir);
        if !index_path.is_file() {
            return Err(Error::MissingVariables { dir: dir.to_path_buf() });
        }
        let (header, records) = read_index(&index_path)?;
        if header.endianness == BIG_ENDIAN {
            return Err(corrupt(&index_path, "the bundle is big-endian, which tfload does not write"));
        }
        let shards = read_shards(&index_path, header.num_shards)?;
        let mut entries = BTreeMap::new();
        for (key, proto) in records {
            let bytes = entry_bytes(&index_path, &key, &proto, &shards)?;
            entries.insert(key, Entry { proto, bytes });
        }
        Ok(CheckpointWriter { source: index_path, header, entries })
    }

    /// The checkpoint keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The dtype and shape saved under `key`.
    pub fn entry(&self, key: &str) -> Option<(DType, Shape)> {
        let entry = self.entries.get(key)?;
        Some((DType::from_proto(entry.proto.dtype), Shape::from_proto(entry.proto.shape.as_ref())))
    }

    /// Replaces the value saved under `key`. The new value must have the entry's dtype and shape:
    /// a checkpoint restores into variables whose type and shape the graph fixes.
    pub fn replace(&mut self, key: &str, value: &TensorData) -> Result<()> {
        let mismatch = |problem: String| Error::CheckpointReplace { key: key.to_string(), problem };
        let (dtype, shape) = self
            .entry(key)
            .ok_or_else(|| mismatch(format!("the checkpoint read from {} has no such entry", self.source.display())))?;
        if dtype != value.dtype() {
            return Err(mismatch(format!("it holds {dtype}, the new value is {}", value.dtype())));
        }
        let dims: Vec<Option<u64>> = value.shape().iter().map(|&d| Some(d as u64)).collect();
        if shape.dims() != Some(dims.as_slice()) {
            return Err(mismatch(format!("it has shape {shape}, the new value {:?}", value.shape())));
        }
        let bytes = little_endian_bytes(value)?;
        let entry = self.entries.get_mut(key).expect("entry checked above");
        entry.proto.crc32c = masked_crc32c(&bytes);
        entry.bytes = bytes;
        Ok(())
    }

    /// Writes the bundle as `variables.index` and `variables.data-00000-of-00001` into
    /// `variables_dir`, which is created if needed. Existing files of those names are replaced.
    pub fn write(&self, variables_dir: impl AsRef<Path>) -> Result<()> {
        let dir = variables_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let data_path = dir.join(DATA_FILE);
        let mut data = BufWriter::new(File::create(&data_path).map_err(io_error(&data_path))?);
        let mut records = Vec::with_capacity(self.entries.len());
        let mut offset = 0u64;
        for (key, entry) in &self.entries {
            data.write_all(&entry.bytes).map_err(io_error(&data_path))?;
            let mut record = entry.proto.clone();
            record.shard_id = 0;
            record.offset = offset as i64;
            record.size = entry.bytes.len() as i64;
            offset += entry.bytes.len() as u64;
            records.push((key.as_str(), record));
        }
        data.into_inner().map_err(|e| e.into_error()).and_then(|file| file.sync_all()).map_err(io_error(&data_path))?;
        let header = proto::BundleHeaderProto { num_shards: 1, ..self.header.clone() };
        write_index(&dir.join(INDEX_FILE), &header, &records)
    }
}

impl CheckpointWriter {
    /// Keeps only the entries whose key `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|key, _| keep(key));
    }

    /// The bytes of the scalar string saved under `key` (the checkpoint's object graph under
    /// `_CHECKPOINTABLE_OBJECT_GRAPH`), or `None` when there is no such scalar.
    pub fn string_scalar(&self, key: &str) -> Option<Vec<u8>> {
        let entry = self.entries.get(key)?;
        let scalar = entry.proto.shape.as_ref().is_none_or(|shape| shape.dim.is_empty());
        if DType::from_proto(entry.proto.dtype) != DType::String || !scalar {
            return None;
        }
        let mut rest = entry.bytes.as_slice();
        let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        rest.get(4..4 + len).map(<[u8]>::to_vec)
    }

    /// Replaces the scalar string saved under `key`, in TensorFlow's layout for string tensors
    /// (varint length, masked CRC32C of the lengths, bytes).
    pub fn replace_string_scalar(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let is_scalar = self.string_scalar(key).is_some();
        let entry = self.entries.get_mut(key).filter(|_| is_scalar);
        let Some(entry) = entry else {
            return Err(Error::CheckpointReplace {
                key: key.to_string(),
                problem: format!("the checkpoint read from {} has no such string scalar", self.source.display()),
            });
        };
        let bytes = string_scalar_bytes(value);
        entry.proto.crc32c = string_tensor_crc32c(&bytes, Some(1)).expect("a string scalar just encoded");
        entry.bytes = bytes;
        Ok(())
    }
}

impl CheckpointWriter {
    /// Writes a new SavedModel at `out`: the graph and assets of the SavedModel at `source` with
    /// this checkpoint as its `variables/` (`fingerprint.pb` is left out, as it would describe
    /// the old checkpoint). `out` appears whole or not at all. An existing `out` is refused
    /// unless `overwrite`; `out` may never be `source` or lie inside it, or hold it.
    pub fn write_saved_model(&self, source: &Path, out: &Path, overwrite: bool) -> Result<()> {
        check_output(source, out, overwrite)?;
        build_then_place(out, |dir| {
            copy_model_files(source, dir)?;
            self.write(dir.join("variables"))
        })
    }
}

fn check_output(source: &Path, out: &Path, overwrite: bool) -> Result<()> {
    let output_error = |problem: &str| Error::Output { path: out.to_path_buf(), problem: problem.to_string() };
    check_not_input(source, out)?;
    if out.exists() && !overwrite {
        return Err(output_error("already exists; give another --out, or --force to replace it"));
    }
    if out.exists() && !out.join("saved_model.pb").is_file() {
        return Err(output_error("exists and is not a SavedModel, so --force does not replace it; remove it yourself"));
    }
    Ok(())
}

/// The header and the entry records of an index file, in key order; partitioned variables refused.
pub(crate) fn read_index(path: &Path) -> Result<(proto::BundleHeaderProto, Vec<(String, proto::BundleEntryProto)>)> {
    let (header, records) = read_records(path)?;
    if let Some((name, _)) = records.iter().find(|(_, record)| !record.slices.is_empty()) {
        return Err(corrupt(path, &format!("entry `{name}` is a partitioned variable, which tfload cannot rewrite")));
    }
    let header = header.ok_or_else(|| corrupt(path, "it has no header entry"))?;
    Ok((header, records))
}

/// The contents of every data shard beside the index, with their paths, by shard number.
fn read_shards(index_path: &Path, num_shards: i32) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let num_shards = num_shards.max(1);
    (0..num_shards)
        .map(|shard| {
            let path = index_path.with_file_name(data_file_name(shard, num_shards));
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            Ok((path, bytes))
        })
        .collect()
}

/// The bytes of one entry, cut out of its shard and checked against its stored checksum.
fn entry_bytes(
    index_path: &Path,
    key: &str,
    record: &proto::BundleEntryProto,
    shards: &[(PathBuf, Vec<u8>)],
) -> Result<Vec<u8>> {
    let shard = usize::try_from(record.shard_id).ok().and_then(|s| shards.get(s));
    let Some((data_path, data)) = shard else {
        return Err(corrupt(
            index_path,
            &format!("entry `{key}` names data shard {}, which the header does not count", record.shard_id),
        ));
    };
    let start = usize::try_from(record.offset).ok();
    let end = start.zip(usize::try_from(record.size).ok()).and_then(|(s, n)| s.checked_add(n));
    let bytes = match (start, end) {
        (Some(start), Some(end)) if end <= data.len() => &data[start..end],
        _ => {
            return Err(data_error(
                data_path,
                key,
                format!(
                "lies past the end of the file ({} bytes at offset {}, the file has {}); the data file is truncated",
                record.size, record.offset, data.len()
            ),
            ))
        }
    };
    if entry_crc32c(record, bytes) != Some(record.crc32c) {
        return Err(data_error(
            data_path,
            key,
            "fails its checksum (the masked CRC32C stored in variables.index)".to_string(),
        ));
    }
    Ok(bytes.to_vec())
}

/// A scalar string in TensorFlow's bundle layout for string tensors (varint length, masked
/// CRC32C of the length, bytes).
pub(crate) fn string_scalar_bytes(value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(value.len() + 14);
    prost::encoding::encode_varint(value.len() as u64, &mut bytes);
    let length_crc = mask_crc(crc32c::crc32c(&(value.len() as u32).to_le_bytes()));
    bytes.extend_from_slice(&length_crc.to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// The checksum a bundle stores for the entry `record` whose bytes are `bytes`; `None` when the
/// bytes cannot be a string tensor of the record's shape.
pub(crate) fn entry_crc32c(record: &proto::BundleEntryProto, bytes: &[u8]) -> Option<u32> {
    match DType::from_proto(record.dtype) {
        DType::String => string_tensor_crc32c(bytes, element_count(record)),
        _ => Some(masked_crc32c(bytes)),
    }
}

/// The file name of data shard `shard` of a bundle of `num_shards` shards.
pub(crate) fn data_file_name(shard: i32, num_shards: i32) -> String {
    format!("variables.data-{shard:05}-of-{num_shards:05}")
}

/// TensorFlow's checksum of a string tensor (`WriteStringTensor` in tensor_bundle.cc): the CRC32C
/// runs over each element's length as a little-endian u32 (the file holds varints), then the
/// 4-byte length checksum, then the string bytes. `None` when the bytes are not such a tensor.
fn string_tensor_crc32c(bytes: &[u8], elements: Option<u64>) -> Option<u32> {
    let mut rest = bytes;
    let mut crc = 0u32;
    let mut total = 0u64;
    for _ in 0..elements? {
        let len = prost::encoding::decode_varint(&mut rest).ok()?;
        // TensorFlow checksums the length cast to uint32, whatever its size.
        crc = crc32c::crc32c_append(crc, &(len as u32).to_le_bytes());
        total = total.checked_add(len)?;
    }
    let (length_crc, strings) = rest.split_first_chunk::<4>()?;
    crc = crc32c::crc32c_append(crc, length_crc);
    if strings.len() as u64 != total {
        return None;
    }
    crc = crc32c::crc32c_append(crc, strings);
    Some(mask_crc(crc))
}

/// The number of elements the record's shape holds, if it is known and fits in a u64.
fn element_count(record: &proto::BundleEntryProto) -> Option<u64> {
    let dims = record.shape.as_ref().map(|shape| shape.dim.as_slice()).unwrap_or_default();
    dims.iter().try_fold(1u64, |product, dim| product.checked_mul(u64::try_from(dim.size).ok()?))
}

pub(crate) fn data_error(path: &Path, key: &str, problem: String) -> Error {
    Error::CorruptCheckpointData { path: path.to_path_buf(), key: key.to_string(), problem }
}

/// Writes the index table: the header under the empty key, then the entries in key order.
pub(crate) fn write_index(
    path: &Path,
    header: &proto::BundleHeaderProto,
    records: &[(&str, proto::BundleEntryProto)],
) -> Result<()> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut out = BufWriter::new(file);
    let entries = std::iter::once((&b""[..], header.encode_to_vec()))
        .chain(records.iter().map(|(key, record)| (key.as_bytes(), record.encode_to_vec())));
    crate::formats::table_writer::write_table(&mut out, entries).map_err(io_error(path))?;
    out.flush().map_err(io_error(path))?;
    Ok(())
}

/// The tensor's elements in row-major order, each little-endian, as a bundle stores them.
pub(crate) fn little_endian_bytes(value: &TensorData) -> Result<Vec<u8>> {
    macro_rules! collect {
        ($array:expr) => {
            $array.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
    }
    Ok(match value {
        TensorData::Float16(a) => collect!(a),
        TensorData::Float32(a) => collect!(a),
        TensorData::Float64(a) => collect!(a),
        TensorData::Int8(a) => collect!(a),
        TensorData::Int16(a) => collect!(a),
        TensorData::Int32(a) => collect!(a),
        TensorData::Int64(a) => collect!(a),
        TensorData::UInt8(a) => collect!(a),
        TensorData::UInt16(a) => collect!(a),
        TensorData::UInt32(a) => collect!(a),
        TensorData::UInt64(a) => collect!(a),
        TensorData::Bool(a) => a.iter().map(|&b| u8::from(b)).collect(),
        TensorData::String(_) | TensorData::Bytes(_) => {
            return Err(Error::UnsupportedDType {
                dtype: DType::String,
                context: "writing a checkpoint entry".to_string(),
            })
        }
    })
}

fn corrupt(path: &Path, problem: &str) -> Error {
    Error::CorruptCheckpointIndex { path: path.to_path_buf(), problem: problem.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    const MLP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/saved_models/mlp_digits");

    fn bias_key(writer: &CheckpointWriter) -> String {
        let shape_10 = |k: &&str| writer.entry(k).map(|(_, s)| s.to_string()) == Some("[10]".to_string());
        writer.keys().find(|k| !k.starts_with("optimizer") && shape_10(k)).expect("a [10] entry").to_string()
    }

    #[test]
    fn rewriting_unchanged_keeps_every_entry_bit_for_bit() -> Result<()> {
        let out = tempfile::tempdir().unwrap();
        let original = CheckpointWriter::from_existing(MLP)?;
        original.write(out.path())?;
        let model_copy = out.path().join("model");
        std::fs::create_dir_all(model_copy.join("variables")).unwrap();
        for file in [INDEX_FILE, DATA_FILE] {
            std::fs::rename(out.path().join(file), model_copy.join("variables").join(file)).unwrap();
        }
        let again = CheckpointWriter::from_existing(&model_copy)?;
        assert_eq!(original.entries.len(), again.entries.len());
        for (key, entry) in &original.entries {
            let other = &again.entries[key];
            assert_eq!(entry.bytes, other.bytes, "{key}");
            assert_eq!(entry.proto.crc32c, other.proto.crc32c, "{key}");
            let own = match DType::from_proto(entry.proto.dtype) {
                DType::String => string_tensor_crc32c(&entry.bytes, element_count(&entry.proto)),
                _ => Some(masked_crc32c(&entry.bytes)),
            };
            assert_eq!(own, Some(entry.proto.crc32c), "{key}: TF's own checksum");
        }
        Ok(())
    }

    /// A copy of the mlp_digits model in a temp dir, its data shard changed by `change`.
    fn model_with_changed_data(change: impl FnOnce(&mut Vec<u8>)) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let variables = dir.path().join("variables");
        std::fs::create_dir_all(&variables).unwrap();
        let source = Path::new(MLP).join("variables");
        std::fs::copy(source.join(INDEX_FILE), variables.join(INDEX_FILE)).unwrap();
        let mut data = std::fs::read(source.join(DATA_FILE)).unwrap();
        change(&mut data);
        std::fs::write(variables.join(DATA_FILE), data).unwrap();
        dir
    }

    #[test]
    fn a_changed_byte_in_the_data_shard_fails_its_checksum() {
        // Byte 100 lies in a float tensor; the last byte in the string object graph.
        for at in [100usize, 20_402] {
            let dir = model_with_changed_data(|data| data[at] ^= 0x10);
            let error = CheckpointWriter::from_existing(dir.path()).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, Error::CorruptCheckpointData { .. }), "{message}");
            assert!(message.contains("checksum") && message.contains(DATA_FILE), "{message}");
        }
    }

    #[test]
    fn a_truncated_data_shard_is_named() {
        let dir = model_with_changed_data(|data| data.truncate(5000));
        let message = CheckpointWriter::from_existing(dir.path()).unwrap_err().to_string();
        assert!(message.contains("truncated") && message.contains(DATA_FILE), "{message}");
    }

    #[test]
    fn replace_writes_little_endian_values_with_their_checksum() -> Result<()> {
        let mut writer = CheckpointWriter::from_existing(MLP)?;
        let key = bias_key(&writer);
        let values: Vec<f32> = (0..10).map(|i| i as f32 * 0.5 - 1.0).collect();
        let value = TensorData::Float32(ArrayD::from_shape_vec(IxDyn(&[10]), values.clone()).unwrap());
        writer.replace(&key, &value)?;
        let entry = &writer.entries[&key];
        let expected: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(entry.bytes, expected);
        assert_eq!(entry.proto.crc32c, masked_crc32c(&expected));
        Ok(())
    }

    #[test]
    fn a_string_scalar_reencoded_keeps_its_bytes_and_checksum() -> Result<()> {
        let mut writer = CheckpointWriter::from_existing(MLP)?;
        let key = "_CHECKPOINTABLE_OBJECT_GRAPH";
        let before = writer.entries[key].clone();
        let value = writer.string_scalar(key).expect("the object graph is a string scalar");
        writer.replace_string_scalar(key, &value)?;
        assert_eq!(writer.entries[key].bytes, before.bytes);
        assert_eq!(writer.entries[key].proto.crc32c, before.proto.crc32c);
        writer.replace_string_scalar(key, b"other")?;
        assert_eq!(writer.string_scalar(key).as_deref(), Some(&b"other"[..]));
        assert!(writer.replace_string_scalar(&bias_key(&writer), b"x").is_err());
        Ok(())
    }

    #[test]
    fn replace_refuses_another_shape_dtype_or_key() -> Result<()> {
        let mut writer = CheckpointWriter::from_existing(MLP)?;
        let key = bias_key(&writer);
        let wrong_shape = TensorData::Float32(ArrayD::zeros(IxDyn(&[11])));
        let wrong_dtype = TensorData::Float64(ArrayD::zeros(IxDyn(&[10])));
        let message = writer.replace(&key, &wrong_shape).unwrap_err().to_string();
        assert!(message.contains("shape [10]"), "{message}");
        let message = writer.replace(&key, &wrong_dtype).unwrap_err().to_string();
        assert!(message.contains("float32") && message.contains("float64"), "{message}");
        assert!(writer.replace("no/such/key", &wrong_shape).is_err());
        Ok(())
    }
}
