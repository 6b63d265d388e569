//! The conversions between [`TensorData`] and TensorFlow's tensors at the C-API boundary: the
//! tensors a run is fed (kept alive while it borrows them, refilled in place batch after batch)
//! and the outputs it fetches.

use half::f16;
use ndarray::{ArrayD, IxDyn};
use tensorflow::{FetchToken, Operation, SessionRunArgs, Tensor};

use crate::error::{Error, Result};
use crate::tensor::dtype::DType;
use crate::tensor::{with_same_type, TensorData};

impl TensorData {
    /// Converts to a TensorFlow tensor, ready to feed.
    pub(crate) fn to_tf(&self) -> Result<FeedTensor> {
        fn convert<T: tensorflow::TensorType + Clone>(array: &ArrayD<T>) -> Result<Tensor<T>> {
            let dims: Vec<u64> = array.shape().iter().map(|&d| d as u64).collect();
            let mut tensor = Tensor::new(&dims);
            fill(&mut tensor, array);
            Ok(tensor)
        }
        Ok(match self {
            TensorData::Float16(a) => FeedTensor::Float16(convert(a)?),
            TensorData::Float32(a) => FeedTensor::Float32(convert(a)?),
            TensorData::Float64(a) => FeedTensor::Float64(convert(a)?),
            TensorData::Int8(a) => FeedTensor::Int8(convert(a)?),
            TensorData::Int16(a) => FeedTensor::Int16(convert(a)?),
            TensorData::Int32(a) => FeedTensor::Int32(convert(a)?),
            TensorData::Int64(a) => FeedTensor::Int64(convert(a)?),
            TensorData::UInt8(a) => FeedTensor::UInt8(convert(a)?),
            TensorData::UInt16(a) => FeedTensor::UInt16(convert(a)?),
            TensorData::UInt32(a) => FeedTensor::UInt32(convert(a)?),
            TensorData::UInt64(a) => FeedTensor::UInt64(convert(a)?),
            TensorData::Bool(a) => FeedTensor::Bool(convert(a)?),
            TensorData::String(a) => FeedTensor::String(convert(a)?),
            TensorData::Bytes(a) => FeedTensor::Bytes(convert(&a.map(|b| TfBytes(b.clone())))?),
        })
    }

    /// Copies the values into `tensor` if it has the same dtype and shape (a tensor kept from an
    /// earlier batch, whose run is over); returns false, leaving it as it was, otherwise.
    pub(crate) fn copy_into(&self, tensor: &mut FeedTensor) -> bool {
        fn copy<T: tensorflow::TensorType + Clone>(array: &ArrayD<T>, tensor: &mut Tensor<T>) -> bool {
            let same_shape = tensor.dims().len() == array.ndim()
                && tensor.dims().iter().zip(array.shape()).all(|(&t, &a)| t as usize == a);
            if same_shape {
                fill(tensor, array);
            }
            same_shape
        }
        match (self, tensor) {
            (TensorData::Bytes(a), FeedTensor::Bytes(t)) => copy(&a.map(|b| TfBytes(b.clone())), t),
            (data, tensor) => with_same_type!(data, tensor, FeedTensor, (a, t) => copy(a, t), _ => false),
        }
    }

    /// Takes a fetched output of type `dtype` out of the run arguments.
    pub(crate) fn fetch(args: &mut SessionRunArgs<'_>, token: FetchToken, dtype: DType) -> Result<TensorData> {
        fn take<T: tensorflow::TensorType + Clone>(
            args: &mut SessionRunArgs<'_>,
            token: FetchToken,
        ) -> Result<ArrayD<T>> {
            let tensor: Tensor<T> = args
                .fetch(token)
                .map_err(|status| Error::from_tensorflow("fetching an output".to_string(), &status))?;
            let dims: Vec<usize> = tensor.dims().iter().map(|&d| d as usize).collect();
            Ok(ArrayD::from_shape_vec(IxDyn(&dims), tensor.to_vec()).expect("tensor length matches its dims"))
        }
        Ok(match dtype {
            DType::Float16 => TensorData::Float16(take(args, token)?),
            DType::Float32 => TensorData::Float32(take(args, token)?),
            DType::Float64 => TensorData::Float64(take(args, token)?),
            DType::Int8 => TensorData::Int8(take(args, token)?),
            DType::Int16 => TensorData::Int16(take(args, token)?),
            DType::Int32 => TensorData::Int32(take(args, token)?),
            DType::Int64 => TensorData::Int64(take(args, token)?),
            DType::UInt8 => TensorData::UInt8(take(args, token)?),
            DType::UInt16 => TensorData::UInt16(take(args, token)?),
            DType::UInt32 => TensorData::UInt32(take(args, token)?),
            DType::UInt64 => TensorData::UInt64(take(args, token)?),
            DType::Bool => TensorData::Bool(take(args, token)?),
            DType::String => TensorData::from_byte_strings(take::<TfBytes>(args, token)?.mapv(|b| b.0)),
            other => return Err(Error::UnsupportedDType { dtype: other, context: "fetching an output".to_string() }),
        })
    }
}

