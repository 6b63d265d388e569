//! `--train-last-layers N` is Keras's `for layer in model.layers[:-N]: layer.trainable = False`,
//! layers without variables counted, on the tutorial's shape at a small size: a base ending in
//! BatchNormalization and an activation, then GlobalAveragePooling2D, Dense, Dense.

use std::process::Command;

use crate::common::{root, s, tfload_ok};

/// Builds the model, saves it as `.keras`, and prints Keras's trainable weights after freezing
/// `model.layers[:-N]` for N = 1..=4.
const BUILD: &str = r#"
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
x = keras.layers.BatchNormalization(name="conv1_bn")(x)
x = keras.layers.Activation("relu", name="conv1_out")(x)
x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
x = keras.layers.Dense(8, activation="relu", name="dense")(x)
outputs = keras.layers.Dense(3, activation="softmax", name="dense_1")(x)
model = keras.Model(inputs, outputs)
model.save(sys.argv[1])
answer = {}
for n in range(1, 5):
    for layer in model.layers:
        layer.trainable = True
    for layer in model.layers[:-n]:
        layer.trainable = False
    answer[n] = sorted(v.path for v in model.trainable_weights)
print(json.dumps(answer))
"#;

#[test]
fn train_last_layers_trains_what_keras_trains_with_model_layers_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let keras_file = dir.path().join("tutorial.keras");
    let built = Command::new(root().join(".venv/bin/python")).args(["-c", BUILD, s(&keras_file)]).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let keras: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    let exported = dir.path().join("trainable");
    let export = Command::new(root().join(".venv/bin/tfload-export"))
        .args(["--model", s(&keras_file), "--optimizer", "adam", "--learning-rate", "1e-4", "--out", s(&exported)])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    for n in 1..=4 {
        let table = tfload_ok(&["train", s(&exported), "--show-mask", "--train-last-layers", &n.to_string()]);
        let mut ours: Vec<String> = table
            .lines()
            .take_while(|line| !line.is_empty())
            .filter(|line| line.trim_end().ends_with("yes"))
            .map(|line| line.split_whitespace().nth(1).unwrap().to_string())
            .collect();
        ours.sort();
        let theirs: Vec<String> =
            keras[n.to_string()].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(ours, theirs, "--train-last-layers {n}:\n{table}");
        assert!(table.contains("Keras layers, in model.layers order"), "{table}");
    }
    // The tutorial's case: the last three are gap, dense and dense_1, so the BatchNormalization of
    // the base stays frozen (counting only layers with variables trained conv1_bn too).
    let table = tfload_ok(&["train", s(&exported), "--show-mask", "--train-last-layers", "3"]);
    let bn = table.lines().find(|line| line.contains("conv1_bn/gamma")).unwrap();
    assert!(bn.trim_end().ends_with("no"), "{table}");
}
