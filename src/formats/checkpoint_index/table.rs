//! A strict reader of TensorFlow's table format (LevelDB's, as in
//! `tensorflow/core/lib/io/table_format.txt`), the container of a checkpoint index.
//!
//! Nothing in the file is trusted before it is checked: the footer's magic number, every block
//! handle against the file's size, every block's masked CRC32C trailer (as TensorFlow's
//! `ReadBlock` does), the restart array, each entry's key and value lengths, and that keys rise
//! strictly through the whole table. Every bound is checked arithmetic on a slice, there is no
//! recursion, and each problem is an `Err` naming what is wrong, never a panic. TensorFlow writes
//! checkpoint tables uncompressed, so a compressed block is refused by name.

/// The table's magic number (`kTableMagicNumber`), the last 8 bytes of the file, little-endian.
const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// The footer: two block handles padded with zeros to 40 bytes, then the magic number.
const FOOTER_BYTES: usize = 48;
/// Where the magic number starts inside the footer.
const FOOTER_MAGIC_AT: usize = 40;
/// Each block is followed by its compression type (1 byte) and masked CRC32C (4 bytes).
const TRAILER_BYTES: usize = 5;
/// The only compression type TensorFlow writes into a checkpoint index.
const NO_COMPRESSION: u8 = 0;

/// One key and its value, borrowed from the file's bytes.
pub(super) type Record<'a> = (Vec<u8>, &'a [u8]);

/// A checked problem with the table, worded for the user.
type Problem = String;

/// Where a block sits in the file.
#[derive(Debug, Clone, Copy)]
struct BlockHandle {
    offset: u64,
    size: u64,
}

/// Every record of the table in `file`, in key order, after checking the whole table.
pub(super) fn entries(file: &[u8]) -> Result<Vec<Record<'_>>, Problem> {
    let (metaindex, index) = footer(file)?;
    block_records(block(file, metaindex, "the metaindex block")?, "the metaindex block")?;
    let index_records = block_records(block(file, index, "the index block")?, "the index block")?;
    let mut records: Vec<Record<'_>> = Vec::new();
    for (position, (separator, handle_bytes)) in index_records.iter().enumerate() {
        let what = format!("data block {position}");
        let handle =
            exact_handle(handle_bytes).ok_or_else(|| format!("the index entry of {what} is not a block handle"))?;
        let data = block_records(block(file, handle, &what)?, &what)?;
        if let (Some((first, _)), Some((previous, _))) = (data.first(), records.last()) {
            if first <= previous {
                return Err(format!("the keys of {what} do not follow those before it"));
            }
        }
        if data.last().is_some_and(|(last, _)| last > separator) {
            return Err(format!("{what} holds keys past its index entry"));
        }
        records.extend(data);
    }
    Ok(records)
}

/// The metaindex and index handles of the footer, after checking its magic and padding.
fn footer(file: &[u8]) -> Result<(BlockHandle, BlockHandle), Problem> {
    let start = file
        .len()
        .checked_sub(FOOTER_BYTES)
        .ok_or_else(|| format!("the file is only {} bytes long, shorter than a table footer", file.len()))?;
    let footer = &file[start..];
    let magic = u64::from_le_bytes(footer[FOOTER_MAGIC_AT..].try_into().map_err(|_| "footer".to_string())?);
    if magic != TABLE_MAGIC {
        return Err("bad magic number: this is not a TensorFlow table, or its end is cut off".to_string());
    }
    let mut rest = &footer[..FOOTER_MAGIC_AT];
    let metaindex = handle(&mut rest).ok_or("the footer's metaindex handle does not decode")?;
    let index = handle(&mut rest).ok_or("the footer's index handle does not decode")?;
    if rest.iter().any(|&b| b != 0) {
        return Err("the footer's padding is not zero".to_string());
    }
    Ok((metaindex, index))
}

/// The contents of the block at `handle`, after checking its bounds, compression and checksum.
fn block<'a>(file: &'a [u8], handle: BlockHandle, what: &str) -> Result<&'a [u8], Problem> {
    let data_end = file.len() - FOOTER_BYTES;
    let start = usize::try_from(handle.offset).ok();
    let end = start.zip(usize::try_from(handle.size).ok()).and_then(|(s, n)| s.checked_add(n));
    let trailer_end = end.and_then(|e| e.checked_add(TRAILER_BYTES));
    let (Some(start), Some(end), Some(trailer_end)) = (start, end, trailer_end) else {
        return Err(format!("{what} has an impossible location"));
    };
    if trailer_end > data_end {
        return Err(format!(
            "{what} ({} bytes at offset {start}) lies past the end of the table data ({data_end} bytes); the file is truncated",
            handle.size
        ));
    }
    let contents = &file[start..end];
    let trailer = &file[end..trailer_end];
    let stored = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
    let actual = mask(crc32c::crc32c_append(crc32c::crc32c(contents), &trailer[..1]));
    if stored != actual {
        return Err(format!("block checksum mismatch in {what}: the file is corrupt"));
    }
    if trailer[0] != NO_COMPRESSION {
        return Err(format!(
            "{what} is compressed (type {}), which TensorFlow never writes into a checkpoint index",
            trailer[0]
        ));
    }
    Ok(contents)
}

