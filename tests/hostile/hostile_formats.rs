//! Corrupt checkpoints, TFRecords and images given to the real binary (issue 14, item 7): every
//! one is refused with a clear error that names the file, never a panic or a signal. Where it
//! is cheap, TensorFlow's own verdict on the same file is checked too.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{copy_dir, model, root, s, tfload};

/// Runs `tfload args` and checks that it failed cleanly: an exit code (no signal), not 0, no
/// panic, and a message that names `file`. Returns stderr.
fn refused(args: &[&str], file: &str) -> String {
    let output = tfload(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let code = output.status.code();
    assert!(code.is_some(), "tfload {args:?} was killed by a signal ({:?}):\n{stderr}", output.status);
    assert_ne!(code, Some(0), "tfload {args:?} accepted a corrupt {file}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "tfload {args:?} panicked:\n{stderr}");
    assert!(stderr.contains(file), "tfload {args:?} does not name {file}:\n{stderr}");
    stderr
}

/// A copy of the committed model `name` in a fresh temp dir, with `file` (under the model)
/// changed by `change`.
fn mutated_model(name: &str, file: &str, change: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(name);
    copy_dir(&model(name), &copy);
    let path = copy.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    change(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    (dir, copy)
}

/// Whether Python TensorFlow's `tf.train.list_variables` refuses the checkpoint of `model_dir`.
fn tensorflow_refuses(model_dir: &Path) -> bool {
    let script = "import sys, tensorflow as tf\ntry:\n    tf.train.list_variables(sys.argv[1])\nexcept Exception:\n    sys.exit(3)\n";
    let status = Command::new(root().join(".venv/bin/python"))
        .args(["-c", script, s(&model_dir.join("variables/variables"))])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .status()
        .expect("the project's Python runs (scripts/setup.sh installs it)");
    assert!(matches!(status.code(), Some(0) | Some(3)), "python crashed: {status:?}");
    status.code() == Some(3)
}

/// A change made to a file's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

/// The ways an index is damaged: (name, change).
fn index_damages() -> Vec<(&'static str, Damage)> {
    vec![
        ("magic number", Box::new(|b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 0x40)),
        ("data block byte", Box::new(|b: &mut Vec<u8>| b[30] ^= 0x01)),
        ("first key length", Box::new(|b: &mut Vec<u8>| b[1] = 0xff)),
        (
            "index block handle",
            Box::new(|b: &mut Vec<u8>| {
                let at = b.len() - 45;
                b[at] ^= 0x7f
            }),
        ),
        ("truncated to half", Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2))),
        ("truncated to 20 bytes", Box::new(|b: &mut Vec<u8>| b.truncate(20))),
        ("emptied", Box::new(|b: &mut Vec<u8>| b.clear())),
    ]
}

#[test]
fn a_corrupt_index_is_refused_by_every_command_that_reads_it() {
    let h5 = root().join("saved_models/h5/cnn_tfkeras.h5");
    for (damage, change) in index_damages() {
        let (_dir, copy) = mutated_model("cnn_digits", "variables/variables.index", change);
        let val = root().join("saved_models/data/digits_5_9_val.npz");
        let commands: [Vec<&str>; 4] = [
            vec!["variables", s(&copy)],
            // Sessions too: the index is checked before TensorFlow's own reader sees it.
            vec!["eval", s(&copy), "--data", s(&val)],
            vec!["train", s(&copy), "--show-mask"],
            vec!["import-weights", s(&copy), s(&h5), "--dry-run", "--skip-mismatch"],
        ];
        for args in &commands {
            let stderr = refused(args, "variables.index");
            assert!(stderr.contains("checkpoint index"), "{damage}: {stderr}");
        }
    }
}

#[test]
fn tensorflow_also_refuses_the_damaged_indexes() {
    for (damage, change) in index_damages() {
        let (_dir, copy) = mutated_model("cnn_digits", "variables/variables.index", change);
        assert!(
            tensorflow_refuses(&copy),
            "TensorFlow reads the index with a damaged {damage}: the test damages nothing"
        );
    }
}

#[test]
fn a_corrupt_data_shard_is_refused_before_weights_are_written() {
    let data = "variables/variables.data-00000-of-00001";
    let h5 = root().join("saved_models/h5/cnn_tfkeras.h5");
    for change in [Box::new(|b: &mut Vec<u8>| b[300] ^= 0x01) as Damage, Box::new(|b: &mut Vec<u8>| b.truncate(1000))] {
        let (dir, copy) = mutated_model("cnn_digits", data, change);
        let out = dir.path().join("out");
        let stderr = refused(
            &["import-weights", s(&copy), s(&h5), "--skip-mismatch", "--out", s(&out)],
            "variables.data-00000-of-00001",
        );
        assert!(stderr.contains("corrupt") || stderr.contains("truncated"), "{stderr}");
        assert!(!out.exists(), "an output was written from a corrupt checkpoint");
    }
}

/// The last bytes of mlp_digits' data shard belong to the checkpoint's object graph
/// (`_CHECKPOINTABLE_OBJECT_GRAPH`), which no variable is restored from: a session load must
/// still refuse the shard when they are cut off or changed (the seeded fuzz run found the
/// graph-level restore of cut loads accepting it until the restore read the object graph too).
#[test]
fn a_corrupt_object_graph_in_the_data_shard_fails_the_session_load() {
    let data = "variables/variables.data-00000-of-00001";
    let val = root().join("saved_models/data/digits_5_9_val.npz");
    for change in [
        Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 1)) as Damage,
        Box::new(|b: &mut Vec<u8>| {
            let at = b.len() - 8;
            b[at] ^= 0x20
        }),
    ] {
        let (dir, copy) = mutated_model("mlp_digits", data, change);
        let out = dir.path().join("out");
        let train = vec!["train", s(&copy), "--data", s(&val), "--epochs", "1", "--out", s(&out)];
        for args in [vec!["eval", s(&copy), "--data", s(&val)], train] {
            let output = tfload(&args);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert_eq!(output.status.code().map(|c| c != 0), Some(true), "tfload {args:?} accepted it:\n{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert!(stderr.contains("could not load"), "{stderr}");
        }
        assert!(!out.exists(), "a model was written from a corrupt checkpoint");
    }
}

