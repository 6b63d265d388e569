//! One member of a `.npz` archive, read with its zip CRC-32 and stored size checked. The `zip`
//! crate checks the CRC only when a member is read to its end, which `npyz` never does, so a
//! corrupt `.npz` used to load silently; here every byte is counted and hashed, reading past the
//! size the archive declares fails (a zip bomb stops there), and [`CheckedMember::finish`] reads
//! the rest and compares before the data is handed out.

use std::io::{self, Read};

use crc::{Crc, Digest, CRC_32_ISO_HDLC};

/// The zip format's CRC-32.
static ZIP_CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// A reader over one archive member that hashes what it reads and stops at its declared size.
pub struct CheckedMember<R> {
    inner: R,
    digest: Digest<'static, u32>,
    read: u64,
    declared_size: u64,
    declared_crc: u32,
}

impl<R: Read> CheckedMember<R> {
    /// Wraps `inner`, whose archive entry declares `declared_size` bytes with CRC-32
    /// `declared_crc`.
    pub fn new(inner: R, declared_size: u64, declared_crc: u32) -> CheckedMember<R> {
        CheckedMember { inner, digest: ZIP_CRC.digest(), read: 0, declared_size, declared_crc }
    }

    /// The size the archive declares for the member, uncompressed.
    pub fn declared_size(&self) -> u64 {
        self.declared_size
    }

    /// Reads what is left and checks the size and the CRC-32; the error says which is wrong.
    pub fn finish(mut self) -> Result<(), String> {
        let drained = io::copy(&mut self, &mut io::sink());
        let size_error = || {
            format!("its data ends after {} bytes, but the archive declares {} bytes", self.read, self.declared_size)
        };
        let computed = self.digest.clone().finalize();
        match drained {
            // The zip crate reports a CRC mismatch of its own at the end; report ours.
            Err(_) if self.read == self.declared_size && computed != self.declared_crc => {
                Err(self.crc_message(computed))
            }
            Err(e) => Err(format!("its data cannot be read ({e})")),
            Ok(_) if self.read != self.declared_size => Err(size_error()),
            Ok(_) if computed != self.declared_crc => Err(self.crc_message(computed)),
            Ok(_) => Ok(()),
        }
    }

    fn crc_message(&self, computed: u32) -> String {
        format!(
            "Bad CRC-32: the archive records {:08x} but the data hashes to {computed:08x}; the file is corrupt (numpy refuses it too), copy or write it again",
            self.declared_crc
        )
    }
}

impl<R: Read> Read for CheckedMember<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let count = self.inner.read(buf)?;
        if self.read + count as u64 > self.declared_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it inflates to more than the {} bytes the archive declares for it", self.declared_size),
            ));
        }
        self.read += count as u64;
        self.digest.update(&buf[..count]);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(data: &[u8]) -> u32 {
        ZIP_CRC.checksum(data)
    }

    #[test]
    fn passes_intact_data() {
        let data = b"hello npz";
        let mut member = CheckedMember::new(&data[..], 9, crc(data));
        let mut first = [0u8; 3];
        member.read_exact(&mut first).unwrap();
        assert_eq!(member.finish(), Ok(()));
    }

    #[test]
    fn names_a_bad_crc() {
        let data = b"hello npz";
        let error = CheckedMember::new(&data[..], 9, crc(b"hello npy")).finish().unwrap_err();
        assert!(error.contains("Bad CRC-32"), "{error}");
    }

    #[test]
    fn refuses_more_data_than_declared() {
        let data = [0u8; 100];
        let error = CheckedMember::new(&data[..], 10, crc(&data[..10])).finish().unwrap_err();
        assert!(error.contains("more than the 10 bytes"), "{error}");
    }

    #[test]
    fn refuses_less_data_than_declared() {
        let data = [0u8; 5];
        let error = CheckedMember::new(&data[..], 10, crc(&data)).finish().unwrap_err();
        assert!(error.contains("ends after 5 bytes"), "{error}");
    }
}
