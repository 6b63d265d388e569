//! JPEG decoding as TensorFlow's `tf.io.decode_jpeg` does it, so that tfload feeds a model the
//! pixels Keras's `image_dataset_from_directory` would.
//!
//! TensorFlow decodes with libjpeg-turbo (`tensorflow/core/lib/jpeg/jpeg_mem.cc`) at its
//! defaults: the fast integer inverse DCT (`dct_method=""` leaves `UncompressFlags`'s default,
//! `JDCT_IFAST`: "the TensorFlow-chosen default ... sacrificing image quality for speed"), fancy
//! (smooth) chroma upsampling, no scaling, EXIF orientation ignored. tfload uses the same decoder (the
//! `mozjpeg` crate builds libjpeg-turbo's decoder, which mozjpeg keeps unchanged, from bundled C
//! sources with `cc`) with the same settings, and repeats what `jpeg_mem.cc` does around it:
//! grayscale is libjpeg's own `JCS_GRAYSCALE` output (the Y channel), CMYK and YCCK files are
//! decoded as CMYK and turned into RGB with TensorFlow's integer formula (inverted when an Adobe
//! marker is present), and a file whose data ends before its end-of-image marker is an error,
//! as it is for TensorFlow with `try_recover_truncated_jpeg` off (its default).

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, DctMethod, Decompress, Marker};

/// A decoded JPEG: `height × width × channels` bytes, row-major.
#[derive(Debug)]
pub struct DecodedJpeg {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// The pixels, `channels` bytes each.
    pub pixels: Vec<u8>,
}

/// Whether `bytes` start as a JPEG does (the SOI marker followed by another marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes a JPEG to `channels` channels (1: grayscale, 3: RGB) exactly as
/// `tf.io.decode_jpeg(bytes, channels)` does. `check_size(width, height)` runs on the header's
/// dimensions before any pixel is decoded and may refuse them. Errors are sentences completing
/// "the file ...".
pub fn decode_jpeg(
    bytes: &[u8],
    channels: usize,
    check_size: impl Fn(u32, u32) -> Result<(), String>,
) -> Result<DecodedJpeg, String> {
    assert!(channels == 1 || channels == 3, "JPEG decodes to 1 or 3 channels, not {channels}");
    check_complete(bytes)?;
    // libjpeg reports a fatal error by calling `error_exit`, which the crate makes an unwind
    // (without the panic hook, so nothing is printed); catching it here turns a corrupt file
    // into an error. Everything libjpeg touched is created inside the closure and dropped with it.
    match catch_unwind(AssertUnwindSafe(|| decode_checked(bytes, channels, &check_size))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(|m| m.trim_start_matches("libjpeg fatal error: ").to_string())
                .unwrap_or_else(|| "an unknown libjpeg error".to_string());
            Err(format!("cannot be decoded as a JPEG ({message})"))
        }
    }
}

/// [`decode_jpeg`] once the file is known to reach its end-of-image marker.
fn decode_checked(
    bytes: &[u8],
    channels: usize,
    check_size: &dyn Fn(u32, u32) -> Result<(), String>,
) -> Result<DecodedJpeg, String> {
    let io = |e: std::io::Error| format!("cannot be decoded as a JPEG ({e})");
    let mut decoder = Decompress::with_markers(&[Marker::APP(14)]).from_mem(bytes).map_err(io)?;
    let (width, height) = decoder.size();
    check_size(u32::try_from(width).unwrap_or(u32::MAX), u32::try_from(height).unwrap_or(u32::MAX))?;
    // TensorFlow's default; the accurate ISLOW differs from it by up to 18 levels on photos.
    decoder.dct_method(DctMethod::IntegerFast);
    decoder.do_fancy_upsampling(true);
    let cmyk = matches!(decoder.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
    let adobe = decoder.markers().any(|m| matches!(m.marker, Marker::APP(14)) && is_adobe_segment(m.data));
    let out = match (channels, cmyk) {
        (1, _) => ColorSpace::JCS_GRAYSCALE,
        (_, true) => ColorSpace::JCS_CMYK,
        (_, false) => ColorSpace::JCS_RGB,
    };
    let mut started = decoder.to_colorspace(out).map_err(io)?;
    let pixels: Vec<u8> = started.read_scanlines().map_err(io)?;
    started.finish().map_err(io)?;
    let pixels = if out == ColorSpace::JCS_CMYK { cmyk_to_rgb(&pixels, adobe) } else { pixels };
    if pixels.len() != width * height * channels {
        return Err(format!("decoded to fewer pixels than its {width}x{height} size (the file is corrupt)"));
    }
    Ok(DecodedJpeg { height, width, pixels })
}

/// libjpeg's test for an Adobe APP14 segment (`saw_Adobe_marker`): at least 12 bytes, "Adobe".
fn is_adobe_segment(data: &[u8]) -> bool {
    data.len() >= 12 && data.starts_with(b"Adobe")
}

/// TensorFlow's CMYK to RGB (`jpeg_mem.cc`): Adobe files store inverted CMYK, so `r = k * c / 255`;
/// others `r = (255 - k) * (255 - c) / 255`; integer division.
fn cmyk_to_rgb(cmyk: &[u8], adobe: bool) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for pixel in cmyk.chunks_exact(4) {
        let k = u32::from(pixel[3]);
        for &ink in &pixel[..3] {
            let ink = u32::from(ink);
            let value = if adobe { k * ink / 255 } else { (255 - k) * (255 - ink) / 255 };
            rgb.push(value as u8);
        }
    }
    rgb
}

