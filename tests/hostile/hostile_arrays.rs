//! Hostile `.npy` / `.npz` files (issue 14, items 3 and 8): corrupt CRCs, lying sizes, huge
//! declared headers, deep nesting and zip bombs give a clear error, quickly and without the
//! memory they declare, where numpy refuses them too. The files are made in a temp folder by
//! the project's Python (numpy), which also says what numpy makes of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{model, root, s};

/// Makes hostile files: `python -c MAKE KIND OUT` writes OUT and prints numpy's verdict.
const MAKE: &str = r#"
import io, struct, sys, zipfile, zlib
import numpy as np

kind, out = sys.argv[1], sys.argv[2]
val = np.load(sys.argv[3])
x, y = val["x"], val["y"]

def npy_bytes(a):
    buf = io.BytesIO(); np.save(buf, a); return buf.getvalue()

def patch_member_size(data, name, size):
    # Local header: uncompressed size at +22; central directory entry: at +24.
    data = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(name)
    struct.pack_into("<I", data, info.header_offset + 22, size)
    pos = data.find(b"PK\x01\x02")
    while data[pos + 46:pos + 46 + len(name)] != name.encode():
        pos = data.find(b"PK\x01\x02", pos + 4)
    struct.pack_into("<I", data, pos + 24, size)
    return bytes(data)

if kind == "bad_crc":
    data = bytearray(open(sys.argv[3], "rb").read())
    z = zipfile.ZipFile(sys.argv[3]); info = z.getinfo("x.npy")
    data[info.header_offset + 30 + len("x.npy") + 400] ^= 0x40
    open(out, "wb").write(data)
elif kind == "bad_crc_deflated":
    buf = io.BytesIO(); np.savez_compressed(buf, x=x, y=y); data = bytearray(buf.getvalue())
    z = zipfile.ZipFile(io.BytesIO(bytes(data))); info = z.getinfo("y.npy")
    # Flip a bit inside y's deflate stream, near its end, so it still inflates.
    data[info.header_offset + 30 + len("y.npy") + info.compress_size - 6] ^= 0x01
    open(out, "wb").write(data)
elif kind == "bomb":
    # x: zeros declared and stored honestly, 1.2 GB inflated from about 1 MB.
    n = 1_200_000_000 // (8 * 8 * 4)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, 8, 8, 1)})
            chunk = bytes(1 << 20)
            for _ in range(1_200_000_000 // len(chunk)):
                f.write(chunk)
            f.write(bytes(1_200_000_000 % len(chunk)))
        z.writestr("y.npy", npy_bytes(np.zeros(n, np.int64)))
elif kind == "lying_size":
    # x's header and the archive say 2 examples; its deflate stream inflates to 200 MB.
    small = npy_bytes(x[:2])
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", small + bytes(200_000_000))
        z.writestr("y.npy", npy_bytes(y[:2]))
    patched = patch_member_size(open(out, "rb").read(), "x.npy", len(small))
    open(out, "wb").write(patched)
elif kind == "trailing":
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", npy_bytes(x) + bytes(64))
        z.writestr("y.npy", npy_bytes(y))
elif kind == "huge_header":
    open(out, "wb").write(b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFFF) + b"{'descr'")
elif kind == "deep":
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 22 + "1" + ")" * 22 + "}"
    open(out, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
elif kind == "garbled_header":
    header = "{'descr': '<f4', 'fortran_order': Fal\x07se, 'shape': (2, 4), }\n"
    open(out, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(32))
else:
    sys.exit("unknown kind " + kind)

try:
    if out.endswith(".npz"):
        with np.load(out) as d:
            for k in d.files: d[k].sum()
    else:
        np.load(out)
    print("numpy: loaded")
except Exception as e:
    print("numpy: refused: %s: %s" % (type(e).__name__, str(e)[:200]))
"#;

/// Makes a hostile file of `kind` in `dir` as `name`; returns its path and numpy's verdict.
fn make(dir: &Path, kind: &str, name: &str) -> (PathBuf, String) {
    let out = dir.join(name);
    let val = root().join("saved_models/data/digits_5_9_val.npz");
    let output = Command::new(root().join(".venv/bin/python"))
        .args(["-c", MAKE, kind, s(&out), s(&val)])
        .output()
        .expect("the project's Python runs");
    assert!(output.status.success(), "making {kind} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    (out, String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs the built `tfload` with `args` (and `env`), under an address-space limit when given.
fn tfload(args: &[&str], env: &[(&str, &str)], address_space: Option<u64>) -> (Output, Duration) {
    let mut command = match address_space {
        Some(bytes) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--as={bytes}")).arg("--").arg(env!("CARGO_BIN_EXE_tfload"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_tfload")),
    };
    command.args(args).env_remove("TF_CPP_MIN_LOG_LEVEL").env_remove("RUST_LOG").env_remove("TFLOAD_MAX_ARRAY_BYTES");
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let output = command.output().expect("tfload runs");
    (output, started.elapsed())
}

/// Asserts a clean failure (non-zero exit, no panic, no crash) and returns stderr.
fn fails(output: &Output, elapsed: Duration) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "expected a clean error exit, got {:?}:\n{stderr}", output.status);
    assert!(!stderr.contains("panicked"), "tfload panicked:\n{stderr}");
    // A hang guard, not a benchmark: every case is refused before any real work.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}:\n{stderr}");
    stderr
}

/// `tfload run multi_io -i features=PATH`, expected to fail: stderr and the time it took.
fn run_fails(path: &Path) -> (String, Duration) {
    let input = format!("features={}", path.display());
    let (output, elapsed) = tfload(&["run", s(&model("multi_io")), "-i", &input], &[], None);
    (fails(&output, elapsed), elapsed)
}

