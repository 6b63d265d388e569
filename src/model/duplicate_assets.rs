//! Assets listed twice in a MetaGraph. TF 2.21's v1 `Builder` writes each asset of
//! `assets_collection` again for every tag set the graph is saved under, and TensorFlow's C++
//! loader then feeds the asset's path tensor twice and refuses the model ("Endpoint ... fed more
//! than once"), while Python's loaders accept it. [`without_duplicate_assets`] rewrites the bytes
//! of `saved_model.pb` with each asset once, copying every other field byte for byte (tfload's
//! decoder does not know every field, so it cannot re-encode the message itself).

use std::collections::BTreeSet;

use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use prost::Message;

use crate::proto;

/// `SavedModel.meta_graphs`.
const META_GRAPHS: u32 = 2;
/// `MetaGraphDef.collection_def` (a map: entries of key 1, value 2).
const COLLECTION_DEF: u32 = 4;
/// `MetaGraphDef.asset_file_def`.
const ASSET_FILE_DEF: u32 = 6;
/// `CollectionDef.node_list` and `CollectionDef.any_list`; `value` = 1 in both.
const NODE_LIST: u32 = 1;
const ANY_LIST: u32 = 5;

/// One field of a message as it was encoded: its number, and its payload where it is
/// length-delimited; `raw` is the whole field, key included.
struct Field<'a> {
    number: u32,
    payload: Option<&'a [u8]>,
    raw: &'a [u8],
}

/// The fields of an encoded message, or a description of why it does not parse.
fn fields(mut bytes: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let (number, wire_type) = decode_key(&mut bytes).map_err(|e| e.to_string())?;
        let payload = match wire_type {
            WireType::Varint => {
                decode_varint(&mut bytes).map_err(|e| e.to_string())?;
                None
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let size = if wire_type == WireType::SixtyFourBit { 8 } else { 4 };
                if bytes.remaining() < size {
                    return Err("a fixed-size field is cut short".into());
                }
                bytes.advance(size);
                None
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut bytes).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                if bytes.len() < len {
                    return Err("a length-delimited field is cut short".into());
                }
                let (payload, rest) = bytes.split_at(len);
                bytes = rest;
                Some(payload)
            }
            WireType::StartGroup | WireType::EndGroup => return Err("groups are not used by SavedModels".into()),
        };
        let raw = &start[..start.len() - bytes.len()];
        out.push(Field { number, payload, raw });
    }
    Ok(out)
}

/// Appends a length-delimited field.
fn put(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// The corrected bytes of `saved_model.pb` and one line per correction.
pub type Corrected = (Vec<u8>, Vec<String>);

/// `saved_model.pb` with each asset listed once per MetaGraph, and one line per correction
/// made (`[serve]: asset tensor vocab_path:0 was listed 2 times in collection saved_model_assets`);
/// `None` when nothing needs correcting.
pub fn without_duplicate_assets(bytes: &[u8]) -> Result<Option<Corrected>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut notes = Vec::new();
    for field in fields(bytes)? {
        match (field.number, field.payload) {
            (META_GRAPHS, Some(payload)) => put(&mut out, META_GRAPHS, &meta_graph(payload, &mut notes)?),
            _ => out.extend_from_slice(field.raw),
        }
    }
    Ok((!notes.is_empty()).then_some((out, notes)))
}

fn meta_graph(bytes: &[u8], notes: &mut Vec<String>) -> Result<Vec<u8>, String> {
    let tags = proto::MetaGraphDef::decode(bytes)
        .ok()
        .and_then(|graph| graph.meta_info_def.map(|info| info.tags.join(",")))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(bytes.len());
    let mut assets = BTreeSet::new();
    let mut dropped = 0;
    for field in fields(bytes)? {
        match (field.number, field.payload) {
            (ASSET_FILE_DEF, Some(payload)) => {
                if assets.insert(asset_tensor(payload)) {
                    out.extend_from_slice(field.raw);
                } else {
                    dropped += 1;
                }
            }
            (COLLECTION_DEF, Some(payload)) => put(&mut out, COLLECTION_DEF, &collection(payload, &tags, notes)?),
            _ => out.extend_from_slice(field.raw),
        }
    }
    if dropped > 0 {
        notes.push(format!("[{tags}]: {dropped} repeated entries of asset_file_def left out"));
    }
    Ok(out)
}

