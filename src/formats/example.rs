//! Serialized `tf.train.Example`s built from feature values written as text, the way
//! `saved_model_cli run --input_examples` takes them: `[{"feature": [values], ...}, ...]`, a
//! Python literal (JSON's lists, numbers and strings are one). Estimator-style `classify` and
//! `regress` signatures take such a batch as one 1-D string tensor.
//!
//! The rules are saved_model_cli's (`_create_example_string`): every value is a list, and its
//! first element picks the feature's kind: a float makes a float list (later ints are taken as
//! floats, as protobuf does), an int (or bool) an int64 list, a `str` a bytes list of its UTF-8,
//! a `bytes` literal (`b'\xff'`) a bytes list as it is. Anything else, mixed kinds and empty lists
//! (which saved_model_cli cannot type either) are refused with the feature named.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};
use prost::Message;
use py_literal::Value;

use crate::proto::{feature, BytesList, Example, Feature, Features, FloatList, Int64List};
use crate::tensor::TensorData;

/// One feature's values.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValues {
    /// A float list (`tf.train.FloatList`).
    Floats(Vec<f32>),
    /// An int64 list (`tf.train.Int64List`).
    Ints(Vec<i64>),
    /// A bytes list (`tf.train.BytesList`).
    Bytes(Vec<Vec<u8>>),
}

/// The features of one example, by name.
pub type ExampleFeatures = BTreeMap<String, FeatureValues>;

/// Parses `[{feature: [values], ...}, ...]` into one feature map per example. The error says
/// what is wrong, naming the example and the feature.
pub fn parse_examples(text: &str) -> Result<Vec<ExampleFeatures>, String> {
    let value: Value = text.trim().parse().map_err(|e: py_literal::ParseError| {
        format!(
            "is not a Python or JSON literal ({}); write a list of dicts, e.g. [{{\"age\": [25], \"name\": [\"ann\"]}}]",
            crate::formats::npy::header::one_line(&e)
        )
    })?;
    let Value::List(examples) = value else {
        return Err(format!("is {}, not a list of dicts (one dict per tf.Example)", kind(&value)));
    };
    examples
        .iter()
        .enumerate()
        .map(|(i, example)| parse_example(example).map_err(|e| format!("example {i}: {e}")))
        .collect()
}

fn parse_example(value: &Value) -> Result<ExampleFeatures, String> {
    let Value::Dict(entries) = value else {
        return Err(format!("is {}, not a dict of feature name to list of values", kind(value)));
    };
    let mut features = ExampleFeatures::new();
    for (name, values) in entries {
        let Value::String(name) = name else {
            return Err(format!("feature name {} is {}, not a string", name, kind(name)));
        };
        let parsed = feature_values(values).map_err(|e| format!("feature `{name}` {e}"))?;
        if features.insert(name.clone(), parsed).is_some() {
            return Err(format!("feature `{name}` is given twice"));
        }
    }
    Ok(features)
}

fn feature_values(value: &Value) -> Result<FeatureValues, String> {
    let Value::List(items) = value else {
        return Err(format!("is {}, and a feature's value must be a list, e.g. [1.5]", kind(value)));
    };
    let mixed = |i: usize, item: &Value, first: &str| {
        format!("mixes types: element {i} is {}, but the first element makes it a list of {first}", kind(item))
    };
    match items.first() {
        None => {
            Err("is an empty list, whose type (float, int or bytes) cannot be told; give at least one value".into())
        }
        Some(Value::Float(_)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Float(v) => Ok(*v as f32),
                Value::Integer(v) => Ok(v.to_string().parse::<f64>().map_err(|_| mixed(i, item, "floats"))? as f32),
                _ => Err(mixed(i, item, "floats")),
            })
            .collect::<Result<_, _>>()
            .map(FeatureValues::Floats),
        Some(Value::Integer(_) | Value::Boolean(_)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Integer(v) => i64::try_from(v).map_err(|_| format!("element {i} ({v}) does not fit in int64")),
                Value::Boolean(b) => Ok(i64::from(*b)),
                _ => Err(mixed(i, item, "ints")),
            })
            .collect::<Result<_, _>>()
            .map(FeatureValues::Ints),
        Some(Value::String(_) | Value::Bytes(_)) => {
            let first = if matches!(items[0], Value::String(_)) { "strings" } else { "bytes" };
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match (item, &items[0]) {
                    (Value::String(s), Value::String(_)) => Ok(s.as_bytes().to_vec()),
                    (Value::Bytes(b), Value::Bytes(_)) => Ok(b.clone()),
                    _ => Err(mixed(i, item, first)),
                })
                .collect::<Result<_, _>>()
                .map(FeatureValues::Bytes)
        }
        Some(other) => {
            Err(format!("starts with {}, which no tf.train.Feature holds; give floats, ints or strings", kind(other)))
        }
    }
}

