//! Reading a `.npy` header without trusting it: the header's length, its bracket nesting, the
//! size its shape and dtype declare and the bytes really there are all bounded before anything
//! is allocated or parsed, because `npyz` and its Python-literal parser trust them (a 4 GiB
//! declared header is allocated as is; deep nesting parses in exponential time).

use std::io::Read;

use npyz::{NpyHeader, TypeStr};
use py_literal::Value;

/// The longest header tfload reads: numpy's own default (`max_header_size` of `np.load`).
pub const MAX_HEADER_LEN: usize = 10_000;

/// The deepest bracket nesting tfload parses in a header. A plain array's header nests 2 deep
/// (`{... 'shape': (3, 4)}`); the parser's time grows exponentially with the depth.
pub const MAX_NESTING: usize = 8;

/// The environment variable that sets the largest array tfload reads, in bytes.
pub const MAX_ARRAY_BYTES_VAR: &str = "TFLOAD_MAX_ARRAY_BYTES";

/// A `.npy` header that passed the checks.
pub struct CheckedHeader {
    /// The header as `npyz` reads the data with it.
    pub npy: NpyHeader,
    /// Bytes before the data: magic, version, length field and header text.
    pub preamble_len: u64,
    /// Bytes of data the shape and dtype declare.
    pub data_len: u64,
    /// The shape, for messages.
    pub shape: Vec<u64>,
    /// The dtype as written (`<f4`), for messages.
    pub descr: String,
    /// Whether the data is a pickled object array (`data_len` is then 0: the rest is the pickle).
    pub is_object: bool,
}

/// Reads and checks a `.npy` header from `reader`, which holds `available` bytes in all when
/// known. Errors are one line each, naming the limit that was passed.
pub fn read_header(reader: &mut impl Read, available: Option<u64>) -> Result<CheckedHeader, String> {
    let mut start = [0u8; 8];
    read_exact(reader, &mut start, || "too short to be a .npy file (no complete magic and version)".to_string())?;
    if &start[..6] != b"\x93NUMPY" {
        return Err("not a .npy file: it does not start with numpy's magic bytes \\x93NUMPY".to_string());
    }
    let (field_len, header_len) = match start[6] {
        1 => (2, read_u16(reader)? as usize),
        2 | 3 => (4, read_u32(reader)? as usize),
        major => {
            return Err(format!(".npy format version {major}.{} is unknown (numpy writes 1.0, 2.0 and 3.0)", start[7]))
        }
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!(
            "its header declares {header_len} bytes, more than the {MAX_HEADER_LEN} bytes tfload (like numpy's np.load) accepts: the file is corrupt or not written by numpy"
        ));
    }
    let preamble_len = (8 + field_len + header_len) as u64;
    if available.is_some_and(|available| available < preamble_len) {
        return Err(format!("truncated: its header declares {header_len} bytes, but the file ends before them"));
    }
    let mut text = vec![0u8; header_len];
    read_exact(reader, &mut text, || {
        format!("truncated: its header declares {header_len} bytes, but the file ends before them")
    })?;
    let parsed = parse_header_text(&text)?;
    // Every dtype, object arrays too (whose data length is not the shape's): numpy's reader and
    // npyz multiply the dimensions, which must not overflow.
    let elements = parsed.shape.iter().try_fold(1u64, |count, &dim| count.checked_mul(dim));
    if elements.and_then(|count| count.checked_mul(16)).is_none() {
        return Err(format!(
            "its header declares shape {}, whose element count overflows: the file is corrupt",
            shape_text(&parsed.shape)
        ));
    }
    let data_len = parsed.data_len()?;
    if let Some(available) = available {
        let held = available - preamble_len;
        if held < data_len {
            return Err(format!(
                "truncated: its header declares shape {} of dtype {} ({data_len} bytes of data), but only {held} bytes follow the header",
                shape_text(&parsed.shape),
                parsed.descr
            ));
        }
    }
    let mut whole = start.to_vec();
    whole.extend_from_slice(&header_len_field(field_len, header_len));
    whole.extend_from_slice(&text);
    let npy = NpyHeader::from_reader(whole.as_slice()).map_err(|e| format!("its header cannot be used ({e})"))?;
    let is_object = parsed.is_object;
    Ok(CheckedHeader { npy, preamble_len, data_len, shape: parsed.shape, descr: parsed.descr, is_object })
}