/// A TFRecord header declaring `len` bytes with a valid length CRC, then a little data.
fn huge_record(len: u64) -> Vec<u8> {
    let mut bytes = len.to_le_bytes().to_vec();
    let crc = crc32c::crc32c(&bytes);
    let masked = crc.rotate_right(15).wrapping_add(0xa282_ead8);
    bytes.extend(masked.to_le_bytes());
    bytes.extend([0u8; 64]);
    bytes
}

#[test]
fn a_tfrecord_length_near_2_64_is_an_error_plain_or_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = model("cnn_digits");
    for len in [u64::MAX, u64::MAX - 3, 1 << 40] {
        let plain = dir.path().join("huge.tfrecord");
        std::fs::write(&plain, huge_record(len)).unwrap();
        let gzip = dir.path().join("huge.tfrecord.gz");
        let mut encoder =
            flate2::write::GzEncoder::new(std::fs::File::create(&gzip).unwrap(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, &huge_record(len)).unwrap();
        encoder.finish().unwrap();
        for (file, name) in [(&plain, "huge.tfrecord"), (&gzip, "huge.tfrecord.gz")] {
            let stderr = refused(&["predict", s(&cnn), s(file), "--feature", "image/encoded"], name);
            assert!(stderr.contains(&len.to_string()), "{stderr}");
        }
    }
}

/// A 16x4 GIF whose logical screen height is then set to 0.
fn gif_with_empty_screen() -> Vec<u8> {
    let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(16, 4, image::Rgb([200, 10, 10])));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Gif).unwrap();
    let mut bytes = bytes.into_inner();
    bytes[8..10].copy_from_slice(&0u16.to_le_bytes());
    bytes
}

#[test]
fn an_image_of_zero_or_absurd_size_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("screen_16x0.gif");
    std::fs::write(&gif, gif_with_empty_screen()).unwrap();
    let stderr = refused(&["predict", s(&model("cnn_digits")), s(&gif)], "screen_16x0.gif");
    assert!(stderr.contains("0"), "{stderr}");
    // The same image inside a folder data set and given as a folder of one class.
    let folder = dir.path().join("images/5");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&gif, folder.join("a.gif")).unwrap();
    refused(&["predict", s(&model("cnn_digits")), s(&dir.path().join("images"))], "a.gif");
}