/// Refuses a JPEG whose data ends before its end-of-image (EOI) marker. libjpeg would pad the
/// missing data with a fake EOI and decode grey; TensorFlow's memory source refuses to (unless
/// `try_recover_truncated_jpeg`), so such a file is an error for both. The walk follows
/// libjpeg's marker reading: segments by their length, entropy-coded data up to the next marker
/// other than a stuffed `FF 00` or a restart marker, bytes between markers skipped.
fn check_complete(bytes: &[u8]) -> Result<(), String> {
    if !is_jpeg(bytes) {
        return Err("cannot be decoded as a JPEG (it does not start with the JPEG start-of-image marker)".to_string());
    }
    let truncated = |at: usize| {
        Err(format!(
            "is a truncated JPEG (its data ends at byte {at}, before the end-of-image marker; TensorFlow refuses it too)"
        ))
    };
    let mut at = 2;
    loop {
        // Find the next marker: an FF (fill FFs skipped) followed by a code.
        let Some(offset) = bytes[at..].iter().position(|&b| b == 0xFF) else {
            return truncated(bytes.len());
        };
        at += offset;
        while bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = bytes.get(at + 1) else {
            return truncated(bytes.len());
        };
        at += 2;
        match code {
            0xD9 => return Ok(()),
            0x00 | 0xD0..=0xD7 | 0x01 => continue,
            0xD8 => return Err("cannot be decoded as a JPEG (a second start-of-image marker)".to_string()),
            _ => {
                let Some(length) = bytes.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
                    return truncated(bytes.len());
                };
                if length < 2 || at + length > bytes.len() {
                    return truncated(bytes.len());
                }
                at += length;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny baseline JPEG written by the `image` crate.
    fn small_jpeg() -> Vec<u8> {
        let image = image::RgbImage::from_fn(19, 13, |x, y| image::Rgb([x as u8 * 13, y as u8 * 19, 90]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image).write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
        bytes.into_inner()
    }

    fn no_limit(_: u32, _: u32) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn a_complete_jpeg_decodes_to_its_size_in_one_or_three_channels() {
        let jpeg = small_jpeg();
        for channels in [1, 3] {
            let decoded = decode_jpeg(&jpeg, channels, no_limit).unwrap();
            assert_eq!((decoded.height, decoded.width, decoded.pixels.len()), (13, 19, 13 * 19 * channels));
        }
    }

    #[test]
    fn every_cut_of_a_jpeg_before_its_end_marker_is_a_truncation_error() {
        let jpeg = small_jpeg();
        for end in 0..jpeg.len() - 1 {
            let message = decode_jpeg(&jpeg[..end], 3, no_limit).unwrap_err();
            assert!(message.contains("truncated") || message.contains("start-of-image"), "cut at {end}: {message}");
        }
        // Bytes after the end marker are ignored, as libjpeg does.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(b"trailing");
        assert!(decode_jpeg(&padded, 3, no_limit).is_ok());
    }

    #[test]
    fn the_size_check_runs_before_decoding() {
        let message = decode_jpeg(&small_jpeg(), 3, |w, h| Err(format!("{w}x{h} refused"))).unwrap_err();
        assert_eq!(message, "19x13 refused");
    }

    #[test]
    fn corrupt_jpegs_are_errors_not_panics() {
        let jpeg = small_jpeg();
        for at in 2..jpeg.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bytes = jpeg.clone();
                bytes[at] ^= flip;
                if let Ok(decoded) = decode_jpeg(&bytes, 3, no_limit) {
                    assert_eq!(decoded.pixels.len(), decoded.height * decoded.width * 3);
                }
            }
        }
    }

    #[test]
    fn cmyk_follows_tensorflow_for_adobe_and_plain_files() {
        let cmyk = [200u8, 100, 0, 255, 10, 20, 30, 0];
        assert_eq!(cmyk_to_rgb(&cmyk, true), vec![200, 100, 0, 0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&cmyk, false), vec![0, 0, 0, 245, 235, 225]);
    }
}
