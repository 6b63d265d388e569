//! Tensor element types, as TensorFlow's `DataType` enum numbers them, with the names users know
//! from numpy and Python TensorFlow (`float32`, `int64`, `string`).

use std::fmt;

use serde::{Serialize, Serializer};

/// The element type of a tensor or variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// No type (`DT_INVALID`), as on the outputs of TensorFlow's internal init signature.
    Invalid,
    /// 16-bit IEEE float (`DT_HALF`).
    Float16,
    /// 16-bit brain float (`DT_BFLOAT16`).
    BFloat16,
    /// 32-bit float (`DT_FLOAT`).
    Float32,
    /// 64-bit float (`DT_DOUBLE`).
    Float64,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 8-bit integer.
    UInt8,
    /// Unsigned 16-bit integer.
    UInt16,
    /// Unsigned 32-bit integer.
    UInt32,
    /// Unsigned 64-bit integer.
    UInt64,
    /// Boolean.
    Bool,
    /// Byte string.
    String,
    /// Complex of two float32.
    Complex64,
    /// Complex of two float64.
    Complex128,
    /// A handle to a resource such as a variable.
    Resource,
    /// A variant (lists, datasets, ...).
    Variant,
    /// Any other TensorFlow type, by its `DataType` number.
    Other(i32),
}

impl DType {
    /// Maps TensorFlow's `DataType` enum number (`DT_FLOAT` = 1, ...) to a `DType`.
    pub fn from_proto(number: i32) -> DType {
        match number {
            0 => DType::Invalid,
            1 => DType::Float32,
            2 => DType::Float64,
            3 => DType::Int32,
            4 => DType::UInt8,
            5 => DType::Int16,
            6 => DType::Int8,
            7 => DType::String,
            8 => DType::Complex64,
            9 => DType::Int64,
            10 => DType::Bool,
            14 => DType::BFloat16,
            17 => DType::UInt16,
            18 => DType::Complex128,
            19 => DType::Float16,
            20 => DType::Resource,
            21 => DType::Variant,
            22 => DType::UInt32,
            23 => DType::UInt64,
            other => DType::Other(other),
        }
    }

    /// TensorFlow's `DataType` enum number, the inverse of [`DType::from_proto`].
    pub fn to_proto(&self) -> i32 {
        if let DType::Other(number) = self {
            return *number;
        }
        (0..=23).find(|&n| DType::from_proto(n) == *self).unwrap_or(0)
    }

    /// The name numpy and Python TensorFlow use (`float32`, `int64`, `string`, ...).
    pub fn name(&self) -> String {
        let name = match self {
            DType::Invalid => "invalid",
            DType::Float16 => "float16",
            DType::BFloat16 => "bfloat16",
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::UInt8 => "uint8",
            DType::UInt16 => "uint16",
            DType::UInt32 => "uint32",
            DType::UInt64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
            DType::Complex64 => "complex64",
            DType::Complex128 => "complex128",
            DType::Resource => "resource",
            DType::Variant => "variant",
            DType::Other(n) => return format!("dtype_{n}"),
        };
        name.to_string()
    }

    /// Bytes per element, or `None` for types without a fixed size (strings, resources, variants).
    pub fn size_in_bytes(&self) -> Option<u64> {
        match self {
            DType::Int8 | DType::UInt8 | DType::Bool => Some(1),
            DType::Float16 | DType::BFloat16 | DType::Int16 | DType::UInt16 => Some(2),
            DType::Float32 | DType::Int32 | DType::UInt32 => Some(4),
            DType::Float64 | DType::Int64 | DType::UInt64 | DType::Complex64 => Some(8),
            DType::Complex128 => Some(16),
            DType::Invalid | DType::String | DType::Resource | DType::Variant | DType::Other(_) => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for DType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_numbers_round_trip() {
        for number in 0..=25 {
            assert_eq!(DType::from_proto(number).to_proto(), number);
        }
    }

    #[test]
    fn names_follow_numpy() {
        assert_eq!(DType::from_proto(1).name(), "float32");
        assert_eq!(DType::from_proto(9).name(), "int64");
        assert_eq!(DType::from_proto(7).name(), "string");
        assert_eq!(DType::from_proto(19).name(), "float16");
        assert_eq!(DType::from_proto(99).name(), "dtype_99");
    }

    #[test]
    fn sizes() {
        assert_eq!(DType::Float32.size_in_bytes(), Some(4));
        assert_eq!(DType::Int64.size_in_bytes(), Some(8));
        assert_eq!(DType::String.size_in_bytes(), None);
    }
}
