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
    // The model's own ops: the cut adds graph-level saver nodes (`tfload_saver/`, four per
    // variable) in place of the two calls of its traced saver functions.
    let own_ops = |model: &LoadedModel| {
        model.graph().operation_iter().filter(|op| !op.name().unwrap().starts_with("tfload_saver/")).count()
    };
    let (whole_ops, cut_ops) = (own_ops(&whole), own_ops(&cut));
    assert!(cut_ops < whole_ops, "the cut graph has {cut_ops} of the model's ops, the whole one {whole_ops}");
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

/// Every file of a checkpoint directory, by name.
fn checkpoint_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect()
}

/// A cut session restores and saves through graph-level nodes (`tfload_saver/`) instead of the
/// model's traced saver functions: what it saves right after the load is, byte for byte, what
/// the traced saver of a whole-graph session saves, and the checkpoint it was loaded from.
#[test]
fn a_cut_session_saves_through_graph_level_nodes_exactly_what_the_traced_saver_saves() {
    let whole = LoadedModel::load(mlp(), &["serve"], SessionConfig::default()).unwrap();
    let scope = LoadScope::signatures(&["serving_default"]);
    let cut = LoadedModel::load_scoped(mlp(), &["serve"], SessionConfig::default(), &scope).unwrap();
    let (cut_saver, whole_saver) = (cut.saver().unwrap(), whole.saver().unwrap());
    assert!(cut_saver.restore_op.starts_with("tfload_saver/"), "{cut_saver:?}");
    assert!(cut_saver.save_tensor.starts_with("tfload_saver/"), "{cut_saver:?}");
    assert_eq!(whole_saver, whole.meta_graph().saver().unwrap(), "a whole graph keeps the model's saver");
    let out = tempfile::tempdir().unwrap();
    for (name, model) in [("cut", &cut), ("whole", &whole)] {
        std::fs::create_dir(out.path().join(name)).unwrap();
        tfload::session::saver::save_variables(model, &out.path().join(name).join("variables")).unwrap();
    }
    let saved = checkpoint_files(&out.path().join("cut"));
    assert_eq!(saved.keys().collect::<Vec<_>>(), ["variables.data-00000-of-00001", "variables.index"]);
    assert_eq!(saved, checkpoint_files(&out.path().join("whole")));
    assert_eq!(saved, checkpoint_files(&mlp().join("variables")), "restored values are the checkpoint's");
}
