//! Tensors as the library's callers see them: an owned n-dimensional array (ndarray) of one of
//! the element types a signature can take, with its dtype and shape. No TensorFlow here: the
//! conversions to and from TensorFlow's tensors live at the session boundary
//! ([`session::feed`](crate::session::feed)).

pub mod dtype;
pub mod shape;

use half::f16;
use ndarray::{ArrayD, IxDyn};

use crate::tensor::dtype::DType;

/// Calls `$body` with `$array` bound to the array inside any `TensorData` variant.
macro_rules! with_array {
    ($data:expr, $array:ident => $body:expr) => {
        match $data {
            TensorData::Float16($array) => $body,
            TensorData::Float32($array) => $body,
            TensorData::Float64($array) => $body,
            TensorData::Int8($array) => $body,
            TensorData::Int16($array) => $body,
            TensorData::Int32($array) => $body,
            TensorData::Int64($array) => $body,
            TensorData::UInt8($array) => $body,
            TensorData::UInt16($array) => $body,
            TensorData::UInt32($array) => $body,
            TensorData::UInt64($array) => $body,
            TensorData::Bool($array) => $body,
            TensorData::String($array) => $body,
            TensorData::Bytes($array) => $body,
        }
    };
}

/// Calls `$body` with `$a` and `$b` bound to the insides of `$left` (a `TensorData`) and `$right`
/// (a `TensorData` or `FeedTensor`, named by `$kind`) when both are the same element type; else
/// `$otherwise`. Bytes go to `$otherwise`: the feed holds them as another element type.
macro_rules! with_same_type {
    ($left:expr, $right:expr, $kind:ident, ($a:ident, $b:ident) => $body:expr, _ => $otherwise:expr) => {
        match ($left, $right) {
            (TensorData::Float16($a), $kind::Float16($b)) => $body,
            (TensorData::Float32($a), $kind::Float32($b)) => $body,
            (TensorData::Float64($a), $kind::Float64($b)) => $body,
            (TensorData::Int8($a), $kind::Int8($b)) => $body,
            (TensorData::Int16($a), $kind::Int16($b)) => $body,
            (TensorData::Int32($a), $kind::Int32($b)) => $body,
            (TensorData::Int64($a), $kind::Int64($b)) => $body,
            (TensorData::UInt8($a), $kind::UInt8($b)) => $body,
            (TensorData::UInt16($a), $kind::UInt16($b)) => $body,
            (TensorData::UInt32($a), $kind::UInt32($b)) => $body,
            (TensorData::UInt64($a), $kind::UInt64($b)) => $body,
            (TensorData::Bool($a), $kind::Bool($b)) => $body,
            (TensorData::String($a), $kind::String($b)) => $body,
            _ => $otherwise,
        }
    };
}
pub(crate) use with_same_type;

/// An owned tensor value: an n-dimensional array of one element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float16 values.
    Float16(ArrayD<f16>),
    /// float32 values.
    Float32(ArrayD<f32>),
    /// float64 values.
    Float64(ArrayD<f64>),
    /// int8 values.
    Int8(ArrayD<i8>),
    /// int16 values.
    Int16(ArrayD<i16>),
    /// int32 values.
    Int32(ArrayD<i32>),
    /// int64 values.
    Int64(ArrayD<i64>),
    /// uint8 values.
    UInt8(ArrayD<u8>),
    /// uint16 values.
    UInt16(ArrayD<u16>),
    /// uint32 values.
    UInt32(ArrayD<u32>),
    /// uint64 values.
    UInt64(ArrayD<u64>),
    /// bool values.
    Bool(ArrayD<bool>),
    /// Strings (TensorFlow byte strings that are all valid UTF-8).
    String(ArrayD<String>),
    /// TensorFlow byte strings (dtype `string`) as raw bytes, which need not be UTF-8: serialized
    /// protos such as `tf.train.Example`, images, numpy `S` arrays. Values tfload reads or
    /// fetches come as [`TensorData::String`] when every element is UTF-8 and as this otherwise
    /// ([`TensorData::from_byte_strings`]); both feed a string input.
    Bytes(ArrayD<Vec<u8>>),
}

