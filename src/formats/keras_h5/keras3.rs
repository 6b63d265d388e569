//! The Keras 3 layout: `layers/<key>/vars/<i>`, nested models under `layers/<key>/layers/`.

use std::path::Path;

use hdf5_reader::group::Group;
use hdf5_reader::Hdf5File;

use super::{describe_dataset, optional_group, string_attribute, H5Layer, H5Weight};
use crate::error::{Error, Result};

/// The layers of a Keras 3 weights file, or `None` if the file has no `layers` group.
pub(super) fn read(file: &Hdf5File, root: &Group, path: &Path) -> Result<Option<Vec<H5Layer>>> {
    let Some(layers) = optional_group(path, root, "", "layers")? else {
        return Ok(None);
    };
    let mut found = Vec::new();
    collect(file, &layers, "/layers", path, &mut found)?;
    Ok(Some(found))
}

/// Adds every layer under `group` (a `layers` group) to `found`, descending into nested models.
fn collect(file: &Hdf5File, group: &Group, group_path: &str, path: &Path, found: &mut Vec<H5Layer>) -> Result<()> {
    let read_error = |object: &str, e: hdf5_reader::error::Error| Error::Hdf5Read {
        path: path.to_path_buf(),
        object: object.to_string(),
        problem: e.to_string(),
    };
    for layer_group in group.groups().map_err(|e| read_error(group_path, e))? {
        let key = layer_group.name().to_string();
        let layer_path = format!("{group_path}/{key}");
        if let Some(vars) = optional_group(path, &layer_group, &layer_path, "vars")? {
            let name = string_attribute(path, &vars, "name")?.and_then(|names| names.into_iter().next());
            let weights = weights(file, &vars, &format!("{layer_path}/vars"), path)?;
            found.push(H5Layer { name: name.unwrap_or(key), weights });
        }
        if let Some(nested) = optional_group(path, &layer_group, &layer_path, "layers")? {
            collect(file, &nested, &format!("{layer_path}/layers"), path, found)?;
        }
    }
    Ok(())
}

/// The datasets `0`, `1`, ... of a `vars` group, in number order.
fn weights(file: &Hdf5File, vars: &Group, vars_path: &str, path: &Path) -> Result<Vec<H5Weight>> {
    let (_, names) = vars.member_names().map_err(|e| Error::Hdf5Read {
        path: path.to_path_buf(),
        object: vars_path.to_string(),
        problem: e.to_string(),
    })?;
    let mut numbered: Vec<(usize, String)> =
        names.into_iter().filter_map(|name| name.parse().ok().map(|i| (i, name))).collect();
    numbered.sort();
    numbered
        .into_iter()
        .map(|(_, name)| {
            let dataset_path = format!("{vars_path}/{name}");
            let dataset = file.dataset(&dataset_path).map_err(|e| Error::Hdf5Read {
                path: path.to_path_buf(),
                object: dataset_path.clone(),
                problem: e.to_string(),
            })?;
            let (dtype, shape) = describe_dataset(path, &dataset_path, &dataset)?;
            Ok(H5Weight { name, dataset: dataset_path, dtype, shape })
        })
        .collect()
}
