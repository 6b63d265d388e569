//! NumPy `.npy` and `.npz` files in and out of `TensorData`, through the `npyz` crate: the way
//! users hand arrays to `tfload run` and get outputs back.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use npyz::{Deserialize, NpyFile, Order, TypeChar, WriterBuilder};

use crate::error::{Error, Result};
use crate::tensor::TensorData;

/// Where one array comes from: `file.npy`, `file.npz` (its only array) or `file.npz[name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySource {
    /// The file.
    pub path: PathBuf,
    /// The array inside a `.npz`, where named.
    pub name: Option<String>,
}

impl ArraySource {
    /// Parses `file.npy`, `file.npz` or `file.npz[name]`.
    pub fn parse(text: &str) -> ArraySource {
        if let Some(open) = text.rfind('[') {
            if text.ends_with(']') && open > 0 {
                return ArraySource {
                    path: PathBuf::from(&text[..open]),
                    name: Some(text[open + 1..text.len() - 1].to_string()),
                };
            }
        }
        ArraySource {
            path: PathBuf::from(text),
            name: None,
        }
    }

    /// Reads the array.
    pub fn read(&self) -> Result<TensorData> {
        let is_npz = self.path.extension().is_some_and(|ext| ext == "npz");
        if is_npz {
            read_npz(&self.path, self.name.as_deref())
        } else if let Some(name) = &self.name {
            Err(npy_error(&self.path, format!("`[{name}]` picks an array out of a .npz file, and this is not one")))
        } else {
            read_npy(&self.path)
        }
    }
}

fn npy_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::Array {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<TensorData> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let npy = NpyFile::new(BufReader::new(file))
        .map_err(|e| npy_error(path, format!("not a valid .npy file ({e})")))?;
    from_npy(path, npy)
}

/// The names of the arrays in a `.npz` file, sorted.
pub fn npz_names(path: &Path) -> Result<Vec<String>> {
    let npz = open_npz(path)?;
    let mut names: Vec<String> = npz.array_names().map(str::to_string).collect();
    names.sort();
    Ok(names)
}

fn open_npz(path: &Path) -> Result<npyz::npz::NpzArchive<BufReader<File>>> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_path_buf(),
        });
    }
    npyz::npz::NpzArchive::open(path).map_err(|e| npy_error(path, format!("not a valid .npz file ({e})")))
}

/// Reads one array of a `.npz` file: the named one, or the only one when `name` is `None`.
pub fn read_npz(path: &Path, name: Option<&str>) -> Result<TensorData> {
    let names = npz_names(path)?;
    let name = match name {
        Some(name) => name.to_string(),
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(npy_error(
                path,
                format!("holds several arrays ({}); name one as {}[NAME]", names.join(", "), path.display()),
            ))
        }
    };
    let mut npz = open_npz(path)?;
    let npy = npz
        .by_name(&name)
        .map_err(|e| npy_error(path, format!("array `{name}` cannot be read ({e})")))?
        .ok_or_else(|| npy_error(path, format!("has no array `{name}`; it has: {}", names.join(", "))))?;
    from_npy(path, npy)
}

fn from_npy<R: Read>(path: &Path, npy: NpyFile<R>) -> Result<TensorData> {
    let npyz::DType::Plain(type_str) = npy.dtype() else {
        return Err(npy_error(path, "holds a structured (record) array; give one plain array per input"));
    };
    let size = type_str.size_field();
    Ok(match (type_str.type_char(), size) {
        (TypeChar::Float, 2) => TensorData::Float16(array(path, npy)?),
        (TypeChar::Float, 4) => TensorData::Float32(array(path, npy)?),
        (TypeChar::Float, 8) => TensorData::Float64(array(path, npy)?),
        (TypeChar::Int, 1) => TensorData::Int8(array(path, npy)?),
        (TypeChar::Int, 2) => TensorData::Int16(array(path, npy)?),
        (TypeChar::Int, 4) => TensorData::Int32(array(path, npy)?),
        (TypeChar::Int, 8) => TensorData::Int64(array(path, npy)?),
        (TypeChar::Uint, 1) => TensorData::UInt8(array(path, npy)?),
        (TypeChar::Uint, 2) => TensorData::UInt16(array(path, npy)?),
        (TypeChar::Uint, 4) => TensorData::UInt32(array(path, npy)?),
        (TypeChar::Uint, 8) => TensorData::UInt64(array(path, npy)?),
        (TypeChar::Bool, _) => TensorData::Bool(array(path, npy)?),
        (TypeChar::UnicodeStr, _) => TensorData::String(array(path, npy)?),
        (TypeChar::ByteStr, _) => {
            let bytes: ArrayD<Vec<u8>> = array(path, npy)?;
            let mut strings = Vec::with_capacity(bytes.len());
            for value in bytes.iter() {
                strings.push(String::from_utf8(value.clone()).map_err(|_| {
                    npy_error(path, "holds byte strings that are not UTF-8, which tfload cannot feed yet")
                })?);
            }
            TensorData::String(ArrayD::from_shape_vec(bytes.raw_dim(), strings).expect("same length"))
        }
        _ => {
            return Err(npy_error(
                path,
                format!("has numpy dtype `{type_str}`, which no TensorFlow input takes; convert it (e.g. .astype('float32'))"),
            ))
        }
    })
}

