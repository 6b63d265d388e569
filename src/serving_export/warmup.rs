//! TF Serving's warm-up file, `assets.extra/tf_serving_warmup_requests`: a TFRecord file of
//! `tensorflow.serving.PredictionLog` records that the server replays when it loads a version,
//! so that the first real request does not pay for graph optimisation.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::formats::checkpoint_writer::little_endian_bytes;
use crate::formats::crc::masked_crc32c;
use crate::proto as pb;
use crate::session::call::check_inputs;
use crate::{Error, Result, Signature, TensorData, Tensors};

/// Where TF Serving looks for warm-up requests, under a version directory.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";

/// One `--warmup-input KEY=FILE`: a signature input and the `.npy` file that holds its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmupInput {
    /// The input key of `serving_default`.
    pub key: String,
    /// The `.npy` file.
    pub path: PathBuf,
}

impl std::str::FromStr for WarmupInput {
    type Err = String;

    fn from_str(spec: &str) -> std::result::Result<WarmupInput, String> {
        match spec.split_once('=') {
            Some((key, path)) if !key.is_empty() && !path.is_empty() => {
                Ok(WarmupInput { key: key.to_string(), path: PathBuf::from(path) })
            }
            _ => Err(format!("`{spec}` is not KEY=FILE (for example inputs=batch.npy)")),
        }
    }
}

/// Reads the inputs and checks them against `signature`, so that a bad input is refused before
/// anything is written.
pub(super) fn read_inputs(inputs: &[WarmupInput], signature: &Signature) -> Result<Tensors> {
    let spec_of = |input: &WarmupInput| format!("{}={}", input.key, input.path.display());
    let mut tensors = Tensors::new();
    for input in inputs {
        let warmup_error = |problem: String| Error::WarmupInput { spec: spec_of(input), problem };
        let value = crate::formats::npy::read_npy(&input.path).map_err(|e| warmup_error(e.to_string()))?;
        if tensors.insert(input.key.clone(), value).is_some() {
            return Err(warmup_error(format!("input `{}` is given twice", input.key)));
        }
    }
    check_inputs(signature, &tensors).map_err(|e| Error::WarmupInput {
        spec: inputs.iter().map(spec_of).collect::<Vec<_>>().join(" "),
        problem: e.to_string(),
    })?;
    Ok(tensors)
}

/// The serialized `PredictionLog` holding one `PredictRequest` of `inputs` for `signature_key`.
pub(super) fn prediction_log(model_name: &str, signature_key: &str, inputs: &Tensors) -> Result<Vec<u8>> {
    let mut tensors = std::collections::HashMap::new();
    for (key, value) in inputs {
        tensors.insert(key.clone(), tensor_proto(value)?);
    }
    let request = pb::PredictRequest {
        model_spec: Some(pb::ModelSpec { name: model_name.to_string(), signature_name: signature_key.to_string() }),
        inputs: tensors,
        output_filter: Vec::new(),
    };
    let log = pb::PredictionLog {
        log_type: Some(pb::prediction_log::LogType::PredictLog(pb::PredictLog { request: Some(request) })),
    };
    Ok(log.encode_to_vec())
}

fn tensor_proto(value: &TensorData) -> Result<pb::TensorProto> {
    let dim = value.shape().iter().map(|&d| pb::tensor_shape_proto::Dim { size: d as i64, name: String::new() });
    let shape = Some(pb::TensorShapeProto { dim: dim.collect(), unknown_rank: false });
    let dtype = value.dtype().to_proto();
    Ok(match value.byte_strings() {
        Some(strings) => pb::TensorProto {
            dtype,
            tensor_shape: shape,
            tensor_content: Vec::new(),
            string_val: strings.iter().map(|s| s.to_vec()).collect(),
        },
        None => pb::TensorProto {
            dtype,
            tensor_shape: shape,
            tensor_content: little_endian_bytes(value)?,
            string_val: vec![],
        },
    })
}

/// Writes `records` as a TFRecord file at `path` (length, masked CRC of the length, data,
/// masked CRC of the data, each little-endian).
pub(super) fn write_tfrecord(path: &Path, records: &[Vec<u8>]) -> Result<()> {
    let mut bytes = Vec::new();
    for record in records {
        let len = (record.len() as u64).to_le_bytes();
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        bytes.extend_from_slice(record);
        bytes.extend_from_slice(&masked_crc32c(record).to_le_bytes());
    }
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn specs_need_a_key_and_a_file() {
        let input: WarmupInput = "inputs=a=b.npy".parse().unwrap();
        assert_eq!(input, WarmupInput { key: "inputs".into(), path: "a=b.npy".into() });
        assert!("inputs".parse::<WarmupInput>().is_err());
        assert!("=x.npy".parse::<WarmupInput>().is_err());
    }

    #[test]
    fn a_request_carries_dtype_shape_and_little_endian_values() -> Result<()> {
        let value = TensorData::Float32(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, -2.0]).unwrap());
        let inputs: Tensors = [("x".to_string(), value)].into_iter().collect();
        let log = pb::PredictionLog::decode(prediction_log("m", "serving_default", &inputs)?.as_slice()).unwrap();
        let Some(pb::prediction_log::LogType::PredictLog(predict)) = log.log_type else { panic!("a predict log") };
        let request = predict.request.unwrap();
        assert_eq!(request.model_spec.unwrap().signature_name, "serving_default");
        let tensor = &request.inputs["x"];
        assert_eq!(tensor.dtype, 1);
        assert_eq!(tensor.tensor_shape.as_ref().unwrap().dim.iter().map(|d| d.size).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(tensor.tensor_content, [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        Ok(())
    }
}
