//! A session loaded for some signatures (the graph cut to them before TensorFlow imports it)
//! gives what the whole graph gives, and refuses the others by name.

use std::path::PathBuf;

use ndarray::ArrayD;
use tfload::{Error, LoadScope, LoadedModel, SessionConfig, TensorData, Tensors};

fn mlp() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("saved_models/mlp_digits")
}

fn inputs() -> Tensors {
    let values: Vec<f32> = (0..3 * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    let inputs = ArrayD::from_shape_vec(vec![3, 8, 8, 1], values).unwrap();
    Tensors::from([("inputs".to_string(), TensorData::Float32(inputs))])
}

#[test]
fn a_session_cut_to_serving_default_predicts_exactly_what_the_whole_graph_does() {
    let whole = LoadedModel::load(mlp(), &["serve"], SessionConfig::default()).unwrap();
    let scope = LoadScope::signatures(&["serving_default"]);
    let cut = LoadedModel::load_scoped(mlp(), &["serve"], SessionConfig::default(), &scope).unwrap();
    let (whole_ops, cut_ops) = (whole.graph().operation_iter().count(), cut.graph().operation_iter().count());
    assert!(cut_ops < whole_ops, "the cut graph has {cut_ops} ops, the whole one {whole_ops}");
    assert_eq!(cut.run("serving_default", &inputs()).unwrap(), whole.run("serving_default", &inputs()).unwrap());
    assert!(cut.can_run("serving_default") && !cut.can_run("train_step") && whole.can_run("train_step"));
    assert_eq!(cut.scope(), &scope);
}

#[test]
fn a_signature_left_out_of_the_scope_is_refused_with_what_was_loaded() {
    let scope = LoadScope::signatures(&["serving_default"]);
    let cut = LoadedModel::load_scoped(mlp(), &["serve"], SessionConfig::default(), &scope).unwrap();
    let error = cut.run("eval_step", &inputs()).unwrap_err();
    assert!(matches!(&error, Error::SignatureNotLoaded { key, .. } if key == "eval_step"), "{error}");
    let message = error.to_string();
    assert!(message.contains("`serving_default` only") && message.contains("LoadScope::All"), "{message}");
    // A key the model does not have at all is still "not found", whatever the scope.
    assert!(matches!(cut.run("nope", &inputs()).unwrap_err(), Error::SignatureNotFound { .. }));
}