impl TensorData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::Float16(_) => DType::Float16,
            TensorData::Float32(_) => DType::Float32,
            TensorData::Float64(_) => DType::Float64,
            TensorData::Int8(_) => DType::Int8,
            TensorData::Int16(_) => DType::Int16,
            TensorData::Int32(_) => DType::Int32,
            TensorData::Int64(_) => DType::Int64,
            TensorData::UInt8(_) => DType::UInt8,
            TensorData::UInt16(_) => DType::UInt16,
            TensorData::UInt32(_) => DType::UInt32,
            TensorData::UInt64(_) => DType::UInt64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) | TensorData::Bytes(_) => DType::String,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        with_array!(self, array => array.shape())
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_array!(self, array => array.len())
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows (entries along the first axis) at `indices`, in that order: a batch gathered out
    /// of a data set. Panics if the tensor is a scalar or an index is out of range.
    pub fn select_rows(&self, indices: &[usize]) -> TensorData {
        match self {
            TensorData::Float16(a) => TensorData::Float16(gather_rows(a, indices)),
            TensorData::Float32(a) => TensorData::Float32(gather_rows(a, indices)),
            TensorData::Float64(a) => TensorData::Float64(gather_rows(a, indices)),
            TensorData::Int8(a) => TensorData::Int8(gather_rows(a, indices)),
            TensorData::Int16(a) => TensorData::Int16(gather_rows(a, indices)),
            TensorData::Int32(a) => TensorData::Int32(gather_rows(a, indices)),
            TensorData::Int64(a) => TensorData::Int64(gather_rows(a, indices)),
            TensorData::UInt8(a) => TensorData::UInt8(gather_rows(a, indices)),
            TensorData::UInt16(a) => TensorData::UInt16(gather_rows(a, indices)),
            TensorData::UInt32(a) => TensorData::UInt32(gather_rows(a, indices)),
            TensorData::UInt64(a) => TensorData::UInt64(gather_rows(a, indices)),
            TensorData::Bool(a) => TensorData::Bool(gather_rows(a, indices)),
            TensorData::String(a) => TensorData::String(gather_rows(a, indices)),
            TensorData::Bytes(a) => TensorData::Bytes(gather_rows(a, indices)),
        }
    }

    /// Bytes the values take in memory (strings: their lengths).
    pub fn nbytes(&self) -> usize {
        match self {
            TensorData::String(a) => a.iter().map(String::len).sum(),
            TensorData::Bytes(a) => a.iter().map(Vec::len).sum(),
            other => with_array!(other, a => a.len() * element_size(a)),
        }
    }

    /// A string tensor from byte strings: [`TensorData::String`] when every element is UTF-8 (so
    /// text stays text), [`TensorData::Bytes`] otherwise.
    pub fn from_byte_strings(bytes: ArrayD<Vec<u8>>) -> TensorData {
        if !bytes.iter().all(|b| std::str::from_utf8(b).is_ok()) {
            return TensorData::Bytes(bytes);
        }
        TensorData::String(bytes.mapv(|b| String::from_utf8(b).expect("checked above")))
    }

    /// The elements of a string tensor as bytes (UTF-8 for [`TensorData::String`]); `None` for
    /// other dtypes.
    pub fn byte_strings(&self) -> Option<ArrayD<&[u8]>> {
        match self {
            TensorData::String(a) => Some(a.map(|s| s.as_bytes())),
            TensorData::Bytes(a) => Some(a.map(Vec::as_slice)),
            _ => None,
        }
    }

    /// Like [`TensorData::select_rows`], written into `out`: into its memory where it already
    /// holds rows of this type and shape (the batch before, in a loop), else replacing it.
    pub fn select_rows_into(&self, indices: &[usize], out: &mut TensorData) {
        let reused =
            with_same_type!(self, &mut *out, TensorData, (a, o) => gather_rows_into(a, indices, o), _ => false);
        if !reused {
            *out = self.select_rows(indices);
        }
    }

    /// The values as float32 where the type converts without surprise (floats and integers).
    pub fn to_f32(&self) -> Option<ArrayD<f32>> {
        Some(match self {
            TensorData::Float16(a) => a.mapv(f32::from),
            TensorData::Float32(a) => a.clone(),
            TensorData::Float64(a) => a.mapv(|v| v as f32),
            TensorData::Int8(a) => a.mapv(f32::from),
            TensorData::Int16(a) => a.mapv(f32::from),
            TensorData::Int32(a) => a.mapv(|v| v as f32),
            TensorData::Int64(a) => a.mapv(|v| v as f32),
            TensorData::UInt8(a) => a.mapv(f32::from),
            TensorData::UInt16(a) => a.mapv(f32::from),
            TensorData::UInt32(a) => a.mapv(|v| v as f32),
            TensorData::UInt64(a) => a.mapv(|v| v as f32),
            TensorData::Bool(_) | TensorData::String(_) | TensorData::Bytes(_) => return None,
        })
    }
}

macro_rules! impl_from_array {
    ($($rust:ty => $variant:ident),* $(,)?) => {
        $(impl From<ArrayD<$rust>> for TensorData {
            fn from(array: ArrayD<$rust>) -> TensorData {
                TensorData::$variant(array)
            }
        })*
    };
}

impl_from_array!(
    f16 => Float16, f32 => Float32, f64 => Float64, i8 => Int8, i16 => Int16, i32 => Int32,
    i64 => Int64, u8 => UInt8, u16 => UInt16, u32 => UInt32, u64 => UInt64, bool => Bool,
    String => String, Vec<u8> => Bytes,
);

