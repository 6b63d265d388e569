//! Byte-string inputs end to end (issue 17 item 3): an Estimator-style TF1 SavedModel built here by
//! scripts/fixtures/bytes_inputs_fixture.py, whose `classify` and `regress` signatures take serialized
//! tf.Examples. `tfload run --input-examples` must equal Python calling
//! `tf.saved_model.load(...).signatures[...]` on the examples saved_model_cli builds from the same
//! text; byte strings that are not UTF-8 (from an `S` npy, and in the outputs) must come back
//! exactly, and object arrays of bytes are fed as Python feeds them; bad arguments are refused
//! with what is wrong.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tfload::formats::npy::read_npy;
use tfload::TensorData;

use crate::common::{root, tfload_err, tfload_ok};

/// Examples with every feature kind: floats (one given as ints), int64, a UTF-8 string and bytes
/// that are not UTF-8 (a `b'..'` literal), in saved_model_cli's syntax.
const EXAMPLES: &str = r#"[{"x": [1.0, 2.0], "n": [3], "tag": [b"\xffz"]}, {"x": [0.5, -1], "n": [0], "tag": ["t\u00e9"]}, {'x': [-2.5, 4.0], 'n': [-7]}]"#;

/// The fixture: the SavedModel and the arrays beside it, built once per test binary.
fn fixture() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        python(&["build", dir.path().join("model").to_str().unwrap()]);
        dir
    })
    .path()
}

fn model() -> PathBuf {
    fixture().join("model")
}

/// Runs the fixture script with the project's Python; returns its stdout.
fn python(args: &[&str]) -> String {
    let output = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/fixtures/bytes_inputs_fixture.py"))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .expect("the project's Python runs (scripts/setup.sh installs it)");
    assert!(output.status.success(), "fixture {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn python_json(args: &[&str]) -> Value {
    let stdout = python(args);
    serde_json::from_str(stdout.lines().last().expect("one JSON line")).unwrap()
}

/// Runs `tfload run` with `args` writing the outputs as `.npy`, and reads them back.
fn tfload_outputs(signature: &str, args: &[&str]) -> Vec<(String, TensorData)> {
    let out = tempfile::tempdir().unwrap();
    let (model, out_dir) = (model(), out.path().join("out"));
    let mut all = vec!["run", model.to_str().unwrap(), "-s", signature, "--out", out_dir.to_str().unwrap()];
    all.extend(args);
    tfload_ok(&all);
    let mut outputs: Vec<(String, TensorData)> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|entry| {
            let key = entry.path().file_stem().unwrap().to_string_lossy().into_owned();
            (key, read_npy(&entry.path()).unwrap())
        })
        .collect();
    outputs.sort_by(|a, b| a.0.cmp(&b.0));
    outputs
}

/// Asserts tfload's outputs equal Python's: strings byte for byte, ints exactly, floats to 1e-6.
fn assert_equal_to_python(ours: &[(String, TensorData)], python: &Value) {
    let python = python.as_object().unwrap();
    assert_eq!(ours.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), python.keys().collect::<Vec<_>>());
    for (key, data) in ours {
        let expected = &python[key];
        let shape: Vec<usize> = serde_json::from_value(expected["shape"].clone()).unwrap();
        assert_eq!(data.shape(), shape.as_slice(), "{key}");
        if let Some(bytes) = data.byte_strings() {
            let hex: Vec<String> = bytes.iter().map(|b| b.iter().map(|byte| format!("{byte:02x}")).collect()).collect();
            assert_eq!(serde_json::json!(hex), expected["hex"], "{key}");
            continue;
        }
        let values: Vec<f64> = serde_json::from_value(expected["values"].clone()).unwrap();
        let ours = data.to_f32().unwrap();
        for (i, (a, b)) in ours.iter().zip(&values).enumerate() {
            let close = (f64::from(*a) - b).abs() <= 1e-6 * b.abs().max(1.0);
            assert!(close, "{key}[{i}]: tfload {a}, Python {b}");
        }
    }
}

#[test]
fn classify_and_regress_with_input_examples_equal_python() {
    for signature in ["classify", "regress"] {
        let arg = format!("inputs={EXAMPLES}");
        let ours = tfload_outputs(signature, &["--input-examples", &arg]);
        let python = python_json(&["call", model().to_str().unwrap(), signature, &arg]);
        assert_equal_to_python(&ours, &python);
    }
    // The classes hold bytes that are not UTF-8 (the first example's tag): fetched as bytes.
    let ours = tfload_outputs("classify", &["--input-examples", &format!("inputs={EXAMPLES}")]);
    assert!(matches!(&ours[0], (key, TensorData::Bytes(_)) if key == "classes"), "{:?}", ours[0]);
}

#[test]
fn non_utf8_bytes_from_an_s_npy_come_back_exactly_as_pythons() {
    let npy = fixture().join("s.npy");
    let raw = format!("raw={}", npy.display());
    let ours = tfload_outputs("echo", &["-i", &raw]);
    let python = python_json(&["echo", model().to_str().unwrap(), "echo", "raw", npy.to_str().unwrap()]);
    assert_equal_to_python(&ours, &python);
    assert!(matches!(&ours[0].1, TensorData::Bytes(_)), "written as numpy bytes and read back as such");
    // Printed as Python prints bytes.
    let model = model();
    let text = tfload_ok(&["run", model.to_str().unwrap(), "-s", "echo", "-i", &raw]);
    assert!(text.contains(r"[b'\xff\x00a\xfe', b'ok\xfe', b'\x80\x81\xfe']"), "{text}");
}

#[test]
fn object_arrays_of_bytes_are_fed_as_python_feeds_them() {
    let cases = [("echo", "raw", "obj.npy"), ("echo_grid", "grid", "obj_grid.npy"), ("echo", "raw", "obj.npz[a]")];
    for (signature, key, file) in cases {
        let source = fixture().join(file).display().to_string();
        let ours = tfload_outputs(signature, &["-i", &format!("{key}={source}")]);
        let python = python_json(&["echo", model().to_str().unwrap(), signature, key, &source]);
        assert_equal_to_python(&ours, &python);
    }
}

#[test]
fn an_object_array_of_other_objects_is_refused_naming_the_dtype_to_use() {
    let (model, npy) = (model(), fixture().join("obj_int.npy"));
    let raw = format!("raw={}", npy.display());
    let stderr = tfload_err(&["run", model.to_str().unwrap(), "-s", "echo", "-i", &raw]);
    assert!(stderr.contains("element 0 is an int, not bytes or str") && stderr.contains("dtype='S'"), "{stderr}");
}

#[test]
fn bad_input_examples_are_refused_saying_what_is_wrong() {
    let model = model();
    let run = |arg: &str| tfload_err(&["run", model.to_str().unwrap(), "-s", "classify", "--input-examples", arg]);
    let cases = [
        ("inputs={x: [1]}", "--input-examples inputs: is not a Python or JSON literal (at line 1, column 2"),
        ("inputs={'x': [1.0]}", "is a dict, not a list of dicts"),
        ("inputs=[{'x': [1.0]}, {'x': [1, 'a']}]", "example 1: feature `x` mixes types: element 1 is a str"),
        ("inputs=[{'x': 1.0}]", "feature `x` is a float, and a feature's value must be a list"),
        ("nokey=[{'x': [1.0]}]", "there is no input `nokey`; its inputs are: inputs"),
        ("[{'x': [1.0]}]", "is not KEY=[{\"feature\": [values]}, ...]"),
    ];
    for (arg, expected) in cases {
        let stderr = run(arg);
        assert!(stderr.contains(expected), "{arg}: {stderr}");
    }
}