/// Copies `array`'s values, in logical order, into `tensor` of the same length: one bulk copy (a
/// memcpy for numbers) where the array is contiguous.
fn fill<T: tensorflow::TensorType + Clone>(tensor: &mut Tensor<T>, array: &ArrayD<T>) {
    match array.as_slice() {
        Some(values) => tensor.clone_from_slice(values),
        None => tensor.iter_mut().zip(array.iter()).for_each(|(e, v)| e.clone_from(v)),
    }
}

/// A TensorFlow tensor of one of the element types tfload handles: built from a `TensorData`
/// and kept alive while a run borrows it, or fetched and left in the buffer TensorFlow handed
/// over ([`FeedTensor::fetch_numbers`]).
pub(crate) enum FeedTensor {
    Float16(Tensor<f16>),
    Float32(Tensor<f32>),
    Float64(Tensor<f64>),
    Int8(Tensor<i8>),
    Int16(Tensor<i16>),
    Int32(Tensor<i32>),
    Int64(Tensor<i64>),
    UInt8(Tensor<u8>),
    UInt16(Tensor<u16>),
    UInt32(Tensor<u32>),
    UInt64(Tensor<u64>),
    Bool(Tensor<bool>),
    String(Tensor<String>),
    Bytes(Tensor<TfBytes>),
}

// SAFETY: a FeedTensor exclusively owns its tensor. Numeric tensors are already Send; the
// String and Bytes variants are not only because the crate keeps the C tensor it builds on first feed in a
// `Cell` of raw pointers. Moving that ownership to another thread (the loader prepares a batch,
// the training thread feeds it) never shares it: no reference outlives the move, and TF_Tensor
// objects are not tied to the thread that made them.
unsafe impl Send for FeedTensor {}

impl FeedTensor {
    /// Adds this tensor as the feed of `operation:index`.
    pub(crate) fn feed<'l>(&'l self, args: &mut SessionRunArgs<'l>, operation: &Operation, index: i32) {
        match self {
            FeedTensor::Float16(t) => args.add_feed(operation, index, t),
            FeedTensor::Float32(t) => args.add_feed(operation, index, t),
            FeedTensor::Float64(t) => args.add_feed(operation, index, t),
            FeedTensor::Int8(t) => args.add_feed(operation, index, t),
            FeedTensor::Int16(t) => args.add_feed(operation, index, t),
            FeedTensor::Int32(t) => args.add_feed(operation, index, t),
            FeedTensor::Int64(t) => args.add_feed(operation, index, t),
            FeedTensor::UInt8(t) => args.add_feed(operation, index, t),
            FeedTensor::UInt16(t) => args.add_feed(operation, index, t),
            FeedTensor::UInt32(t) => args.add_feed(operation, index, t),
            FeedTensor::UInt64(t) => args.add_feed(operation, index, t),
            FeedTensor::Bool(t) => args.add_feed(operation, index, t),
            FeedTensor::String(t) => args.add_feed(operation, index, t),
            FeedTensor::Bytes(t) => args.add_feed(operation, index, t),
        }
    }
}

