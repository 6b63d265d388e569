//! Data augmentation in tfload's own pipeline, off unless asked for: random flips, rotations,
//! zooms, crops, brightness and contrast with the semantics and parameter conventions of Keras's
//! `RandomFlip`, `RandomRotation`, `RandomZoom`, `RandomCrop`, `RandomBrightness` and
//! `RandomContrast` layers (fill mode `reflect` and bilinear interpolation by default, as theirs).
//!
//! Each example gets its own random stream, a pure function of (seed, epoch, example index): the
//! same run gives the same images whichever loader thread transforms them, and a resumed run sees
//! the images the uninterrupted run saw. Transforms apply in a fixed order: flip, rotation, zoom,
//! crop, brightness, contrast (geometry first, then values), to float images `[H, W, C]`.
//!
//! ```
//! use tfload::data::augment::Augmentation;
//!
//! let augment: Augmentation = "flip=horizontal,rotation=0.1,zoom=0.2,contrast=0.2".parse().unwrap();
//! assert!(augment.flip.is_some() && augment.brightness.is_none());
//! ```

use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::tensor::TensorData;

/// What `--augment` accepts, for messages and help.
pub const AUGMENT_KEYS: &str = "flip=horizontal|vertical|horizontal_and_vertical, rotation=F or LO:HI (fraction of a full turn), zoom=F or LO:HI (height; positive zooms out), zoom_width=F or LO:HI, crop=H:W (pixels, resized back to the input size), brightness=F or LO:HI (fraction of value_range), contrast=F (0..1), value_range=LO:HI (default 0:255), fill=reflect|nearest|constant, fill_value=V";

/// Which axes `RandomFlip` may flip, with probability one half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipMode {
    /// Left-right.
    Horizontal,
    /// Top-bottom.
    Vertical,
    /// Both at once, or neither: Keras draws one coin for the two.
    HorizontalAndVertical,
}

/// How points that a rotation or zoom samples outside the image are filled (Keras's `fill_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FillMode {
    /// Mirrored about the edge of the last pixel (`d c b a | a b c d | d c b a`); Keras's default.
    #[default]
    Reflect,
    /// The nearest edge pixel (`a a a a | a b c d | d d d d`).
    Nearest,
    /// `fill_value`.
    Constant,
}

/// A range a random factor is drawn from, uniformly: Keras's `(lower, upper)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Smallest value.
    pub lower: f32,
    /// Largest value.
    pub upper: f32,
}

impl Range {
    /// A value drawn from the range (exactly `lower` when the range is one point).
    fn draw(&self, rng: &mut ChaCha8Rng) -> f32 {
        let u: f32 = rng.random();
        self.lower + (self.upper - self.lower) * u
    }
}

/// The augmentation of a run: which transforms, with which ranges. `None` leaves a transform out.
#[derive(Debug, Clone, PartialEq)]
pub struct Augmentation {
    /// `RandomFlip(mode)`.
    pub flip: Option<FlipMode>,
    /// `RandomRotation(factor)`: the angle, as a fraction of a full turn (0.1 is up to 36°).
    pub rotation: Option<Range>,
    /// `RandomZoom(height_factor)`: the height zoom is 1 + a value of this range; positive zooms out.
    pub zoom: Option<Range>,
    /// `RandomZoom(..., width_factor)`: drawn separately; `None` keeps the aspect (width zoom = height zoom).
    pub zoom_width: Option<Range>,
    /// `RandomCrop(height, width)`, then resized back (bilinear) to the input size the model needs.
    pub crop: Option<(usize, usize)>,
    /// `RandomBrightness(factor)`: a delta of this fraction of `value_range` added to every value.
    pub brightness: Option<Range>,
    /// `RandomContrast(factor)`: each channel's distance from its mean scaled by 1 + a value of this range.
    pub contrast: Option<Range>,
    /// The values images hold (brightness and contrast clip to it): Keras's `value_range`.
    pub value_range: (f32, f32),
    /// How rotations and zooms fill points outside the image.
    pub fill_mode: FillMode,
    /// The value of [`FillMode::Constant`].
    pub fill_value: f32,
}

