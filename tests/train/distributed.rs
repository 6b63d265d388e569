//! Multi-worker training on loopback (issue 20): 2 and 3 tasks train exactly as one process on
//! the global batch, every task ends with the same weights, the chief's output loads in Python
//! with the weights and outputs tfload has; a task killed mid-run makes the others fail with a
//! clear message within a bounded time, and `--resume` on all tasks ends where an uninterrupted
//! run ends. Model: saved_models/mlp_allreduce (scripts/fixtures/make_allreduce_mlp.py).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tfload::train::distributed::local::free_loopback_addresses;
use tfload::{SessionConfig, TensorData, Tensors};

use crate::common::{model, python_json, root, s, tfload};
use crate::train_parity::step_losses;

const EPOCHS: &str = "2";
const BATCH: &str = "24";

fn data(name: &str) -> PathBuf {
    root().join("saved_models/data").join(name)
}

/// `tfload train` of the allreduce MLP into `out` with the tests' settings plus `extra`.
fn train_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", s_static(&model("mlp_allreduce")), "--data", s_static(&data("digits_5_9_train.npz"))];
    args.extend(["--out", s(out), "--epochs", EPOCHS, "--batch-size", BATCH, "--seed", "3", "--quiet"]);
    args.extend_from_slice(extra);
    args
}

/// A path as a `'static` str (leaked: a few per test).
fn s_static(path: &Path) -> &'static str {
    Box::leak(path.to_str().expect("utf-8 path").to_string().into_boxed_str())
}

fn ok(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Python's view of a trained model: mask variables, `iterations`, outputs on 16 examples.
fn python_view(dir: &Path) -> Value {
    python_json("parity/distributed_reference.py", &[s(dir), s(&data("digits_5_9_val.npz")), "16"])
}

/// Every number in `value` (nested arrays and objects, objects in key order).
fn numbers(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(numbers).collect(),
        Value::Object(map) => map.values().flat_map(numbers).collect(),
        other => vec![other.as_f64().expect("a number")],
    }
}

fn assert_close(what: &str, ours: &Value, theirs: &Value, tolerance: f64) {
    let (a, b) = (numbers(ours), numbers(theirs));
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst <= tolerance, "{what}: max difference {worst:e} > {tolerance:e}");
}

fn variables_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("variables/variables.data-00000-of-00001")).unwrap()
}

/// tfload's own outputs of the SavedModel in `dir` on the first 16 validation examples.
fn tfload_outputs(dir: &Path) -> Value {
    let x = tfload::formats::npy::read_npz(&data("digits_5_9_val.npz"), Some("x")).unwrap();
    let TensorData::Float32(x) = x else { panic!("float32 x") };
    let first = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..16)).to_owned();
    let predictor =
        tfload::infer::predict::Predictor::load(dir, &["serve"], "serving_default", SessionConfig::default()).unwrap();
    let out = predictor.run(&Tensors::from([("inputs".to_string(), TensorData::Float32(first))])).unwrap();
    let values: Vec<f32> = out["outputs"].to_f32().unwrap().iter().copied().collect();
    serde_json::json!(values)
}