/// Calls `$body` with `$t` bound to the tensor inside a number or bool [`FeedTensor`];
/// `$otherwise` for strings and bytes.
macro_rules! with_number_tensor {
    ($value:expr, $t:ident => $body:expr, _ => $otherwise:expr) => {
        match $value {
            FeedTensor::Float16($t) => $body,
            FeedTensor::Float32($t) => $body,
            FeedTensor::Float64($t) => $body,
            FeedTensor::Int8($t) => $body,
            FeedTensor::Int16($t) => $body,
            FeedTensor::Int32($t) => $body,
            FeedTensor::Int64($t) => $body,
            FeedTensor::UInt8($t) => $body,
            FeedTensor::UInt16($t) => $body,
            FeedTensor::UInt32($t) => $body,
            FeedTensor::UInt64($t) => $body,
            FeedTensor::Bool($t) => $body,
            FeedTensor::String(_) | FeedTensor::Bytes(_) => $otherwise,
        }
    };
}

impl FeedTensor {
    /// Whether [`FeedTensor::fetch_numbers`] takes tensors of `dtype`: numbers and bools.
    pub(crate) fn holds_numbers(dtype: DType) -> bool {
        use DType::*;
        matches!(
            dtype,
            Float16 | Float32 | Float64 | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Bool
        )
    }

    /// Takes a fetched tensor of numbers or bools of type `dtype` out of the run arguments, left
    /// in the buffer TensorFlow handed over (a variable's value is shared, not copied, until the
    /// variable is next written). `None` for a type [`FeedTensor::holds_numbers`] refuses.
    pub(crate) fn fetch_numbers(
        args: &mut SessionRunArgs<'_>,
        token: FetchToken,
        dtype: DType,
    ) -> Option<tensorflow::Result<FeedTensor>> {
        let fetched = match dtype {
            DType::Float16 => args.fetch(token).map(FeedTensor::Float16),
            DType::Float32 => args.fetch(token).map(FeedTensor::Float32),
            DType::Float64 => args.fetch(token).map(FeedTensor::Float64),
            DType::Int8 => args.fetch(token).map(FeedTensor::Int8),
            DType::Int16 => args.fetch(token).map(FeedTensor::Int16),
            DType::Int32 => args.fetch(token).map(FeedTensor::Int32),
            DType::Int64 => args.fetch(token).map(FeedTensor::Int64),
            DType::UInt8 => args.fetch(token).map(FeedTensor::UInt8),
            DType::UInt16 => args.fetch(token).map(FeedTensor::UInt16),
            DType::UInt32 => args.fetch(token).map(FeedTensor::UInt32),
            DType::UInt64 => args.fetch(token).map(FeedTensor::UInt64),
            DType::Bool => args.fetch(token).map(FeedTensor::Bool),
            _ => return None,
        };
        Some(fetched)
    }

    /// The tensor's dimensions.
    pub(crate) fn dims(&self) -> &[u64] {
        match self {
            FeedTensor::String(t) => t.dims(),
            FeedTensor::Bytes(t) => t.dims(),
            numbers => with_number_tensor!(numbers, t => t.dims(), _ => unreachable!("strings matched above")),
        }
    }

    /// The elements' bytes, in the little-endian layout a checkpoint bundle stores; `None` for
    /// strings, whose elements are not laid out in place.
    pub(crate) fn number_bytes(&self) -> Option<&[u8]> {
        with_number_tensor!(self, t => Some(as_bytes(t)), _ => None)
    }
}

/// The bytes of a slice of numbers (or bools, one byte each, 0 or 1), as they lie in memory:
/// little-endian, the order a checkpoint bundle stores, on the little-endian hosts TensorFlow's
/// CPU wheels are built for.
fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    const { assert!(cfg!(target_endian = "little"), "checkpoint bundles are little-endian") };
    // SAFETY: `T` is a plain number type or bool (the variants `with_number_tensor` binds): no
    // padding, every byte initialized; the slice borrows `values`, so it lives no longer than they do.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// One element of a TensorFlow string tensor as raw bytes. The crate's `Tensor<String>` needs
/// UTF-8 (fetching anything else panics), but TF_STRING elements are bytes; this type gives the
/// crate's tensors the same TF_TString layout without that constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TfBytes(pub(crate) Vec<u8>);

impl std::fmt::Display for TfBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.escape_ascii().to_string())
    }
}

