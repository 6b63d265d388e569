//! Writing a checkpoint's `variables.index` the way TensorFlow writes it, byte for byte. The
//! index is a LevelDB-format table (TensorFlow's `tensorflow/core/lib/io/table_builder.cc`):
//! prefix-compressed data blocks of up to 256 KiB, an empty metaindex block, an index block with
//! one entry per data block, and a fixed 48-byte footer. LevelDB-table crates (`sstable`) add a
//! filter block and use 4 KiB blocks, so their tables differ from TensorFlow's in bytes though not
//! in content; a model tfload writes should be the files TensorFlow would have written, byte for
//! byte, so the writer is this module (the reader is `checkpoint_index::table`).

use std::io::Write;

/// TensorFlow's `table::Options::block_size`: a data block is closed once it reaches this size.
const BLOCK_SIZE: usize = 262_144;
/// Keys between two uncompressed (restart) keys in a data block.
const BLOCK_RESTART_INTERVAL: usize = 16;
/// `kTableMagicNumber` of table/format.h.
const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// `BlockHandle::kMaxEncodedLength`: each of the footer's two handles is padded to this.
const MAX_HANDLE_LENGTH: usize = 20;
/// The block trailer's type byte: not compressed.
const NO_COMPRESSION: u8 = 0;

/// One block being built: prefix-compressed entries and their restart points.
struct BlockBuilder {
    restart_interval: usize,
    buffer: Vec<u8>,
    restarts: Vec<u32>,
    counter: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    fn new(restart_interval: usize) -> BlockBuilder {
        BlockBuilder { restart_interval, buffer: Vec::new(), restarts: vec![0], counter: 0, last_key: Vec::new() }
    }

    fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The block's size once finished.
    fn size_estimate(&self) -> usize {
        self.buffer.len() + self.restarts.len() * 4 + 4
    }

    fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.counter < self.restart_interval {
            self.last_key.iter().zip(key).take_while(|(a, b)| a == b).count()
        } else {
            self.restarts.push(self.buffer.len() as u32);
            self.counter = 0;
            0
        };
        for length in [shared, key.len() - shared, value.len()] {
            prost::encoding::encode_varint(length as u64, &mut self.buffer);
        }
        self.buffer.extend_from_slice(&key[shared..]);
        self.buffer.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.counter += 1;
    }

    /// The block's bytes; the builder starts empty again.
    fn finish(&mut self) -> Vec<u8> {
        let mut block = std::mem::take(&mut self.buffer);
        for restart in &self.restarts {
            block.extend_from_slice(&restart.to_le_bytes());
        }
        block.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        *self = BlockBuilder::new(self.restart_interval);
        block
    }
}

/// Where a block lies in the file, encoded as the index and footer hold it.
fn encode_handle(offset: u64, size: u64, into: &mut Vec<u8>) {
    prost::encoding::encode_varint(offset, into);
    prost::encoding::encode_varint(size, into);
}

/// The bytewise comparator's `FindShortestSeparator`: a short key at least `start` and below `limit`.
fn shortest_separator(start: &mut Vec<u8>, limit: &[u8]) {
    let common = start.iter().zip(limit).take_while(|(a, b)| a == b).count();
    if common < start.len().min(limit.len()) {
        let byte = start[common];
        if byte < 0xff && byte + 1 < limit[common] {
            start[common] += 1;
            start.truncate(common + 1);
        }
    }
}

/// The bytewise comparator's `FindShortSuccessor`: a short key at least `key`.
fn short_successor(key: &mut Vec<u8>) {
    if let Some(at) = key.iter().position(|&b| b != 0xff) {
        key[at] += 1;
        key.truncate(at + 1);
    }
}

