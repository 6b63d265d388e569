//! A signature of a SavedModel (`serving_default`, `train_step`, ...): its method name and the
//! typed specs of its inputs and outputs, keyed as callers use them.

use serde::Serialize;

use crate::proto;
use crate::tensor::dtype::DType;
use crate::tensor::shape::Shape;

/// Signature keys that TensorFlow uses for its own bookkeeping, hidden from listings by default.
pub fn is_internal_key(key: &str) -> bool {
    key.starts_with("__")
}

/// One signature: a named function of the model with keyed inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signature {
    /// The signature key (`serving_default`).
    pub key: String,
    /// The method name (`tensorflow/serving/predict`), empty where the exporter set none.
    pub method_name: String,
    /// The inputs, sorted by key.
    pub inputs: Vec<TensorSpec>,
    /// The outputs, sorted by key.
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub(crate) fn from_proto(key: &str, def: &proto::SignatureDef) -> Signature {
        Signature {
            key: key.to_string(),
            method_name: def.method_name.clone(),
            inputs: specs(&def.inputs),
            outputs: specs(&def.outputs),
        }
    }

    /// The input with this key.
    pub fn input(&self, key: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|spec| spec.key == key)
    }

    /// The output with this key.
    pub fn output(&self, key: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|spec| spec.key == key)
    }
}

fn specs(map: &std::collections::HashMap<String, proto::TensorInfo>) -> Vec<TensorSpec> {
    let mut specs: Vec<TensorSpec> = map.iter().map(|(key, info)| TensorSpec::from_proto(key, info)).collect();
    specs.sort_by(|a, b| a.key.cmp(&b.key));
    specs
}

/// The spec of one input or output of a signature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    /// The key callers use (`inputs`, `scores`).
    pub key: String,
    /// Element type.
    pub dtype: DType,
    /// Shape; unknown dimensions are `None`.
    pub shape: Shape,
    /// How the tensor is laid out in the graph, with its graph tensor name(s).
    pub encoding: TensorEncoding,
}

impl TensorSpec {
    fn from_proto(key: &str, info: &proto::TensorInfo) -> TensorSpec {
        TensorSpec {
            key: key.to_string(),
            dtype: DType::from_proto(info.dtype),
            shape: Shape::from_proto(info.tensor_shape.as_ref()),
            encoding: TensorEncoding::from_proto(info.encoding.as_ref()),
        }
    }

    /// The graph tensor name (`serving_default_x:0`) of a dense tensor; for a sparse one, its
    /// values tensor; `None` for composite tensors.
    pub fn tensor_name(&self) -> Option<&str> {
        match &self.encoding {
            TensorEncoding::Dense { name } => Some(name),
            TensorEncoding::CooSparse { values, .. } => Some(values),
            TensorEncoding::Composite { .. } | TensorEncoding::Unset => None,
        }
    }
}

/// How a signature tensor maps onto graph tensors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TensorEncoding {
    /// A dense tensor, fed or fetched by one graph tensor name.
    Dense {
        /// Graph tensor name, `op:index`.
        name: String,
    },
    /// A `tf.SparseTensor` in COO form, as three graph tensors.
    CooSparse {
        /// Values tensor name.
        values: String,
        /// Indices tensor name.
        indices: String,
        /// Dense-shape tensor name.
        dense_shape: String,
    },
    /// A composite tensor (ragged, ...) made of several component tensors.
    Composite {
        /// Graph tensor names of the components, in order.
        components: Vec<String>,
    },
    /// The SignatureDef sets no encoding.
    Unset,
}

impl TensorEncoding {
    fn from_proto(encoding: Option<&proto::tensor_info::Encoding>) -> TensorEncoding {
        use proto::tensor_info::Encoding;
        match encoding {
            Some(Encoding::Name(name)) => TensorEncoding::Dense { name: name.clone() },
            Some(Encoding::CooSparse(coo)) => TensorEncoding::CooSparse {
                values: coo.values_tensor_name.clone(),
                indices: coo.indices_tensor_name.clone(),
                dense_shape: coo.dense_shape_tensor_name.clone(),
            },
            Some(Encoding::CompositeTensor(composite)) => TensorEncoding::Composite {
                components: composite
                    .components
                    .iter()
                    .map(|c| match &c.encoding {
                        Some(Encoding::Name(name)) => name.clone(),
                        _ => String::new(),
                    })
                    .collect(),
            },
            None => TensorEncoding::Unset,
        }
    }
}
