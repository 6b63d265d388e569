//! `tfload train` end to end: masks, output safety, every bad input the issue names, exact resume
//! after kill -9 and after Ctrl-C, early stopping.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{model, root, s, tfload_err, tfload_ok, QUIET_ONE_THREAD};
use serde_json::Value;

fn train_data() -> PathBuf {
    root().join("saved_models/data/digits_5_9_train.npz")
}

fn val_data() -> PathBuf {
    root().join("saved_models/data/digits_5_9_val.npz")
}

/// Writes an .npz with a Python one-liner over `x` and `y` expressions of numpy `np` and the
/// digits training arrays `x0`, `y0`.
fn make_npz(path: &Path, x: &str, y: &str) {
    let script = format!(
        "import numpy as np; d = np.load('{}'); x0, y0 = d['x'], d['y']; np.savez('{}', x={x}, y={y})",
        s(&train_data()),
        s(path)
    );
    let status = Command::new(root().join(".venv/bin/python")).args(["-c", &script]).status().unwrap();
    assert!(status.success());
}

/// The bundle's data, one shard with the values in key order, whatever shards `dir` has.
fn values_by_key(dir: &Path) -> Vec<u8> {
    let copy = tempfile::tempdir().unwrap();
    tfload::formats::linked_bundle::copy_as_one_shard(&dir.join("variables"), copy.path(), &[], None).unwrap();
    std::fs::read(copy.path().join("variables.data-00000-of-00001")).unwrap()
}

fn variables_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("variables/variables.data-00000-of-00001")).unwrap()
}

#[test]
fn show_mask_prints_the_default_and_the_flags_change_it() {
    let cnn = model("cnn_digits");
    let out = tfload_ok(&["train", s(&cnn), "--show-mask"]);
    assert!(out.contains("2 of 7 variables trainable"), "{out}");
    let out = tfload_ok(&["train", s(&cnn), "--show-mask", "--train-last-layers", "2"]);
    assert!(out.contains("4 of 7 variables trainable"), "{out}"); // conv2 (kernel, bias) + head
    let out = tfload_ok(&["train", s(&cnn), "--show-mask", "--train-all", "--freeze", "bn*", "--train", "bn1/beta"]);
    assert!(out.contains("6 of 7 variables trainable"), "{out}");
}

#[test]
fn mask_pattern_matching_nothing_lists_close_names() {
    let err = tfload_err(&["train", s(&model("cnn_digits")), "--show-mask", "--freeze", "conv3"]);
    assert!(err.contains("--freeze `conv3` matches no variable or layer"), "{err}");
    assert!(err.contains("conv1"), "{err}");
}

#[test]
fn a_model_without_train_step_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        tfload_err(&["train", s(&model("multi_io")), "--data", s(&train_data()), "--out", s(&dir.path().join("o"))]);
    assert!(err.contains("is not a trainable SavedModel"), "{err}");
    assert!(err.contains(".venv/bin/tfload-export"), "{err}");
    assert!(!dir.path().join("o").exists() && !dir.path().join("o.partial").exists());
}

#[test]
fn bad_data_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let cnn = model("cnn_digits");
    let err = tfload_err(&["train", s(&cnn), "--data", "/no/such/data.npz", "--out", s(&out)]);
    assert!(err.contains("/no/such/data.npz: no such file or directory"), "{err}");

    let digits_0_9 = dir.path().join("ten_classes.npz");
    make_npz(&digits_0_9, "x0", "y0 + 5");
    let err = tfload_err(&["train", s(&cnn), "--data", s(&digits_0_9), "--out", s(&out)]);
    assert!(err.contains("has 10 classes, but the model's head gives scores for 5 classes"), "{err}");

    let wrong_shape = dir.path().join("wrong_shape.npz");
    make_npz(&wrong_shape, "x0.reshape(len(x0), 64)", "y0");
    let err = tfload_err(&["train", s(&cnn), "--data", s(&wrong_shape), "--out", s(&out)]);
    assert!(err.contains("does not fit the model"), "{err}");
    assert!(err.contains("[?, 8, 8, 1]"), "{err}");
    assert!(!out.exists());
}

