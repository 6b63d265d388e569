//! Printing tensors and progress for the inference commands: numpy-like text (long arrays
//! summarized as numpy does), nested JSON values, a progress bar on stderr that hides itself
//! when stderr is not a terminal or the user asked for quiet, and rates for progress lines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{ArrayD, ArrayViewD, Axis};
use serde_json::Value;
use tfload::TensorData;

/// Arrays with more elements than this are summarized (numpy's default threshold).
const SUMMARY_THRESHOLD: usize = 1000;
/// Entries kept at each end of a summarized axis.
const EDGE_ITEMS: usize = 3;

/// One element, ready to print as text or JSON.
#[derive(Debug, Clone)]
enum Cell {
    /// A finite number in its shortest exact decimal form.
    Number(String),
    /// NaN or an infinity, as numpy prints it (`nan`, `inf`, `-inf`).
    NonFinite(&'static str),
    Bool(bool),
    Text(String),
    /// A byte string that is not (all) UTF-8: `b'...'` in text, TF Serving's `{"b64": ...}` in JSON.
    Bytes(Vec<u8>),
}

fn float(v: f64, shortest: String) -> Cell {
    match v {
        v if v.is_nan() => Cell::NonFinite("nan"),
        v if v == f64::INFINITY => Cell::NonFinite("inf"),
        v if v == f64::NEG_INFINITY => Cell::NonFinite("-inf"),
        _ if shortest.contains(['.', 'e', 'E']) => Cell::Number(shortest),
        _ => Cell::Number(format!("{shortest}.0")), // stays a float in JSON: 1.0, not 1
    }
}

fn cells(data: &TensorData) -> ArrayD<Cell> {
    let int = |v: String| Cell::Number(v);
    match data {
        TensorData::Float16(a) => a.map(|v| float(f64::from(f32::from(*v)), f32::from(*v).to_string())),
        TensorData::Float32(a) => a.map(|v| float(f64::from(*v), v.to_string())),
        TensorData::Float64(a) => a.map(|v| float(*v, v.to_string())),
        TensorData::Int8(a) => a.map(|v| int(v.to_string())),
        TensorData::Int16(a) => a.map(|v| int(v.to_string())),
        TensorData::Int32(a) => a.map(|v| int(v.to_string())),
        TensorData::Int64(a) => a.map(|v| int(v.to_string())),
        TensorData::UInt8(a) => a.map(|v| int(v.to_string())),
        TensorData::UInt16(a) => a.map(|v| int(v.to_string())),
        TensorData::UInt32(a) => a.map(|v| int(v.to_string())),
        TensorData::UInt64(a) => a.map(|v| int(v.to_string())),
        TensorData::Bool(a) => a.map(|v| Cell::Bool(*v)),
        TensorData::String(a) => a.map(|v| Cell::Text(v.clone())),
        TensorData::Bytes(a) => a.map(|v| Cell::Bytes(v.clone())),
    }
}

/// The values as numpy prints them: nested brackets, and `...` in place of the middle of each
/// axis when the array has more than 1000 elements.
pub fn format_values(data: &TensorData) -> String {
    let cells = cells(data);
    let summarize = cells.len() > SUMMARY_THRESHOLD;
    format_nested(cells.view(), summarize, 0)
}

fn format_nested(cells: ArrayViewD<Cell>, summarize: bool, depth: usize) -> String {
    if cells.ndim() == 0 {
        return match cells.first().expect("a scalar has one element") {
            Cell::Number(text) => text.clone(),
            Cell::NonFinite(text) => text.to_string(),
            Cell::Bool(v) => if *v { "True" } else { "False" }.to_string(),
            Cell::Text(text) => format!("{text:?}"),
            Cell::Bytes(bytes) => format!("b'{}'", bytes.escape_ascii()),
        };
    }
    let parts: Vec<String> = kept_indices(cells.shape()[0], summarize)
        .into_iter()
        .map(|index| match index {
            Some(i) => format_nested(cells.index_axis(Axis(0), i), summarize, depth + 1),
            None => "...".to_string(),
        })
        .collect();
    let separator = if cells.ndim() == 1 {
        ", ".to_string()
    } else {
        format!(",{}{:width$}", "\n".repeat(cells.ndim() - 1), "", width = depth + 1)
    };
    format!("[{}]", parts.join(&separator))
}

/// The indices to print along an axis of `len`; `None` stands for the elided middle.
fn kept_indices(len: usize, summarize: bool) -> Vec<Option<usize>> {
    if !summarize || len <= 2 * EDGE_ITEMS {
        return (0..len).map(Some).collect();
    }
    (0..EDGE_ITEMS).map(Some).chain([None]).chain((len - EDGE_ITEMS..len).map(Some)).collect()
}

/// The values as nested JSON arrays (NaN and infinities as the strings `nan`, `inf`, `-inf`).
pub fn json_values(data: &TensorData) -> Value {
    json_nested(cells(data).view())
}

fn json_nested(cells: ArrayViewD<Cell>) -> Value {
    if cells.ndim() == 0 {
        return match cells.first().expect("a scalar has one element") {
            Cell::Number(text) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
            Cell::NonFinite(text) => Value::String(text.to_string()),
            Cell::Bool(v) => Value::Bool(*v),
            Cell::Text(text) => Value::String(text.clone()),
            Cell::Bytes(bytes) => serde_json::json!({ "b64": base64(bytes) }),
        };
    }
    Value::Array(cells.axis_iter(Axis(0)).map(json_nested).collect())
}

/// Standard base64 with padding (RFC 4648), as TF Serving's JSON writes binary values.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(if i <= chunk.len() { char::from(ALPHABET[sextet as usize]) } else { '=' });
        }
    }
    out
}

