//! Tensor shapes as a SavedModel records them: a known or unknown rank, each dimension known or
//! not (`[?, 224, 224, 3]`).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::proto;

/// A possibly partially known shape. `None` dims are unknown (`?`, `-1` in TensorFlow).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Not even the rank is known.
    UnknownRank,
    /// The rank is known; each dimension may still be unknown.
    Known(Vec<Option<u64>>),
}

impl Shape {
    /// An absent shape message decodes as TensorFlow reads it: the default proto, a scalar.
    pub(crate) fn from_proto(shape: Option<&proto::TensorShapeProto>) -> Shape {
        match shape {
            None => Shape::Known(Vec::new()),
            Some(shape) if shape.unknown_rank => Shape::UnknownRank,
            Some(shape) => Shape::Known(shape.dim.iter().map(|dim| u64::try_from(dim.size).ok()).collect()),
        }
    }

    /// The dimensions, `None` where the rank is unknown.
    pub fn dims(&self) -> Option<&[Option<u64>]> {
        match self {
            Shape::UnknownRank => None,
            Shape::Known(dims) => Some(dims),
        }
    }

    /// The number of elements, where every dimension is known.
    pub fn num_elements(&self) -> Option<u64> {
        self.dims()?.iter().try_fold(1u64, |product, dim| Some(product * (*dim)?))
    }

    /// The shape as TensorFlow prints it in `saved_model_cli`: `(-1, 8, 8, 1)`, `unknown_rank`.
    pub fn to_tf_string(&self) -> String {
        match self {
            Shape::UnknownRank => "unknown_rank".to_string(),
            Shape::Known(dims) => {
                let parts: Vec<String> = dims.iter().map(|d| d.map_or("-1".to_string(), |d| d.to_string())).collect();
                if parts.len() == 1 {
                    format!("({},)", parts[0])
                } else {
                    format!("({})", parts.join(", "))
                }
            }
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::UnknownRank => f.write_str("<unknown rank>"),
            Shape::Known(dims) => {
                let parts: Vec<String> = dims.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string())).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

/// JSON form: `null` for an unknown rank, else a list with `null` for unknown dimensions.
impl Serialize for Shape {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.dims().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_marks_unknown_dims() {
        let shape = Shape::Known(vec![None, Some(224), Some(224), Some(3)]);
        assert_eq!(shape.to_string(), "[?, 224, 224, 3]");
        assert_eq!(shape.to_tf_string(), "(-1, 224, 224, 3)");
        assert_eq!(Shape::Known(vec![]).to_string(), "[]");
        assert_eq!(Shape::UnknownRank.to_string(), "<unknown rank>");
    }

    #[test]
    fn elements_need_every_dim() {
        assert_eq!(Shape::Known(vec![Some(3), Some(4)]).num_elements(), Some(12));
        assert_eq!(Shape::Known(vec![]).num_elements(), Some(1));
        assert_eq!(Shape::Known(vec![None, Some(4)]).num_elements(), None);
        assert_eq!(Shape::UnknownRank.num_elements(), None);
    }

    #[test]
    fn json_uses_null_for_unknown() {
        let json = serde_json::to_string(&Shape::Known(vec![None, Some(8)])).unwrap();
        assert_eq!(json, "[null,8]");
        assert_eq!(serde_json::to_string(&Shape::UnknownRank).unwrap(), "null");
    }
}
