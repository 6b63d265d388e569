//! Nothing lost, nothing silently wrong: a training run killed at any point of its checkpoints
//! or of the output's assembly, then resumed, writes the same complete SavedModel, file by file,
//! as an uninterrupted run; the input is read once; two runs on one output are refused.
//!
//! Crashes are injected with `TFLOAD_FAULT_AT=<point>[:N]`, which makes tfload SIGKILL itself at
//! that point (src/fault.rs): the same state on disk as `kill -9` at that moment.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{model, root, s, tfload_err, tfload_ok, QUIET_ONE_THREAD};

fn train_data() -> PathBuf {
    root().join("saved_models/data/digits_5_9_train.npz")
}

fn val_x(dir: &Path) -> PathBuf {
    let path = dir.join("val_x.npy");
    let script = format!(
        "import numpy as np; np.save('{}', np.load('{}')['x'])",
        s(&path),
        s(&root().join("saved_models/data/digits_5_9_val.npz"))
    );
    assert!(Command::new(root().join(".venv/bin/python")).args(["-c", &script]).status().unwrap().success());
    path
}

/// The run: small batches and a checkpoint every 25 steps (so pruning removes the
/// checkpoint a resumed run was loaded from), 3 epochs of 90 steps.
fn run_args(input: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        s(input),
        "--data",
        s(&train_data()),
        "--out",
        s(out),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--checkpoint-every-steps",
        "25",
        "--seed",
        "5",
    ]
    .iter()
    .chain(&QUIET_ONE_THREAD)
    .map(|a| a.to_string())
    .collect()
}

fn tfload_with_fault(args: &[String], fault: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfload"))
        .args(args)
        .env("TFLOAD_FAULT_AT", fault)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub(crate) fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Every file under `dir` (relative path -> bytes); `metrics.jsonl` with
/// its wall-time fields (`seconds`, `samples_per_sec`) removed.
pub(crate) fn model_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    collect(dir, dir, &mut files);
    if let Some(log) = files.get_mut("metrics.jsonl") {
        *log = without_timings(log);
    }
    files
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            files.insert(relative, std::fs::read(&path).unwrap());
        }
    }
}

fn without_timings(log: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(log).lines() {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(object) = value.as_object_mut() {
            object.remove("seconds");
            object.remove("samples_per_sec");
        }
        out.extend(serde_json::to_vec(&value).unwrap());
        out.push(b'\n');
    }
    out
}

pub(crate) fn assert_same_files(actual: &Path, expected: &Path) {
    let (actual_files, expected_files) = (model_files(actual), model_files(expected));
    assert_eq!(
        actual_files.keys().collect::<Vec<_>>(),
        expected_files.keys().collect::<Vec<_>>(),
        "{} and {} hold different files",
        actual.display(),
        expected.display()
    );
    for (name, bytes) in &expected_files {
        assert!(actual_files[name] == *bytes, "{name} differs between {} and {}", actual.display(), expected.display());
    }
    for required in ["saved_model.pb", "variables/variables.index", "metrics.jsonl"] {
        assert!(actual_files.contains_key(required), "{} has no {required}", actual.display());
    }
}

/// The whole model loads in tfload (signatures, run) and in Python, and Python's outputs equal
/// tfload's.
fn assert_loads_everywhere(dir: &Path, scratch: &Path) {
    let x = val_x(scratch);
    assert_loads_everywhere_with(dir, "inputs", &x, scratch);
}

/// [`assert_loads_everywhere`] for any model: `serving_default` is fed `x` (a `.npy` file) as its
/// input `key`; tfload's outputs go in `scratch/ours`, Python's in `scratch/python.npz`.
pub(crate) fn assert_loads_everywhere_with(dir: &Path, key: &str, x: &Path, scratch: &Path) {
    let listing = tfload_ok(&["signatures", s(dir)]);
    assert!(listing.contains("serving_default") && listing.contains("train_step"), "{listing}");
    let ours = scratch.join("ours");
    tfload_ok(&["run", s(dir), "-i", &format!("{key}={}", s(x)), "--out", s(&ours), "-q"]);
    let python = scratch.join("python.npz");
    let status = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/parity/py_parity.py"))
        .args(["run", s(dir), "serving_default", s(&python), &format!("{key}={}", s(x))])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .status()
        .unwrap();
    assert!(status.success(), "Python's tf.saved_model.load failed on {}", dir.display());
    let script = format!(
        "import numpy as np, sys; a = np.load('{}'); b = np.load('{}')['outputs']; sys.exit(0 if a.shape == b.shape and np.array_equal(a, b) else 1)",
        s(&ours.join("outputs.npy")),
        s(&python)
    );
    let same = Command::new(root().join(".venv/bin/python")).args(["-c", &script]).status().unwrap();
    assert!(same.success(), "Python's outputs of {} differ from tfload's", dir.display());
}