// The crate's docs ask clients not to implement TensorType; it is the only way to reach
// TF_STRING tensors of bytes through its sessions. This copies the crate's own `String`
// implementation (same layout, same deallocation), with bytes in place of `str`, pinned by
// --locked to the crate version it was read from (tensorflow 0.21.0).
impl tensorflow::TensorType for TfBytes {
    type InnerType = tensorflow::TensorDataNoCRepr<TfBytes>;

    fn data_type() -> tensorflow::DataType {
        tensorflow::DataType::String
    }

    fn zero() -> Self {
        TfBytes(Vec::new())
    }

    fn one() -> Self {
        TfBytes(vec![1])
    }

    fn is_repr_c() -> bool {
        false
    }

    fn unpack(data: &[u8], count: usize) -> tensorflow::Result<Vec<Self>> {
        Ok(tstring::read(data, count).into_iter().map(TfBytes).collect())
    }

    fn pack(data: &[Self], dims: &[u64]) -> tensorflow::Result<*mut tensorflow_sys::TF_Tensor> {
        let elements: Vec<&[u8]> = data.iter().map(|b| b.0.as_slice()).collect();
        tstring::new_tensor(&elements, dims)
            .ok_or_else(|| tensorflow::Status::new_set_lossy(tensorflow::Code::Internal, "TF_NewTensor returned null"))
    }
}

/// The C side of [`TfBytes`]: TF_TString arrays built and read through tensorflow-sys.
mod tstring {
    use std::alloc::{self, Layout};
    use std::ffi::{c_char, c_int, c_void};

    use tensorflow_sys as tf;

    const SIZE: usize = std::mem::size_of::<tf::TF_TString>();
    const ALIGN: usize = std::mem::align_of::<tf::TF_TString>();

