//! Writing a loaded model's current variables out as a complete SavedModel: the variables through
//! the model's own saver (the `SaverDef` in `saved_model.pb`, so every variable the graph reads is
//! the one written), or as a bundle linked to the run's base (only the values that changed,
//! `formats::linked_bundle`), beside the graph and assets of the model it came from.

use std::path::Path;

use crate::error::Result;
use crate::formats::linked_bundle::BaseBundle;
use crate::output_dir::copy_model_files;
use crate::session::loaded_model::LoadedModel;
use crate::session::saver::{save_variables, save_variables_linked};

/// Fills the (new) directory `dir` with `model`'s variables and `source`'s graph and assets.
pub fn write_model_files(model: &LoadedModel, source: &Path, dir: &Path) -> Result<()> {
    let variables = dir.join("variables");
    std::fs::create_dir_all(&variables).map_err(crate::output_dir::io_error(&variables))?;
    save_variables(model, &variables.join("variables"))?;
    copy_model_files(source, dir)
}

/// Like [`write_model_files`], with the variables linked to `base` where the session can say
/// what its saver writes, and written through the saver otherwise.
pub fn write_checkpoint_files(model: &LoadedModel, base: &mut BaseBundle, source: &Path, dir: &Path) -> Result<()> {
    let variables = dir.join("variables");
    match save_variables_linked(model, base, &variables)? {
        Some(done) => log::debug!(
            "checkpoint {}: {} values unchanged (linked), {} written ({} bytes)",
            dir.display(),
            done.linked,
            done.written,
            done.written_bytes
        ),
        None => return write_model_files(model, source, dir),
    }
    copy_model_files(source, dir)
}
