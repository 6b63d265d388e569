//! JPEG pixels as tfload decodes them against `tf.io.decode_jpeg`: exactly equal, on real
//! photographs (scikit-learn's and scikit-image's), on every JPEG committed under saved_models/
//! and tests/, and on JPEGs written by TensorFlow's and Pillow's encoders at several qualities and
//! subsamplings, progressive, gray, CMYK, with restart markers and an EXIF orientation (both
//! ignore it). Truncated files are refused by both. Then `tfload predict` on JPEGs gives the scores
//! of Python's TensorFlow-decoded pipeline. The Python side is scripts/parity/jpeg_parity.py.

use std::path::{Path, PathBuf};

use crate::common::parity::{read_all, root, sample_photo};
use crate::common::{model, s, tfload_ok};
use tfload::formats::images::{decode, ColorMode};
use tfload::TensorData;

/// Runs `scripts/parity/jpeg_parity.py ARGS`; returns the JSON it prints.
fn python(args: &[&str]) -> serde_json::Value {
    crate::common::python_json("parity/jpeg_parity.py", args)
}

/// `.jpg` / `.jpeg` files under `dir`, recursively.
fn jpegs_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if path.is_dir() {
            jpegs_under(&path, out);
        } else if matches!(extension.as_deref(), Some("jpg" | "jpeg")) {
            out.push(path);
        }
    }
}

/// scikit-image's sample JPEGs (`skimage/data/*.jpg`), if the package is installed.
fn skimage_photos() -> Vec<PathBuf> {
    let mut photos = Vec::new();
    for python in std::fs::read_dir(root().join(".venv/lib")).unwrap().flatten() {
        jpegs_under(&python.path().join("site-packages/skimage/data"), &mut photos);
    }
    photos.sort();
    photos
}

/// Every JPEG the test compares: photographs, committed files, and those the encoders write in `dir`.
fn all_jpegs(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![sample_photo("china.jpg"), sample_photo("flower.jpg")];
    let skimage = skimage_photos();
    assert!(!skimage.is_empty(), "scikit-image's photos are missing: run scripts/setup.sh");
    files.extend(skimage);
    for committed in ["saved_models", "tests"] {
        jpegs_under(&root().join(committed), &mut files);
    }
    let written = python(&["make", s(dir)]);
    let written: Vec<PathBuf> =
        written.as_array().unwrap().iter().map(|p| PathBuf::from(p.as_str().unwrap())).collect();
    for kind in ["422", "cmyk", "restarts", "exif", "progressive", "gray"] {
        assert!(written.iter().any(|p| s(p).contains(kind)), "no {kind} JPEG was written: {written:?}");
    }
    files.extend(written);
    files
}

/// A JPEG cut at `fraction` of its length (`1.0` drops only the end-of-image marker).
fn truncated(source: &Path, dir: &Path, fraction: f64) -> PathBuf {
    let bytes = std::fs::read(source).unwrap();
    let keep = if fraction >= 1.0 { bytes.len() - 2 } else { (bytes.len() as f64 * fraction) as usize };
    let path = dir.join(format!("truncated_{}.jpg", (fraction * 100.0) as u32));
    std::fs::write(&path, &bytes[..keep]).unwrap();
    path
}

#[test]
fn decoded_pixels_equal_tensorflow_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let files = all_jpegs(dir.path());
    let out = dir.path().join("theirs.npz");
    let mut args = vec!["decode", s(&out)];
    args.extend(files.iter().map(|p| s(p)));
    python(&args);
    let theirs = read_all(&out);
    let mut compared = 0;
    for (i, path) in files.iter().enumerate() {
        for (channels, color_mode) in [(3, ColorMode::Rgb), (1, ColorMode::Grayscale)] {
            let ours = decode(path, color_mode);
            let Some(TensorData::UInt8(expected)) = theirs.get(&format!("{i}/{channels}")) else {
                // TensorFlow refuses it (a CMYK file as grayscale): so must tfload.
                assert!(theirs.contains_key(&format!("{i}/{channels}/error")), "{path:?} x{channels}: no answer");
                assert!(ours.is_err(), "{path:?} x{channels}: TensorFlow refuses it, tfload decoded it");
                continue;
            };
            let ours = ours.unwrap_or_else(|e| panic!("{path:?} x{channels}: {e}"));
            assert_eq!(ours.shape(), expected.shape(), "{path:?} x{channels}");
            let differing = ours.iter().zip(expected.iter()).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{path:?} x{channels}: {differing} of {} values differ", ours.len());
            compared += 1;
        }
    }
    assert!(compared >= 2 * (files.len() - 1), "only {compared} decodings compared");
}

#[test]
fn truncated_jpegs_are_refused_as_tensorflow_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let photo = sample_photo("china.jpg");
    let files: Vec<PathBuf> = [0.3, 0.9, 1.0].map(|fraction| truncated(&photo, dir.path(), fraction)).into();
    let out = dir.path().join("theirs.npz");
    let mut args = vec!["decode", s(&out)];
    args.extend(files.iter().map(|p| s(p)));
    python(&args);
    let theirs = read_all(&out);
    for (i, path) in files.iter().enumerate() {
        assert!(theirs.contains_key(&format!("{i}/3/error")), "TensorFlow decoded {path:?}");
        let message = decode(path, ColorMode::Rgb).unwrap_err().to_string();
        assert!(message.contains("truncated") && message.contains(s(path)), "{message}");
    }
}

#[test]
fn predict_on_jpegs_gives_the_scores_of_tensorflow_decoded_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![sample_photo("china.jpg"), sample_photo("flower.jpg")];
    files.extend(skimage_photos());
    let digits = model("cnn_digits");
    let mut args = vec!["predict", s(&digits), "8", "8", "1"];
    args.extend(files.iter().map(|p| s(p)));
    let expected = python(&args);
    let folder = dir.path().join("photos");
    std::fs::create_dir(&folder).unwrap();
    for (i, file) in files.iter().enumerate() {
        std::fs::copy(file, folder.join(format!("{i:02}.jpg"))).unwrap();
    }
    let doc: serde_json::Value =
        serde_json::from_str(&tfload_ok(&["predict", s(&digits), s(&folder), "--json", "-k", "5"])).unwrap();
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), files.len());
    for (i, prediction) in predictions.iter().enumerate() {
        assert!(prediction["image"].as_str().unwrap().ends_with(&format!("{i:02}.jpg")));
        for class in prediction["top"].as_array().unwrap() {
            let index = class["index"].as_u64().unwrap() as usize;
            let (ours, theirs) = (class["score"].as_f64().unwrap(), expected[i][index].as_f64().unwrap());
            assert!((ours - theirs).abs() <= 1e-5, "{:?} class {index}: {ours} against {theirs}", files[i]);
        }
    }
}