impl Default for Augmentation {
    fn default() -> Augmentation {
        Augmentation {
            flip: None,
            rotation: None,
            zoom: None,
            zoom_width: None,
            crop: None,
            brightness: None,
            contrast: None,
            value_range: (0.0, 255.0),
            fill_mode: FillMode::Reflect,
            fill_value: 0.0,
        }
    }
}

/// Height, width and channels of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Values per pixel.
    pub channels: usize,
}

impl Dims {
    /// The dimensions of examples of shape `[H, W, C]`; `None` for any other rank.
    pub fn of(example_shape: &[usize]) -> Option<Dims> {
        match *example_shape {
            [height, width, channels] => Some(Dims { height, width, channels }),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.height * self.width * self.channels
    }
}

/// The random draws for one example: what [`Augmentation::apply`] does to it. The default does
/// nothing; tests and parity checks build one by hand to apply a fixed transform.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Transform {
    /// Flip left-right.
    pub flip_horizontal: bool,
    /// Flip top-bottom.
    pub flip_vertical: bool,
    /// Rotate by this many degrees (Keras's `angle`; positive is counter-clockwise on screen).
    pub rotation_degrees: Option<f32>,
    /// Zoom by (height, width) factors, 1 meaning none (Keras's `height_zoom`, `width_zoom`).
    pub zoom: Option<(f32, f32)>,
    /// Crop (top, left) of the crop size, then resize back.
    pub crop_origin: Option<(usize, usize)>,
    /// Add this value (already scaled to the value range).
    pub brightness_delta: Option<f32>,
    /// Scale each channel's distance from its mean by this factor.
    pub contrast_factor: Option<f32>,
}

impl Augmentation {
    /// Whether any transform is configured.
    pub fn is_enabled(&self) -> bool {
        self.flip.is_some()
            || self.rotation.is_some()
            || self.zoom.is_some()
            || self.crop.is_some()
            || self.brightness.is_some()
            || self.contrast.is_some()
    }

    /// Refuses examples the transforms cannot apply to: not `[H, W, C]`, or smaller than the crop.
    pub fn check_example_shape(&self, shape: &[usize]) -> Result<Dims> {
        let problem = |problem: String| Error::Augmentation { problem };
        let dims = Dims::of(shape).ok_or_else(|| {
            problem(format!(
                "it applies to images [height, width, channels], but the model input's examples have shape {shape:?}. Leave --augment out for this data"
            ))
        })?;
        if let Some((height, width)) = self.crop {
            if height > dims.height || width > dims.width {
                return Err(problem(format!(
                    "crop={height}:{width} is larger than the images ({}x{}); give a crop of at most that size",
                    dims.height, dims.width
                )));
            }
        }
        Ok(dims)
    }

    /// The random draws for the example `index` of `epoch`, from its own stream of `seed`.
    pub fn draw(&self, seed: u64, epoch: u64, index: u64, dims: Dims) -> Transform {
        let mut rng = ChaCha8Rng::seed_from_u64(example_stream(seed, epoch, index));
        let coin = |rng: &mut ChaCha8Rng| rng.random::<f32>() < 0.5;
        let (flip_horizontal, flip_vertical) = match self.flip {
            None => (false, false),
            Some(FlipMode::Horizontal) => (coin(&mut rng), false),
            Some(FlipMode::Vertical) => (false, coin(&mut rng)),
            Some(FlipMode::HorizontalAndVertical) => {
                let both = coin(&mut rng);
                (both, both)
            }
        };
        let rotation_degrees = self.rotation.map(|r| r.draw(&mut rng) * 360.0);
        let zoom = self.zoom.map(|height| {
            let height = 1.0 + height.draw(&mut rng);
            (height, self.zoom_width.map_or(height, |width| 1.0 + width.draw(&mut rng)))
        });
        let crop_origin = self.crop.map(|(h, w)| {
            let top = rng.random_range(0..=dims.height.saturating_sub(h));
            (top, rng.random_range(0..=dims.width.saturating_sub(w)))
        });
        let span = self.value_range.1 - self.value_range.0;
        let brightness_delta = self.brightness.map(|b| b.draw(&mut rng) * span);
        let contrast_factor = self.contrast.map(|c| 1.0 + c.draw(&mut rng));
        Transform {
            flip_horizontal,
            flip_vertical,
            rotation_degrees,
            zoom,
            crop_origin,
            brightness_delta,
            contrast_factor,
        }
    }

