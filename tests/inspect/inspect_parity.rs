//! `tfload signatures` and `tfload variables` on every committed model, compared field by field
//! with what Python TensorFlow reads from the same model (scripts/parity/tf_inspect.py).

use std::collections::BTreeMap;

use crate::common::{committed_models, python_json, s, tfload_ok};
use serde_json::Value;

/// key -> (dtype, shape, tensor name) of a signature side, from tfload's JSON.
fn tfload_side(specs: &Value) -> BTreeMap<String, (Value, Value, Value)> {
    specs
        .as_array()
        .unwrap()
        .iter()
        .map(|spec| {
            let name = spec["encoding"]["name"].clone();
            (spec["key"].as_str().unwrap().to_string(), (spec["dtype"].clone(), spec["shape"].clone(), name))
        })
        .collect()
}

/// The same, from tf_inspect.py's JSON.
fn python_side(specs: &Value) -> BTreeMap<String, (Value, Value, Value)> {
    specs
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, info)| (key.clone(), (info["dtype"].clone(), info["shape"].clone(), info["name"].clone())))
        .collect()
}

#[test]
fn signatures_match_python_tensorflow() {
    for model in committed_models() {
        let ours: Value = serde_json::from_str(&tfload_ok(&["signatures", s(&model), "--all", "--json"])).unwrap();
        let theirs = python_json("parity/tf_inspect.py", &[s(&model)]);
        assert_eq!(ours["tag_sets"], theirs["tag_sets"], "{model:?}: tag sets");
        let python_signatures = theirs["signatures"].as_object().unwrap();
        let our_signatures = ours["signatures"].as_array().unwrap();
        assert_eq!(our_signatures.len(), python_signatures.len(), "{model:?}: signature count");
        for signature in our_signatures {
            let key = signature["key"].as_str().unwrap();
            let python = &python_signatures[key];
            assert_eq!(signature["method_name"], python["method_name"], "{model:?} {key}: method");
            assert_eq!(tfload_side(&signature["inputs"]), python_side(&python["inputs"]), "{model:?} {key}: inputs");
            assert_eq!(tfload_side(&signature["outputs"]), python_side(&python["outputs"]), "{model:?} {key}: outputs");
        }
        assert_eq!(our_signatures[0]["key"], "serving_default", "{model:?}: serving_default first");
    }
}

#[test]
fn variables_match_python_tensorflow() {
    for model in committed_models() {
        let ours: Value = serde_json::from_str(&tfload_ok(&["variables", s(&model), "--json"])).unwrap();
        let theirs = python_json("parity/tf_inspect.py", &[s(&model)]);
        let checkpoint = theirs["checkpoint"].as_object().unwrap();
        let variables = ours["variables"].as_array().unwrap();
        assert_eq!(variables.len(), checkpoint.len(), "{model:?}: one listed variable per saved value");
        let mut elements = 0;
        for variable in variables {
            let key = variable["checkpoint_key"].as_str().unwrap();
            let saved = checkpoint.get(key).unwrap_or_else(|| panic!("{model:?}: {key} not in the checkpoint"));
            assert_eq!(variable["shape"], saved["shape"], "{model:?} {key}: shape");
            assert_eq!(variable["dtype"], saved["dtype"], "{model:?} {key}: dtype");
            let count: u64 = saved["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product();
            assert_eq!(variable["elements"].as_u64(), Some(count), "{model:?} {key}: elements");
            elements += count;
        }
        assert_eq!(ours["totals"]["elements"].as_u64(), Some(elements), "{model:?}: total elements");
        let mut our_flags: Vec<(String, bool)> = variables
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v["trainable"].as_bool().unwrap()))
            .collect();
        let mut python_flags: Vec<(String, bool)> = theirs["saved_variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v["trainable"].as_bool().unwrap()))
            .collect();
        // Variables without a name of their own are listed under their object path.
        for ((ours, _), (theirs, _)) in our_flags.iter_mut().zip(python_flags.iter_mut()) {
            if theirs.is_empty() {
                *ours = String::new();
            }
        }
        our_flags.sort();
        python_flags.sort();
        assert_eq!(our_flags, python_flags, "{model:?}: names and trainable flags");
    }
}