#[test]
fn output_is_never_clobbered_and_input_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = model("cnn_digits");
    let before = variables_bytes(&cnn);
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep.txt"), "mine").unwrap();
    let err = tfload_err(&["train", s(&cnn), "--data", s(&train_data()), "--out", s(&existing), "--epochs", "1"]);
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(existing.join("keep.txt")).unwrap(), "mine");

    let err = tfload_err(&["train", s(&cnn), "--data", s(&train_data()), "--out", s(&cnn), "--overwrite"]);
    assert!(err.contains("is the input model"), "{err}");

    let file = dir.path().join("a_file");
    std::fs::write(&file, "").unwrap();
    let err = tfload_err(&["train", s(&cnn), "--data", s(&train_data()), "--out", s(&file.join("out"))]);
    assert!(err.contains("cannot be created"), "{err}");

    tfload_ok(&[
        "train",
        s(&cnn),
        "--data",
        s(&train_data()),
        "--out",
        s(&existing),
        "--epochs",
        "1",
        "--overwrite",
        "-q",
    ]);
    assert!(existing.join("saved_model.pb").is_file() && !existing.join("keep.txt").exists());
    assert_eq!(variables_bytes(&cnn), before, "the input model changed");
}

#[test]
fn a_nan_loss_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let poisoned = dir.path().join("nan.npz");
    make_npz(&poisoned, "np.where(np.arange(len(x0))[:, None, None, None] >= 64, np.nan, x0).astype('float32')", "y0");
    let out = dir.path().join("o");
    let err = tfload_err(&[
        "train",
        s(&model("cnn_digits")),
        "--data",
        s(&poisoned),
        "--out",
        s(&out),
        "--no-shuffle",
        "--batch-size",
        "32",
        "--checkpoint-every-steps",
        "1",
    ]);
    assert!(err.contains("the loss became NaN at epoch 1, step 3"), "{err}");
    assert!(err.contains("last good checkpoint is kept"), "{err}");
    assert!(out.with_file_name("o.partial/checkpoints/step-000000002/saved_model.pb").is_file());
    assert!(!out.exists());
}

/// A run on the digits tiled 40 times (28,680 examples), slow enough to be stopped mid-epoch.
fn long_run_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        s(&model("mlp_digits")),
        "--data",
        s(data),
        "--out",
        s(out),
        "--epochs",
        "5",
        "--batch-size",
        "16",
        "--seed",
        "3",
    ]
    .iter()
    .chain(&QUIET_ONE_THREAD)
    .map(|a| a.to_string())
    .collect()
}