/// The Python type name of a literal, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a str",
        Value::Bytes(_) => "bytes",
        Value::Integer(_) => "an int",
        Value::Float(_) => "a float",
        Value::Complex(_) => "a complex",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Set(_) => "a set",
        Value::Boolean(_) => "a bool",
        Value::None => "None",
    }
}

/// The 1-D string tensor of serialized examples that `--input-examples KEY=TEXT` feeds to input
/// `key`, from `TEXT` as [`parse_examples`] reads it.
pub fn input_from_text(key: &str, text: &str) -> crate::Result<TensorData> {
    let examples =
        parse_examples(text).map_err(|problem| crate::Error::InputExamples { key: key.to_string(), problem })?;
    Ok(examples_tensor(&examples))
}

/// One serialized `tf.train.Example` holding `features`.
pub fn encode_example(features: &ExampleFeatures) -> Vec<u8> {
    let feature = features
        .iter()
        .map(|(name, values)| {
            let kind = match values {
                FeatureValues::Floats(v) => feature::Kind::FloatList(FloatList { value: v.clone() }),
                FeatureValues::Ints(v) => feature::Kind::Int64List(Int64List { value: v.clone() }),
                FeatureValues::Bytes(v) => feature::Kind::BytesList(BytesList { value: v.clone() }),
            };
            (name.clone(), Feature { kind: Some(kind) })
        })
        .collect();
    Example { features: Some(Features { feature }) }.encode_to_vec()
}

/// The examples serialized, as the 1-D string tensor an Example-taking input is fed.
pub fn examples_tensor(examples: &[ExampleFeatures]) -> TensorData {
    let serialized: Vec<Vec<u8>> = examples.iter().map(encode_example).collect();
    TensorData::Bytes(ArrayD::from_shape_vec(IxDyn(&[serialized.len()]), serialized).expect("1-D"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_kind_of_their_first_element() {
        let examples = parse_examples(r#"[{"f": [1.5, 2], "i": [3, True], "s": ["é"], "b": [b'\xff\x00']}]"#).unwrap();
        let e = &examples[0];
        assert_eq!(e["f"], FeatureValues::Floats(vec![1.5, 2.0]));
        assert_eq!(e["i"], FeatureValues::Ints(vec![3, 1]));
        assert_eq!(e["s"], FeatureValues::Bytes(vec!["é".as_bytes().to_vec()]));
        assert_eq!(e["b"], FeatureValues::Bytes(vec![vec![0xff, 0]]));
    }

    #[test]
    fn an_encoded_example_decodes_to_its_features() {
        let examples = parse_examples("[{'x': [1.0]}, {'y': [7], 'z': ['a', 'b']}]").unwrap();
        let TensorData::Bytes(tensor) = examples_tensor(&examples) else { panic!("bytes") };
        assert_eq!(tensor.shape(), &[2]);
        let second = Example::decode(tensor[1].as_slice()).unwrap().features.unwrap().feature;
        assert_eq!(second["y"].kind, Some(feature::Kind::Int64List(Int64List { value: vec![7] })));
        let z = BytesList { value: vec![b"a".to_vec(), b"b".to_vec()] };
        assert_eq!(second["z"].kind, Some(feature::Kind::BytesList(z)));
    }

    #[test]
    fn bad_text_is_refused_with_what_is_wrong() {
        let error = |text: &str| parse_examples(text).unwrap_err();
        assert!(error("[{x: 1}]").contains("not a Python or JSON literal"), "{}", error("[{x: 1}]"));
        assert!(error("{'x': [1]}").contains("not a list of dicts"));
        assert!(error("[{'x': 1}]").contains("feature `x` is an int, and a feature's value must be a list"));
        assert!(error("[{'x': [1, 'a']}]").contains("example 0: feature `x` mixes types: element 1 is a str"));
        assert!(error("[{'x': [1, 2.5]}]").contains("mixes types"));
        assert!(error("[{'x': []}]").contains("empty list"));
        assert!(error("[{'x': [None]}]").contains("starts with None"));
        assert!(error("[{'x': [2**70]}]").contains("not a Python or JSON literal"));
        assert!(error("[{'x': [99999999999999999999]}]").contains("does not fit in int64"));
        assert!(error("[{1: [1]}]").contains("feature name 1 is an int"));
    }
}
