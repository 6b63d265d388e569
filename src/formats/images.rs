//! Image files as model input: decoding (JPEG as TensorFlow does it, through libjpeg-turbo's
//! decoder in [`super::jpeg`]; PNG, GIF, BMP through the `image` crate), the
//! channel conversion a model wants (grayscale, RGB, RGBA) and the bilinear resize of Keras's
//! `image_dataset_from_directory`, giving float32 pixels in 0..255 laid out height × width ×
//! channels, the values Keras feeds a model.
//!
//! The resize is TensorFlow's `tf.image.resize(method="bilinear", antialias=False)` (half-pixel
//! centers), computed in the same float32 order, so tfload and Keras feed a model the same
//! numbers (tests compare them with Python TensorFlow on real photos).

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use ndarray::{Array3, ArrayD, ArrayView3, IxDyn};
use rayon::prelude::*;
use serde::Serialize;

use super::jpeg;
use crate::error::{Error, Result};
use crate::tensor::shape::Shape;

/// File extensions read as images (compared case-insensitively), those Keras's
/// `image_dataset_from_directory` accepts.
pub const IMAGE_EXTENSIONS: &[&str] = &["bmp", "gif", "jpeg", "jpg", "png"];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`].
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// The channels a model takes (Keras's `color_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// One channel.
    Grayscale,
    /// Three channels, red green blue.
    Rgb,
    /// Four channels, RGB and alpha.
    Rgba,
}

impl ColorMode {
    /// The number of channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Grayscale => 1,
            ColorMode::Rgb => 3,
            ColorMode::Rgba => 4,
        }
    }

    /// The mode with `channels` channels (1, 3 or 4).
    pub fn from_channels(channels: usize) -> Option<ColorMode> {
        match channels {
            1 => Some(ColorMode::Grayscale),
            3 => Some(ColorMode::Rgb),
            4 => Some(ColorMode::Rgba),
            _ => None,
        }
    }
}

/// What a model takes as one image: its height, width and channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageSpec {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub color_mode: ColorMode,
}

/// Why an input shape cannot be fed with images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnfitImageInput {
    /// Not `[batch, height, width, channels]`.
    NotImageBatch,
    /// The channel count is unknown or not 1, 3 or 4.
    Channels,
    /// Height or width is open and no size was given.
    OpenSize,
}

impl ImageSpec {
    /// What an image must become to feed an input of shape `[batch, height, width, channels]`;
    /// `size` (height, width) where the shape leaves it open, or to override it.
    pub fn for_input_shape(
        shape: &Shape,
        size: Option<(usize, usize)>,
    ) -> std::result::Result<ImageSpec, UnfitImageInput> {
        let dims = shape.dims().filter(|dims| dims.len() == 4).ok_or(UnfitImageInput::NotImageBatch)?;
        let color_mode = dims[3].and_then(|c| ColorMode::from_channels(c as usize)).ok_or(UnfitImageInput::Channels)?;
        let model_size = dims[1].zip(dims[2]).map(|(h, w)| (h as usize, w as usize));
        let (height, width) = size.or(model_size).ok_or(UnfitImageInput::OpenSize)?;
        Ok(ImageSpec { height, width, color_mode })
    }

    /// The shape of one image: `[height, width, channels]`.
    pub fn shape(&self) -> Vec<usize> {
        vec![self.height, self.width, self.color_mode.channels()]
    }

    /// Number of float32 values of one image: height × width × channels.
    pub fn len(&self) -> usize {
        self.height * self.width * self.color_mode.channels()
    }

    /// Whether an image of this spec holds no values (a zero height or width).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses a spec of more than [`MAX_IMAGE_PIXELS`] pixels (a model input or `--image-size`
    /// that no decoded image may reach either), before its buffers are allocated; `origin`
    /// names the image being read.
    fn check_size(&self, origin: &Path) -> Result<()> {
        let pixels = (self.height as u64).checked_mul(self.width as u64);
        if pixels.is_some_and(|p| p <= MAX_IMAGE_PIXELS) {
            return Ok(());
        }
        Err(Error::Image {
            path: origin.to_path_buf(),
            problem: format!(
                "would be resized to {}x{}, over the limit of {MAX_IMAGE_PIXELS} pixels per image (check the model's input shape or --image-size)",
                self.height, self.width
            ),
        })
    }

