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
        with_same_type!(self, tensor, FeedTensor, (a, t) => copy(a, t), _ => false)
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
            DType::String => TensorData::String(take(args, token)?),
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

/// A TensorFlow tensor built from a `TensorData`, kept alive while a run borrows it.
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
}

// SAFETY: a FeedTensor exclusively owns its tensor. Numeric tensors are already Send; the
// String variant is not only because the crate keeps the C tensor it builds on first feed in a
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
        }
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
    fn transposed_arrays_are_fed_in_logical_order() {
        let array = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1i64, 2, 3, 4]).unwrap();
        let transposed = TensorData::from(array.t().to_owned());
        let FeedTensor::Int64(tensor) = transposed.to_tf().unwrap() else { panic!("wrong variant") };
        assert_eq!(&tensor[..], &[1, 3, 2, 4]);
    }
}
