//! Saving a loaded model's variables through the model's own saver (the `SaverDef` in
//! `saved_model.pb`, or the graph-level saver a cut load puts in its place, which writes the same
//! keys from the same handles), so that every variable the graph reads is the one written.

use std::path::Path;

use tensorflow::{FetchToken, SessionRunArgs, Tensor};

use crate::error::{Error, Result};
use crate::formats::checkpoint_writer::string_scalar_bytes;
use crate::formats::linked_bundle::{BaseBundle, LinkedWrite, SavedValue};
use crate::model::graph_saver::{SaverWrites, OBJECT_GRAPH_KEY};
use crate::session::loaded_model::LoadedModel;
use crate::tensor::dtype::DType;

/// Runs the model's save op with checkpoint prefix `prefix` (`.../variables/variables`).
pub fn save_variables(model: &LoadedModel, prefix: &Path) -> Result<()> {
    let saver = model.saver().ok_or_else(|| Error::MalformedSavedModel {
        path: model.dir().join("saved_model.pb"),
        problem: "it has no SaverDef, so its variables cannot be saved".to_string(),
    })?;
    let (filename_op, filename_index) = operation(model, &saver.filename_tensor)?;
    let (save_op, save_index) = operation(model, &saver.save_tensor)?;
    let prefix_tensor = Tensor::<String>::from(prefix.to_string_lossy().into_owned());
    let mut args = SessionRunArgs::new();
    args.add_feed(&filename_op, filename_index, &prefix_tensor);
    args.request_fetch(&save_op, save_index);
    model
        .session()
        .run(&mut args)
        .map_err(|status| Error::from_tensorflow(format!("saving variables to {}", prefix.display()), &status))
}

fn operation(model: &LoadedModel, tensor_name: &str) -> Result<(tensorflow::Operation, i32)> {
    let (name, index) = tensor_name.rsplit_once(':').unwrap_or((tensor_name, "0"));
    let op = model.graph().operation_by_name_required(name).map_err(|status| Error::MalformedSavedModel {
        path: model.dir().join("saved_model.pb"),
        problem: format!("its SaverDef names `{tensor_name}`, which the graph lacks ({status})"),
    })?;
    Ok((op, index.parse().unwrap_or(0)))
}

/// Saves `model`'s variables into the new folder `variables_dir` as a bundle linked to `base`
/// (see `formats::linked_bundle`): every value the model's graph-level saver writes is fetched
/// in one run, in TensorFlow's own buffers, and only those that differ from the base's are
/// written. `None`, having written nothing, when the session has no graph-level saver or saves a
/// variable of a type this cannot fetch (the caller then saves through the saver).
pub fn save_variables_linked(
    model: &LoadedModel,
    base: &mut BaseBundle,
    variables_dir: &Path,
) -> Result<Option<LinkedWrite>> {
    let Some(writes) = model.saver_writes() else {
        return Ok(None);
    };
    let Some(values) = fetch_values(model, writes)? else {
        return Ok(None);
    };
    let object_graph = string_scalar_bytes(&writes.object_graph);
    let mut saved: Vec<SavedValue<'_>> = writes
        .reads
        .iter()
        .zip(&values)
        .map(|(read, value)| SavedValue { key: &read.key, dtype: read.dtype, dims: value.dims(), bytes: value.bytes() })
        .collect();
    saved.push(SavedValue { key: OBJECT_GRAPH_KEY, dtype: DType::String, dims: &[], bytes: &object_graph });
    base.write_linked(&saved, variables_dir).map(Some)
}