    /// Reads one image file as model input: decoded, converted, resized, float32 0..255.
    pub fn load(&self, path: &Path) -> Result<Array3<f32>> {
        self.check_size(path)?;
        let mut image = Array3::zeros((self.height, self.width, self.color_mode.channels()));
        self.load_into(path, image.as_slice_mut().expect("a new array is contiguous"))?;
        Ok(image)
    }

    /// Reads one image file into `out` (`len()` values, height × width × channels), as
    /// [`load`] does, without allocating the result: how a batch is filled in place.
    ///
    /// [`load`]: ImageSpec::load
    pub fn load_into(&self, path: &Path, out: &mut [f32]) -> Result<()> {
        self.check_size(path)?;
        let pixels = decode(path, self.color_mode)?;
        resize_bilinear_into(pixels.view(), self.height, self.width, out);
        Ok(())
    }

    /// Reads one encoded image (the bytes of a PNG, JPEG, ... file) as model input, as [`load`]
    /// does; `origin` names it in errors.
    ///
    /// [`load`]: ImageSpec::load
    pub fn load_bytes(&self, bytes: &[u8], origin: &Path) -> Result<Array3<f32>> {
        self.check_size(origin)?;
        let pixels = decode_bytes(bytes, self.color_mode, origin)?;
        Ok(resize_bilinear(pixels.view(), self.height, self.width))
    }

    /// Reads image files as one batch `[n, height, width, channels]`, decoding them in parallel,
    /// each straight into its slot of the batch. The first file that fails is reported.
    pub fn load_batch(&self, paths: &[PathBuf]) -> Result<ArrayD<f32>> {
        self.check_size(paths.first().map_or(Path::new("an empty batch"), PathBuf::as_path))?;
        let mut shape = vec![paths.len()];
        shape.extend(self.shape());
        let mut batch = ArrayD::zeros(IxDyn(&shape));
        if !self.is_empty() {
            let slots = batch.as_slice_mut().expect("a new array is contiguous").par_chunks_mut(self.len());
            let outcomes: Vec<Result<()>> = slots.zip(paths).map(|(slot, path)| self.load_into(path, slot)).collect();
            outcomes.into_iter().collect::<Result<()>>()?;
        }
        Ok(batch)
    }
}

/// Decodes an image file into `color_mode`'s channels, `[height, width, channels]` bytes.
/// 16-bit images are scaled to 8 bits; animations give their first frame.
pub fn decode(path: &Path, color_mode: ColorMode) -> Result<Array3<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    decode_bytes(&bytes, color_mode, path)
}

/// Most pixels (width × height) an image may have: Pillow's guard against decompression bombs
/// (`Image.MAX_IMAGE_PIXELS`, about 89 megapixels). Checked from the header, before decoding.
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;
/// Most bytes the decoder may allocate for one image (16-bit RGBA at [`MAX_IMAGE_PIXELS`] fits).
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Decodes an encoded image held in memory, as [`decode`] does a file; `origin` names it in errors.
/// The dimensions the header declares are checked (not zero, at most [`MAX_IMAGE_PIXELS`])
/// before any pixel is decoded, and the decoder runs under `image::Limits`.
pub fn decode_bytes(bytes: &[u8], color_mode: ColorMode, origin: &Path) -> Result<Array3<u8>> {
    let image_error = |problem: String| Error::Image { path: origin.to_path_buf(), problem };
    if jpeg::is_jpeg(bytes) {
        return decode_jpeg(bytes, color_mode).map_err(image_error);
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| Error::Io { path: origin.to_path_buf(), source })?;
    let format = reader.format();
    if format == Some(ImageFormat::Png) {
        check_png_chunks(bytes)
            .map_err(|problem| image_error(format!("cannot be decoded as an image: it {problem}")))?;
    }
    reader.limits(decode_limits());
    let decoder = reader.into_decoder().map_err(|e| image_error(format!("cannot be decoded as an image ({e})")))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height).map_err(image_error)?;
    let image =
        DynamicImage::from_decoder(decoder).map_err(|e| image_error(format!("cannot be decoded as an image ({e})")))?;
    check_dimensions(image.width(), image.height()).map_err(image_error)?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let bytes = match color_mode {
        ColorMode::Grayscale => to_gray(image),
        // `into_*` keeps the decoder's buffer when it already has these channels (no copy).
        ColorMode::Rgb => image.into_rgb8().into_raw(),
        ColorMode::Rgba => image.into_rgba8().into_raw(),
    };
    Array3::from_shape_vec((height, width, color_mode.channels()), bytes)
        .map_err(|_| image_error(format!("decoded to fewer pixels than its {width}x{height} size")))
}

