//! The checkpoint index of a SavedModel (`variables/variables.index`): an SSTable that maps each
//! checkpoint key (`dense/kernel/.ATTRIBUTES/VARIABLE_VALUE`) to the dtype, shape and location of
//! the saved tensor. The table is read by the strict reader of [`table`], which checks every
//! block's checksum before trusting a byte of it.

mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};
use crate::proto;
use crate::tensor::dtype::DType;
use crate::tensor::shape::Shape;

/// One saved tensor as the index describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointEntry {
    /// Element type.
    pub dtype: DType,
    /// Shape as saved.
    pub shape: Shape,
    /// Bytes the tensor takes in the data shard.
    pub size: u64,
    /// The data shard that holds the tensor (`variables.data-SHARD-of-N`).
    pub shard: u32,
    /// Where the tensor's bytes start in that shard.
    pub offset: u64,
}

/// The decoded index: checkpoint key to entry, sorted by key.
#[derive(Debug, Clone)]
pub struct CheckpointIndex {
    path: PathBuf,
    entries: BTreeMap<String, CheckpointEntry>,
}

impl CheckpointIndex {
    /// The index path of a SavedModel directory.
    pub fn path_in(saved_model_dir: &Path) -> PathBuf {
        saved_model_dir.join("variables").join("variables.index")
    }

    /// Reads and decodes an index file.
    pub fn read(path: &Path) -> Result<CheckpointIndex> {
        let (_, records) = read_records(path)?;
        let entries = records
            .into_iter()
            .map(|(key, entry)| {
                let entry = CheckpointEntry {
                    dtype: DType::from_proto(entry.dtype),
                    shape: Shape::from_proto(entry.shape.as_ref()),
                    size: entry.size.unsigned_abs(),
                    shard: entry.shard_id.unsigned_abs(),
                    offset: entry.offset.unsigned_abs(),
                };
                (key, entry)
            })
            .collect();
        Ok(CheckpointIndex { path: path.to_path_buf(), entries })
    }

    /// The index file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry saved under a checkpoint key.
    pub fn get(&self, key: &str) -> Option<&CheckpointEntry> {
        self.entries.get(key)
    }

    /// All entries, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &CheckpointEntry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The header record, if any, and the entry records of an index, in key order.
pub(crate) type IndexRecords = (Option<proto::BundleHeaderProto>, Vec<(String, proto::BundleEntryProto)>);

/// The raw records of an index file, in key order: the header (under the empty key), if any,
/// and every entry. The one place that walks the table.
pub(crate) fn read_records(path: &Path) -> Result<IndexRecords> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    decode_records(path, &bytes)
}

/// The records of the index `bytes`, read from `path` (named in errors).
fn decode_records(path: &Path, bytes: &[u8]) -> Result<IndexRecords> {
    let corrupt = |problem: String| Error::CorruptCheckpointIndex { path: path.to_path_buf(), problem };
    let (mut header, mut records) = (None, Vec::new());
    let mut total_bytes = 0i64;
    for (key, value) in table::entries(bytes).map_err(corrupt)? {
        if key.is_empty() {
            let decoded = proto::BundleHeaderProto::decode(value)
                .map_err(|e| corrupt(format!("the header does not decode: {e}")))?;
            header = Some(decoded);
            continue;
        }
        let name = String::from_utf8(key).map_err(|e| corrupt(format!("a key is not UTF-8 ({e})")))?;
        let record = proto::BundleEntryProto::decode(value)
            .map_err(|e| corrupt(format!("entry `{name}` does not decode: {e}")))?;
        check_entry(&record).map_err(|problem| corrupt(format!("entry `{name}` {problem}")))?;
        total_bytes = total_bytes
            .checked_add(record.size)
            .ok_or_else(|| corrupt("its entries add up to more than 2^63 bytes".to_string()))?;
        records.push((name, record));
    }
    Ok((header, records))
}

