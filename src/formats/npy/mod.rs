//! NumPy `.npy` and `.npz` files in and out of `TensorData`, through the `npyz` crate: the way
//! users hand arrays to `tfload run` and get outputs back. Object arrays of byte strings, which
//! npyz cannot read, go through the `pickle` module.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use npyz::{Deserialize, NpyFile, Order, TypeChar, WriterBuilder};

use crate::error::{Error, Result};
use crate::tensor::TensorData;
use member::CheckedMember;

pub mod header;
mod member;
mod pickle;

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
        ArraySource { path: PathBuf::from(text), name: None }
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
    Error::Array { path: path.to_path_buf(), problem: problem.into() }
}

/// Reads a `.npy` file. Its header is checked (length, nesting, declared size against the
/// file's and against [`header::array_byte_limit`]) before any data is read.
pub fn read_npy(path: &Path) -> Result<TensorData> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    refuse_empty(path, len, ".npy", "np.save")?;
    let mut reader = BufReader::new(file);
    let header = header::read_header(&mut reader, Some(len)).map_err(|p| npy_error(path, p))?;
    if header.is_object {
        return read_object_array(reader, len - header.preamble_len, &header.shape, &|p| npy_error(path, p));
    }
    header::check_array_bytes(header.data_len, "its header declares").map_err(|p| npy_error(path, p))?;
    from_npy(NpyFile::with_header(header.npy, reader), &|p| npy_error(path, p))
}

/// Refuses a zero-byte file by what it is, rather than by what its missing header lacks.
fn refuse_empty(path: &Path, len: u64, kind: &str, writer: &str) -> Result<()> {
    if len > 0 {
        return Ok(());
    }
    Err(npy_error(path, format!("empty file (0 bytes), not a {kind} file; write it again with numpy's {writer}")))
}

/// The names of the arrays in a `.npz` file, sorted.
pub fn npz_names(path: &Path) -> Result<Vec<String>> {
    Ok(NpzFile::open(path)?.names().to_vec())
}

/// Reads one array of a `.npz` file: the named one, or the only one when `name` is `None`.
pub fn read_npz(path: &Path, name: Option<&str>) -> Result<TensorData> {
    let mut npz = NpzFile::open(path)?;
    let name = match name {
        Some(name) => name.to_string(),
        None if npz.names().len() == 1 => npz.names()[0].clone(),
        None => {
            return Err(npy_error(
                path,
                format!("holds several arrays ({}); name one as {}[NAME]", npz.names().join(", "), path.display()),
            ))
        }
    };
    npz.read(&name)
}

/// An open `.npz` archive whose members are read with their CRC-32 and sizes checked.
pub struct NpzFile {
    path: PathBuf,
    archive: npyz::npz::NpzArchive<BufReader<File>>,
    names: Vec<String>,
}

/// What a member's header declares, read without inflating its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayHeader {
    /// The shape.
    pub shape: Vec<u64>,
    /// Bytes of data.
    pub data_len: u64,
}