/// A JPEG decoded as `tf.io.decode_jpeg` does (see [`jpeg`]), with an opaque alpha channel added
/// for RGBA (TensorFlow's `decode_image(channels=4)`).
fn decode_jpeg(bytes: &[u8], color_mode: ColorMode) -> std::result::Result<Array3<u8>, String> {
    let channels = if color_mode == ColorMode::Grayscale { 1 } else { 3 };
    let decoded = jpeg::decode_jpeg(bytes, channels, check_dimensions)?;
    let pixels = match color_mode {
        ColorMode::Rgba => decoded.pixels.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        _ => decoded.pixels,
    };
    Array3::from_shape_vec((decoded.height, decoded.width, color_mode.channels()), pixels)
        .map_err(|_| format!("decoded to fewer pixels than its {}x{} size", decoded.width, decoded.height))
}

/// Walks a PNG's chunks up to `IEND` and checks each one's length and CRC-32, the trailing
/// chunks included (decoders stop after the pixel data and never look at them): a PNG whose own
/// checksums say it is corrupt is refused, whatever part they cover.
fn check_png_chunks(bytes: &[u8]) -> std::result::Result<(), String> {
    const SIGNATURE: usize = 8;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut at = SIGNATURE;
    loop {
        let Some(header) = bytes.get(at..at + 8) else {
            return Err(format!(
                "is truncated (it ends at byte {} without the IEND chunk that closes a PNG)",
                bytes.len()
            ));
        };
        let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
        let end = at.checked_add(12).and_then(|n| n.checked_add(length)).filter(|&end| end <= bytes.len()).ok_or_else(|| {
            format!("is truncated or corrupt (its {kind:?} chunk at byte {at} declares {length} bytes, more than the file holds)")
        })?;
        let stored = u32::from_be_bytes(bytes[end - 4..end].try_into().expect("4 bytes"));
        if crc.checksum(&bytes[at + 4..end - 4]) != stored {
            return Err(format!(
                "is corrupt (the CRC-32 of its {kind} chunk at byte {at} does not match its contents)"
            ));
        }
        if &header[4..8] == b"IEND" {
            return Ok(());
        }
        at = end;
    }
}

/// The `image` crate's limits for one decode: [`MAX_IMAGE_PIXELS`] wide or high at most, and
/// [`MAX_DECODE_BYTES`] of buffers.
fn decode_limits() -> image::Limits {
    let side = u32::try_from(MAX_IMAGE_PIXELS).unwrap_or(u32::MAX);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Refuses an empty image (a zero width or height cannot be resized) and one of more than
/// [`MAX_IMAGE_PIXELS`] pixels.
fn check_dimensions(width: u32, height: u32) -> std::result::Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("declares a {width}x{height} image, which has no pixels (the file is corrupt)"));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "declares a {width}x{height} image ({pixels} pixels), over the limit of {MAX_IMAGE_PIXELS} pixels tfload decodes (the file is corrupt or a decompression bomb)"
        ));
    }
    Ok(())
}

