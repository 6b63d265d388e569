//! Saving a loaded model's variables through the model's own saver (the `SaverDef` in
//! `saved_model.pb`, or the graph-level saver a cut load puts in its place, which writes the same
//! keys from the same handles), so that every variable the graph reads is the one written.

use std::path::Path;

use tensorflow::{SessionRunArgs, Tensor};

use crate::error::{Error, Result};
use crate::session::loaded_model::LoadedModel;

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