#[test]
fn two_and_three_workers_train_as_one_process_on_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    ok(tfload(&train_args(&single, &["--drop-remainder"])), "single-process training");
    let reference = python_view(&single);
    let reference_losses = step_losses(&single);
    for workers in ["2", "3"] {
        let out = dir.path().join(format!("workers{workers}"));
        let dumps = dir.path().join(format!("dumps{workers}"));
        let output = Command::new(env!("CARGO_BIN_EXE_tfload"))
            .args(train_args(&out, &["--local-workers", workers]))
            .env("TFLOAD_WORKER_WEIGHTS_DIR", &dumps)
            .output()
            .unwrap();
        ok(output, &format!("{workers} workers"));
        let losses = step_losses(&out);
        assert_eq!(losses.len(), reference_losses.len(), "{workers} workers: steps");
        assert_close(
            &format!("{workers} workers: per-step losses"),
            &losses.into(),
            &reference_losses.clone().into(),
            1e-5,
        );
        // The chief's output, as Python reads it, against one process's.
        let view = python_view(&out);
        assert_eq!(view["iterations"], reference["iterations"]);
        assert_close(&format!("{workers} workers: weights"), &view["weights"], &reference["weights"], 1e-5);
        // ... and Python's outputs of it against tfload's.
        assert_close(
            &format!("{workers} workers: Python vs tfload outputs"),
            &view["outputs"],
            &tfload_outputs(&out),
            1e-6,
        );
        // Every other task ended with the chief's weights, bit for bit.
        let chief = variables_bytes(&out);
        for rank in 1..workers.parse::<usize>().unwrap() {
            assert!(
                variables_bytes(&dumps.join(format!("rank-{rank}"))) == chief,
                "{workers} workers: rank {rank} differs"
            );
        }
        assert!(!out.join("checkpoints").exists() && out.join("metrics.jsonl").is_file());
    }
}

/// Starts task `index` of `cluster` on its own (as on a machine of its own).
fn start_task(out: &Path, cluster: &str, index: usize, extra: &[&str], fault: Option<&str>) -> Child {
    spawn_task(train_args(out, extra), cluster, index, fault)
}