/// Grayscale as TensorFlow's PNG (and GIF, BMP) decoders give it: exactly libpng's
/// `png_set_rgb_to_gray(.., 0.299, 0.587)` as TensorFlow calls it (weights in 1/32768,
/// truncated). JPEG never comes here: libjpeg gives its own grayscale.
fn to_gray(image: DynamicImage) -> Vec<u8> {
    if !image.color().has_color() {
        return image.into_luma8().into_raw();
    }
    let luma = |[r, g, b]: [u8; 3]| -> u8 {
        let (r, g, b) = (u32::from(r), u32::from(g), u32::from(b));
        ((9797 * r + 19234 * g + 3737 * b) >> 15) as u8
    };
    image.to_rgb8().pixels().map(|p| luma(p.0)).collect()
}

/// One output coordinate's source rows (or columns) and weight.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tap {
    lower: usize,
    upper: usize,
    lerp: f32,
}

/// TensorFlow's `compute_interpolation_weights` with half-pixel centers, in float32.
fn taps(in_size: usize, out_size: usize) -> Vec<Tap> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|i| {
            let source = (i as f32 + 0.5) * scale - 0.5;
            let floor = source.floor();
            Tap {
                lower: floor.max(0.0) as usize,
                upper: (source.ceil().max(0.0) as usize).min(in_size - 1),
                lerp: source - floor,
            }
        })
        .collect()
}

/// Resizes `[height, width, channels]` pixels to `height` × `width` as
/// `tf.image.resize(method="bilinear", antialias=False)` does, giving float32 values.
pub fn resize_bilinear(image: ArrayView3<u8>, height: usize, width: usize) -> Array3<f32> {
    let mut out = Array3::zeros((height, width, image.dim().2));
    resize_bilinear_into(image, height, width, out.as_slice_mut().expect("a new array is contiguous"));
    out
}

/// [`resize_bilinear`] into `out`, `height × width × channels` values in row-major order.
///
/// Each value is TensorFlow's `top + (bottom - top) * y_lerp` of `top = top_left + (top_right -
/// top_left) * x_lerp` (and the same for `bottom`), in float32 and in that order, so the result is
/// bit for bit what the element-by-element form gives. It is computed in two passes: each source
/// row that an output row needs is interpolated across (`top`, `bottom`) once, kept while the
/// next output rows use it, and the output row is the lerp of two such rows.
pub fn resize_bilinear_into(image: ArrayView3<u8>, height: usize, width: usize, out: &mut [f32]) {
    let (in_height, in_width, channels) = image.dim();
    assert_eq!(out.len(), height * width * channels, "output buffer of {height}x{width}x{channels}");
    if out.is_empty() {
        return;
    }
    let pixels = image.as_standard_layout();
    let pixels = pixels.as_slice().expect("standard layout is contiguous");
    if (in_height, in_width) == (height, width) {
        // Every tap has lower = upper = its own index and weight 0: the values themselves.
        for (value, &pixel) in out.iter_mut().zip(pixels) {
            *value = f32::from(pixel);
        }
        return;
    }
    let in_row = in_width * channels;
    let out_row = width * channels;
    let columns: Vec<(usize, usize, f32)> = taps(in_width, width)
        .iter()
        .map(|column| (column.lower * channels, column.upper * channels, column.lerp))
        .collect();
    let across = |source_row: usize, row: &mut [f32]| {
        let source = &pixels[source_row * in_row..][..in_row];
        match channels {
            1 => interpolate_row::<1>(source, &columns, row),
            3 => interpolate_row::<3>(source, &columns, row),
            4 => interpolate_row::<4>(source, &columns, row),
            _ => interpolate_row_any(source, &columns, channels, row),
        }
    };
    // The interpolated source rows `top` and `bottom` of the last output row, by source index.
    let (mut top, mut bottom) = (vec![0.0f32; out_row], vec![0.0f32; out_row]);
    let (mut top_index, mut bottom_index) = (usize::MAX, usize::MAX);
    for (row, out) in taps(in_height, height).iter().zip(out.chunks_exact_mut(out_row)) {
        if row.lower != top_index {
            if row.lower == bottom_index {
                std::mem::swap(&mut top, &mut bottom);
                bottom_index = usize::MAX;
            } else {
                across(row.lower, &mut top);
            }
            top_index = row.lower;
        }
        if row.upper != bottom_index {
            if row.upper == top_index {
                bottom.copy_from_slice(&top);
            } else {
                across(row.upper, &mut bottom);
            }
            bottom_index = row.upper;
        }
        let y_lerp = row.lerp;
        for ((value, &top), &bottom) in out.iter_mut().zip(&top).zip(&bottom) {
            *value = top + (bottom - top) * y_lerp;
        }
    }
}