fn wait_for(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < timeout, "{path:?} did not appear in {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_in_epoch_3_then_resume_gives_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiled.npz");
    make_npz(&data, "np.tile(x0, (40, 1, 1, 1))", "np.tile(y0, 40)");
    let steps_per_epoch = (717 * 40usize).div_ceil(16);

    let straight = dir.path().join("straight");
    let args = long_run_args(&data, &straight);
    tfload_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let resumed = dir.path().join("resumed");
    let args = long_run_args(&data, &resumed);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tfload")).args(&args).stderr(Stdio::null()).spawn().unwrap();
    let epoch_2 = resumed.with_file_name(format!("resumed.partial/checkpoints/step-{:09}", 2 * steps_per_epoch));
    wait_for(&epoch_2, Duration::from_secs(120));
    // Epoch 3 under way (its first step lines are in the log, written in blocks): kill now, with
    // most of its ~1,800 steps still to go.
    let metrics = resumed.with_file_name("resumed.partial/metrics.jsonl");
    let start = Instant::now();
    while !std::fs::read_to_string(&metrics).unwrap_or_default().contains("\"event\":\"step\",\"epoch\":3,") {
        assert!(start.elapsed() < Duration::from_secs(60), "epoch 3 did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!resumed.exists(), "the run finished before it could be killed");
    let log = std::fs::read_to_string(resumed.with_file_name("resumed.partial/metrics.jsonl")).unwrap();
    assert!(!log.contains("\"event\":\"epoch\",\"epoch\":3"), "killed after epoch 3 ended");

    let mut args = long_run_args(&data, &resumed);
    args.push("--resume".into());
    tfload_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(variables_bytes(&resumed), variables_bytes(&straight), "resumed weights differ");
    for file in ["saved_model.pb", "variables/variables.index"] {
        assert_eq!(
            std::fs::read(resumed.join(file)).unwrap(),
            std::fs::read(straight.join(file)).unwrap(),
            "{file} differs"
        );
    }
}

#[test]
fn ctrl_c_saves_mid_epoch_and_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiled.npz");
    // 1875 steps an epoch: the interrupt lands long before the first epoch ends.
    make_npz(&data, "np.tile(x0, (200, 1, 1, 1))", "np.tile(y0, 200)");
    let straight = dir.path().join("straight");
    let mut args = long_run_args(&data, &straight);
    args[7] = "2".into(); // --epochs 2
    tfload_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let resumed = dir.path().join("resumed");
    let mut args = long_run_args(&data, &resumed);
    args[7] = "2".into();
    let child = Command::new(env!("CARGO_BIN_EXE_tfload")).args(&args).stderr(Stdio::piped()).spawn().unwrap();
    let metrics = resumed.with_file_name("resumed.partial/metrics.jsonl");
    wait_for(&metrics, Duration::from_secs(60));
    // Step lines reach the file in buffered chunks: the first chunk means training is under way.
    let start = Instant::now();
    while !std::fs::read_to_string(&metrics).unwrap_or_default().contains("\"event\":\"step\",\"epoch\":1,") {
        assert!(start.elapsed() < Duration::from_secs(60), "training did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY-free: send SIGINT through the kill command, as a terminal's Ctrl-C would.
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Resume with the same command and --resume"), "{stderr}");
    let log = std::fs::read_to_string(&metrics).unwrap();
    assert!(!log.contains("\"event\":\"epoch\""), "interrupted after an epoch ended, not mid-epoch");

    args.push("--resume".into());
    tfload_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(variables_bytes(&resumed), variables_bytes(&straight), "resumed weights differ");
    for file in ["saved_model.pb", "variables/variables.index"] {
        assert_eq!(
            std::fs::read(resumed.join(file)).unwrap(),
            std::fs::read(straight.join(file)).unwrap(),
            "{file} differs"
        );
    }
}

#[test]
fn early_stopping_writes_the_best_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let json = tfload_ok(&[
        "train",
        s(&model("cnn_digits")),
        "--data",
        s(&train_data()),
        "--val-data",
        s(&val_data()),
        "--out",
        s(&out),
        "--epochs",
        "8",
        "--lr",
        "0.05",
        "--early-stopping-patience",
        "2",
        "--json",
        "--train-all",
        "--keep-best",
    ]);
    let outcome: Value = serde_json::from_str(&json).unwrap();
    let completed = &outcome["Completed"];
    let epochs: Vec<(u64, f64)> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"] == "epoch")
        .map(|l| (l["epoch"].as_u64().unwrap(), l["validation"]["loss"].as_f64().unwrap()))
        .collect();
    let best = epochs.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert_eq!(completed["weights_from_epoch"].as_u64(), Some(best.0), "{epochs:?}");
    assert_eq!(completed["validation"]["loss"].as_f64(), Some(best.1));
    let best_dir = out.join("checkpoints/best");
    // The best checkpoint links the values training left alone: compare every value, by key.
    assert!(values_by_key(&out) == values_by_key(&best_dir), "the output's weights are not the best epoch's");
    let kept: Vec<_> = std::fs::read_dir(out.join("checkpoints")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(kept, ["best"], "--keep-best keeps the best checkpoint only");
}

#[test]
fn init_weights_imports_keras_weights_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = model("cnn_digits");
    let h5 = root().join("saved_models/h5/cnn_keras3.weights.h5");
    let imported = dir.path().join("imported");
    tfload_ok(&["import-weights", s(&cnn), s(&h5), "--out", s(&imported)]);
    let trained = dir.path().join("trained");
    tfload_ok(&[
        "train",
        s(&cnn),
        "--init-weights",
        s(&h5),
        "--data",
        s(&train_data()),
        "--out",
        s(&trained),
        "--epochs",
        "1",
        "-q",
    ]);
    // The frozen base must hold the imported weights, not the committed model's.
    let script = format!(
        "import json, tensorflow as tf\n\
         r = lambda d: tf.train.load_checkpoint(d + '/variables/variables')\n\
         rec = json.load(open('{cnn}/assets/tfload_contract.json'))\n\
         a, b, c = r('{imported}'), r('{trained}'), r('{cnn}')\n\
         out = {{v['name']: [bool((a.get_tensor(v['checkpoint_key']) == b.get_tensor(v['checkpoint_key'])).all()),\n\
                            bool((c.get_tensor(v['checkpoint_key']) == b.get_tensor(v['checkpoint_key'])).all())]\n\
                for v in rec['mask_variables'] if not rec['default_mask'][v['index']]}}\n\
         print(json.dumps(out))",
        cnn = s(&cnn),
        imported = s(&imported),
        trained = s(&trained)
    );
    let output = Command::new(root().join(".venv/bin/python"))
        .args(["-c", &script])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let frozen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(!frozen.as_object().unwrap().is_empty());
    for (name, same) in frozen.as_object().unwrap() {
        assert_eq!(same[0], true, "{name}: frozen variable differs from the imported weights");
        assert_eq!(same[1], false, "{name}: still holds the committed model's value");
    }
}

#[test]
fn a_record_that_disagrees_with_the_signatures_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join("tampered");
    crate::common::copy_dir(&model("cnn_digits"), &tampered);
    let record_path = tampered.join("assets/tfload_contract.json");
    let mut record: Value = serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    record["mask_variables"].as_array_mut().unwrap().pop();
    record["default_mask"].as_array_mut().unwrap().pop();
    std::fs::write(&record_path, record.to_string()).unwrap();
    let err = tfload_err(&["train", s(&tampered), "--show-mask"]);
    assert!(err.contains("the `train_step` signature disagree on input `mask`"), "{err}");
    assert!(err.contains("float32 [6]") && err.contains("float32 [7]"), "{err}");
}