    /// Applies `transform` to one image (`dims.len()` values, row-major `[H, W, C]`).
    pub fn apply(&self, transform: &Transform, image: &mut [f32], dims: Dims) {
        if transform.flip_horizontal {
            flip_horizontal(image, dims);
        }
        if transform.flip_vertical {
            flip_vertical(image, dims);
        }
        let fill = (self.fill_mode, self.fill_value);
        if let Some(degrees) = transform.rotation_degrees {
            affine(image, dims, rotation_matrix(degrees, dims), fill);
        }
        if let Some((height_zoom, width_zoom)) = transform.zoom {
            affine(image, dims, zoom_matrix(height_zoom, width_zoom, dims), fill);
        }
        if let (Some((top, left)), Some((height, width))) = (transform.crop_origin, self.crop) {
            crop_and_resize(image, dims, (top, left, height, width));
        }
        let (low, high) = self.value_range;
        if let Some(delta) = transform.brightness_delta {
            image.iter_mut().for_each(|v| *v = (*v + delta).clamp(low, high));
        }
        if let Some(factor) = transform.contrast_factor {
            adjust_contrast(image, dims, factor, (low, high));
        }
    }

    /// Augments every example of `batch` in place, in parallel, each from the stream of its data
    /// set index in `epoch`. Its inputs must be float32 `[N, H, W, C]`.
    pub fn apply_batch(&self, batch: &mut Batch, seed: u64, epoch: u64) -> Result<()> {
        let TensorData::Float32(images) = &mut batch.inputs else {
            return Err(Error::Augmentation {
                problem: format!(
                    "it applies to float32 images, but the data's inputs are {}. Leave --augment out for this data",
                    batch.inputs.dtype()
                ),
            });
        };
        let dims = self.check_example_shape(&images.shape()[1..])?;
        if !images.is_standard_layout() {
            *images = images.as_standard_layout().into_owned();
        }
        let values = images.as_slice_mut().expect("standard layout");
        values.par_chunks_mut(dims.len().max(1)).zip(batch.indices.par_iter()).for_each(|(image, &index)| {
            let transform = self.draw(seed, epoch, index as u64, dims);
            self.apply(&transform, image, dims);
        });
        Ok(())
    }
}

impl std::fmt::Display for Augmentation {
    /// The `--augment` spec that parses back to this augmentation (every key that is set).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let range = |r: &Range| format!("{}:{}", r.lower, r.upper);
        let mut items = Vec::new();
        if let Some(flip) = self.flip {
            let mode = match flip {
                FlipMode::Horizontal => "horizontal",
                FlipMode::Vertical => "vertical",
                FlipMode::HorizontalAndVertical => "horizontal_and_vertical",
            };
            items.push(format!("flip={mode}"));
        }
        let ranges = [("rotation", &self.rotation), ("zoom", &self.zoom), ("zoom_width", &self.zoom_width)];
        items.extend(ranges.iter().filter_map(|(key, r)| r.as_ref().map(|r| format!("{key}={}", range(r)))));
        items.extend(self.crop.map(|(h, w)| format!("crop={h}:{w}")));
        items.extend(self.brightness.as_ref().map(|r| format!("brightness={}", range(r))));
        items.extend(self.contrast.as_ref().map(|r| format!("contrast={}", r.upper)));
        items.push(format!("value_range={}:{}", self.value_range.0, self.value_range.1));
        let fill = match self.fill_mode {
            FillMode::Reflect => "reflect",
            FillMode::Nearest => "nearest",
            FillMode::Constant => "constant",
        };
        items.push(format!("fill={fill},fill_value={}", self.fill_value));
        write!(f, "{}", items.join(","))
    }
}

/// The seed of one example's stream: seed, epoch and index mixed so that neighbouring values give
/// unrelated streams (and unrelated to the shuffle's stream of the same seed).
fn example_stream(seed: u64, epoch: u64, index: u64) -> u64 {
    const AUGMENT_SALT: u64 = 0x6175_676d_656e_7421; // "augment!"
    splitmix(splitmix(splitmix(seed ^ AUGMENT_SALT) ^ epoch) ^ index)
}