/// One source row of `C`-channel pixels interpolated across to the output columns.
fn interpolate_row<const C: usize>(source: &[u8], columns: &[(usize, usize, f32)], row: &mut [f32]) {
    for (&(left, right, x_lerp), out) in columns.iter().zip(row.chunks_exact_mut(C)) {
        let (left, right) = (&source[left..left + C], &source[right..right + C]);
        for c in 0..C {
            let (left, right) = (f32::from(left[c]), f32::from(right[c]));
            out[c] = left + (right - left) * x_lerp;
        }
    }
}

/// [`interpolate_row`] for any channel count.
fn interpolate_row_any(source: &[u8], columns: &[(usize, usize, f32)], channels: usize, row: &mut [f32]) {
    for (&(left, right, x_lerp), out) in columns.iter().zip(row.chunks_exact_mut(channels)) {
        for (c, value) in out.iter_mut().enumerate() {
            let (left, right) = (f32::from(source[left + c]), f32::from(source[right + c]));
            *value = left + (right - left) * x_lerp;
        }
    }
}

/// The image files under `dir` in Keras's order: directories walked recursively and visited
/// sorted by path, files sorted by name within each; hidden entries (`.name`) skipped.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut folders = Vec::new();
    collect_folders(dir, &mut folders)?;
    folders.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(folders.into_iter().flat_map(|(_, files)| files).collect())
}

/// Adds `(dir, its image files sorted)` and the same for every sub-directory.
fn collect_folders(dir: &Path, out: &mut Vec<(String, Vec<PathBuf>)>) -> Result<()> {
    let mut files = Vec::new();
    for entry in visible_entries(dir)? {
        let path = entry.path();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            collect_folders(&path, out)?;
        } else if is_image_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    out.push((dir.to_string_lossy().into_owned(), files));
    Ok(())
}

