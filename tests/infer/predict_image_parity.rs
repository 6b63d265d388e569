//! Images as tfload feeds them to a model, compared with what Python TensorFlow and Keras feed:
//! `tf.image.resize(bilinear)` on real photos and `image_dataset_from_directory` on the digits
//! image folder.

use std::path::{Path, PathBuf};

use crate::common::parity::{python, read_all, root, sample_photo};
use crate::common::s;
use tfload::data::{Dataset, ImageFolderDataset};
use tfload::formats::images::{ColorMode, ImageSpec};
use tfload::TensorData;

/// The largest |ours - theirs| of two float32 arrays.
fn largest_difference(ours: &ndarray::ArrayD<f32>, theirs: &TensorData) -> f32 {
    let TensorData::Float32(theirs) = theirs else { panic!("Python gave {:?}", theirs.dtype()) };
    assert_eq!(ours.shape(), theirs.shape());
    ours.iter().zip(theirs.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// tfload's and TensorFlow's reading of `images` at each spec: the largest and the mean pixel
/// difference over all of them.
fn compare(images: &[PathBuf], specs: &[ImageSpec]) -> (f32, f32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("theirs.npz");
    let name = |spec: &ImageSpec| format!("{}x{}x{}", spec.height, spec.width, spec.color_mode.channels());
    let names = specs.iter().map(name).collect::<Vec<_>>().join(",");
    let mut args = vec!["images", s(&out), &names];
    args.extend(images.iter().map(|p| s(p)));
    python(&args);
    let theirs = read_all(&out);
    let (mut largest, mut sum, mut count) = (0.0f32, 0.0f64, 0usize);
    for spec in specs {
        for (i, path) in images.iter().enumerate() {
            let TensorData::Float32(expected) = &theirs[&format!("{i}/{}", name(spec))] else { panic!() };
            let ours = spec.load(path).unwrap().into_dyn();
            assert_eq!(ours.shape(), expected.shape(), "{path:?} {spec:?}");
            for (a, b) in ours.iter().zip(expected.iter()) {
                largest = largest.max((a - b).abs());
                sum += f64::from((a - b).abs());
            }
            count += ours.len();
        }
    }
    (largest, (sum / count as f64) as f32)
}

/// The two photos re-encoded as PNG by TensorFlow, so both sides start from the same pixels.
fn photos_as_png(dir: &Path) -> Vec<PathBuf> {
    ["china", "flower"]
        .iter()
        .map(|name| {
            let png = dir.join(format!("{name}.png"));
            python(&["png", s(&sample_photo(&format!("{name}.jpg"))), s(&png)]);
            png
        })
        .collect()
}

#[test]
fn bilinear_resize_matches_tensorflow_on_photos() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos_as_png(dir.path());
    let mut specs = Vec::new();
    for (height, width) in [(64, 96), (224, 224), (427, 640), (500, 333)] {
        for color_mode in [ColorMode::Rgb, ColorMode::Grayscale, ColorMode::Rgba] {
            specs.push(ImageSpec { height, width, color_mode });
        }
    }
    let (largest, _) = compare(&photos, &specs);
    assert!(largest <= 1e-4, "pixels differ by up to {largest}");
}

#[test]
fn upscaling_small_images_matches_tensorflow() {
    let digit = root().join("saved_models/data/digits_5_9_images/7/0017.png");
    let digits = vec![digit.clone()];
    let specs =
        [ColorMode::Grayscale, ColorMode::Rgb].map(|color_mode| ImageSpec { height: 20, width: 13, color_mode });
    let (largest, _) = compare(&digits, &specs);
    assert!(largest <= 1e-4, "pixels differ by up to {largest}");
}

#[test]
fn jpeg_photos_resized_match_tensorflow() {
    // tfload decodes JPEG with libjpeg-turbo's decoder at TensorFlow's settings (src/formats/jpeg.rs).
    // No RGBA: TensorFlow refuses it for JPEG ("JPEG does not support 4 channels").
    let photos = vec![sample_photo("china.jpg"), sample_photo("flower.jpg")];
    let mut specs = Vec::new();
    for (height, width) in [(427, 640), (224, 224)] {
        for color_mode in [ColorMode::Rgb, ColorMode::Grayscale] {
            specs.push(ImageSpec { height, width, color_mode });
        }
    }
    let (largest, _) = compare(&photos, &specs);
    assert!(largest <= 1e-4, "JPEG pixels differ by up to {largest}");
}

#[test]
fn image_folder_matches_keras_image_dataset_from_directory() {
    let folder = root().join("saved_models/data/digits_5_9_images");
    let dir = tempfile::tempdir().unwrap();
    for (color_mode, name, (height, width)) in
        [(ColorMode::Grayscale, "grayscale", (8, 8)), (ColorMode::Rgb, "rgb", (11, 6))]
    {
        let out = dir.path().join(format!("{name}.npz"));
        python(&["image_folder", s(&folder), &height.to_string(), &width.to_string(), name, s(&out)]);
        let keras = read_all(&out);
        let dataset = ImageFolderDataset::open(&folder, ImageSpec { height, width, color_mode }).unwrap();
        let TensorData::String(files) = &keras["files"] else { panic!() };
        let ours: Vec<String> = dataset.files().iter().map(|p| p.display().to_string()).collect();
        assert_eq!(ours, files.iter().cloned().collect::<Vec<_>>(), "{name}: file order");
        let TensorData::String(classes) = &keras["class_names"] else { panic!() };
        assert_eq!(dataset.class_names().unwrap(), classes.iter().cloned().collect::<Vec<_>>());
        let all: Vec<usize> = (0..dataset.len()).collect();
        let batch = dataset.gather(&all).unwrap();
        assert_eq!(batch.labels, keras["y"], "{name}: labels");
        let TensorData::Float32(pixels) = &batch.inputs else { panic!() };
        let difference = largest_difference(pixels, &keras["x"]);
        assert!(difference <= 1e-4, "{name}: pixels differ by up to {difference}");
    }
}