/// An uninterrupted run, the reference for every crash below.
fn straight_run(dir: &Path) -> PathBuf {
    let straight = dir.join("straight");
    tfload_ok(&strs(&run_args(&model("mlp_digits"), &straight)));
    straight
}

fn hidden_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_run_killed_at_each_point_then_resumed_writes_the_uninterrupted_model() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path());
    assert_loads_everywhere(&straight, dir.path());
    // Checkpoints at steps 25, 50, ... and at each epoch end (90, 180, 270): the 5th is step 100,
    // in epoch 2, well after the first checkpoint was pruned away.
    for fault in
        ["checkpoint-built:1", "checkpoint-built:5", "checkpoint-built:12", "model-assembled", "input-copy-removed"]
    {
        let out = dir.path().join(format!("out-{}", fault.replace(':', "-")));
        let args = run_args(&model("mlp_digits"), &out);
        let killed = tfload_with_fault(&args, fault);
        assert_eq!(killed.status.signal(), Some(9), "{fault}: {}", String::from_utf8_lossy(&killed.stderr));
        assert!(!out.exists(), "{fault}: an output appeared before the run completed");
        let mut resume = args.clone();
        resume.push("--resume".into());
        tfload_ok(&strs(&resume));
        assert_same_files(&out, &straight);
        assert!(hidden_leftovers(dir.path()).is_empty(), "{fault}: left {:?}", hidden_leftovers(dir.path()));
        assert!(
            hidden_leftovers(&out.join("checkpoints")).is_empty(),
            "{fault}: left {:?}",
            hidden_leftovers(&out.join("checkpoints"))
        );
        assert!(!dir.path().join(format!("out-{}.partial", fault.replace(':', "-"))).exists());
    }
    let resumed = dir.path().join("out-checkpoint-built-5");
    assert_loads_everywhere(&resumed, dir.path());
}

#[test]
fn an_overwrite_killed_while_replacing_the_output_is_completed_by_resume() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path());
    for fault in ["output-moved-aside", "output-placed"] {
        let out = dir.path().join(format!("out-{fault}"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("old-model.txt"), "the previous output").unwrap();
        let mut args = run_args(&model("mlp_digits"), &out);
        args.push("--overwrite".into());
        let killed = tfload_with_fault(&args, fault);
        assert_eq!(killed.status.signal(), Some(9), "{fault}: {}", String::from_utf8_lossy(&killed.stderr));
        assert!(
            hidden_leftovers(dir.path()).iter().any(|n| n.contains(".tfload-old-")),
            "{fault}: the kill came too late to test anything: {:?}",
            hidden_leftovers(dir.path())
        );
        let mut resume = args.clone();
        resume.push("--resume".into());
        tfload_ok(&strs(&resume));
        assert_same_files(&out, &straight);
        assert!(hidden_leftovers(dir.path()).is_empty(), "{fault}: left {:?}", hidden_leftovers(dir.path()));
    }
}

#[test]
fn a_resume_after_its_checkpoint_was_pruned_writes_the_whole_model() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path());
    let out = dir.path().join("out");
    let args = run_args(&model("mlp_digits"), &out);
    // The reproduction: interrupted after a step checkpoint, resumed; before the fix the
    // output had no saved_model.pb and no assets.
    let killed = tfload_with_fault(&args, "checkpoint-built:3");
    assert_eq!(killed.status.signal(), Some(9));
    let mut resume = args.clone();
    resume.push("--resume".into());
    tfload_ok(&strs(&resume));
    assert_same_files(&out, &straight);
    assert!(out.join("assets.extra").is_dir() || !straight.join("assets.extra").is_dir());
}

#[test]
fn the_input_is_read_once_removing_it_mid_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path());
    let input = dir.path().join("input-model");
    crate::common::copy_dir(&model("mlp_digits"), &input);
    let out = dir.path().join("out");
    let mut args = run_args(&input, &out);
    args[7] = "10".into(); // --epochs 10: long enough to remove the input while it trains
    let child = Command::new(env!("CARGO_BIN_EXE_tfload")).args(&args).stderr(Stdio::piped()).spawn().unwrap();
    let first_checkpoint = PathBuf::from(format!("{}.partial/checkpoints/step-{:09}", s(&out), 25));
    let start = Instant::now();
    while !first_checkpoint.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_dir_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for name in ["saved_model.pb", "assets.extra", "variables/variables.index"] {
        let (ours, theirs) = (out.join(name), straight.join(name));
        assert_eq!(ours.exists(), theirs.exists(), "{name}");
    }
    assert_eq!(
        std::fs::read(out.join("saved_model.pb")).unwrap(),
        std::fs::read(straight.join("saved_model.pb")).unwrap()
    );
    assert_loads_everywhere(&out, dir.path());
}