/// The rows of `array` at `indices`: contiguous rows copied whole (what `ndarray::select` does
/// element by element), other layouts through `select`.
fn gather_rows<T: Clone>(array: &ArrayD<T>, indices: &[usize]) -> ArrayD<T> {
    let Some(values) = array.as_slice().filter(|_| array.ndim() > 0) else {
        return array.select(ndarray::Axis(0), indices);
    };
    let row: usize = array.shape()[1..].iter().product();
    let mut gathered = Vec::with_capacity(row * indices.len());
    for &index in indices {
        gathered.extend_from_slice(&values[index * row..(index + 1) * row]);
    }
    let mut shape = array.shape().to_vec();
    shape[0] = indices.len();
    ArrayD::from_shape_vec(IxDyn(&shape), gathered).expect("the rows fill the shape")
}

fn element_size<T>(_: &ArrayD<T>) -> usize {
    std::mem::size_of::<T>()
}

/// Copies the rows of `array` at `indices` into `out` if both are contiguous and `out` has the
/// gathered shape; returns false, leaving `out` as it was, otherwise.
fn gather_rows_into<T: Clone>(array: &ArrayD<T>, indices: &[usize], out: &mut ArrayD<T>) -> bool {
    let fits = array.ndim() > 0
        && out.ndim() == array.ndim()
        && out.shape()[0] == indices.len()
        && out.shape()[1..] == array.shape()[1..];
    let (Some(values), Some(slots)) = (array.as_slice(), out.as_slice_mut()) else {
        return false;
    };
    if !fits {
        return false;
    }
    let row: usize = array.shape()[1..].iter().product();
    for (slot, &index) in slots.chunks_exact_mut(row.max(1)).zip(indices) {
        slot.clone_from_slice(&values[index * row..(index + 1) * row]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    #[test]
    fn gathered_rows_match_ndarray_select_for_every_layout() {
        let array = ArrayD::from_shape_vec(IxDyn(&[4, 2, 3]), (0..24).collect::<Vec<i32>>()).unwrap();
        let indices = [3, 0, 3, 1];
        let expected = array.select(ndarray::Axis(0), &indices);
        assert_eq!(TensorData::Int32(array.clone()).select_rows(&indices), TensorData::Int32(expected));
        let fortran = ArrayD::from_shape_vec(IxDyn(&[4, 2, 3]).f(), (0..24).collect::<Vec<i32>>()).unwrap();
        assert!(fortran.as_slice().is_none());
        let expected = fortran.select(ndarray::Axis(0), &indices);
        assert_eq!(TensorData::Int32(fortran).select_rows(&indices), TensorData::Int32(expected));
    }

    #[test]
    fn rows_gathered_into_the_batch_before_match_a_fresh_gather() {
        let array = ArrayD::from_shape_vec(IxDyn(&[5, 2, 3]), (0..30).map(|v| v as f32).collect()).unwrap();
        let data = TensorData::Float32(array);
        let mut out = data.select_rows(&[0, 1]);
        let buffer = match &out {
            TensorData::Float32(a) => a.as_ptr(),
            _ => unreachable!(),
        };
        data.select_rows_into(&[4, 2], &mut out);
        assert_eq!(out, data.select_rows(&[4, 2]));
        assert!(matches!(&out, TensorData::Float32(a) if a.as_ptr() == buffer), "same shape: written in place");
        // A different batch size, dtype or layout is gathered afresh.
        data.select_rows_into(&[3, 3, 1], &mut out);
        assert_eq!(out, data.select_rows(&[3, 3, 1]));
        let mut other = TensorData::Int64(ArrayD::zeros(IxDyn(&[3, 2, 3])));
        data.select_rows_into(&[0, 1, 2], &mut other);
        assert_eq!(other, data.select_rows(&[0, 1, 2]));
        let fortran = ArrayD::from_shape_vec(IxDyn(&[4, 2]).f(), (0..8).collect::<Vec<i32>>()).unwrap();
        let fortran = TensorData::Int32(fortran);
        let mut out = fortran.select_rows(&[0, 1]);
        fortran.select_rows_into(&[3, 2], &mut out);
        assert_eq!(out, fortran.select_rows(&[3, 2]));
        assert_eq!(data.nbytes(), 30 * 4);
        assert_eq!(TensorData::String(ArrayD::from_elem(IxDyn(&[2]), "abc".to_string())).nbytes(), 6);
    }

    #[test]
    fn byte_strings_stay_text_only_when_every_element_is_utf8() {
        let bytes = |v: Vec<&[u8]>| {
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.into_iter().map(<[u8]>::to_vec).collect()).unwrap()
        };
        let text = TensorData::from_byte_strings(bytes(vec![b"ab", "é".as_bytes()]));
        assert_eq!(
            text,
            TensorData::String(ArrayD::from_shape_vec(IxDyn(&[2]), vec!["ab".into(), "é".into()]).unwrap())
        );
        let raw = TensorData::from_byte_strings(bytes(vec![b"ab", b"\xff"]));
        assert_eq!(raw, TensorData::Bytes(bytes(vec![b"ab", b"\xff"])));
        assert_eq!((raw.dtype(), raw.nbytes()), (DType::String, 3));
        assert_eq!(text.byte_strings().unwrap()[1], "é".as_bytes());
        assert_eq!(raw.select_rows(&[1, 1]), TensorData::Bytes(bytes(vec![b"\xff", b"\xff"])));
    }
}
