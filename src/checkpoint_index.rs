//! The checkpoint index of a SavedModel (`variables/variables.index`): an SSTable that maps each
//! checkpoint key (`dense/kernel/.ATTRIBUTES/VARIABLE_VALUE`) to the dtype, shape and location of
//! the saved tensor. Read with the `sstable` crate (TensorFlow's table format is LevelDB's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use sstable::{Options, SSIterator, Table};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::proto;
use crate::shape::Shape;

/// A table's footer is 48 bytes; anything shorter is truncated.
const TABLE_FOOTER_BYTES: u64 = 48;

/// One saved tensor as the index describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointEntry {
    /// Element type.
    pub dtype: DType,
    /// Shape as saved.
    pub shape: Shape,
    /// Bytes the tensor takes in the data shard.
    pub size: u64,
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
                    size: u64::try_from(entry.size).unwrap_or(0),
                };
                (key, entry)
            })
            .collect();
        Ok(CheckpointIndex {
            path: path.to_path_buf(),
            entries,
        })
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

/// The raw records of an index file, in key order: the header (under the empty key), if any,
/// and every entry. The one place that walks the SSTable.
pub(crate) fn read_records(path: &Path) -> Result<(Option<proto::BundleHeaderProto>, Vec<(String, proto::BundleEntryProto)>)> {
    let corrupt = |problem: String| Error::CorruptCheckpointIndex {
        path: path.to_path_buf(),
        problem,
    };
    let size = std::fs::metadata(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size < TABLE_FOOTER_BYTES {
        return Err(corrupt(format!("the file is only {size} bytes long")));
    }
    let table = Table::new_from_file(Options::default(), path).map_err(|e| corrupt(e.to_string()))?;
    let mut iter = table.iter();
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let (mut header, mut records) = (None, Vec::new());
    // SSIterator::next skips entries here; advance + current sees them all.
    while iter.advance() {
        iter.current(&mut key, &mut value);
        if key.is_empty() {
            let decoded = proto::BundleHeaderProto::decode(value.as_slice())
                .map_err(|e| corrupt(format!("the header does not decode: {e}")))?;
            header = Some(decoded);
            continue;
        }
        let name = String::from_utf8_lossy(&key).into_owned();
        let record = proto::BundleEntryProto::decode(value.as_slice())
            .map_err(|e| corrupt(format!("entry `{name}` does not decode: {e}")))?;
        records.push((name, record));
    }
    Ok((header, records))
}

/// Escapes one object-graph child name the way TensorFlow builds checkpoint keys (`.` → `..`,
/// `/` → `.S`).
pub fn escape_local_name(name: &str) -> String {
    name.replace('.', "..").replace('/', ".S")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_tensorflow() {
        assert_eq!(escape_local_name("dense/kernel"), "dense.Skernel");
        assert_eq!(escape_local_name("a.b"), "a..b");
        assert_eq!(escape_local_name("plain"), "plain");
    }
}