#[test]
fn a_second_run_on_the_same_output_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = run_args(&model("mlp_digits"), &out);
    args[7] = "200".into();
    let mut first = Command::new(env!("CARGO_BIN_EXE_tfload")).args(&args).stderr(Stdio::null()).spawn().unwrap();
    let log = PathBuf::from(format!("{}.partial/metrics.jsonl", s(&out)));
    let start = Instant::now();
    while !log.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "the first run did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut second = args.clone();
    second.push("--overwrite".into());
    let error = tfload_err(&strs(&second));
    assert!(error.contains("is in use") && error.contains(&format!("process {}", first.id())), "{error}");
    let mut resume = args.clone();
    resume.push("--resume".into());
    assert!(tfload_err(&strs(&resume)).contains("is in use"));
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock died with the process: resuming now works (and is stopped at its first checkpoint).
    let resumed = tfload_with_fault(&resume, "checkpoint-built:1");
    assert_eq!(resumed.status.signal(), Some(9), "{}", String::from_utf8_lossy(&resumed.stderr));
}

/// A tmpfs of `kib` KiB mounted at `dir` for the life of the value (the test machine runs as
/// root); `None` where mounting is not allowed.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, kib: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs", s(dir)])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        mounted.then(|| SmallDisk { dir: dir.to_path_buf() })
    }

    fn grow(&self, kib: u64) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={kib}k"), s(&self.dir)]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_loses_nothing_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path());
    let Some(probe) = SmallDisk::mount(&dir.path().join("probe"), 64) else {
        eprintln!("skipped: mounting a tmpfs is not allowed here (the test needs root)");
        return;
    };
    drop(probe);
    // Disks too small for the first checkpoint, at sizes where the copy of the input, our own
    // writes or TensorFlow's SaveV2 (which writes every value with --full-checkpoints; linked
    // checkpoints write the changed values themselves) hit the limit: a clear error, and nothing
    // left on the disk.
    for full in [false, true] {
        let mut tensorflow_hit_it = false;
        for kib in (140..=176).step_by(4) {
            let disk = SmallDisk::mount(&dir.path().join(format!("disk-{kib}-{full}")), kib).unwrap();
            let mut args = run_args(&model("mlp_digits"), &disk.dir.join("out"));
            if full {
                args.push("--full-checkpoints".into());
            }
            let error = tfload_err(&strs(&args));
            assert!(error.to_lowercase().contains("no space left on"), "{kib} KiB: {error}");
            assert!(
                !error.contains("allocated tensors") && !error.contains("(os error 28): No space"),
                "{kib} KiB: {error}"
            );
            tensorflow_hit_it |= error.contains("while saving variables");
            let left: Vec<_> = std::fs::read_dir(&disk.dir).unwrap().flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "{kib} KiB: a failed run before its first checkpoint left {left:?}");
        }
        assert!(tensorflow_hit_it || !full, "no disk size made TensorFlow's save fail; adjust the sizes");
    }

    // Room for checkpoints but not for the final model: the last good checkpoint is kept, and
    // resuming once there is room writes the uninterrupted run's model.
    let disk = SmallDisk::mount(&dir.path().join("disk-large"), 600).unwrap();
    let out = disk.dir.join("out");
    let args = run_args(&model("mlp_digits"), &out);
    let error = tfload_err(&strs(&args));
    assert!(error.contains("The disk is full") && error.contains("--resume"), "{error}");
    assert!(!out.exists());
    disk.grow(8192);
    let mut resume = args.clone();
    resume.push("--resume".into());
    tfload_ok(&strs(&resume));
    assert_same_files(&out, &straight);
}

fn folder_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| if e.path().is_dir() { folder_size(&e.path()) } else { e.metadata().unwrap().len() })
        .sum()
}