/// SplitMix64's output function: a bijective mix of 64 bits.
fn splitmix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn flip_horizontal(image: &mut [f32], dims: Dims) {
    let c = dims.channels;
    for row in image.chunks_exact_mut(dims.width * c) {
        for x in 0..dims.width / 2 {
            let mirror = dims.width - 1 - x;
            for k in 0..c {
                row.swap(x * c + k, mirror * c + k);
            }
        }
    }
}

fn flip_vertical(image: &mut [f32], dims: Dims) {
    let row = dims.width * dims.channels;
    for y in 0..dims.height / 2 {
        let (top, bottom) = image.split_at_mut((dims.height - 1 - y) * row);
        top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
    }
}

/// Keras's rotation about the image centre as the output-to-input map
/// `[a0, a1, a2, b0, b1, b2]` (input x = a0 x + a1 y + a2, input y = b0 x + b1 y + b2).
fn rotation_matrix(degrees: f32, dims: Dims) -> [f32; 6] {
    let angle = degrees * (std::f32::consts::PI / 180.0);
    let (cx, cy) = (0.5 * (dims.width as f32 - 1.0), 0.5 * (dims.height as f32 - 1.0));
    let (sin, cos) = angle.sin_cos();
    let (a0, a1, b0, b1) = (cos, -sin, sin, cos);
    [a0, a1, cx - cx * a0 - cy * a1, b0, b1, cy - cx * b0 - cy * b1]
}

/// Keras's zoom about the image centre, as [`rotation_matrix`]'s map.
fn zoom_matrix(height_zoom: f32, width_zoom: f32, dims: Dims) -> [f32; 6] {
    let x_offset = (dims.width as f32 - 1.0) / 2.0 * (1.0 - width_zoom);
    let y_offset = (dims.height as f32 - 1.0) / 2.0 * (1.0 - height_zoom);
    [width_zoom, 0.0, x_offset, 0.0, height_zoom, y_offset]
}

/// Resamples `image` through the output-to-input map `m`, as TensorFlow's
/// `ImageProjectiveTransformV3` (which Keras calls) does with bilinear interpolation: the input
/// point is first mapped inside the image by the fill mode, then its four neighbours are read,
/// any outside the image counting as the fill value.
fn affine(image: &mut [f32], dims: Dims, m: [f32; 6], (mode, fill_value): (FillMode, f32)) {
    let source = image.to_vec();
    let (w, c) = (dims.width, dims.channels);
    let read = |y: f32, x: f32, k: usize| -> f32 {
        if y < 0.0 || x < 0.0 || y >= dims.height as f32 || x >= w as f32 {
            return fill_value;
        }
        source[(y as usize * w + x as usize) * c + k]
    };
    for (index, out) in image.chunks_exact_mut(c).enumerate() {
        let (x, y) = ((index % w) as f32, (index / w) as f32);
        let in_x = map_coordinate(m[0] * x + m[1] * y + m[2], w, mode);
        let in_y = map_coordinate(m[3] * x + m[4] * y + m[5], dims.height, mode);
        let (x0, y0) = (in_x.floor(), in_y.floor());
        let (x1, y1) = (x0 + 1.0, y0 + 1.0);
        for (k, value) in out.iter_mut().enumerate() {
            let top = (x1 - in_x) * read(y0, x0, k) + (in_x - x0) * read(y0, x1, k);
            let bottom = (x1 - in_x) * read(y1, x0, k) + (in_x - x0) * read(y1, x1, k);
            *value = (y1 - in_y) * top + (in_y - y0) * bottom;
        }
    }
}

/// A coordinate outside `0..len` mapped inside by `mode`, as TensorFlow's `MapCoordinate`.
fn map_coordinate(coordinate: f32, len: usize, mode: FillMode) -> f32 {
    let len_f = len as f32;
    let mapped = match mode {
        FillMode::Constant => return coordinate,
        FillMode::Nearest => coordinate,
        FillMode::Reflect if len <= 1 => 0.0,
        FillMode::Reflect => {
            let period = 2.0 * len_f;
            let mut c = coordinate;
            if c < 0.0 {
                if c < period {
                    c += period * ((-c / period) as i64) as f32;
                }
                if c < -len_f {
                    c + period
                } else {
                    -c - 1.0
                }
            } else if c > len_f - 1.0 {
                c -= period * ((c / period) as i64) as f32;
                if c >= len_f {
                    period - c - 1.0
                } else {
                    c
                }
            } else {
                c
            }
        }
    };
    mapped.clamp(0.0, len_f - 1.0)
}