/// Runs `tfload ARGS --cluster CLUSTER --task-index INDEX`, dying at the fault point `fault`.
fn spawn_task(args: Vec<&str>, cluster: &str, index: usize, fault: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tfload"));
    command
        .args(&args)
        .args(["--cluster", cluster, "--task-index", &index.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("TF_CONFIG");
    if let Some(point) = fault {
        command.env("TFLOAD_FAULT_AT", point);
    }
    command.spawn().unwrap()
}

/// Waits for `child` at most `limit`; its output and how long it took.
fn wait_bounded(mut child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("a task still ran {limit:?} after it should have ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn a_killed_worker_stops_the_others_clearly_and_resume_ends_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    ok(tfload(&train_args(&whole, &["--local-workers", "2", "--checkpoint-every-steps", "4"])), "uninterrupted run");

    let out = dir.path().join("killed");
    let cluster = free_loopback_addresses(2).unwrap().join(",");
    let chief = start_task(&out, &cluster, 0, &["--checkpoint-every-steps", "4"], None);
    // Task 1 dies by SIGKILL right after its 10th step, as `kill -9` would.
    let victim = start_task(&out, &cluster, 1, &["--checkpoint-every-steps", "4"], Some("step-done:10"));
    let (victim, _) = wait_bounded(victim, Duration::from_secs(120));
    assert!(!victim.status.success());
    let (chief, took) = wait_bounded(chief, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&chief.stderr);
    assert!(!chief.status.success(), "the chief went on without its peer:\n{stderr}");
    assert!(took < Duration::from_secs(30), "the chief took {took:?} to notice");
    assert!(stderr.contains("task worker:0 at") && stderr.contains("left the cluster"), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Every task restarted with --resume continues from the chief's last checkpoint.
    let cluster = free_loopback_addresses(2).unwrap().join(",");
    let tasks: Vec<Child> =
        (0..2).map(|i| start_task(&out, &cluster, i, &["--checkpoint-every-steps", "4", "--resume"], None)).collect();
    for task in tasks {
        ok(wait_bounded(task, Duration::from_secs(120)).0, "resumed task");
    }
    assert_eq!(step_losses(&out).len(), step_losses(&whole).len(), "the resumed run's log");
    assert!(variables_bytes(&out) == variables_bytes(&whole), "resumed weights differ from the uninterrupted run's");
    // Resuming a completed run again: every task sees it is done (no handshake to wait for).
    let started = Instant::now();
    let again = ok(
        tfload(&train_args(&out, &["--local-workers", "2", "--checkpoint-every-steps", "4", "--resume"])),
        "resume of a completed run",
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("had already completed"));
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

#[test]
fn cluster_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A model exported before train_step_allreduce existed.
    let mut args = train_args(&out, &["--local-workers", "2"]);
    args[1] = s_static(&model("mlp_digits"));
    let old = tfload(&args);
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(!old.status.success() && stderr.contains("no `train_step_allreduce`"), "{stderr}");
    assert!(stderr.contains("Export it again"), "{stderr}");
    // A global batch that does not split evenly.
    let mut args = train_args(&out, &["--local-workers", "2"]);
    let at = args.iter().position(|a| *a == "--batch-size").unwrap();
    args[at + 1] = "25";
    let uneven = tfload(&args);
    let stderr = String::from_utf8_lossy(&uneven.stderr);
    assert!(!uneven.status.success() && stderr.contains("must divide into 2 equal shards"), "{stderr}");
    // TF_CONFIG that is not JSON, and one that lacks this task.
    for (config, expected) in [
        ("{nope", "TF_CONFIG) is not valid"),
        (r#"{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}"#, "has no task worker:3"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tfload"))
            .args(train_args(&out, &[]))
            .env("TF_CONFIG", config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{config}: {stderr}");
    }
    // A task whose peers never come: the watchdog ends it.
    let cluster = free_loopback_addresses(2).unwrap().join(",");
    let alone = start_task(&out, &cluster, 1, &["--startup-timeout", "3"], None);
    let (alone, took) = wait_bounded(alone, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(!alone.status.success() && stderr.contains("did not all join within 3 s"), "{stderr}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // Two tasks given clusters of different sizes: TensorFlow's group-size mismatch, named.
    let addresses = free_loopback_addresses(3).unwrap();
    let small = start_task(&out, &addresses[..2].join(","), 0, &["--startup-timeout", "30"], None);
    let large = start_task(&out, &addresses.join(","), 1, &["--startup-timeout", "30"], None);
    for task in [small, large] {
        let (output, _) = wait_bounded(task, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("group-size mismatch"), "{stderr}");
    }
    assert!(!out.join("saved_model.pb").exists());
}

#[test]
fn a_stalled_worker_is_named_after_the_all_reduce_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("mlp_timeout8");
    let status = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/fixtures/make_allreduce_mlp.py"))
        .args(["--out", s(&short), "--timeout", "8"])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    ok(status, "exporting with an 8 s all-reduce timeout");
    let out = dir.path().join("out");
    let cluster = free_loopback_addresses(2).unwrap().join(",");
    let mut tasks = Vec::new();
    for index in 0..2 {
        let mut args = train_args(&out, &["--checkpoint-every-steps", "5"]);
        args[1] = s(&short);
        let at = args.iter().position(|a| *a == "--epochs").unwrap();
        args[at + 1] = "1000";
        tasks.push(spawn_task(args, &cluster, index, None));
    }
    // Once training runs (the chief's log grows), task 1 stops stepping without dying.
    let log = PathBuf::from(format!("{}.partial", out.display())).join("metrics.jsonl");
    let started = Instant::now();
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "training did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stalled = tasks.pop().unwrap();
    // SAFETY: kill(2) on the pid of a child this test started and has not yet reaped.
    unsafe { libc::kill(stalled.id() as i32, libc::SIGSTOP) };
    let (chief, took) = wait_bounded(tasks.pop().unwrap(), Duration::from_secs(60));
    // SAFETY: as above; SIGKILL ends the stopped child.
    unsafe { libc::kill(stalled.id() as i32, libc::SIGKILL) };
    let _ = wait_bounded(stalled, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&chief.stderr);
    assert!(!chief.status.success() && stderr.contains("within the all-reduce timeout"), "{stderr}");
    assert!(took < Duration::from_secs(40), "{took:?}");
}