    /// The bytes of the `count` TF_TStrings at the start of `data` (a TF_STRING tensor's buffer).
    pub(super) fn read(data: &[u8], count: usize) -> Vec<Vec<u8>> {
        assert!(data.len() >= count * SIZE, "a TF_STRING buffer holds one TF_TString per element");
        let strings = data.as_ptr() as *const tf::TF_TString;
        (0..count)
            .map(|i| {
                // SAFETY: the buffer holds `count` initialised TF_TStrings (checked length; TF
                // aligns tensor buffers), and each points at `TF_StringGetSize` readable bytes
                // that live as long as the tensor, which outlives this call.
                unsafe {
                    let string = strings.add(i);
                    let start = tf::TF_StringGetDataPointer(string) as *const u8;
                    let len = tf::TF_StringGetSize(string);
                    if len == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(start, len).to_vec()
                    }
                }
            })
            .collect()
    }

    /// A new TF_STRING tensor of shape `dims` holding copies of `elements`, freed (strings and
    /// buffer) by TensorFlow through [`deallocate`]; `None` if TensorFlow refuses it.
    pub(super) fn new_tensor(elements: &[&[u8]], dims: &[u64]) -> Option<*mut tf::TF_Tensor> {
        let len = elements.len() * SIZE;
        let buffer = if len == 0 {
            // No allocation of zero bytes: a dangling, aligned pointer that deallocate skips.
            ALIGN as *mut u8
        } else {
            let layout = Layout::from_size_align(len, ALIGN).ok()?;
            // SAFETY: the layout has a non-zero size.
            let buffer = unsafe { alloc::alloc(layout) };
            if buffer.is_null() {
                alloc::handle_alloc_error(layout);
            }
            let strings = buffer as *mut tf::TF_TString;
            for (i, element) in elements.iter().enumerate() {
                // SAFETY: slot i is inside the fresh buffer, initialised before it is copied into;
                // TF_StringCopy copies `element.len()` readable bytes.
                unsafe {
                    tf::TF_StringInit(strings.add(i));
                    tf::TF_StringCopy(strings.add(i), element.as_ptr() as *const c_char, element.len());
                }
            }
            buffer
        };
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        // SAFETY: `buffer` holds `len` bytes of initialised TF_TStrings for a tensor of `dims`;
        // ownership passes to TensorFlow, which calls `deallocate` with the same pointer and length.
        let tensor = unsafe {
            tf::TF_NewTensor(
                tf::TF_DataType::TF_STRING,
                dims.as_ptr(),
                dims.len() as c_int,
                buffer as *mut c_void,
                len,
                Some(deallocate),
                std::ptr::null_mut(),
            )
        };
        (!tensor.is_null()).then_some(tensor)
    }

    /// Frees a buffer made by [`new_tensor`]: each string, then the buffer.
    unsafe extern "C" fn deallocate(data: *mut c_void, len: usize, _arg: *mut c_void) {
        if len == 0 {
            return;
        }
        let strings = data as *mut tf::TF_TString;
        for i in 0..len / SIZE {
            // SAFETY: new_tensor initialised every slot of this buffer.
            unsafe { tf::TF_StringDealloc(strings.add(i)) };
        }
        // SAFETY: allocated in new_tensor with this size and alignment (non-zero, so it is valid).
        unsafe { alloc::dealloc(data as *mut u8, Layout::from_size_align_unchecked(len, ALIGN)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_tensorflow_tensor() {
        let array = ArrayD::from_shape_vec(IxDyn(&[2, 3]), (0..6).map(|v| v as f32).collect()).unwrap();
        let data = TensorData::from(array.clone());
        let FeedTensor::Float32(tensor) = data.to_tf().unwrap() else { panic!("wrong variant") };
        assert_eq!(tensor.dims(), &[2, 3]);
        assert_eq!(&tensor[..], array.as_slice().unwrap());
    }

    #[test]
    fn a_fed_tensor_is_refilled_only_with_its_dtype_and_shape() {
        let first = TensorData::from(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1f32, 2., 3., 4.]).unwrap());
        let mut tensor = first.to_tf().unwrap();
        let second = TensorData::from(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![5f32, 6., 7., 8.]).unwrap());
        assert!(second.copy_into(&mut tensor));
        assert!(matches!(&tensor, FeedTensor::Float32(t) if t[..] == [5., 6., 7., 8.]));
        let wider = TensorData::from(ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![0f32; 4]).unwrap());
        let ints = TensorData::from(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0i32; 4]).unwrap());
        assert!(!wider.copy_into(&mut tensor) && !ints.copy_into(&mut tensor));
        assert!(matches!(&tensor, FeedTensor::Float32(t) if t[..] == [5., 6., 7., 8.] && t.dims() == [2, 2]));
    }

    #[test]
    fn bytes_that_are_not_utf8_pack_into_a_string_tensor_and_back() {
        let values = vec![vec![0xff, 0, 0x80], vec![], vec![b'x'; 100]];
        let data = TensorData::Bytes(ArrayD::from_shape_vec(IxDyn(&[3, 1]), values.clone()).unwrap());
        let FeedTensor::Bytes(tensor) = data.to_tf().unwrap() else { panic!("wrong variant") };
        assert_eq!(tensor.dims(), &[3, 1]);
        let inner = <TfBytes as tensorflow::TensorType>::pack(&tensor, tensor.dims()).unwrap();
        // SAFETY: a tensor just made by pack, read and deleted once here.
        let read = unsafe {
            let bytes = std::slice::from_raw_parts(
                tensorflow_sys::TF_TensorData(inner) as *const u8,
                tensorflow_sys::TF_TensorByteSize(inner),
            );
            let read = <TfBytes as tensorflow::TensorType>::unpack(bytes, 3).unwrap();
            tensorflow_sys::TF_DeleteTensor(inner);
            read
        };
        assert_eq!(read.into_iter().map(|b| b.0).collect::<Vec<_>>(), values);
        let empty = TensorData::Bytes(ArrayD::from_shape_vec(IxDyn(&[0]), vec![]).unwrap());
        let FeedTensor::Bytes(tensor) = empty.to_tf().unwrap() else { panic!("wrong variant") };
        let inner = <TfBytes as tensorflow::TensorType>::pack(&tensor, tensor.dims()).unwrap();
        // SAFETY: as above.
        unsafe { tensorflow_sys::TF_DeleteTensor(inner) };
    }

    #[test]
    fn transposed_arrays_are_fed_in_logical_order() {
        let array = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1i64, 2, 3, 4]).unwrap();
        let transposed = TensorData::from(array.t().to_owned());
        let FeedTensor::Int64(tensor) = transposed.to_tf().unwrap() else { panic!("wrong variant") };
        assert_eq!(&tensor[..], &[1, 3, 2, 4]);
    }
}