fn array<T: Deserialize, R: Read>(path: &Path, npy: NpyFile<R>) -> Result<ArrayD<T>> {
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = npy.order() == Order::Fortran;
    let values = npy
        .into_vec::<T>()
        .map_err(|e| npy_error(path, format!("data cannot be read ({e})")))?;
    let dims = IxDyn(&shape);
    let array = if fortran {
        ArrayD::from_shape_vec(dims.f(), values)
    } else {
        ArrayD::from_shape_vec(dims, values)
    };
    array.map_err(|e| npy_error(path, format!("data does not fill its shape ({e})")))
}

/// Writes a tensor as a `.npy` file (strings as numpy unicode `<U`).
pub fn write_npy(path: &Path, data: &TensorData) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = BufWriter::new(File::create(path).map_err(io)?);
    let shape: Vec<u64> = data.shape().iter().map(|&d| d as u64).collect();
    match data {
        TensorData::String(a) => {
            let width = a.iter().map(|s| s.chars().count()).max().unwrap_or(1).max(1);
            let dtype = npyz::DType::Plain(format!("<U{width}").parse().expect("valid type string"));
            let mut writer = npyz::WriteOptions::<str>::new()
                .dtype(dtype)
                .shape(&shape)
                .writer(file)
                .begin_nd()
                .map_err(io)?;
            for value in a.as_standard_layout().iter() {
                writer.push(value.as_str()).map_err(io)?;
            }
            writer.finish().map_err(io)
        }
        TensorData::Float16(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::Float32(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::Float64(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::Int8(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::Int16(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::Int32(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::Int64(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::UInt8(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::UInt16(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::UInt32(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::UInt64(a) => write_numeric(file, &shape, a).map_err(io),
        TensorData::Bool(a) => write_numeric(file, &shape, a).map_err(io),
    }
}

fn write_numeric<T: npyz::AutoSerialize + Copy>(
    file: BufWriter<File>,
    shape: &[u64],
    array: &ArrayD<T>,
) -> std::io::Result<()> {
    let mut writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()?;
    writer.extend(array.as_standard_layout().iter().copied())?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_npz_member_syntax() {
        assert_eq!(ArraySource::parse("a.npz[x]").name.as_deref(), Some("x"));
        assert_eq!(ArraySource::parse("a.npz[x]").path, PathBuf::from("a.npz"));
        assert_eq!(ArraySource::parse("a.npy").name, None);
    }

    #[test]
    fn npy_round_trip_keeps_dtype_shape_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let cases = vec![
            TensorData::Float32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap()),
            TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![-1, 0, 7]).unwrap()),
            TensorData::Bool(ArrayD::from_shape_vec(IxDyn(&[2]), vec![true, false]).unwrap()),
            TensorData::String(ArrayD::from_shape_vec(IxDyn(&[2]), vec!["ab".to_string(), "été".to_string()]).unwrap()),
            TensorData::UInt8(ArrayD::from_shape_vec(IxDyn(&[]), vec![9]).unwrap()),
        ];
        for (i, data) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.npy"));
            write_npy(&path, &data).unwrap();
            assert_eq!(read_npy(&path).unwrap(), data);
        }
    }
}