fn header_len_field(field_len: usize, header_len: usize) -> Vec<u8> {
    if field_len == 2 {
        (header_len as u16).to_le_bytes().to_vec()
    } else {
        (header_len as u32).to_le_bytes().to_vec()
    }
}

/// Fills `buf`; an early end is `short()`, any other failure says what the reader said.
fn read_exact(reader: &mut impl Read, buf: &mut [u8], short: impl FnOnce() -> String) -> Result<(), String> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => short(),
        _ => format!("its header cannot be read ({e})"),
    })
}

fn read_u16(reader: &mut impl Read) -> Result<u16, String> {
    let mut bytes = [0u8; 2];
    read_exact(reader, &mut bytes, || "truncated inside its header length field".to_string())?;
    Ok(u16::from_le_bytes(bytes))
}

fn read_u32(reader: &mut impl Read) -> Result<u32, String> {
    let mut bytes = [0u8; 4];
    read_exact(reader, &mut bytes, || "truncated inside its header length field".to_string())?;
    Ok(u32::from_le_bytes(bytes))
}

/// What tfload needs from a header's dict.
struct ParsedHeader {
    descr: String,
    item_size: u64,
    shape: Vec<u64>,
    is_object: bool,
}

impl ParsedHeader {
    /// Bytes of data the header declares, refused when that overflows 64 bits.
    fn data_len(&self) -> Result<u64, String> {
        self.shape.iter().try_fold(self.item_size, |total, &dim| total.checked_mul(dim)).ok_or_else(|| {
            format!(
                "its header declares shape {} of dtype {}, whose size in bytes overflows 64 bits",
                shape_text(&self.shape),
                self.descr
            )
        })
    }
}

/// Shape as numpy prints it: `(3, 4)`, `(3,)`, `()`.
pub fn shape_text(shape: &[u64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
    }
}

fn parse_header_text(bytes: &[u8]) -> Result<ParsedHeader, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("its header is not text (byte {} is not UTF-8)", e.valid_up_to()))?;
    let depth = nesting_depth(text);
    if depth > MAX_NESTING {
        return Err(format!("its header nests brackets {depth} deep, more than the {MAX_NESTING} tfload parses: the file is corrupt or not written by numpy"));
    }
    let value: Value = text
        .trim_end()
        .parse()
        .map_err(|e: py_literal::ParseError| format!("its header is not a Python dict literal ({})", one_line(&e)))?;
    let entries = value.as_dict().ok_or("its header is not a Python dict literal")?;
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_string().is_some_and(|k| k == key))
            .map(|(_, v)| v)
            .ok_or_else(|| format!("its header has no '{key}' entry"))
    };
    if get("fortran_order")?.as_boolean().is_none() {
        return Err("its header's 'fortran_order' is not True or False".to_string());
    }
    let descr = match get("descr")? {
        Value::String(descr) => descr.clone(),
        _ => return Err("holds a structured (record) array; give one plain array per input".to_string()),
    };
    let type_str: TypeStr =
        descr.parse().map_err(|_| format!("its header's dtype `{descr}` is not a numpy type string"))?;
    // An object array's data is a pickle of unknown length (read by npy::pickle).
    let item_size = if type_str.uses_pickled_array() { Some(0) } else { type_str.num_bytes() };
    let item_size = item_size.ok_or_else(|| format!("its header's dtype `{descr}` has no fixed size"))? as u64;
    let shape = get("shape")?
        .as_tuple()
        .ok_or("its header's 'shape' is not a tuple")?
        .iter()
        .map(|dim| dim.as_integer().and_then(|d| u64::try_from(d).ok()))
        .collect::<Option<Vec<u64>>>()
        .ok_or("its header's 'shape' holds something other than non-negative integers")?;
    Ok(ParsedHeader { descr, item_size, shape, is_object: type_str.uses_pickled_array() })
}

/// The deepest nesting of `(`, `[` and `{` outside string literals.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None::<char>);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The parser's complaint on one line: its multi-line diagram reduced to position and
/// expectation, without the header's raw bytes.
pub(crate) fn one_line(error: &py_literal::ParseError) -> String {
    let text = error.to_string();
    let position = text
        .lines()
        .find_map(|l| l.split_once("--> "))
        .and_then(|(_, p)| p.trim().split_once(':'))
        .map(|(line, column)| format!("at line {line}, column {column}"));
    let expected = text.lines().find_map(|l| l.trim().strip_prefix("= ")).map(str::to_string);
    match (position, expected) {
        (Some(p), Some(e)) => format!("{p}: {e}"),
        (Some(p), None) => p,
        (None, Some(e)) => e,
        (None, None) => text.lines().next().unwrap_or("syntax error").to_string(),
    }
}