/// Cuts the `(top, left, height, width)` window out and resizes it back to `dims` as
/// `tf.image.resize(..., "bilinear")` does (half-pixel centres, no antialiasing).
fn crop_and_resize(image: &mut [f32], dims: Dims, (top, left, height, width): (usize, usize, usize, usize)) {
    if (height, width) == (dims.height, dims.width) {
        return;
    }
    let source = image.to_vec();
    let c = dims.channels;
    let taps = |in_size: usize, out_size: usize| -> Vec<(usize, usize, f32)> {
        let scale = in_size as f32 / out_size as f32;
        (0..out_size)
            .map(|i| {
                let at = (i as f32 + 0.5) * scale - 0.5;
                let floor = at.floor();
                let lower = (floor.max(0.0) as usize).min(in_size - 1);
                (lower, (at.ceil().max(0.0) as usize).min(in_size - 1), at - floor)
            })
            .collect()
    };
    let (rows, columns) = (taps(height, dims.height), taps(width, dims.width));
    let at = |y: usize, x: usize, k: usize| source[((top + y) * dims.width + left + x) * c + k];
    for (y, &(y0, y1, dy)) in rows.iter().enumerate() {
        for (x, &(x0, x1, dx)) in columns.iter().enumerate() {
            for k in 0..c {
                let upper = at(y0, x0, k) + (at(y0, x1, k) - at(y0, x0, k)) * dx;
                let lower = at(y1, x0, k) + (at(y1, x1, k) - at(y1, x0, k)) * dx;
                image[(y * dims.width + x) * c + k] = upper + (lower - upper) * dy;
            }
        }
    }
}

/// Keras's `RandomContrast` step: each channel moved from its mean by `factor`, then clipped.
fn adjust_contrast(image: &mut [f32], dims: Dims, factor: f32, (low, high): (f32, f32)) {
    let c = dims.channels;
    let pixels = (dims.height * dims.width).max(1) as f64;
    let means: Vec<f32> =
        (0..c).map(|k| (image.iter().skip(k).step_by(c).map(|&v| f64::from(v)).sum::<f64>() / pixels) as f32).collect();
    for pixel in image.chunks_exact_mut(c) {
        for (value, mean) in pixel.iter_mut().zip(&means) {
            *value = ((*value - mean) * factor + mean).clamp(low, high);
        }
    }
}

impl FromStr for Augmentation {
    type Err = Error;

    /// Parses `--augment`'s `key=value,...` list (see [`AUGMENT_KEYS`]).
    fn from_str(spec: &str) -> Result<Augmentation> {
        let mut augment = Augmentation::default();
        for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| spec_error(item, "is not key=value"))?;
            set_key(&mut augment, key.trim(), value.trim()).map_err(|problem| spec_error(item, &problem))?;
        }
        if !augment.is_enabled() {
            return Err(spec_error(spec, "names no transform"));
        }
        Ok(augment)
    }
}

fn spec_error(item: &str, problem: &str) -> Error {
    Error::Augmentation { problem: format!("`{item}` {problem}. It takes {AUGMENT_KEYS}") }
}

