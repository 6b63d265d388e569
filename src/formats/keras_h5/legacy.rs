//! The legacy layout of Keras 2 / tf.keras (and Keras 3's legacy `.h5` writer): `layer_names`
//! on the weights group, `weight_names` on each layer group, datasets at `<layer>/<weight>`.

use std::path::Path;

use hdf5_reader::group::Group;
use hdf5_reader::Hdf5File;

use super::{describe_dataset, optional_group, string_attribute, H5Layer, H5Weight, Layout};
use crate::error::{Error, Result};

/// The layout and layers of a legacy file, or `None` if it has no `layer_names` attribute.
pub(super) fn read(file: &Hdf5File, root: &Group, path: &Path) -> Result<Option<(Layout, Vec<H5Layer>)>> {
    let (weights_group, base, full_model) = match optional_group(path, root, "", "model_weights")? {
        Some(group) => (group, "/model_weights".to_string(), true),
        None => (root.clone(), String::new(), false),
    };
    let Some(layer_names) = chunked_strings(path, &weights_group, "layer_names")? else {
        return Ok(None);
    };
    let first = |name: &str| -> Result<Option<String>> {
        let from_weights = string_attribute(path, &weights_group, name)?;
        let from_root = || string_attribute(path, root, name);
        let values = if from_weights.is_some() { from_weights } else { from_root()? };
        Ok(values.and_then(|v| v.into_iter().next()))
    };
    let layout = Layout::Legacy { keras_version: first("keras_version")?, backend: first("backend")?, full_model };
    let layers = layer_names
        .into_iter()
        .map(|name| layer(file, &weights_group, &base, name, path))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((layout, layers)))
}

/// One layer: its `weight_names` and the dataset behind each.
fn layer(file: &Hdf5File, weights_group: &Group, base: &str, name: String, path: &Path) -> Result<H5Layer> {
    let layer_path = format!("{base}/{name}");
    let group = weights_group.group(&name).map_err(|e| Error::NotKerasWeights {
        path: path.to_path_buf(),
        problem: format!("`layer_names` lists `{name}`, but there is no group {layer_path} ({e})"),
    })?;
    let weight_names = chunked_strings(path, &group, "weight_names")?.unwrap_or_default();
    let weights = weight_names
        .into_iter()
        .map(|weight_name| {
            let dataset_path = format!("{layer_path}/{weight_name}");
            let dataset = file.dataset(&dataset_path).map_err(|e| Error::Hdf5Read {
                path: path.to_path_buf(),
                object: dataset_path.clone(),
                problem: format!("`weight_names` of {layer_path} lists it, but it cannot be opened ({e})"),
            })?;
            let (dtype, shape) = describe_dataset(path, &dataset_path, &dataset)?;
            Ok(H5Weight { name: weight_name, dataset: dataset_path, dtype, shape })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(H5Layer { name, weights })
}

/// A string-list attribute that Keras may have split into `name0`, `name1`, ... because HDF5
/// limits an object header to 64 KiB (Keras's `save_attributes_to_hdf5_group`).
fn chunked_strings(path: &Path, group: &Group, name: &str) -> Result<Option<Vec<String>>> {
    if let Some(values) = string_attribute(path, group, name)? {
        return Ok(Some(values));
    }
    let mut values: Option<Vec<String>> = None;
    for chunk in 0.. {
        match string_attribute(path, group, &format!("{name}{chunk}"))? {
            Some(part) => values.get_or_insert_with(Vec::new).extend(part),
            None => break,
        }
    }
    Ok(values)
}