/// Writes a table of `entries` (sorted by key, bytewise, without duplicates) to `out`, as
/// TensorFlow's `TableBuilder` with its default options does.
pub fn write_table<'a>(
    out: &mut impl Write,
    entries: impl IntoIterator<Item = (&'a [u8], Vec<u8>)>,
) -> std::io::Result<()> {
    let mut table =
        Table { out, offset: 0, data: BlockBuilder::new(BLOCK_RESTART_INTERVAL), index: BlockBuilder::new(1) };
    let mut pending: Option<(u64, u64)> = None;
    let mut last_key: Vec<u8> = Vec::new();
    for (key, value) in entries {
        if let Some((offset, size)) = pending.take() {
            shortest_separator(&mut last_key, key);
            table.add_index_entry(&last_key, offset, size);
        }
        last_key.clear();
        last_key.extend_from_slice(key);
        table.data.add(key, &value);
        if table.data.size_estimate() >= BLOCK_SIZE {
            pending = Some(table.write_data_block()?);
        }
    }
    if !table.data.is_empty() {
        pending = Some(table.write_data_block()?);
    }
    let metaindex = table.write_block(BlockBuilder::new(BLOCK_RESTART_INTERVAL).finish())?;
    if let Some((offset, size)) = pending {
        short_successor(&mut last_key);
        table.add_index_entry(&last_key, offset, size);
    }
    let index_block = table.index.finish();
    let index = table.write_block(index_block)?;
    let mut footer = Vec::with_capacity(2 * MAX_HANDLE_LENGTH + 8);
    encode_handle(metaindex.0, metaindex.1, &mut footer);
    encode_handle(index.0, index.1, &mut footer);
    footer.resize(2 * MAX_HANDLE_LENGTH, 0);
    footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
    table.out.write_all(&footer)
}

/// A table being written: the output, its length so far, the open data and index blocks.
struct Table<'w, W: Write> {
    out: &'w mut W,
    offset: u64,
    data: BlockBuilder,
    index: BlockBuilder,
}

impl<W: Write> Table<'_, W> {
    fn add_index_entry(&mut self, key: &[u8], offset: u64, size: u64) {
        let mut handle = Vec::new();
        encode_handle(offset, size, &mut handle);
        self.index.add(key, &handle);
    }

    fn write_data_block(&mut self) -> std::io::Result<(u64, u64)> {
        let block = self.data.finish();
        self.write_block(block)
    }

    /// Appends `block` and its trailer (type byte, masked CRC32C of block and type); returns
    /// the block's offset and size.
    fn write_block(&mut self, block: Vec<u8>) -> std::io::Result<(u64, u64)> {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&block), &[NO_COMPRESSION]);
        let masked = crate::formats::crc::mask(crc);
        self.out.write_all(&block)?;
        self.out.write_all(&[NO_COMPRESSION])?;
        self.out.write_all(&masked.to_le_bytes())?;
        let handle = (self.offset, block.len() as u64);
        self.offset += block.len() as u64 + 5;
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_successors_are_leveldbs() {
        let mut start = b"abcdx".to_vec();
        shortest_separator(&mut start, b"abzzz");
        assert_eq!(start, b"abd");
        let mut prefix = b"ab".to_vec();
        shortest_separator(&mut prefix, b"abc");
        assert_eq!(prefix, b"ab", "a prefix of the limit stays");
        let mut adjacent = b"abc".to_vec();
        shortest_separator(&mut adjacent, b"abd");
        assert_eq!(adjacent, b"abc", "no byte fits between c and d");
        let mut key = vec![0xff, 0xff, b'a', b'b'];
        short_successor(&mut key);
        assert_eq!(key, [0xff, 0xff, b'b']);
    }

    #[test]
    fn an_empty_table_is_two_empty_blocks_and_the_footer() {
        let mut out = Vec::new();
        write_table(&mut out, std::iter::empty()).unwrap();
        // Two 8-byte blocks (no restart past the first, count 1), 5-byte trailers, 48-byte footer.
        assert_eq!(out.len(), 2 * (8 + 5) + 48);
        assert_eq!(&out[out.len() - 8..], &TABLE_MAGIC.to_le_bytes());
    }
}