/// The records of one block's contents, after checking its restart array and every entry.
fn block_records<'a>(contents: &'a [u8], what: &str) -> Result<Vec<Record<'a>>, Problem> {
    let restarts_at = restarts_start(contents).ok_or_else(|| format!("{what} has a broken restart array"))?;
    let restarts: Vec<usize> = contents[restarts_at..contents.len() - 4]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let mut records: Vec<Record<'a>> = Vec::new();
    let mut offset = 0;
    let mut next_restart = restarts.iter().peekable();
    while offset < restarts_at {
        let at_restart = next_restart.next_if_eq(&&offset).is_some();
        let (record, next) =
            block_entry(contents, restarts_at, offset, records.last().map(|(k, _)| k.as_slice()), at_restart)
                .ok_or_else(|| format!("{what} has a broken entry at byte {offset}"))?;
        if records.last().is_some_and(|(previous, _)| *previous >= record.0) {
            return Err(format!("the keys of {what} are out of order at byte {offset}"));
        }
        records.push(record);
        offset = next;
    }
    // An empty block (LevelDB writes the metaindex so) still has its one restart at 0.
    let unmatched: Vec<&usize> = next_restart.collect();
    let empty_block = records.is_empty() && unmatched == [&0];
    if (!unmatched.is_empty() && !empty_block) || restarts.first() != Some(&0) {
        return Err(format!("{what}'s restart points do not fall on its entries"));
    }
    Ok(records)
}

/// Where the restart array of a block starts, if the block is long enough to hold it.
fn restarts_start(contents: &[u8]) -> Option<usize> {
    let count_at = contents.len().checked_sub(4)?;
    let count = u32::from_le_bytes(contents[count_at..].try_into().ok()?) as usize;
    if count == 0 {
        return None;
    }
    count_at.checked_sub(count.checked_mul(4)?)
}

/// The entry at `offset` (below `limit`) and the offset after it. A restart entry shares nothing
/// with the key before it.
fn block_entry<'a>(
    contents: &'a [u8],
    limit: usize,
    offset: usize,
    previous: Option<&[u8]>,
    at_restart: bool,
) -> Option<(Record<'a>, usize)> {
    let mut rest = &contents[offset..limit];
    let shared = usize::try_from(varint(&mut rest, 5)?).ok()?;
    let unshared = usize::try_from(varint(&mut rest, 5)?).ok()?;
    let value_len = usize::try_from(varint(&mut rest, 5)?).ok()?;
    let previous = previous.unwrap_or_default();
    if shared > previous.len() || (at_restart && shared != 0) || unshared.checked_add(value_len)? > rest.len() {
        return None;
    }
    let mut key = previous[..shared].to_vec();
    key.extend_from_slice(&rest[..unshared]);
    let value = &rest[unshared..unshared + value_len];
    let next = limit - rest.len() + unshared + value_len;
    Some(((key, value), next))
}

/// A block handle that takes exactly all of `bytes`.
fn exact_handle(mut bytes: &[u8]) -> Option<BlockHandle> {
    let handle = handle(&mut bytes)?;
    bytes.is_empty().then_some(handle)
}

/// Decodes a block handle (two varint64s) from the front of `bytes`.
fn handle(bytes: &mut &[u8]) -> Option<BlockHandle> {
    Some(BlockHandle { offset: varint(bytes, 10)?, size: varint(bytes, 10)? })
}

/// Decodes a little-endian base-128 varint of at most `max_bytes` bytes from the front of `bytes`.
/// Only the shortest form is taken: every writer of the format makes it, and a padded form
/// (`0x9b 0x00` for 27) would let a changed byte in the footer pass unnoticed.
fn varint(bytes: &mut &[u8], max_bytes: usize) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(max_bytes).enumerate() {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return None;
            }
            *bytes = &bytes[i + 1..];
            return (max_bytes > 5 || value <= u64::from(u32::MAX)).then_some(value);
        }
    }
    None
}

pub(crate) use crate::formats::crc::mask;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_and_refuse_overlong_forms() {
        let mut bytes: &[u8] = &[0xac, 0x02, 0x07];
        assert_eq!(varint(&mut bytes, 5), Some(300));
        assert_eq!(bytes, &[0x07]);
        let mut unterminated: &[u8] = &[0x80; 11];
        assert_eq!(varint(&mut unterminated, 10), None);
        let mut padded: &[u8] = &[0x9b, 0x00];
        assert_eq!(varint(&mut padded, 10), None);
        let mut too_big_for_32: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(varint(&mut too_big_for_32, 5), None);
    }

    #[test]
    fn a_block_without_restarts_is_refused() {
        assert!(block_records(&[0, 0, 0, 0], "b").is_err());
        assert!(block_records(&[1, 2], "b").is_err());
    }

    #[test]
    fn mask_matches_leveldb() {
        // LevelDB's crc32c_test: masking changes the value, twice too, and unmasking undoes it.
        let crc: u32 = 0xe306_9283;
        let unmask = |masked: u32| masked.wrapping_sub(0xa282_ead8).rotate_left(15);
        assert_ne!(mask(crc), crc);
        assert_ne!(mask(mask(crc)), crc);
        assert_eq!(unmask(mask(crc)), crc);
        assert_eq!(unmask(unmask(mask(mask(crc)))), crc);
    }
}