/// The entries of `dir` whose names do not start with `.`, in directory order.
pub(crate) fn visible_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small image encoded in `format` by the `image` crate.
    fn encoded(format: ImageFormat, width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([x as u8 * 9, y as u8 * 9, 7])
        }));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    fn decode_error(bytes: &[u8]) -> String {
        let error = decode_bytes(bytes, ColorMode::Rgb, Path::new("hostile.img")).unwrap_err();
        assert!(matches!(error, Error::Image { .. }), "{error}");
        error.to_string()
    }

    #[test]
    fn a_gif_with_a_zero_height_screen_is_an_error() {
        let mut gif = encoded(ImageFormat::Gif, 16, 4);
        gif[8..10].copy_from_slice(&0u16.to_le_bytes()); // logical screen height
        let message = decode_error(&gif);
        assert!(message.contains("hostile.img"), "{message}");
        let spec = ImageSpec { height: 8, width: 8, color_mode: ColorMode::Rgb };
        assert!(spec.load_bytes(&gif, Path::new("g.gif")).is_err());
    }

    #[test]
    fn zero_or_absurd_dimensions_are_refused_before_decoding() {
        // BMP: width and height are the i32s at bytes 18 and 22, checked by nothing else.
        for (width, height) in [(0i32, 2i32), (2, 0), (100_000, 100_000), (1 << 30, 1)] {
            let mut bmp = encoded(ImageFormat::Bmp, 2, 2);
            bmp[18..22].copy_from_slice(&width.to_le_bytes());
            bmp[22..26].copy_from_slice(&height.to_le_bytes());
            let message = decode_error(&bmp);
            assert!(message.contains("hostile.img"), "{width}x{height}: {message}");
        }
        let message = decode_error(&{
            let mut bmp = encoded(ImageFormat::Bmp, 2, 2);
            bmp[18..22].copy_from_slice(&20_000i32.to_le_bytes());
            bmp[22..26].copy_from_slice(&20_000i32.to_le_bytes());
            bmp
        });
        assert!(message.contains("over the limit") || message.contains("limit"), "{message}");
    }

    #[test]
    fn a_png_declaring_a_huge_size_with_a_valid_crc_is_refused() {
        let mut png = encoded(ImageFormat::Png, 2, 2);
        // IHDR data at bytes 16..29, its CRC-32 after it.
        png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let message = decode_error(&png);
        assert!(message.contains("60000x60000") && message.contains("limit"), "{message}");
    }

    #[test]
    fn a_png_whose_trailing_chunk_fails_its_crc_or_is_cut_is_refused() {
        let png = encoded(ImageFormat::Png, 2, 2);
        assert!(decode_bytes(&png, ColorMode::Rgb, Path::new("ok.png")).is_ok());
        let mut bad_iend = png.clone();
        let last = bad_iend.len() - 1;
        bad_iend[last] ^= 1;
        assert!(decode_error(&bad_iend).contains("CRC-32 of its IEND chunk"), "{}", decode_error(&bad_iend));
        let cut = &png[..png.len() - 6];
        assert!(decode_error(cut).contains("truncated"), "{}", decode_error(cut));
    }

    #[test]
    fn every_single_byte_change_of_a_small_image_decodes_or_is_an_error() {
        for format in [ImageFormat::Png, ImageFormat::Gif, ImageFormat::Bmp, ImageFormat::Jpeg] {
            let original = encoded(format, 12, 9);
            for at in 0..original.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bytes = original.clone();
                    bytes[at] ^= flip;
                    if let Ok(pixels) = decode_bytes(&bytes, ColorMode::Rgb, Path::new("m")) {
                        let (height, width, _) = pixels.dim();
                        assert!(height > 0 && width > 0, "{format:?} byte {at}: an empty image");
                    }
                }
            }
        }
    }

    #[test]
    fn a_spec_larger_than_any_image_is_refused_before_allocating() {
        let png = encoded(ImageFormat::Png, 2, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        std::fs::write(&path, &png).unwrap();
        for (height, width) in [(1 << 20, 1 << 20), (usize::MAX, 3)] {
            let spec = ImageSpec { height, width, color_mode: ColorMode::Rgb };
            let message = spec.load_batch(std::slice::from_ref(&path)).unwrap_err().to_string();
            assert!(message.contains("over the limit") && message.contains("a.png"), "{message}");
            assert!(spec.load_bytes(&png, &path).is_err());
        }
    }

    #[test]
    fn an_empty_file_is_an_error() {
        decode_error(&[]);
    }

    #[test]
    fn same_size_resize_keeps_values() {
        let image = Array3::from_shape_fn((3, 4, 2), |(y, x, c)| (y * 40 + x * 10 + c) as u8);
        let resized = resize_bilinear(image.view(), 3, 4);
        assert_eq!(resized, image.mapv(f32::from));
    }

    #[test]
    fn upscaling_by_two_interpolates_between_neighbours() {
        let image = Array3::from_shape_vec((1, 2, 1), vec![0u8, 100]).unwrap();
        let resized = resize_bilinear(image.view(), 1, 4);
        // Half-pixel centers: sources at -0.25, 0.25, 0.75, 1.25 (clamped at the edges).
        assert_eq!(resized.iter().copied().collect::<Vec<_>>(), vec![0.0, 25.0, 75.0, 100.0]);
    }

    /// The element-by-element form of TensorFlow's bilinear resize (tfload's first one), which
    /// the row-wise [`resize_bilinear_into`] must equal bit for bit.
    fn reference_resize(image: ArrayView3<u8>, height: usize, width: usize) -> Array3<f32> {
        let (rows, columns) = (taps(image.dim().0, height), taps(image.dim().1, width));
        let at = |y: usize, x: usize, c: usize| f32::from(image[[y, x, c]]);
        Array3::from_shape_fn((height, width, image.dim().2), |(y, x, c)| {
            let (row, column) = (rows[y], columns[x]);
            let top = at(row.lower, column.lower, c)
                + (at(row.lower, column.upper, c) - at(row.lower, column.lower, c)) * column.lerp;
            let bottom = at(row.upper, column.lower, c)
                + (at(row.upper, column.upper, c) - at(row.upper, column.lower, c)) * column.lerp;
            top + (bottom - top) * row.lerp
        })
    }

    #[test]
    fn row_wise_resize_equals_the_element_wise_form_bit_for_bit() {
        let mut seed = 12345u32;
        for (in_size, out_size) in [
            ((120, 160), (64, 64)),
            ((120, 160), (96, 96)),
            ((7, 5), (20, 13)),
            ((33, 1), (4, 9)),
            ((9, 9), (9, 9)),
            ((1, 1), (3, 2)),
        ] {
            for channels in [1, 2, 3, 4] {
                let image = Array3::from_shape_fn((in_size.0, in_size.1, channels), |_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                });
                let ours = resize_bilinear(image.view(), out_size.0, out_size.1);
                let expected = reference_resize(image.view(), out_size.0, out_size.1);
                let same = ours.iter().zip(expected.iter()).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{in_size:?} -> {out_size:?} x{channels}");
                // A view that is not in standard layout gives the same values.
                let flipped = image.slice(ndarray::s![.., ..;-1, ..]);
                let expected = reference_resize(flipped, out_size.0, out_size.1);
                assert_eq!(resize_bilinear(flipped, out_size.0, out_size.1), expected);
            }
        }
    }

    #[test]
    fn a_batch_is_filled_in_place_and_reports_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let digit = Path::new(env!("CARGO_MANIFEST_DIR")).join("saved_models/data/digits_5_9_images/7/0017.png");
        let spec = ImageSpec { height: 5, width: 7, color_mode: ColorMode::Rgb };
        let batch = spec.load_batch(&[digit.clone(), digit.clone()]).unwrap();
        assert_eq!(batch.shape(), &[2, 5, 7, 3]);
        let one = spec.load(&digit).unwrap().into_dyn();
        for slot in batch.outer_iter() {
            assert_eq!(slot, one.view());
        }
        let (first, second) = (dir.path().join("first.png"), dir.path().join("second.png"));
        std::fs::write(&first, b"broken").unwrap();
        std::fs::write(&second, b"broken too").unwrap();
        let error = spec.load_batch(&[digit, first, second]).unwrap_err().to_string();
        assert!(error.contains("first.png"), "{error}");
    }

    #[test]
    fn taps_clamp_at_the_borders() {
        let taps = taps(2, 4);
        assert_eq!((taps[0].lower, taps[0].upper), (0, 0));
        assert_eq!((taps[3].lower, taps[3].upper), (1, 1));
    }

    #[test]
    fn image_extensions_are_case_insensitive() {
        assert!(is_image_file(Path::new("a/b.JPG")));
        assert!(is_image_file(Path::new("b.png")));
        assert!(!is_image_file(Path::new("b.txt")));
        assert!(!is_image_file(Path::new("png")));
    }

    #[test]
    fn undecodable_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        std::fs::write(&path, b"not a png at all").unwrap();
        let error = decode(&path, ColorMode::Rgb).unwrap_err().to_string();
        assert!(error.contains("broken.png"), "{error}");
        assert!(error.contains("cannot be decoded"), "{error}");
    }
}