/// Sets one `key=value` of the spec; the error says what is wrong with the value.
fn set_key(augment: &mut Augmentation, key: &str, value: &str) -> std::result::Result<(), String> {
    match key {
        "flip" => {
            augment.flip = Some(match value {
                "horizontal" => FlipMode::Horizontal,
                "vertical" => FlipMode::Vertical,
                "horizontal_and_vertical" => FlipMode::HorizontalAndVertical,
                _ => return Err("names no flip mode".to_string()),
            })
        }
        "rotation" => augment.rotation = Some(symmetric_range(value, None)?),
        "zoom" => augment.zoom = Some(symmetric_range(value, Some((-1.0, 1.0)))?),
        "zoom_width" => augment.zoom_width = Some(symmetric_range(value, Some((-1.0, 1.0)))?),
        "brightness" => augment.brightness = Some(symmetric_range(value, Some((-1.0, 1.0)))?),
        "contrast" => {
            let factor = number(value)?;
            if !(0.0..=1.0).contains(&factor) {
                return Err("must be in [0, 1] (the factor is drawn from [1 - F, 1 + F])".to_string());
            }
            augment.contrast = Some(Range { lower: -factor, upper: factor });
        }
        "crop" => {
            let (height, width) = pair(value)?;
            let size = |v: f32| (v >= 1.0 && v.fract() == 0.0).then_some(v as usize);
            let (Some(height), Some(width)) = (size(height), size(width)) else {
                return Err("must be HEIGHT:WIDTH in whole pixels".to_string());
            };
            augment.crop = Some((height, width));
        }
        "value_range" => {
            let (low, high) = pair(value)?;
            if low >= high {
                return Err("must be LOW:HIGH with LOW < HIGH".to_string());
            }
            augment.value_range = (low, high);
        }
        "fill" => {
            augment.fill_mode = match value {
                "reflect" => FillMode::Reflect,
                "nearest" => FillMode::Nearest,
                "constant" => FillMode::Constant,
                _ => return Err("names no fill mode".to_string()),
            }
        }
        "fill_value" => augment.fill_value = number(value)?,
        _ => return Err("is not a transform tfload knows".to_string()),
    }
    Ok(())
}

fn number(value: &str) -> std::result::Result<f32, String> {
    value.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| "is not a finite number".to_string())
}

fn pair(value: &str) -> std::result::Result<(f32, f32), String> {
    let (a, b) = value.split_once(':').ok_or_else(|| "must be two numbers A:B".to_string())?;
    Ok((number(a)?, number(b)?))
}