impl NpzFile {
    /// Opens the archive and lists its arrays.
    pub fn open(path: &Path) -> Result<NpzFile> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        refuse_empty(path, file.metadata().map_err(io)?.len(), ".npz", "np.savez")?;
        let archive = npyz::npz::NpzArchive::new(BufReader::new(file))
            .map_err(|e| npy_error(path, format!("not a valid .npz file ({e})")))?;
        let mut names: Vec<String> = archive.array_names().map(str::to_string).collect();
        names.sort();
        Ok(NpzFile { path: path.to_path_buf(), archive, names })
    }

    /// The names of its arrays, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The header of array `name`: only the first bytes of the member are inflated.
    pub fn header(&mut self, name: &str) -> Result<ArrayHeader> {
        let (mut member, fail) = self.member(name)?;
        let size = member.declared_size();
        let header = header::read_header(&mut member, Some(size)).map_err(&fail)?;
        Ok(ArrayHeader { shape: header.shape, data_len: header.data_len })
    }

    /// Reads array `name`. Its size is bounded before inflating, and its CRC-32 and stored size
    /// are checked before the data is returned.
    pub fn read(&mut self, name: &str) -> Result<TensorData> {
        let (mut member, fail) = self.member(name)?;
        let size = member.declared_size();
        let header = header::read_header(&mut member, Some(size)).map_err(&fail)?;
        let trailing = size - header.preamble_len - header.data_len;
        if header.is_object {
            let data = read_object_array(&mut member, trailing, &header.shape, &fail)?;
            member.finish().map_err(&fail)?;
            return Ok(data);
        }
        if trailing > 0 {
            return Err(fail(format!(
                "holds {trailing} bytes after the {} bytes of data its header declares (shape {} of dtype {}); np.save writes exactly header and data, so the member is corrupt",
                header.data_len,
                header::shape_text(&header.shape),
                header.descr
            )));
        }
        header::check_array_bytes(header.data_len, "its header declares").map_err(&fail)?;
        let data = from_npy(NpyFile::with_header(header.npy, BufReader::new(&mut member)), &fail)?;
        member.finish().map_err(&fail)?;
        Ok(data)
    }

    /// Member `name` behind a size and CRC check, and how to report its errors.
    fn member(&mut self, name: &str) -> Result<(CheckedMember<impl Read + '_>, impl Fn(String) -> Error)> {
        let (path, member_name) = (self.path.clone(), npyz::npz::file_name_from_array_name(name));
        if !self.names.iter().any(|n| n == name) {
            return Err(npy_error(&path, format!("has no array `{name}`; it has: {}", self.names.join(", "))));
        }
        let fail = {
            let member_name = member_name.clone();
            move |problem: String| Error::NpzMember { path: path.clone(), member: member_name.clone(), problem }
        };
        let file =
            self.archive.zip_archive().by_name(&member_name).map_err(|e| fail(format!("cannot be read ({e})")))?;
        let (size, crc) = (file.size(), file.crc32());
        Ok((CheckedMember::new(file, size, crc), fail))
    }
}

fn from_npy<R: Read>(npy: NpyFile<R>, fail: &dyn Fn(String) -> Error) -> Result<TensorData> {
    let npyz::DType::Plain(type_str) = npy.dtype() else {
        return Err(fail("holds a structured (record) array; give one plain array per input".to_string()));
    };
    let size = type_str.size_field();
    Ok(match (type_str.type_char(), size) {
        (TypeChar::Float, 2) => TensorData::Float16(array(npy, fail)?),
        (TypeChar::Float, 4) => TensorData::Float32(array(npy, fail)?),
        (TypeChar::Float, 8) => TensorData::Float64(array(npy, fail)?),
        (TypeChar::Int, 1) => TensorData::Int8(array(npy, fail)?),
        (TypeChar::Int, 2) => TensorData::Int16(array(npy, fail)?),
        (TypeChar::Int, 4) => TensorData::Int32(array(npy, fail)?),
        (TypeChar::Int, 8) => TensorData::Int64(array(npy, fail)?),
        (TypeChar::Uint, 1) => TensorData::UInt8(array(npy, fail)?),
        (TypeChar::Uint, 2) => TensorData::UInt16(array(npy, fail)?),
        (TypeChar::Uint, 4) => TensorData::UInt32(array(npy, fail)?),
        (TypeChar::Uint, 8) => TensorData::UInt64(array(npy, fail)?),
        (TypeChar::Bool, _) => TensorData::Bool(array(npy, fail)?),
        (TypeChar::UnicodeStr, _) => TensorData::String(array(npy, fail)?),
        (TypeChar::ByteStr, _) => TensorData::from_byte_strings(array(npy, fail)?),
        _ => {
            return Err(fail(format!(
                "has numpy dtype `{type_str}`, which no TensorFlow input takes; convert it (e.g. .astype('float32'))"
            )))
        }
    })
}