/// Checks that an entry's numbers can be true of a saved tensor, so that nothing computed from
/// them later (element counts, byte totals, slices of the data shard) can overflow: no negative
/// location or size, every dimension known, and a size that the shape and dtype account for.
fn check_entry(record: &proto::BundleEntryProto) -> std::result::Result<(), String> {
    if record.size < 0 || record.offset < 0 || record.shard_id < 0 {
        return Err("has a negative shard, offset or size".to_string());
    }
    let dims = record.shape.as_ref().map(|shape| shape.dim.as_slice()).unwrap_or_default();
    let elements = dims
        .iter()
        .try_fold(1u64, |product, dim| product.checked_mul(u64::try_from(dim.size).ok()?))
        .ok_or("has a negative or overflowing dimension")?;
    let size = record.size.unsigned_abs();
    match DType::from_proto(record.dtype) {
        // Each string element takes at least one byte (its length).
        DType::String if elements > size => Err(format!("holds {elements} strings in {size} bytes")),
        dtype => match dtype.size_in_bytes().map(|bytes| elements.checked_mul(bytes)) {
            Some(expected) if expected != Some(size) => Err(format!(
                "is {dtype} with {elements} elements, which take {} bytes, but the entry says {size}",
                expected.map_or("more than 2^64".to_string(), |n| n.to_string())
            )),
            _ => Ok(()),
        },
    }
}

/// Escapes one object-graph child name the way TensorFlow builds checkpoint keys (`.` → `..`,
/// `/` → `.S`).
pub fn escape_local_name(name: &str) -> String {
    name.replace('.', "..").replace('/', ".S")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP_INDEX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/saved_models/mlp_digits/variables/variables.index");

    fn mlp_index_bytes() -> Vec<u8> {
        std::fs::read(MLP_INDEX).expect("the committed mlp_digits index")
    }

    #[test]
    fn reads_every_entry_of_a_real_index() -> Result<()> {
        let (header, records) = read_records(Path::new(MLP_INDEX))?;
        assert_eq!(header.map(|h| h.num_shards), Some(1));
        assert!(records.iter().any(|(k, _)| k == "_CHECKPOINTABLE_OBJECT_GRAPH"));
        assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "keys in order");
        Ok(())
    }

    #[test]
    fn every_single_byte_change_of_a_real_index_is_an_error() {
        let original = mlp_index_bytes();
        let path = Path::new("variables.index");
        for at in 0..original.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bytes = original.clone();
                bytes[at] ^= flip;
                let result = decode_records(path, &bytes);
                assert!(
                    matches!(result, Err(Error::CorruptCheckpointIndex { .. })),
                    "byte {at} ^ {flip:#04x} was accepted: {result:?}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_of_a_real_index_is_an_error() {
        let original = mlp_index_bytes();
        for len in 0..original.len() {
            assert!(decode_records(Path::new("i"), &original[..len]).is_err(), "{len} bytes accepted");
        }
    }

    #[test]
    fn a_corrupt_index_names_the_problem_like_tensorflow() {
        let mut bytes = mlp_index_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let message = decode_records(Path::new("v/variables.index"), &bytes).unwrap_err().to_string();
        assert!(message.contains("bad magic number") && message.contains("v/variables.index"), "{message}");
        let mut bytes = mlp_index_bytes();
        bytes[10] ^= 1;
        let message = decode_records(Path::new("i"), &bytes).unwrap_err().to_string();
        assert!(message.contains("block checksum mismatch"), "{message}");
    }

    /// TensorFlow's `DT_FLOAT` and `DT_STRING`.
    const FLOAT: i32 = 1;
    const STRING: i32 = 7;

    fn entry(dtype: i32, dims: &[i64], size: i64) -> proto::BundleEntryProto {
        let dim = dims.iter().map(|&size| proto::tensor_shape_proto::Dim { size, ..Default::default() }).collect();
        proto::BundleEntryProto {
            dtype,
            shape: Some(proto::TensorShapeProto { dim, ..Default::default() }),
            size,
            ..Default::default()
        }
    }

    #[test]
    fn entries_whose_size_the_shape_does_not_explain_are_refused() {
        assert!(check_entry(&entry(FLOAT, &[64, 32], 8192)).is_ok());
        assert!(check_entry(&entry(STRING, &[], 1115)).is_ok());
        for bad in [
            entry(FLOAT, &[64, 32], 8191),
            entry(FLOAT, &[1 << 40, 1 << 40], 8192),
            entry(FLOAT, &[-1, 32], 128),
            entry(FLOAT, &[2, 2], -16),
            entry(STRING, &[1 << 20], 100),
        ] {
            assert!(check_entry(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn escapes_like_tensorflow() {
        assert_eq!(escape_local_name("dense/kernel"), "dense.Skernel");
        assert_eq!(escape_local_name("a.b"), "a..b");
        assert_eq!(escape_local_name("plain"), "plain");
    }
}