#[test]
fn a_model_with_two_handles_per_variable_is_refused() {
    // The trap in shared/NOTES.md: a Keras model kept as a tf.Module attribute.
    let dir = tempfile::tempdir().unwrap();
    let trap = dir.path().join("trap");
    let script = format!(
        "import tensorflow as tf, keras\n\
         class M(tf.Module):\n\
         \x20   def __init__(self):\n\
         \x20       super().__init__()\n\
         \x20       self.model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name='head')])\n\
         \x20   @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])\n\
         \x20   def serve(self, x):\n\
         \x20       return {{'y': self.model(x)}}\n\
         m = M()\n\
         tf.saved_model.save(m, '{}', signatures={{'serving_default': m.serve, 'train_step': m.serve}})\n",
        s(&trap)
    );
    let status = Command::new(root().join(".venv/bin/python"))
        .args(["-c", &script])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let err = tfload_err(&["train", s(&trap), "--show-mask"]);
    assert!(err.contains("variable handles for 2 variables"), "{err}");
    assert!(err.contains(".venv/bin/tfload-export"), "{err}");
}

/// The highest "saved_model.pb decodes in this process: N" of a `-vv` run's debug log.
fn decodes_logged(stderr: &str) -> usize {
    stderr
        .lines()
        .filter_map(|line| line.split("saved_model.pb decodes in this process: ").nth(1))
        .map(|rest| rest.trim_end_matches(')').parse::<usize>().unwrap())
        .max()
        .unwrap_or(0)
}