/// A progress bar over `len` items on stderr, hidden when stderr is not a terminal or `quiet`.
pub fn progress(len: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}} (eta {{eta}})");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    bar
}

/// A rate in samples per second for progress lines, with the digits it needs to be true: whole
/// numbers from 100 up, three significant digits below (a short or slow run is not "0"), and "-"
/// when there is nothing to measure (no samples, or no measurable time).
pub fn format_rate(samples_per_sec: f64) -> String {
    match samples_per_sec {
        rate if !rate.is_finite() || rate <= 0.0 => "-".to_string(),
        rate if rate >= 100.0 => format!("{rate:.0}"),
        rate => {
            let decimals = (2 - rate.log10().floor() as i32).clamp(0, 6) as usize;
            format!("{rate:.decimals$}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn rates_keep_three_significant_digits_and_nothing_measured_is_a_dash() {
        assert_eq!(format_rate(12345.6), "12346");
        assert_eq!(format_rate(123.4), "123");
        assert_eq!(format_rate(42.25), "42.2");
        assert_eq!(format_rate(4.56789), "4.57");
        assert_eq!(format_rate(0.3125), "0.312");
        assert_eq!(format_rate(0.00042), "0.000420");
        assert_eq!(format_rate(0.0), "-");
        assert_eq!(format_rate(f64::INFINITY), "-");
        assert_eq!(format_rate(f64::NAN), "-");
    }

    #[test]
    fn small_arrays_print_in_full() {
        let data = TensorData::Float32(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0.1, 1.0, f32::NAN, -2.5]).unwrap());
        assert_eq!(format_values(&data), "[[0.1, 1.0],\n [nan, -2.5]]");
        assert_eq!(json_values(&data), serde_json::json!([[0.1, 1.0], ["nan", -2.5]]));
        let text = TensorData::String(ArrayD::from_shape_vec(IxDyn(&[1]), vec!["a b".to_string()]).unwrap());
        assert_eq!(format_values(&text), "[\"a b\"]");
        let bytes = vec![vec![0xff, 0, b'a'], b"ab".to_vec(), vec![]];
        let bytes = TensorData::Bytes(ArrayD::from_shape_vec(IxDyn(&[3]), bytes).unwrap());
        assert_eq!(format_values(&bytes), "[b'\\xff\\x00a', b'ab', b'']");
        let b64 = |s: &str| serde_json::json!({ "b64": s });
        assert_eq!(json_values(&bytes), serde_json::json!([b64("/wBh"), b64("YWI="), b64("")]));
    }

    #[test]
    fn large_arrays_are_summarized() {
        let data = TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[2000]), (0..2000).collect()).unwrap());
        assert_eq!(format_values(&data), "[0, 1, 2, ..., 1997, 1998, 1999]");
        assert_eq!(json_values(&data).as_array().unwrap().len(), 2000);
    }
}