fn eval(data: &Path) -> Vec<String> {
    ["eval", s(&model("mlp_digits")), "--data", s(data)].map(String::from).to_vec()
}

fn train(data: &Path, out: &Path) -> Vec<String> {
    ["train", s(&model("mlp_digits")), "--data", s(data), "--epochs", "1", "--out", s(out)].map(String::from).to_vec()
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn npz_with_a_bad_crc_is_refused_by_eval_train_and_run_as_numpy_does() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, member) in [("bad_crc", "x.npy"), ("bad_crc_deflated", "y.npy")] {
        let (path, numpy) = make(dir.path(), kind, &format!("{kind}.npz"));
        assert!(numpy.contains("refused") && numpy.contains("CRC"), "{kind}: {numpy}");
        let out = dir.path().join(format!("{kind}-out"));
        for args in [eval(&path), train(&path, &out)] {
            let err = fails(&tfload(&refs(&args), &[], None).0, Duration::ZERO);
            assert!(err.contains("Bad CRC-32") && err.contains(member) && err.contains(s(&path)), "{kind}: {err}");
        }
        assert!(!out.exists(), "a failed train wrote {}", out.display());
        let input = format!("features={}[x]", path.display());
        let (output, elapsed) = tfload(&["run", s(&model("mlp_digits")), "-i", &input], &[], None);
        if member == "x.npy" {
            let err = fails(&output, elapsed);
            assert!(err.contains("Bad CRC-32"), "{err}");
        }
    }
}

#[test]
fn a_member_that_inflates_beyond_its_declared_size_stops_there() {
    let dir = tempfile::tempdir().unwrap();
    let (path, numpy) = make(dir.path(), "lying_size", "lying.npz");
    assert!(numpy.contains("refused"), "{numpy}");
    let (output, elapsed) = tfload(&refs(&eval(&path)), &[], None);
    let err = fails(&output, elapsed);
    assert!(err.contains("x.npy") && err.contains("more than the") && err.contains("archive declares"), "{err}");
}

#[test]
fn a_member_with_bytes_beyond_its_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(dir.path(), "trailing", "trailing.npz");
    let err = fails(&tfload(&refs(&eval(&path)), &[], None).0, Duration::ZERO);
    assert!(err.contains("x.npy") && err.contains("64 bytes after"), "{err}");
}

#[test]
fn a_zip_bomb_is_refused_before_it_is_inflated() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(dir.path(), "bomb", "bomb.npz");
    assert!(std::fs::metadata(&path).unwrap().len() < 3_000_000, "the bomb is small on disk");
    // An explicit limit, stated in the message.
    let (output, elapsed) = tfload(&refs(&eval(&path)), &[("TFLOAD_MAX_ARRAY_BYTES", "100000000")], None);
    let err = fails(&output, elapsed);
    assert!(err.contains("more than the 100000000 bytes") && err.contains("TFLOAD_MAX_ARRAY_BYTES"), "{err}");
    // The default limit follows the process's address-space limit: no out-of-memory abort.
    let (output, elapsed) = tfload(&refs(&eval(&path)), &[], Some(ADDRESS_SPACE));
    let err = fails(&output, elapsed);
    assert!(err.contains("address-space limit"), "{err}");
}

/// An address-space limit that TensorFlow starts in but that the bomb's 1.2 GB do not fit.
const ADDRESS_SPACE: u64 = 2_000_000_000;

#[test]
fn a_npy_declaring_a_4_gib_header_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, numpy) = make(dir.path(), "huge_header", "huge.npy");
    assert!(numpy.contains("refused"), "{numpy}");
    let (err, _) = run_fails(&path);
    assert!(err.contains("4294967295 bytes") && err.contains("10000"), "{err}");
}

#[test]
fn a_npy_header_nested_22_deep_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(dir.path(), "deep", "deep.npy");
    let (err, elapsed) = run_fails(&path);
    assert!(err.contains("nests brackets 23 deep") && err.contains("more than the 8"), "{err}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[test]
fn a_garbled_npy_header_gives_one_clean_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, numpy) = make(dir.path(), "garbled_header", "garbled.npy");
    assert!(numpy.contains("refused"), "{numpy}");
    let (err, _) = run_fails(&path);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("not a Python dict literal (at line 1, column 35")
            && !err.contains('\x07')
            && !err.contains("^---"),
        "{err}"
    );
}

#[test]
fn an_os_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    for missing in ["missing.npy", "missing.npz"] {
        let (err, _) = run_fails(&dir.path().join(missing));
        assert_eq!(err.matches("os error 2").count(), 1, "{err}");
        assert!(!err.contains("SavedModel directory"), "a data file is not a model: {err}");
    }
}

#[test]
fn empty_files_are_called_empty_not_tfrecord_data() {
    let dir = tempfile::tempdir().unwrap();
    let (png, bare, npz) = (dir.path().join("empty.png"), dir.path().join("empty"), dir.path().join("empty.npz"));
    for path in [&png, &bare, &npz] {
        std::fs::write(path, b"").unwrap();
    }
    for path in [&png, &bare] {
        let (output, elapsed) = tfload(&["predict", s(&model("cnn_digits")), s(path)], &[], None);
        let err = fails(&output, elapsed);
        assert!(err.contains("empty file (0 bytes)") && !err.contains("TFRecord"), "{err}");
    }
    for path in [&bare, &npz] {
        let err = fails(&tfload(&refs(&eval(path)), &[], None).0, Duration::ZERO);
        assert!(err.contains("empty file (0 bytes)") && !err.contains("TFRecord"), "{err}");
    }
}
