//! The one CRC-32C that TensorFlow's files use (TFRecord frames, checkpoint tables and tensor
//! data, event files), masked as LevelDB masks a stored checksum (`crc32c::Mask`).

/// LevelDB's CRC mask delta.
const MASK_DELTA: u32 = 0xa282_ead8;

/// LevelDB's masking of a CRC-32C before it is stored.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// The masked CRC-32C of `bytes`, as TensorFlow stores it.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    mask(crc32c::crc32c(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_leveldb_test_vectors() {
        // crc32c("123456789") = 0xe3069283 (RFC 3720); masking as LevelDB's crc32c::Mask.
        let crc: u32 = 0xe306_9283;
        assert_eq!(crc32c::crc32c(b"123456789"), crc);
        assert_eq!(masked_crc32c(b"123456789"), crc.rotate_right(15).wrapping_add(0xa282_ead8));
    }
}
