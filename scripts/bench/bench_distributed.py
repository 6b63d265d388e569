"""Multi-worker training benchmark (issue 20): `tfload train --local-workers N` beside Python's
`MultiWorkerMirroredStrategy` on the same cluster shape (Keras 3's `fit` fails under it with
more than one worker, so TensorFlow's documented custom loop with the same Keras model and Adam) (N processes on loopback,
TF_CONFIG), for N = 1, 2, 3 and two model sizes; plus the cost of the one all-reduce per step,
measured alone (a `CollectiveReduceV2` of the step's packed volume between N TensorFlow servers),
and, on paper, the scaling across machines that volume implies at a stated bandwidth.

Same model (digits MLP, Adam), data (digits 5-9 tiled), global batch and epochs for both; the
first epoch of every run is a warm-up and left out. A figure is the median per-step time over the
timed epochs of the chief. All N tasks share this machine's 2 cores, so N > 1 cannot be faster
here: the point is the overhead against Python's way, and the measured all-reduce volume.

Run: .venv/bin/python scripts/bench/bench_distributed.py [--tfload target/debug/tfload] [--output BENCHMARKS.md]
     (or through scripts/bench/bench.py --only distributed, with the release binary)
Worker modes (used by the above, one process per task, TF_CONFIG set):
     bench_distributed.py keras HIDDEN DATA.npz BATCH EPOCHS
     bench_distributed.py allreduce FLOATS ITERATIONS
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import PYTHON, ROOT, fixture_script, release_bin  # noqa: E402

OUT = os.path.join(ROOT, "bench-out", "distributed")
EXAMPLES = 2048
BATCH = 240            # divisible by 1, 2 and 3 tasks
EPOCHS = 4             # 1 warm-up + 3 timed
SIZES = {"small": [32], "large": [1024, 1024]}   # hidden widths: ~2.2 K and ~1.1 M parameters
WORKERS = [1, 2, 3]
BANDWIDTH_GBIT = 10.0
THIS_SCRIPT = os.path.abspath(__file__)


def free_ports(n):
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return [f"localhost:{p}" for p in ports]


def tf_configs(n):
    addresses = free_ports(n)
    return [json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}}) for i in range(n)]


def data_path():
    import numpy as np
    path = os.path.join(OUT, f"digits_{EXAMPLES}.npz")
    if not os.path.exists(path):
        d = np.load(os.path.join(ROOT, "saved_models", "data", "digits_5_9_train.npz"))
        reps = -(-EXAMPLES // len(d["y"]))
        np.savez(path, x=np.tile(d["x"], (reps, 1, 1, 1))[:EXAMPLES], y=np.tile(d["y"], reps)[:EXAMPLES])
    return path


def export(size):
    path = os.path.join(OUT, f"mlp_{size}")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        subprocess.run([PYTHON, os.path.join(ROOT, "scripts", "fixtures", "make_allreduce_mlp.py"), "--out", path,
                        "--hidden", ",".join(map(str, SIZES[size])), "--timeout", "300"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def parameters(model_dir):
    with open(os.path.join(model_dir, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    count = 0
    for v in record["mask_variables"]:
        n = 1
        for d in v["shape"]:
            n *= d
        count += n
    return count, len(record["metrics"])


def tfload_step_ms(tfload, model_dir, data, workers, cluster=True):
    """Per-step ms of the chief; `workers` 1 without `cluster` is one plain process."""
    out = os.path.join(OUT, f"tfload_{os.path.basename(model_dir)}_{workers}")
    shutil.rmtree(out, ignore_errors=True)
    command = [tfload, "train", model_dir, "--data", data, "--out", out, "--epochs", str(EPOCHS),
               "--batch-size", str(BATCH), "--quiet"]
    command += ["--local-workers", str(workers)] if cluster else ["--drop-remainder"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps = EXAMPLES // BATCH
    with open(os.path.join(out, "metrics.jsonl")) as f:
        epochs = [json.loads(line) for line in f if '"event":"epoch"' in line]
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(e["seconds"] / steps * 1000 for e in epochs[1:])


def run_tasks(args, workers):
    """Runs this script's worker mode ARGS as `workers` tasks; the chief's JSON answer."""
    procs = []
    for config in tf_configs(workers):
        env = dict(os.environ, TF_CONFIG=config, TF_CPP_MIN_LOG_LEVEL="3")
        procs.append(subprocess.Popen([PYTHON, THIS_SCRIPT, *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{args} as {workers} tasks failed: {[p.returncode for p in procs]}")
    return json.loads(outputs[0].strip().splitlines()[-1])


def keras_worker(hidden, data, batch, epochs):
    """MultiWorkerMirroredStrategy training of the same Keras model. Keras 3's `fit` fails under
    this strategy with more than one worker ("unsupported type PerReplica", keras-team/keras#20585,
    tensorflow/tensorflow#72388), so this is TensorFlow's documented custom loop instead:
    `strategy.run` of a `tf.function` step on the distributed data set, Keras's Adam applying
    the all-reduced gradients."""
    import numpy as np
    import tensorflow as tf
    import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    d = np.load(data)
    x, y = d["x"].astype(np.float32), d["y"]
    steps = len(y) // int(batch)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(int(batch), drop_remainder=True).repeat()
    dataset = strategy.experimental_distribute_dataset(dataset.with_options(options))
    with strategy.scope():
        mlp = fixture_script("make_allreduce_mlp").build([int(h) for h in hidden.split(",")])
        optimizer = keras.optimizers.Adam(0.01)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction="none")

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = loss_fn(yb, mlp(xb / 255.0, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=int(batch))
        grads = tape.gradient(loss, mlp.trainable_variables)
        optimizer.apply_gradients(zip(grads, mlp.trainable_variables))
        return loss

    @tf.function
    def step(xb, yb):
        losses = strategy.run(replica_step, args=(xb, yb))
        return strategy.reduce("SUM", losses, axis=None)

    iterator = iter(dataset)
    times = []
    for _ in range(int(epochs)):
        started = time.perf_counter()
        for _ in range(steps):
            step(*next(iterator))
        times.append(time.perf_counter() - started)
    print(json.dumps({"step_ms": statistics.median(t / steps * 1000 for t in times[1:])}))


def allreduce_worker(floats, iterations):
    """Times CollectiveReduceV2 of FLOATS float32 between the TF_CONFIG tasks (TF1 sessions on
    their servers, the settings tfload uses)."""
    import tensorflow as tf

    config = json.loads(os.environ["TF_CONFIG"])
    n, index = len(config["cluster"]["worker"]), config["task"]["index"]
    session_config = tf.compat.v1.ConfigProto(device_filters=[f"/job:worker/task:{index}"])
    session_config.experimental.collective_group_leader = "/job:worker/replica:0/task:0"
    server = tf.distribute.Server(tf.train.ClusterSpec(config["cluster"]), job_name="worker", task_index=index,
                                  config=session_config)
    with tf.Graph().as_default() as graph:
        value = tf.ones([int(floats)], tf.float32)
        reduced = tf.raw_ops.CollectiveReduceV2(input=value, group_size=n, group_key=1, instance_key=1,
                                                ordering_token=[], merge_op="Add", final_op="Div",
                                                communication_hint="ring", timeout_seconds=120.0)
        total = tf.reduce_sum(reduced)
    with tf.compat.v1.Session(server.target, graph=graph, config=session_config) as session:
        for _ in range(3):
            session.run(total)
        times = []
        for _ in range(int(iterations)):
            started = time.perf_counter()
            session.run(total)
            times.append(time.perf_counter() - started)
    print(json.dumps({"ms": statistics.median(times) * 1000}))


def bench_distributed(tfload=None):
    tfload = tfload or release_bin()
    os.makedirs(OUT, exist_ok=True)
    data = data_path()
    load = os.getloadavg()[0]
    rows, one_task = [], []
    for size in SIZES:
        model_dir = export(size)
        one_task.append(f"{size} {tfload_step_ms(tfload, model_dir, data, 1):.2f} ms")
        params, metrics = parameters(model_dir)
        volume = (params + 1 + metrics) * 4
        base = None
        for workers in WORKERS:
            ours = tfload_step_ms(tfload, model_dir, data, workers, cluster=workers > 1)
            theirs = run_tasks(["keras", ",".join(map(str, SIZES[size])), data, str(BATCH), str(EPOCHS)],
                               workers)["step_ms"]
            reduce_ms = run_tasks(["allreduce", str(params + 1 + metrics), "30"], workers)["ms"] if workers > 1 else 0.0
            base = base if base is not None else ours
            # Across machines: each task computes its shard (1/N of the one-process step) and
            # a ring all-reduce moves 2 (N-1)/N of the volume per task over the link.
            wire_ms = 2 * (workers - 1) / workers * volume * 8 / (BANDWIDTH_GBIT * 1e9) * 1000
            expected = base / workers + wire_ms
            rows.append([f"{size} ({params:,} params)", workers, f"{ours:.2f}", f"{theirs:.2f}",
                         f"{theirs / ours:.2f}x", f"{volume / 1e6:.3f} MB", f"{reduce_ms:.2f}",
                         f"{expected:.2f} ({base / expected:.2f}x)" if workers > 1 else "-"])
    shutil.rmtree(os.path.join(OUT, "last"), ignore_errors=True)
    return {
        "title": "Multi-worker training",
        "what": (f"`tfload train --local-workers N` beside `MultiWorkerMirroredStrategy` (N processes, TF_CONFIG, "
                 f"loopback; Keras 3's `fit` fails under it with more than one worker, keras-team/keras#20585, so "
                 f"TensorFlow's custom loop: `strategy.run` of a `tf.function` step, Keras's Adam), same MLP (Adam), {EXAMPLES} digits, global batch {BATCH}, {EPOCHS - 1} timed "
                 f"epochs; per-step time of the chief in ms. All tasks share this machine's cores, so N > 1 is "
                 f"slower here by design. All-reduce: one CollectiveReduceV2 of the step's packed volume (gradients, "
                 f"loss, metrics) between N servers, measured alone. Across machines: one-process step / N + the "
                 f"ring's 2(N-1)/N x volume at {BANDWIDTH_GBIT:g} Gbit/s (compute assumed to split evenly, latency "
                 f"ignored). Load average at start: {load:.1f} (the machine is shared with other agents; the "
                 f"ratios in one row are measured minutes apart and carry that noise)."),
        "header": ["model", "tasks", "tfload ms/step", "MWMS loop ms/step", "MWMS / tfload", "all-reduce volume",
                   "all-reduce ms (loopback)", f"expected ms/step on N machines at {BANDWIDTH_GBIT:g} Gbit/s (speed-up)"],
        "rows": rows,
        "target": "tfload's per-step time at or below Python's for every cluster shape",
        "notes": (f"tfload binary: {os.path.relpath(tfload, ROOT)}. A one-task cluster (`--local-workers 1`: the gRPC session and a "
                  f"group-of-one reduce, nothing exchanged) takes {', '.join(one_task)} per step: the gRPC session's "
                  f"per-step cost, part of every N > 1 figure. Load average at the end: {os.getloadavg()[0]:.1f}."),
    }


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "keras":
        return keras_worker(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "allreduce":
        return allreduce_worker(*sys.argv[2:])
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tfload", default=release_bin())
    parser.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(THIS_SCRIPT))
    import bench
    result = bench_distributed(os.path.abspath(args.tfload))
    command = ".venv/bin/python scripts/bench/bench_distributed.py"
    text = bench.render([result], command)
    if os.path.exists(args.output):
        with open(args.output) as f:
            old = f.read()
        # Only this section changes; the preamble (how to re-run everything) stays.
        preamble, _ = bench.split_sections(old)
        _, sections = bench.split_sections(bench.merge_sections(old, text))
        text = "\n".join([preamble.rstrip("\n"), ""] + [b.rstrip("\n") + "\n" for _, b in sections])
    with open(args.output, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