/// The values of every read the saver writes, fetched in one run; `None` when one has a type
/// [`FetchedValue`] does not hold.
fn fetch_values(model: &LoadedModel, writes: &SaverWrites) -> Result<Option<Vec<FetchedValue>>> {
    if writes.reads.iter().any(|read| !FetchedValue::holds(read.dtype)) {
        return Ok(None);
    }
    let mut args = SessionRunArgs::new();
    let mut tokens = Vec::with_capacity(writes.reads.len());
    for read in &writes.reads {
        let (op, index) = operation(model, &read.tensor)?;
        tokens.push((args.request_fetch(&op, index), read.dtype));
    }
    let failed =
        |status: tensorflow::Status| Error::from_tensorflow("reading the variables to save".to_string(), &status);
    model.session().run(&mut args).map_err(failed)?;
    let values = tokens.into_iter().map(|(token, dtype)| FetchedValue::take(&mut args, token, dtype));
    values.collect::<std::result::Result<Vec<_>, _>>().map(Some).map_err(failed)
}

/// A fetched tensor of numbers, left in the buffer TensorFlow handed over (a variable's value
/// is shared, not copied, until the variable is next written).
enum FetchedValue {
    Float16(Tensor<half::f16>),
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
}

/// Calls `$body` with `$t` bound to the tensor inside any [`FetchedValue`].
macro_rules! with_tensor {
    ($value:expr, $t:ident => $body:expr) => {
        match $value {
            FetchedValue::Float16($t) => $body,
            FetchedValue::Float32($t) => $body,
            FetchedValue::Float64($t) => $body,
            FetchedValue::Int8($t) => $body,
            FetchedValue::Int16($t) => $body,
            FetchedValue::Int32($t) => $body,
            FetchedValue::Int64($t) => $body,
            FetchedValue::UInt8($t) => $body,
            FetchedValue::UInt16($t) => $body,
            FetchedValue::UInt32($t) => $body,
            FetchedValue::UInt64($t) => $body,
            FetchedValue::Bool($t) => $body,
        }
    };
}

impl FetchedValue {
    fn holds(dtype: DType) -> bool {
        use DType::*;
        matches!(
            dtype,
            Float16 | Float32 | Float64 | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Bool
        )
    }

    fn take(args: &mut SessionRunArgs<'_>, token: FetchToken, dtype: DType) -> tensorflow::Result<FetchedValue> {
        Ok(match dtype {
            DType::Float16 => FetchedValue::Float16(args.fetch(token)?),
            DType::Float32 => FetchedValue::Float32(args.fetch(token)?),
            DType::Float64 => FetchedValue::Float64(args.fetch(token)?),
            DType::Int8 => FetchedValue::Int8(args.fetch(token)?),
            DType::Int16 => FetchedValue::Int16(args.fetch(token)?),
            DType::Int32 => FetchedValue::Int32(args.fetch(token)?),
            DType::Int64 => FetchedValue::Int64(args.fetch(token)?),
            DType::UInt8 => FetchedValue::UInt8(args.fetch(token)?),
            DType::UInt16 => FetchedValue::UInt16(args.fetch(token)?),
            DType::UInt32 => FetchedValue::UInt32(args.fetch(token)?),
            DType::UInt64 => FetchedValue::UInt64(args.fetch(token)?),
            DType::Bool => FetchedValue::Bool(args.fetch(token)?),
            other => unreachable!("FetchedValue::holds refused {other}"),
        })
    }

    fn dims(&self) -> &[u64] {
        with_tensor!(self, t => t.dims())
    }

    /// The elements' bytes, in the little-endian layout a bundle stores.
    fn bytes(&self) -> &[u8] {
        with_tensor!(self, t => as_bytes(t))
    }
}

/// The bytes of a slice of numbers (or bools, one byte each, 0 or 1), as they lie in memory:
/// little-endian, the order a checkpoint bundle stores, on the little-endian hosts TensorFlow's
/// CPU wheels are built for.
fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    const { assert!(cfg!(target_endian = "little"), "checkpoint bundles are little-endian") };
    // SAFETY: `T` is a plain number type or bool (see `FetchedValue`): no padding, every byte
    // initialized; the slice borrows `values`, so it lives no longer than they do.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}