/// The largest array, in bytes, tfload reads: `TFLOAD_MAX_ARRAY_BYTES` when set, else the
/// memory available (`MemAvailable`) or what the process's address-space limit leaves
/// (`ulimit -v` less `VmSize`), whichever is smaller. `None` when neither is known. Returned with what it is, for messages.
pub fn array_byte_limit() -> Option<(u64, String)> {
    if let Some(set) = std::env::var(MAX_ARRAY_BYTES_VAR).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some((set, format!("set by {MAX_ARRAY_BYTES_VAR}")));
    }
    let available = read_proc("/proc/meminfo", "MemAvailable:")
        .map(|kib| (kib.saturating_mul(1024), "the memory available".to_string()));
    let used = read_proc("/proc/self/status", "VmSize:").unwrap_or(0).saturating_mul(1024);
    let address_space = read_proc("/proc/self/limits", "Max address space")
        .map(|b| (b.saturating_sub(used), "what is left of the process's address-space limit".to_string()));
    let limit = [available, address_space].into_iter().flatten().min_by_key(|(bytes, _)| *bytes)?;
    Some((limit.0, format!("{}; set {MAX_ARRAY_BYTES_VAR} to change it", limit.1)))
}

/// The first number after `prefix` on its line of a `/proc` file (`unlimited` is none).
fn read_proc(path: &str, prefix: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

/// Refuses arrays whose data (`bytes`, in all) would exceed [`array_byte_limit`]; `what`
/// begins the message (`its header declares`).
pub fn check_array_bytes(bytes: u64, what: &str) -> Result<(), String> {
    match array_byte_limit() {
        Some((limit, reason)) if bytes > limit => {
            Err(format!("{what} {bytes} bytes of data, more than the {limit} bytes tfload reads ({reason})"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn check(bytes: &[u8]) -> Result<CheckedHeader, String> {
        read_header(&mut &bytes[..], Some(bytes.len() as u64))
    }

    #[test]
    fn reads_a_plain_header() {
        let bytes = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", &[0; 24]);
        let header = check(&bytes).unwrap();
        assert_eq!((header.data_len, header.shape.clone()), (24, vec![2, 3]));
        assert_eq!(header.preamble_len as usize, bytes.len() - 24);
    }

    #[test]
    fn refuses_a_header_longer_than_numpys_limit_before_reading_it() {
        let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = check(&bytes).err().unwrap();
        assert!(error.contains("4294967295 bytes") && error.contains("10000"), "{error}");
    }

    #[test]
    fn refuses_deep_nesting_quickly() {
        let header =
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {}3{}}}", "(".repeat(30), ")".repeat(30));
        let started = std::time::Instant::now();
        let error = check(&npy(&header, &[])).err().unwrap();
        assert!(error.contains("31 deep") && error.contains("8"), "{error}");
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert_eq!(nesting_depth("{'a': '(((((((((((', 'b': (1,)}"), 2);
    }

    #[test]
    fn refuses_a_shape_whose_size_overflows() {
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
        let error = check(&npy(header, &[])).err().unwrap();
        assert!(error.contains("overflows"), "{error}");
    }

    #[test]
    fn refuses_an_object_array_whose_element_count_overflows() {
        // Found by the fuzz campaign: npyz multiplied these dimensions and panicked.
        let header = "{'descr': '|O', 'fortran_order': True, 'shape': (4611686018427387904, 8, 8, 1), }";
        let error = check(&npy(header, &[0; 64])).err().unwrap();
        assert!(error.contains("element count overflows"), "{error}");
    }

    #[test]
    fn refuses_data_shorter_than_the_shape_needs() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000,), }";
        let error = check(&npy(header, &[0; 8])).err().unwrap();
        assert!(error.contains("4000000 bytes") && error.contains("only 8"), "{error}");
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let error = check(&npy("{'descr': '<f4', 'fortran_order': Fals\x01e, 'shape': ()}", &[])).err().unwrap();
        assert!(!error.contains('\n') && !error.contains('\x01'), "{error}");
        assert!(error.contains("not a Python dict literal (at line 1, column 35: expected value)"), "{error}");
    }
}