/// An object array of byte strings (`np.save` of `dtype=object`): its `len` bytes of pickle,
/// bounded before they are read, then its elements, which must fill `shape`.
fn read_object_array(
    mut reader: impl Read,
    len: u64,
    shape: &[u64],
    fail: &dyn Fn(String) -> Error,
) -> Result<TensorData> {
    header::check_array_bytes(len, "its pickled object array takes").map_err(fail)?;
    let mut pickled = Vec::with_capacity(len as usize);
    reader.read_to_end(&mut pickled).map_err(|e| fail(format!("data cannot be read ({e})")))?;
    let limit = |bytes: u64| header::check_array_bytes(bytes, "its byte strings take");
    let (pickled_shape, elements) = pickle::object_array(&pickled, &limit).map_err(fail)?;
    let expected: u64 = shape.iter().product();
    if pickled_shape != shape || elements.len() as u64 != expected {
        return Err(fail(format!(
            "holds an object array whose pickle has shape {} and {} elements, but its header declares shape {}; the file is corrupt",
            header::shape_text(&pickled_shape),
            elements.len(),
            header::shape_text(shape)
        )));
    }
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let array = ArrayD::from_shape_vec(IxDyn(&dims), elements)
        .map_err(|e| fail(format!("data does not fill its shape ({e})")))?;
    Ok(TensorData::from_byte_strings(array))
}

fn array<T: Deserialize, R: Read>(npy: NpyFile<R>, fail: &dyn Fn(String) -> Error) -> Result<ArrayD<T>> {
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = npy.order() == Order::Fortran;
    let values = npy.into_vec::<T>().map_err(|e| fail(format!("data cannot be read ({e})")))?;
    let dims = IxDyn(&shape);
    let array = if fortran { ArrayD::from_shape_vec(dims.f(), values) } else { ArrayD::from_shape_vec(dims, values) };
    array.map_err(|e| fail(format!("data does not fill its shape ({e})")))
}

/// Writes a tensor as a `.npy` file: text as numpy unicode `<U`, byte strings that are not UTF-8
/// as fixed-width bytes `|S` (numpy reads back an element's trailing NUL bytes as gone).
pub fn write_npy(path: &Path, data: &TensorData) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = BufWriter::new(File::create(path).map_err(io)?);
    let shape: Vec<u64> = data.shape().iter().map(|&d| d as u64).collect();
    match data {
        TensorData::Bytes(a) => {
            let width = a.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let dtype = npyz::DType::Plain(format!("|S{width}").parse().expect("valid type string"));
            let mut writer =
                npyz::WriteOptions::<[u8]>::new().dtype(dtype).shape(&shape).writer(file).begin_nd().map_err(io)?;
            for value in a.as_standard_layout().iter() {
                writer.push(value.as_slice()).map_err(io)?;
            }
            writer.finish().map_err(io)
        }
        TensorData::String(a) => {
            let width = a.iter().map(|s| s.chars().count()).max().unwrap_or(1).max(1);
            let dtype = npyz::DType::Plain(format!("<U{width}").parse().expect("valid type string"));
            let mut writer =
                npyz::WriteOptions::<str>::new().dtype(dtype).shape(&shape).writer(file).begin_nd().map_err(io)?;
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
    let mut writer = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).writer(file).begin_nd()?;
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
            TensorData::Bytes(
                ArrayD::from_shape_vec(IxDyn(&[3]), vec![vec![0xff, 0, 0x80], vec![], b"ok".to_vec()]).unwrap(),
            ),
            TensorData::Bytes(ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![b"\x80".to_vec(), b"t".to_vec()]).unwrap()),
        ];
        for (i, data) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.npy"));
            write_npy(&path, &data).unwrap();
            assert_eq!(read_npy(&path).unwrap(), data);
        }
    }
}