#[test]
fn one_train_decodes_saved_model_pb_once_fresh_with_weights_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let weights = root().join("saved_models/h5/mlp_keras3.weights.h5");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["-vv", "train", s(&model("mlp_digits")), "--data", s(&train_data())]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(["--val-data", s(&val_data()), "--out", s(&out), "--epochs", "2"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    // Killed at its second checkpoint (the end of epoch 2 is not reached), then resumed.
    let fresh = Command::new(env!("CARGO_BIN_EXE_tfload"))
        .args(args(&["--init-weights", s(&weights), "--checkpoint-every-steps", "3"]))
        .env("TFLOAD_FAULT_AT", "checkpoint-built:2")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&fresh.stderr);
    assert!(!fresh.status.success(), "the fault point should have killed the run: {stderr}");
    assert!(stderr.contains("imported"), "{stderr}");
    assert_eq!(decodes_logged(&stderr), 1, "{stderr}");
    let resumed = Command::new(env!("CARGO_BIN_EXE_tfload"))
        .args(args(&["--checkpoint-every-steps", "3", "--resume"]))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert_eq!(decodes_logged(&stderr), 1, "{stderr}");
    assert!(out.join("saved_model.pb").is_file());
}

/// A copy of cnn_digits whose record names its classes `names` (in output order).
fn cnn_with_class_names(dir: &Path, names: &[&str]) -> PathBuf {
    let copy = dir.join("cnn_renamed");
    crate::common::copy_dir(&model("cnn_digits"), &copy);
    let record = copy.join("assets/tfload_contract.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    json["class_names"] = Value::from(names.to_vec());
    std::fs::write(&record, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    copy
}

#[test]
fn image_folder_classes_are_matched_to_the_model_by_name_never_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let folder = root().join("saved_models/data/digits_5_9_images");
    // The model's head orders the classes 9..5; the folders sort 5..9.
    let reversed = cnn_with_class_names(dir.path(), &["9", "8", "7", "6", "5"]);
    let out = dir.path().join("out");
    let output =
        crate::common::tfload(&["train", s(&reversed), "--data", s(&folder), "--out", s(&out), "--epochs", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("matched to the model's classes by name (5 -> 4, 6 -> 3, 7 -> 2, 8 -> 1, 9 -> 0)"),
        "{stderr}"
    );
    // eval names each class by the model's order, and its counts follow the folders.
    let doc: Value = serde_json::from_str(&tfload_ok(&["eval", s(&out), "--data", s(&folder), "--json"])).unwrap();
    let classes: Vec<&str> =
        doc["per_class"].as_array().unwrap().iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert_eq!(classes, ["9", "8", "7", "6", "5"]);
    let support: Vec<u64> =
        doc["per_class"].as_array().unwrap().iter().map(|c| c["support"].as_u64().unwrap()).collect();
    let per_folder: Vec<u64> =
        ["9", "8", "7", "6", "5"].iter().map(|c| std::fs::read_dir(folder.join(c)).unwrap().count() as u64).collect();
    assert_eq!(support, per_folder);
    // A folder the model has no class for is refused, naming both lists.
    let named = cnn_with_class_names(&dir.path().join("named"), &["cars", "trucks", "motorcycles", "vans", "bikes"]);
    let err = tfload_err(&["train", s(&named), "--data", s(&folder), "--out", s(&dir.path().join("o2"))]);
    assert!(err.contains("that are not among the model's classes (cars, trucks, motorcycles, vans, bikes)"), "{err}");
}

/// Every variable of the SavedModel in `dir`, by checkpoint key, as Python reads it.
fn checkpoint_values(dir: &Path) -> serde_json::Map<String, Value> {
    let script = "import json, sys, numpy as np, tensorflow as tf\n\
        r = tf.train.load_checkpoint(sys.argv[1] + '/variables/variables')\n\
        print(json.dumps({k: np.asarray(r.get_tensor(k)).astype(float).ravel().tolist() for k, _ in tf.train.list_variables(sys.argv[1] + '/variables/variables') if k.endswith('VARIABLE_VALUE') and 'optimizer' not in k and np.asarray(r.get_tensor(k)).dtype.kind == 'f'}))";
    let output = Command::new(root().join(".venv/bin/python"))
        .args(["-c", script, s(dir)])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_two_phase_recipe_trains_the_head_then_unfreezes_the_top_at_a_lower_rate() {
    // Keras's transfer-learning guide: train the new head on a frozen base, then unfreeze the top
    // layers and train again at a low rate. With tfload: two `train` calls, the second on the
    // first's output.
    let dir = tempfile::tempdir().unwrap();
    let cnn = model("cnn_digits");
    let (head, tuned) = (dir.path().join("head"), dir.path().join("tuned"));
    let (train, val) = (train_data(), val_data());
    let data = ["--data", s(&train), "--val-data", s(&val), "--epochs", "1"];
    let mut phase1 = vec!["train", s(&cnn), "--out", s(&head)];
    phase1.extend(data);
    tfload_ok(&phase1);
    let mut phase2 = vec!["train", s(&head), "--out", s(&tuned), "--train-last-layers", "2", "--lr", "1e-4"];
    phase2.extend(data);
    tfload_ok(&phase2);
    // Which mask variables each phase trains, from --show-mask (index in the first column).
    let trainable = |dir: &Path, extra: &[&str]| -> Vec<bool> {
        let mut args = vec!["train", s(dir), "--show-mask"];
        args.extend(extra);
        let table = tfload_ok(&args);
        table
            .lines()
            .filter(|line| line.split_whitespace().next().is_some_and(|i| i.parse::<usize>().is_ok()))
            .filter(|line| line.trim_end().ends_with("yes") || line.trim_end().ends_with("no"))
            .map(|line| line.trim_end().ends_with("yes"))
            .collect()
    };
    let (phase1_mask, phase2_mask) = (trainable(&cnn, &[]), trainable(&head, &["--train-last-layers", "2"]));
    assert!(phase2_mask.iter().filter(|&&t| t).count() > phase1_mask.iter().filter(|&&t| t).count());
    let (start, after_head, after_top) = (checkpoint_values(&cnn), checkpoint_values(&head), checkpoint_values(&tuned));
    for (index, (&in_phase1, &in_phase2)) in phase1_mask.iter().zip(&phase2_mask).enumerate() {
        let key = format!("mask_variables/{index}/.ATTRIBUTES/VARIABLE_VALUE");
        assert_eq!(after_head[&key] != start[&key], in_phase1, "{key}: phase 1 changes exactly its mask");
        assert_eq!(after_top[&key] != after_head[&key], in_phase2, "{key}: phase 2 changes exactly its mask");
    }
}

/// A small model's step runs on one intra-op thread when the user leaves the count to tfload
/// (the digits CNN's ops are too short to split), and on the count the user sets otherwise.
/// Which models count as small is tested in `train::step_threads`.
#[test]
fn a_small_models_step_runs_on_one_intra_op_thread_unless_the_user_sets_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_tfload"))
            .args(["-v", "train", s(&model("cnn_digits")), "--data", s(&train_data()), "--epochs", "1"])
            .args(["--out", s(&dir.path().join(name))])
            .args(extra)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let chosen = "one intra-op thread";
    let by_tfload = run("auto", &[]);
    assert!(by_tfload.contains(chosen), "{by_tfload}");
    let by_user = run("set", &["--intra-op-threads", "2"]);
    assert!(!by_user.contains(chosen), "{by_user}");
}