/// Keras's factor convention: `F` is the range `[-|F|, |F|]`, `LO:HI` that range (sorted);
/// both within `bounds` where given.
fn symmetric_range(value: &str, bounds: Option<(f32, f32)>) -> std::result::Result<Range, String> {
    let (lower, upper) = if value.contains(':') {
        let (a, b) = pair(value)?;
        (a.min(b), a.max(b))
    } else {
        let f = number(value)?.abs();
        (-f, f)
    };
    if let Some((low, high)) = bounds {
        if lower < low || upper > high {
            return Err(format!("must be within [{low}, {high}]"));
        }
    }
    Ok(Range { lower, upper })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    const DIMS: Dims = Dims { height: 5, width: 4, channels: 2 };

    /// An image whose every value differs: 100 y + 10 x + k.
    fn image(dims: Dims) -> Vec<f32> {
        let mut values = Vec::with_capacity(dims.len());
        for y in 0..dims.height {
            for x in 0..dims.width {
                for k in 0..dims.channels {
                    values.push((100 * y + 10 * x + k) as f32);
                }
            }
        }
        values
    }

    fn at(image: &[f32], dims: Dims, y: usize, x: usize, k: usize) -> f32 {
        image[(y * dims.width + x) * dims.channels + k]
    }

    fn applied(augment: &Augmentation, transform: Transform) -> Vec<f32> {
        let mut out = image(DIMS);
        augment.apply(&transform, &mut out, DIMS);
        out
    }

    #[test]
    fn flips_mirror_exactly() {
        let augment = Augmentation::default();
        let h = applied(&augment, Transform { flip_horizontal: true, ..Transform::default() });
        let v = applied(&augment, Transform { flip_vertical: true, ..Transform::default() });
        let original = image(DIMS);
        for (y, x, k) in [(0, 0, 0), (2, 1, 1), (4, 3, 0)] {
            assert_eq!(at(&h, DIMS, y, x, k), at(&original, DIMS, y, DIMS.width - 1 - x, k));
            assert_eq!(at(&v, DIMS, y, x, k), at(&original, DIMS, DIMS.height - 1 - y, x, k));
        }
        // Twice is the identity.
        let mut twice = h.clone();
        flip_horizontal(&mut twice, DIMS);
        assert_eq!(twice, original);
    }

    #[test]
    fn rotation_by_zero_zoom_by_one_and_contrast_one_are_the_identity() {
        let augment = Augmentation { value_range: (0.0, 1000.0), ..Augmentation::default() };
        let original = image(DIMS);
        assert_eq!(applied(&augment, Transform { rotation_degrees: Some(0.0), ..Transform::default() }), original);
        assert_eq!(applied(&augment, Transform { zoom: Some((1.0, 1.0)), ..Transform::default() }), original);
        let contrast = applied(&augment, Transform { contrast_factor: Some(1.0), ..Transform::default() });
        for (a, b) in contrast.iter().zip(&original) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // A contrast of 0 from the spec draws factor 1 exactly.
        let spec: Augmentation = "contrast=0".parse().unwrap();
        let drawn = spec.draw(1, 2, 3, DIMS);
        assert_eq!(drawn.contrast_factor, Some(1.0));
    }

    #[test]
    fn rotation_by_a_half_turn_is_both_flips() {
        let augment = Augmentation::default();
        let rotated = applied(&augment, Transform { rotation_degrees: Some(180.0), ..Transform::default() });
        let flipped =
            applied(&augment, Transform { flip_horizontal: true, flip_vertical: true, ..Transform::default() });
        for (a, b) in rotated.iter().zip(&flipped) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn brightness_shifts_the_mean_and_clips_to_the_value_range() {
        let augment = Augmentation { value_range: (0.0, 1000.0), ..Augmentation::default() };
        let original = image(DIMS);
        let brighter = applied(&augment, Transform { brightness_delta: Some(25.0), ..Transform::default() });
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&brighter) - mean(&original) - 25.0).abs() < 1e-3);
        let clipped = applied(&augment, Transform { brightness_delta: Some(-1000.0), ..Transform::default() });
        assert!(clipped.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn contrast_scales_distance_from_each_channel_mean() {
        let augment = Augmentation { value_range: (-1e6, 1e6), ..Augmentation::default() };
        let original = image(DIMS);
        let doubled = applied(&augment, Transform { contrast_factor: Some(2.0), ..Transform::default() });
        let means = [215.0f32, 216.0]; // mean of 100 y + 10 x + k over y in 0..5, x in 0..4
        for (i, (&a, &b)) in doubled.iter().zip(&original).enumerate() {
            let mean = means[i % 2];
            assert!((a - (2.0 * (b - mean) + mean)).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn zoom_and_crop_keep_the_shape_and_zooming_in_magnifies_the_centre() {
        let augment = Augmentation { crop: Some((3, 2)), ..Augmentation::default() };
        let zoomed = applied(&augment, Transform { zoom: Some((0.5, 0.5)), ..Transform::default() });
        assert_eq!(zoomed.len(), DIMS.len());
        // Zoom 0.5 about the centre (1.5, 2): output x = 0 samples input x 0.75.
        assert!((at(&zoomed, DIMS, 2, 0, 0) - 207.5).abs() < 1e-3, "{}", at(&zoomed, DIMS, 2, 0, 0));
        let cropped = applied(&augment, Transform { crop_origin: Some((1, 2)), ..Transform::default() });
        assert_eq!(cropped.len(), DIMS.len());
        // Every value comes from the window rows 1..4, columns 2..4.
        assert!(cropped.chunks(2).all(|p| (120.0..=330.0).contains(&p[0])), "{cropped:?}");
    }

    #[test]
    fn reflect_mirrors_about_the_last_pixel_s_edge() {
        assert_eq!(map_coordinate(-1.0, 4, FillMode::Reflect), 0.0);
        assert_eq!(map_coordinate(-2.0, 4, FillMode::Reflect), 1.0);
        assert_eq!(map_coordinate(4.0, 4, FillMode::Reflect), 3.0);
        assert_eq!(map_coordinate(5.0, 4, FillMode::Reflect), 2.0);
        assert_eq!(map_coordinate(9.0, 4, FillMode::Reflect), 1.0);
        assert_eq!(map_coordinate(-7.0, 4, FillMode::Nearest), 0.0);
        assert_eq!(map_coordinate(-7.0, 4, FillMode::Constant), -7.0);
    }

    #[test]
    fn draws_depend_only_on_seed_epoch_and_index() {
        let augment: Augmentation =
            "flip=horizontal_and_vertical,rotation=0.1,zoom=0.2,crop=3:3,brightness=0.2,contrast=0.2".parse().unwrap();
        let draw = |seed, epoch, index| augment.draw(seed, epoch, index, DIMS);
        assert_eq!(draw(7, 1, 3), draw(7, 1, 3));
        assert_ne!(draw(7, 1, 3), draw(7, 2, 3));
        assert_ne!(draw(7, 1, 3), draw(7, 1, 4));
        assert_ne!(draw(7, 1, 3), draw(8, 1, 3));
        let t = draw(7, 1, 3);
        assert!(t.rotation_degrees.unwrap().abs() <= 36.0);
        let (zh, zw) = t.zoom.unwrap();
        assert!((0.8..=1.2).contains(&zh) && zh == zw);
        assert!(t.brightness_delta.unwrap().abs() <= 0.2 * 255.0);
        assert!((0.8..=1.2).contains(&t.contrast_factor.unwrap()));
    }

    #[test]
    fn a_batch_is_augmented_by_example_index_whatever_its_position() {
        let augment: Augmentation = "flip=horizontal,rotation=0.2,brightness=0.1".parse().unwrap();
        let dims = Dims { height: 6, width: 6, channels: 1 };
        let one = ArrayD::from_shape_vec(IxDyn(&[1, 6, 6, 1]), image(dims)).unwrap();
        let two = ndarray::concatenate(ndarray::Axis(0), &[one.view(), one.view()]).unwrap();
        let labels = TensorData::Int64(ArrayD::zeros(IxDyn(&[2])));
        let mut batch = Batch::new(TensorData::Float32(two.clone()), labels.clone(), vec![5, 9]);
        augment.apply_batch(&mut batch, 3, 0).unwrap();
        let mut swapped = Batch::new(TensorData::Float32(two), labels, vec![9, 5]);
        augment.apply_batch(&mut swapped, 3, 0).unwrap();
        let (TensorData::Float32(a), TensorData::Float32(b)) = (&batch.inputs, &swapped.inputs) else { panic!() };
        assert_eq!(a.index_axis(ndarray::Axis(0), 0), b.index_axis(ndarray::Axis(0), 1));
        assert_ne!(a.index_axis(ndarray::Axis(0), 0), a.index_axis(ndarray::Axis(0), 1));
    }

    #[test]
    fn specs_parse_with_keras_conventions_and_bad_ones_say_why() {
        let a: Augmentation = "flip=vertical, rotation=-0.1, zoom=-0.3:0.1, value_range=0:1".parse().unwrap();
        assert_eq!(a.flip, Some(FlipMode::Vertical));
        assert_eq!(a.rotation, Some(Range { lower: -0.1, upper: 0.1 }));
        assert_eq!(a.zoom, Some(Range { lower: -0.3, upper: 0.1 }));
        assert_eq!(a.value_range, (0.0, 1.0));
        for (spec, says) in [
            ("", "names no transform"),
            ("flip=sideways", "names no flip mode"),
            ("contrast=2", "must be in [0, 1]"),
            ("zoom=1.5", "within [-1, 1]"),
            ("crop=2.5:3", "whole pixels"),
            ("blur=1", "not a transform"),
            ("rotation", "not key=value"),
        ] {
            let error = spec.parse::<Augmentation>().unwrap_err().to_string();
            assert!(error.contains(says), "{spec}: {error}");
            assert!(error.contains("flip=horizontal|vertical"), "{error}");
        }
        let all = "flip=horizontal_and_vertical,rotation=0.1,zoom=0.2,zoom_width=-0.1:0.3,crop=3:3,brightness=0.2,contrast=0.2,fill=nearest,fill_value=3";
        let parsed: Augmentation = all.parse().unwrap();
        assert_eq!(parsed.to_string().parse::<Augmentation>().unwrap(), parsed);
        let crop: Augmentation = "crop=9:2".parse().unwrap();
        assert!(crop.check_example_shape(&[5, 4, 2]).unwrap_err().to_string().contains("larger than the images"));
        assert!(crop.check_example_shape(&[64]).unwrap_err().to_string().contains("[height, width, channels]"));
    }
}
