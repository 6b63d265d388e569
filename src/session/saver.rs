//! Saving a loaded model's variables through the model's own saver (the `SaverDef` in
//! `saved_model.pb`, or the graph-level saver a cut load puts in its place, which writes the same
//! keys from the same handles), so that every variable the graph reads is the one written.

use std::path::Path;

use tensorflow::{SessionRunArgs, Tensor};

use crate::error::{Error, Result};
use crate::formats::checkpoint_writer::string_scalar_bytes;
use crate::formats::linked_bundle::{BaseBundle, LinkedWrite, SavedValue};
use crate::model::graph_saver::{SaverWrites, OBJECT_GRAPH_KEY};
use crate::session::feed::FeedTensor;
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
        .map(|(read, value)| SavedValue {
            key: &read.key,
            dtype: read.dtype,
            dims: value.dims(),
            bytes: value.number_bytes().expect("fetch_values fetches numbers only"),
        })
        .collect();
    saved.push(SavedValue { key: OBJECT_GRAPH_KEY, dtype: DType::String, dims: &[], bytes: &object_graph });
    base.write_linked(&saved, variables_dir).map(Some)
}

/// The values of every read the saver writes, fetched in one run; `None` when one is not a
/// tensor of numbers or bools ([`FeedTensor::holds_numbers`]).
fn fetch_values(model: &LoadedModel, writes: &SaverWrites) -> Result<Option<Vec<FeedTensor>>> {
    if writes.reads.iter().any(|read| !FeedTensor::holds_numbers(read.dtype)) {
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
    let values = tokens.into_iter().map(|(token, dtype)| {
        FeedTensor::fetch_numbers(&mut args, token, dtype).expect("holds_numbers checked every dtype")
    });
    values.collect::<std::result::Result<Vec<_>, _>>().map(Some).map_err(failed)
}