#[test]
fn a_completed_output_holds_the_model_and_metrics_unless_checkpoints_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path());
    let mut names: Vec<_> =
        std::fs::read_dir(&straight).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["assets", "metrics.jsonl", "saved_model.pb", "variables"]);
    let model_size = folder_size(&model("mlp_digits"));
    let out_size = folder_size(&straight) - std::fs::metadata(straight.join("metrics.jsonl")).unwrap().len();
    println!("model {model_size} bytes, output without metrics.jsonl {out_size} bytes");
    assert!(out_size <= model_size, "the output ({out_size} bytes) is larger than the model ({model_size} bytes)");

    let kept = dir.path().join("kept");
    let mut args = run_args(&model("mlp_digits"), &kept);
    args.extend(["--keep-checkpoints".to_string(), "3".to_string()]);
    tfload_ok(&strs(&args));
    let steps = std::fs::read_dir(kept.join("checkpoints")).unwrap().count();
    assert_eq!(steps, 3, "--keep-checkpoints 3 keeps three step checkpoints in the output");
    assert_eq!(
        std::fs::read(kept.join("variables/variables.index")).unwrap(),
        std::fs::read(straight.join("variables/variables.index")).unwrap()
    );
}

#[test]
fn the_output_is_checked_before_the_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken");
    std::fs::create_dir(&out).unwrap();
    let missing = dir.path().join("no-such-data.npz");
    let mlp = model("mlp_digits");
    let error = tfload_err(&["train", s(&mlp), "--data", s(&missing), "--out", s(&out), "--epochs", "1"]);
    assert!(error.contains("already exists") && !error.contains("no-such-data"), "{error}");
    let resume = dir.path().join("never-started");
    let error = tfload_err(&["train", s(&mlp), "--data", s(&missing), "--out", s(&resume), "--resume"]);
    assert!(error.contains("no unfinished run") && !error.contains("no-such-data"), "{error}");
}

/// The data shards of the bundle in `dir/variables`.
pub(crate) fn data_shards(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("variables"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with("variables.data-"))
        .collect();
    names.sort();
    names
}

#[test]
fn checkpoints_that_link_the_frozen_values_write_the_same_model_and_load_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (linked, full) = (dir.path().join("linked"), dir.path().join("full"));
    let mut args = run_args(&model("mlp_digits"), &linked);
    args.extend(["--keep-checkpoints".to_string(), "2".to_string()]);
    tfload_ok(&strs(&args));
    let mut args = run_args(&model("mlp_digits"), &full);
    args.extend(["--keep-checkpoints".to_string(), "2".to_string(), "--full-checkpoints".to_string()]);
    tfload_ok(&strs(&args));

    // The trained model is one shard, file for file what full checkpoints give.
    let model_only = |out: &Path| {
        let copy = dir.path().join(format!("{}-model", out.file_name().unwrap().to_string_lossy()));
        let files = ["saved_model.pb", "metrics.jsonl", "assets/tfload_contract.json", "variables/variables.index"];
        for file in files.into_iter().chain(["variables/variables.data-00000-of-00001"]) {
            std::fs::create_dir_all(copy.join(file).parent().unwrap()).unwrap();
            std::fs::copy(out.join(file), copy.join(file)).unwrap();
        }
        copy
    };
    assert_eq!(data_shards(&linked), ["variables.data-00000-of-00001"]);
    assert_same_files(&model_only(&linked), &model_only(&full));

    // A kept checkpoint holds the input's frozen values in a shard shared with the others (one
    // file on disk) and the changed values in its own; it is a SavedModel that tfload and Python
    // load, giving the outputs of the full checkpoint of the same step.
    let steps = |out: &Path| {
        let mut names: Vec<PathBuf> =
            std::fs::read_dir(out.join("checkpoints")).unwrap().flatten().map(|e| e.path()).collect();
        names.sort();
        names
    };
    let (linked_steps, full_steps) = (steps(&linked), steps(&full));
    assert_eq!(linked_steps.len(), 2);
    let base_shard = |step: &Path| std::fs::metadata(step.join("variables/variables.data-00000-of-00002")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        base_shard(&linked_steps[0]).ino(),
        base_shard(&linked_steps[1]).ino(),
        "the frozen values are one file"
    );
    for (at, (linked_step, full_step)) in linked_steps.iter().zip(&full_steps).enumerate() {
        assert_eq!(linked_step.file_name(), full_step.file_name());
        assert_eq!(data_shards(linked_step).len(), 2, "{}", linked_step.display());
        assert_eq!(data_shards(full_step).len(), 1, "{}", full_step.display());
        let scratch = dir.path().join(format!("scratch-{at}"));
        std::fs::create_dir_all(&scratch).unwrap();
        assert_loads_everywhere(linked_step, &scratch);
        let x = val_x(&scratch);
        let outputs = |step: &Path, name: &str| {
            let out = scratch.join(name);
            tfload_ok(&["run", s(step), "-i", &format!("inputs={}", s(&x)), "--out", s(&out), "-q"]);
            std::fs::read(out.join("outputs.npy")).unwrap()
        };
        assert!(outputs(linked_step, "from-linked") == outputs(full_step, "from-full"), "{}", linked_step.display());
    }
}
