//! Writing a loaded model's current variables out as a complete SavedModel: the variables through
//! the model's own saver (the `SaverDef` in `saved_model.pb`, so every variable the graph reads is
//! the one written), beside the graph and assets of the model it came from.

use std::path::Path;

use crate::error::Result;
use crate::output_dir::copy_model_files;
use crate::session::loaded_model::LoadedModel;
use crate::session::saver::save_variables;

/// Fills the (new) directory `dir` with `model`'s variables and `source`'s graph and assets.
pub fn write_model_files(model: &LoadedModel, source: &Path, dir: &Path) -> Result<()> {
    let variables = dir.join("variables");
    std::fs::create_dir_all(&variables).map_err(crate::output_dir::io_error(&variables))?;
    save_variables(model, &variables.join("variables"))?;
    copy_model_files(source, dir)
}