/// The tensor an `AssetFileDef` feeds (its bytes where it does not decode).
fn asset_tensor(bytes: &[u8]) -> String {
    match proto::AssetFileDef::decode(bytes) {
        Ok(asset) => match asset.tensor_info.and_then(|info| info.encoding) {
            Some(proto::tensor_info::Encoding::Name(name)) => name,
            _ => String::new(),
        },
        Err(_) => format!("{bytes:?}"),
    }
}

/// A `collection_def` map entry, with the repeated values of `saved_model_assets` (by the tensor
/// each feeds) and `asset_filepaths` (by tensor name) left out.
fn collection(entry: &[u8], tags: &str, notes: &mut Vec<String>) -> Result<Vec<u8>, String> {
    let entry_fields = fields(entry)?;
    let name = entry_fields
        .iter()
        .find(|f| f.number == 1)
        .and_then(|f| f.payload)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let list_field = match name.as_str() {
        "saved_model_assets" => ANY_LIST,
        "asset_filepaths" => NODE_LIST,
        _ => return Ok(entry.to_vec()),
    };
    let mut out = Vec::with_capacity(entry.len());
    for field in entry_fields {
        let Some(value) = field.payload.filter(|_| field.number == 2) else {
            out.extend_from_slice(field.raw);
            continue;
        };
        let mut collection_out = Vec::with_capacity(value.len());
        for part in fields(value)? {
            match part.payload.filter(|_| part.number == list_field) {
                Some(list) => {
                    put(&mut collection_out, list_field, &unique_values(list, list_field, &name, tags, notes)?)
                }
                None => collection_out.extend_from_slice(part.raw),
            }
        }
        put(&mut out, 2, &collection_out);
    }
    Ok(out)
}

/// A `NodeList` or `AnyList` with each repeated value (field 1) kept once.
fn unique_values(
    list: &[u8],
    kind: u32,
    collection: &str,
    tags: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(list.len());
    let mut seen = BTreeSet::new();
    let mut repeated = BTreeSet::new();
    for field in fields(list)? {
        let Some(value) = field.payload.filter(|_| field.number == 1) else {
            out.extend_from_slice(field.raw);
            continue;
        };
        let identity =
            if kind == ANY_LIST { any_asset_tensor(value)? } else { String::from_utf8_lossy(value).into_owned() };
        if seen.insert(identity.clone()) {
            out.extend_from_slice(field.raw);
        } else {
            repeated.insert(identity);
        }
    }
    for tensor in repeated {
        notes.push(format!(
            "[{tags}]: asset tensor {tensor} was listed more than once in collection {collection}; kept once"
        ));
    }
    Ok(out)
}

/// The tensor of the `AssetFileDef` packed in a `google.protobuf.Any` (`value` = field 2).
fn any_asset_tensor(any: &[u8]) -> Result<String, String> {
    let value = fields(any)?.into_iter().find(|f| f.number == 2).and_then(|f| f.payload).unwrap_or_default();
    Ok(asset_tensor(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(tensor: &str, file: &str) -> proto::AssetFileDef {
        let encoding = Some(proto::tensor_info::Encoding::Name(tensor.into()));
        let tensor_info = Some(proto::TensorInfo { encoding, ..Default::default() });
        proto::AssetFileDef { tensor_info, filename: file.into() }
    }

    fn model(assets: &[proto::AssetFileDef]) -> Vec<u8> {
        let info = Some(proto::meta_graph_def::MetaInfoDef { tags: vec!["serve".into()], ..Default::default() });
        let graph = proto::MetaGraphDef { meta_info_def: info, asset_file_def: assets.to_vec(), ..Default::default() };
        proto::SavedModel { saved_model_schema_version: 1, meta_graphs: vec![graph] }.encode_to_vec()
    }

    #[test]
    fn a_repeated_asset_is_kept_once_and_named() {
        let twice = model(&[asset("vocab:0", "v.txt"), asset("vocab:0", "v.txt"), asset("other:0", "o.txt")]);
        let (fixed, notes) = without_duplicate_assets(&twice).unwrap().expect("a correction");
        assert_eq!(fixed, model(&[asset("vocab:0", "v.txt"), asset("other:0", "o.txt")]));
        assert_eq!(notes, vec!["[serve]: 1 repeated entries of asset_file_def left out".to_string()]);
    }

    #[test]
    fn a_model_without_repeats_is_left_alone() {
        assert!(without_duplicate_assets(&model(&[asset("vocab:0", "v.txt")])).unwrap().is_none());
    }

    #[test]
    fn bytes_that_are_not_a_message_are_an_error() {
        assert!(without_duplicate_assets(&[0x12, 0x40, 1]).is_err());
    }
}
