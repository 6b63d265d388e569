//! `--lr-schedule plateau` against Keras's own `ReduceLROnPlateau` callback on the same sequences
//! of monitored values, and end to end: the rates a run logs follow the rule from its own losses.

use serde_json::Value;
use tfload::train::plateau::{PlateauState, ReduceOnPlateau};

use crate::common::{model, root, s, tfload_ok};

/// The rates Keras's callback sets, epoch after epoch, for `values` of `rule.monitor` (its mode
/// given as tfload decides it: Keras 3 infers it from the compiled metrics, which a bare
/// callback test has not built).
fn keras_rates(rule: &ReduceOnPlateau, values: &[f64], lr: f32) -> Vec<f32> {
    let script = format!(
        r#"
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(learning_rate={lr}), loss="mse", metrics=["accuracy"])
cb = keras.callbacks.ReduceLROnPlateau(monitor="{monitor}", factor={factor}, patience={patience},
                                       min_delta={min_delta}, cooldown={cooldown}, min_lr={min_lr},
                                       mode="max" if "acc" in "{monitor}" else "min")
cb.set_model(model)
cb.on_train_begin()
rates = []
for epoch, value in enumerate(json.loads(sys.argv[1])):
    cb.on_epoch_end(epoch, {{"{monitor}": value}})
    rates.append(float(model.optimizer.learning_rate.numpy()))
print(json.dumps(rates))
"#,
        monitor = rule.monitor,
        factor = rule.factor,
        patience = rule.patience,
        min_delta = rule.min_delta,
        cooldown = rule.cooldown,
        min_lr = rule.min_lr,
    );
    let output = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", &script, &serde_json::to_string(values).unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rates: Vec<f64> = serde_json::from_slice(&output.stdout).unwrap();
    rates.into_iter().map(|r| r as f32).collect()
}

fn tfload_rates(rule: &ReduceOnPlateau, values: &[f64], lr: f32) -> Vec<f32> {
    let (mut state, mut lr) = (PlateauState::default(), lr);
    values
        .iter()
        .map(|&value| {
            lr = rule.on_epoch_end(&mut state, value, lr).unwrap_or(lr);
            lr
        })
        .collect()
}

#[test]
fn plateau_rates_equal_keras_reduce_lr_on_plateau() {
    let losses = [1.0, 0.8, 0.79995, 0.81, 0.7, 0.7, 0.7, 0.69, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76];
    let accuracies = [0.5, 0.6, 0.6, 0.60005, 0.7, 0.69, 0.68, 0.71, 0.71, 0.71, 0.72, 0.72];
    let rules = [
        ReduceOnPlateau { monitor: "val_loss".into(), factor: 0.5, patience: 1, ..ReduceOnPlateau::default() },
        ReduceOnPlateau {
            monitor: "val_loss".into(),
            factor: 0.2,
            patience: 2,
            cooldown: 2,
            min_lr: 0.001,
            ..ReduceOnPlateau::default()
        },
        ReduceOnPlateau {
            monitor: "loss".into(),
            factor: 0.1,
            patience: 3,
            min_delta: 0.0,
            ..ReduceOnPlateau::default()
        },
    ];
    for rule in &rules {
        assert_eq!(tfload_rates(rule, &losses, 0.1), keras_rates(rule, &losses, 0.1), "{rule:?}");
    }
    let rule =
        ReduceOnPlateau { monitor: "val_accuracy".into(), factor: 0.5, patience: 1, ..ReduceOnPlateau::default() };
    assert_eq!(tfload_rates(&rule, &accuracies, 0.01), keras_rates(&rule, &accuracies, 0.01));
}

#[test]
fn a_plateau_run_logs_the_rates_the_rule_gives_for_its_losses() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = root().join("saved_models/data/digits_5_9_train.npz");
    let args =
        ["--lr-schedule", "plateau", "--monitor", "loss", "--plateau-patience", "1", "--plateau-min-delta", "0.5"];
    let mlp = model("mlp_digits");
    let mut command = vec!["train", s(&mlp), "--data", s(&data), "--out", s(&out), "--epochs", "4"];
    command.extend(args);
    command.extend(["--lr", "0.05", "--plateau-factor", "0.5"]);
    tfload_ok(&command);
    let epochs: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line.get("train").is_some())
        .collect();
    assert_eq!(epochs.len(), 4);
    let losses: Vec<f64> = epochs.iter().map(|e| e["train"]["loss"].as_f64().unwrap()).collect();
    let logged: Vec<f32> = epochs.iter().map(|e| e["lr"].as_f64().unwrap() as f32).collect();
    // The rate an epoch used is the one the rule set after the epoch before.
    let rule = ReduceOnPlateau {
        monitor: "loss".into(),
        factor: 0.5,
        patience: 1,
        min_delta: 0.5,
        ..ReduceOnPlateau::default()
    };
    let mut expected = vec![0.05f32];
    expected.extend(tfload_rates(&rule, &losses[..3], 0.05));
    assert_eq!(logged, expected);
    assert!(logged[3] < logged[0], "a min_delta of 0.5 makes every epoch a plateau: {logged:?}");
}
