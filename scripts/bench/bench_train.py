"""Training benchmarks for scripts/bench/bench.py: tfload train beside Keras fit, Python calling the
exported train_step, and the bare Rust Session::run loop (examples/train_floor.rs), on the same
model, data, batch size, thread settings and number of steps, interleaved in one run.

Every way runs in its own process, one after the other in rotating order, round after round;
each process runs a warm-up epoch (left out) and then timed epochs. A figure is the median over
rounds of the per-process median epoch; a ratio is the median over rounds of the ratio between
processes of the same round (neighbours in time, so drift of the shared machine's load cancels).
Peak RSS comes from GNU time around each process (scripts/bench/peak_rss.py).

Also runnable alone, as the worker of the Python ways:
    .venv/bin/python scripts/bench/bench_train.py keras|signature MODEL_KIND DIR DATA.npz BATCH EPOCHS
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import peak_rss

from common import (PYTHON, ROOT, export_once, fixture_script, is_current_export, release_bin, release_example,
                    run_logged)

OUT = os.path.join(ROOT, "bench-out", "train")

# (name, model kind, batch sizes); MODEL_DIRS and data below.
ROUNDS = 2
TINY_EXAMPLES = 16384        # tiled digits: 256 steps per epoch at batch 64, 64 at batch 256
TINY_EPOCHS = 5              # 1 warm-up + 4 timed
LAYER_CYCLES = 7             # train_floor --mode layers: 1 warm-up cycle + 6 timed
MOBILENET_LAYER_CYCLES = 5   # 1 warm-up + 4 (a cycle is ~15 s)
MOBILENET_EXAMPLES = 512     # random 96x96x3 images: 8 steps per epoch at batch 64
MOBILENET_EPOCHS = 5         # 1 warm-up + 4 timed
MOBILENET_ROUNDS = 2
MOBILENET_EXTRA_ROUNDS = 2   # and of tfload and the floor only (a step is ~0.2 s: the ratio is noisy)
RUST_EXTRA_ROUNDS = 4        # tiny models: more rounds of only tfload and the floor (seconds each)
MOBILENET_ARGS = ["--application", "MobileNetV2", "--input-shape", "96,96,3", "--alpha", "0.35",
                  "--num-classes", "5", "--optimizer", "adam", "--learning-rate", "0.001"]
LEARNING_RATES = {"mlp": 0.05, "cnn": 0.01, "mobilenet": 0.001}   # the exported records' defaults


# --------------------------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------------------------

def digits_data():
    """The committed digits 5-9 (raw pixels 0..255, labels 0..4) tiled to TINY_EXAMPLES rows."""
    import numpy as np

    path = os.path.join(OUT, f"digits_tiled_{TINY_EXAMPLES}.npz")
    if not os.path.exists(path):
        d = np.load(os.path.join(ROOT, "saved_models", "data", "digits_5_9_train.npz"))
        reps = -(-TINY_EXAMPLES // len(d["y"]))
        np.savez(path, x=np.tile(d["x"], (reps, 1, 1, 1))[:TINY_EXAMPLES].astype(np.float32),
                 y=np.tile(d["y"], reps)[:TINY_EXAMPLES].astype(np.int64))
    return path


def image_data():
    """MOBILENET_EXAMPLES random 96x96x3 images (integer pixels 0..255 as float32), 5 classes."""
    import numpy as np

    path = os.path.join(OUT, f"images_96_{MOBILENET_EXAMPLES}.npz")
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        np.savez(path, x=rng.integers(0, 256, (MOBILENET_EXAMPLES, 96, 96, 3)).astype(np.float32),
                 y=rng.integers(0, 5, MOBILENET_EXAMPLES).astype(np.int64))
    return path


def digits_models():
    """The digits models of scripts/fixtures/make_digits_models.py (the committed mlp_digits and
    cnn_digits), made again at bench time by the current exporter into OUT/digits_models: the
    committed ones were exported before the branching train_step. Returns that folder."""
    path = os.path.join(OUT, "digits_models")
    if not all(is_current_export(os.path.join(path, m)) for m in ("mlp_digits", "cnn_digits")):
        subprocess.run([PYTHON, os.path.join(ROOT, "scripts", "fixtures", "make_digits_models.py"), "--out", path],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def mobilenet_model():
    """MobileNetV2 alpha 0.35, 96x96x3, new 5-class head, Adam, exported at bench time."""
    return export_once(os.path.join(OUT, "mobilenetv2_035_96"), MOBILENET_ARGS)


def keras_model(kind, jit_compile=False):
    """The Keras model that the exported `kind` was made from, compiled with the same optimizer
    (and with XLA when `jit_compile`; Keras leaves it off on CPU-only machines by default)."""
    import keras
    import tfload_export as te

    mdm = fixture_script("make_digits_models")

    keras.utils.set_random_seed(0)
    if kind == "mlp":
        model = mdm.build_mlp(keras)
        optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATES[kind], momentum=0.9)
    elif kind == "cnn":
        model = mdm.build_cnn_base_with_head(keras)
        optimizer = keras.optimizers.Adam(learning_rate=LEARNING_RATES[kind])
    else:
        base = te.build_application("MobileNetV2", (96, 96, 3), alpha=0.35, include_top=False)
        model, _ = te.replace_head(base, 5, whole_model_is_base=True)
        optimizer = keras.optimizers.Adam(learning_rate=LEARNING_RATES[kind])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit_compile)
    return model


def xla_model(kind):
    """An untrained twin of the committed `kind` model exported with `--jit-compile` (XLA
    train_step): same architecture, optimizer and preprocessing (make_digits_models.export_twin)."""
    path = os.path.join(OUT, f"{kind}_xla")
    if not is_current_export(path):
        subprocess.run([PYTHON, os.path.join(ROOT, "scripts", "fixtures", "make_digits_models.py"), "--twin", kind, "--jit-compile",
                        "--out", path], check=True, stdout=subprocess.DEVNULL)
    return path


# --------------------------------------------------------------------------------------------
# Workers (the Python ways), each printing one JSON line per epoch
# --------------------------------------------------------------------------------------------

def print_epoch(epoch, seconds, samples):
    print(json.dumps({"event": "epoch", "epoch": epoch, "seconds": seconds, "samples_per_sec": samples / seconds}),
          flush=True)


def freeze_keras(model, trainable):
    """`layer.trainable = False` on every layer not named in `trainable` (comma-separated names,
    `@head` for the last layer), the tutorial's way of freezing; "all" leaves every layer trainable."""
    if trainable == "all":
        return
    names = {model.layers[-1].name if name == "@head" else name for name in trainable.split(",")}
    for layer in model.layers:
        layer.trainable = layer.name in names


def worker_keras(kind, data, batch, epochs, jit_compile=False, trainable="all", intra_op_threads=0):
    """Keras `fit`, the tutorial's way: preprocessed arrays in memory, shuffled each epoch; the
    layers outside `trainable` frozen (see freeze_keras) before compiling. `intra_op_threads`
    other than 0 sets TensorFlow's intra-op pool (what tfload picks for a small step)."""
    import numpy as np
    import keras
    import tensorflow as tf

    if intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)

    d = np.load(data)
    x = d["x"] / 255.0 if kind != "mobilenet" else d["x"] / 127.5 - 1.0   # what the export bakes in
    x, y = x.astype(np.float32), d["y"]
    model = keras_model(kind, jit_compile)
    if trainable != "all":
        freeze_keras(model, trainable)
        model.compile(optimizer=model.optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=jit_compile)

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print_epoch(epoch + 1, time.perf_counter() - self.started, len(y))

    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[EpochTimer()])


def worker_signature(model_dir, data, batch, epochs):
    """The exported `train_step` called from Python on tensors built once, loss read every step."""
    import numpy as np
    import tensorflow as tf

    with open(os.path.join(model_dir, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    d = np.load(data)
    steps = len(d["y"]) // batch
    batches = [(tf.constant(d["x"][i * batch:(i + 1) * batch]), tf.constant(d["y"][i * batch:(i + 1) * batch]))
               for i in range(steps)]
    train_step = tf.saved_model.load(model_dir).signatures["train_step"]
    key = record["inputs"][0]["key"]
    mask = tf.ones([len(record["mask_variables"])], tf.float32)   # --train-all
    lr = tf.constant(record["learning_rate"]["default"], tf.float32)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        for x, y in batches:
            out = train_step(**{key: x, "labels": y, "mask": mask, "learning_rate": lr})
            float(out["loss"])
        print_epoch(epoch, time.perf_counter() - started, steps * batch)


# --------------------------------------------------------------------------------------------
# Running and measuring processes
# --------------------------------------------------------------------------------------------

def run_measured(command):
    """Runs a command; returns (stdout, wall seconds, peak RSS in MiB) of that process."""
    report = os.path.join(OUT, "last_peak_rss.txt")
    stdout, wall = run_logged(peak_rss.under_time(command, report), OUT)
    return stdout, wall, peak_rss.peak_mib(report)


def epoch_lines(text):
    return [line for line in (json.loads(l) for l in text.splitlines() if l.startswith("{"))
            if line.get("event") == "epoch"]


def timed_epochs(lines):
    """Median samples/s over the epochs after the first (warm-up) one."""
    return statistics.median(line["samples_per_sec"] for line in lines[1:])


def run_way(way, kind, model_dir, data, batch, epochs):
    """One process of one way; returns {sps, wall, rss, wall_per_epoch}."""
    if way == "tfload":
        out = os.path.join(OUT, "run")
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out + ".partial", ignore_errors=True)
        _, wall, rss = run_measured([release_bin(), "train", model_dir, "--data", data, "--out", out,
                                     "--epochs", str(epochs), "--batch-size", str(batch), "--train-all", "-q"])
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = epoch_lines(f.read())
        shutil.rmtree(out, ignore_errors=True)
    elif way == "layers":
        stdout, wall, rss = run_measured([release_example("train_floor"), model_dir, data, "--batch-size", str(batch),
                                          "--epochs", str(epochs), "--train-all", "--mode", "layers"])
        cycles = {}
        for line in epoch_lines(stdout):
            if line["epoch"] > 1:
                cycles.setdefault(line["epoch"], {})[line["layer"]] = line["seconds"]
        return {"cycles": list(cycles.values())}
    elif way == "floor":
        stdout, wall, rss = run_measured([release_example("train_floor"), model_dir, data, "--batch-size", str(batch),
                                          "--epochs", str(epochs), "--train-all", "--mode", way])
        lines = epoch_lines(stdout)
    else:
        worker = [model_dir] if way == "signature" else [kind]   # keras, keras_xla, keras_1t
        stdout, wall, rss = run_measured([PYTHON, os.path.abspath(__file__), way, *worker, data,
                                          str(batch), str(epochs)])
        lines = epoch_lines(stdout)
    if len(lines) != epochs:
        raise RuntimeError(f"{way} on {kind}: {len(lines)} epoch lines, expected {epochs}")
    return {"sps": timed_epochs(lines), "wall": wall, "rss": rss, "wall_per_epoch": wall / epochs}


# (config name, model kind, model dir getter, data getter, batch, epochs, rounds, ways)
WAYS = ["tfload", "floor", "signature", "keras"]
# Small models: Keras fit with one intra-op thread too, the setting tfload picks for their steps.
SMALL_WAYS = WAYS + ["keras_1t"]
XLA_WAYS = WAYS + ["keras_xla"]   # XLA rows (TensorFlow's threads): Keras fit with jit_compile=True too


def configs():
    # Made again by the current exporter (fused BatchNormalization, the fused optimizer updates the
    # specialized step runs): the committed models predate those.
    mlp = lambda: os.path.join(digits_models(), "mlp_digits")  # noqa: E731
    cnn = lambda: os.path.join(digits_models(), "cnn_digits")  # noqa: E731
    tiny = SMALL_WAYS
    return [
        ("MLP (mlp_digits)", "mlp", mlp, digits_data, 64, TINY_EPOCHS, ROUNDS, tiny),
        ("MLP (mlp_digits)", "mlp", mlp, digits_data, 256, TINY_EPOCHS, ROUNDS, tiny),
        ("CNN (cnn_digits, --train-all)", "cnn", cnn, digits_data, 64, TINY_EPOCHS, ROUNDS, tiny),
        ("CNN (cnn_digits, --train-all)", "cnn", cnn, digits_data, 256, TINY_EPOCHS, ROUNDS, tiny),
        ("MLP, exported --jit-compile", "mlp", lambda: xla_model("mlp"), digits_data, 64, TINY_EPOCHS, ROUNDS, XLA_WAYS),
        ("MLP, exported --jit-compile", "mlp", lambda: xla_model("mlp"), digits_data, 256, TINY_EPOCHS, ROUNDS, XLA_WAYS),
        ("CNN, exported --jit-compile", "cnn", lambda: xla_model("cnn"), digits_data, 64, TINY_EPOCHS, ROUNDS, XLA_WAYS),
        ("CNN, exported --jit-compile", "cnn", lambda: xla_model("cnn"), digits_data, 256, TINY_EPOCHS, ROUNDS, XLA_WAYS),
        ("MobileNetV2 a=0.35 96x96x3, 5 classes", "mobilenet", mobilenet_model, image_data, 64,
         MOBILENET_EPOCHS, MOBILENET_ROUNDS, WAYS),
    ]


def build_floor():
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--example", "train_floor"],
                   cwd=ROOT, check=True)


_MEASURED = None
_LOAD = []   # the machine's 1-minute load average when measuring started and ended


def measure_all():
    """Runs every config once (cached for the three result tables of one bench.py run)."""
    global _MEASURED
    if _MEASURED is not None:
        return _MEASURED
    os.makedirs(OUT, exist_ok=True)
    build_floor()
    _LOAD.append(os.getloadavg()[0])
    results = []
    for name, kind, model_of, data_of, batch, epochs, rounds, ways in configs():
        model_dir, data = model_of(), data_of()
        per_round = []
        extra = RUST_EXTRA_ROUNDS if kind != "mobilenet" else MOBILENET_EXTRA_ROUNDS
        for r in range(rounds + extra):
            present = ways if r < rounds else ["tfload", "floor"]
            order = present[r % len(present):] + present[:r % len(present)]   # rotate who goes first
            row = {}
            for way in order:
                print(f"bench train: {name} batch {batch} round {r + 1}/{rounds}: {way}", file=sys.stderr, flush=True)
                row[way] = run_way(way, kind, model_dir, data, batch, epochs)
            per_round.append(row)
        print(f"bench train: {name} batch {batch}: layers", file=sys.stderr, flush=True)
        cycles = MOBILENET_LAYER_CYCLES if kind == "mobilenet" else LAYER_CYCLES
        layers = run_way("layers", kind, model_dir, data, batch, cycles)["cycles"]
        results.append({"name": name, "kind": kind, "batch": batch, "rounds": per_round, "ways": ways,
                        "layers": layers})
    _LOAD.append(os.getloadavg()[0])
    _MEASURED = results
    return results


def median_of(config, way, field="sps"):
    return statistics.median(r[way][field] for r in config["rounds"] if way in r)


def ratio(config, a, b, field="sps"):
    """Median over rounds of a/b (same-round processes)."""
    return statistics.median(r[a][field] / r[b][field] for r in config["rounds"] if a in r and b in r)


def spread(config, a, b, field="sps"):
    values = [r[a][field] / r[b][field] for r in config["rounds"] if a in r and b in r]
    return min(values), max(values)


# --------------------------------------------------------------------------------------------
# Result tables for scripts/bench/bench.py
# --------------------------------------------------------------------------------------------

def _steps_note():
    return (f"{TINY_EXAMPLES} tiled digits (8x8x1) per epoch for the MLP and CNN, {TINY_EPOCHS} epochs per process "
            f"(1 warm-up left out), {ROUNDS} rounds of all four ways plus {RUST_EXTRA_ROUNDS} of tfload and the floor only; {MOBILENET_EXAMPLES} random 96x96x3 images per epoch for "
            f"MobileNetV2, {MOBILENET_EPOCHS} epochs (1 warm-up), {MOBILENET_ROUNDS} rounds plus {MOBILENET_EXTRA_ROUNDS} of tfload and the floor. Load average of the "
            f"2-core machine (other engineers' builds): {' at the start, '.join(f'{l:.1f}' for l in _LOAD)} at the end")


def bench_train_throughput():
    rows, met = [], {"keras": True, "floor": True}
    best_vs_keras = {}   # (kind, batch) -> best tfload / Keras fit over the model's exports
    for c in measure_all():
        tf_sps = median_of(c, "tfload")
        vs_keras, vs_sig, vs_floor = ratio(c, "tfload", "keras"), ratio(c, "tfload", "signature"), ratio(c, "tfload", "floor")
        lo, hi = spread(c, "tfload", "floor")
        met["keras"] &= vs_keras >= 1.0
        if c["kind"] != "mobilenet":
            key = (c["kind"], c["batch"])
            best_vs_keras[key] = max(best_vs_keras.get(key, 0.0), vs_keras)
        met["floor"] &= vs_floor >= 0.97
        wall = median_of(c, "tfload", "wall_per_epoch")
        has_xla, has_1t = "keras_xla" in c["ways"], "keras_1t" in c["ways"]
        rows.append([c["name"], c["batch"], f"{tf_sps:,.0f}", f"{median_of(c, 'floor'):,.0f}",
                     f"{median_of(c, 'signature'):,.0f}", f"{median_of(c, 'keras'):,.0f}",
                     f"{median_of(c, 'keras_1t'):,.0f}" if has_1t else "-",
                     f"{median_of(c, 'keras_xla'):,.0f}" if has_xla else "-",
                     f"{vs_keras:.2f}x", f"{ratio(c, 'tfload', 'keras_1t'):.2f}x" if has_1t else "-",
                     f"{ratio(c, 'tfload', 'keras_xla'):.2f}x" if has_xla else "-",
                     f"{vs_sig:.2f}x", f"{vs_floor:.3f} ({lo:.3f}-{hi:.3f})", f"{wall:.2f} s"])
    short = sorted(f"{kind} batch {batch}: {r:.2f}x" for (kind, batch), r in best_vs_keras.items() if r < 2.0)
    verdict = "; ".join([
        f"never slower than Keras fit: {'met' if met['keras'] else 'MISSED'}",
        ">= 2x Keras fit on the MLP and CNN (best export of each): "
        + ("met" if not short else "MISSED (" + ", ".join(short) + ")"),
        f"within 3% of the bare Session::run floor on every model: {'met' if met['floor'] else 'MISSED'}",
    ])
    return {
        "title": "Training throughput",
        "what": "Samples per second of the same training work four ways, same model, data in memory, batch size, "
                "default thread settings and steps: **tfload** = `tfload train DIR --train-all` (the "
                "`samples_per_sec` of its `metrics.jsonl` epoch lines; for the plain MLP and CNN exports its "
                "default is one intra-op thread, see the notes); **floor** = `examples/train_floor.rs`, a "
                "bare Rust loop of `Session::run` on `train_step` with tensors built once (TensorFlow's own compute, "
                "with the session settings tfload picks); "
                "**signature** = Python calling `tf.saved_model.load(DIR).signatures[\"train_step\"]` in a loop on "
                "tensors built once; **Keras fit** = `model.fit` on the equivalent Keras model with the same optimizer "
                "(arrays in memory, the tutorial's way; Keras 3 leaves XLA off on a CPU-only machine); **Keras fit "
                "(1 intra-op thread)** = the same `fit` after `tf.config.threading.set_intra_op_parallelism_threads(1)`, "
                "the setting tfload picks by itself for these small steps, so that the gain from it shows apart. The rows "
                "\"exported --jit-compile\" are the same architectures exported with `tfload-export "
                "--jit-compile` (XLA compiles train_step's body); beside them **Keras fit (XLA)** = the same `fit` "
                f"compiled with `jit_compile=True`, for a like-for-like comparison. {_steps_note()}. Ratios > 1 mean tfload is faster; "
                "the tfload / floor column gives the median and the range over rounds: on this shared machine "
                "the load changes from second to second, so a single ratio moves by 10-30 % between rounds. "
                "\"tfload wall/epoch\" is the whole "
                "command's wall time (start-up, loading, per-epoch checkpoints, writing the output) over its epochs.",
        "header": ["model", "batch", "tfload samples/s", "floor", "signature (Python)", "Keras fit",
                   "Keras fit (1 intra-op thread)", "Keras fit (XLA)", "tfload / Keras fit",
                   "tfload / Keras fit (1 intra-op thread)", "tfload / Keras fit (XLA)", "tfload / signature", "tfload / floor",
                   "tfload wall/epoch"],
        "rows": rows,
        "target": verdict,
        "notes": NOTES,
    }


def bench_train_overhead():
    rows = []
    for c in measure_all():
        if not c["layers"]:
            continue
        examples = MOBILENET_EXAMPLES if c["kind"] == "mobilenet" else TINY_EXAMPLES
        cycles, steps = c["layers"], examples // c["batch"]
        floor = statistics.median(cycle["floor"] for cycle in cycles)
        cells = [c["name"], c["batch"], f"{1e6 * floor / steps:.0f} us"]
        for layer in ("trainer", "loader", "fit"):
            r = statistics.median(cycle["floor"] / cycle[layer] for cycle in cycles)
            extra = 1e6 * (statistics.median(cycle[layer] for cycle in cycles) - floor) / steps
            cells.append(f"{r:.3f} ({extra:+.0f} us/step)")
        cells.append(f"{ratio(c, 'tfload', 'floor'):.3f}")
        rows.append(cells)
    return {
        "title": "Training: tfload's layers over the floor",
        "what": "Each layer of tfload's training path timed against the bare `Session::run` floor epoch by epoch, "
                f"in turn, in ONE process (`examples/train_floor.rs --mode layers`, {LAYER_CYCLES - 1} timed cycles, "
                f"{MOBILENET_LAYER_CYCLES - 1} for MobileNetV2): "
                "throughput relative to the floor epoch of the same cycle (median over cycles) and the extra time "
                "per step (from the median epochs). **trainer** = `Trainer::train_prepared` on batches gathered "
                "and prepared (checked, converted to tensors) once; **+ loader** = the same with batches gathered and "
                "prepared by `BatchLoader::epoch_map` (shuffled; in-memory data is gathered on the training thread, "
                "many batches at a time, into the tensors of batches already used), as `fit` does; **+ fit** = "
                "`tfload::train::fit`, what `tfload train` runs (its own session, its third epoch). The last "
                "column is `tfload train` over the floor as separate processes (the throughput table's ratio).",
        "header": ["model", "batch", "floor step", "trainer / floor", "+ loader / floor", "+ fit / floor",
                   "tfload train / floor (processes)"],
        "rows": rows,
        "target": "every layer within 3% of the floor (ratio >= 0.97)",
    }


def bench_train_memory():
    rows = []
    for c in measure_all():
        if c["batch"] != 64:
            continue
        rss = {way: median_of(c, way, "rss") for way in WAYS}
        rows.append([c["name"], c["batch"], f"{rss['tfload']:.0f} MiB", f"{rss['floor']:.0f} MiB",
                     f"{rss['signature']:.0f} MiB", f"{rss['keras']:.0f} MiB",
                     f"{ratio(c, 'tfload', 'signature', 'rss'):.2f}", f"{ratio(c, 'tfload', 'keras', 'rss'):.2f}"])
    return {
        "title": "Training: peak memory",
        "what": "Peak resident set size of each process (GNU time's `%M`, see scripts/bench/peak_rss.py) of the same runs as the "
                "throughput table: the whole process, data set in memory included. Ratios < 1 mean tfload "
                "uses less.",
        "header": ["model", "batch", "tfload train", "floor (Rust)", "signature (Python)", "Keras fit",
                   "tfload / signature", "tfload / Keras fit"],
        "rows": rows,
        "target": "no more memory than the Python ways (ratios <= 1)",
    }


# Profile findings (callgrind, instruction counts, which do not depend on the machine's load).
NOTES = """**Where tfload's time goes beyond the floor: the pause between two steps.** The gap shows on the MLP,
whose step is shortest (about 215 us at batch 64 on an idle machine with TensorFlow's default threads); on the CNN and MobileNetV2 it is lost in the
noise. Instruction counts (callgrind, `tfload-core train saved_models/mlp_digits --batch-size 64 --train-all` beside
`train_floor --mode floor`, 1 and 3 epochs of 4,096 digits, the difference over the 128 extra steps) put tfload's
own work per step at about 31 k instructions on the training thread (58 k for `fit` against 27 k for the
floor loop) against 1.96 M for the whole step on all threads (under
2 %; the epoch-end checkpoint, outside the timed epoch, adds 0.13 M per step of this short epoch, most of it
`SaveV2` zero-filling its 8 MiB write buffer). Yet the wall-clock cost was several times that, because of *when*
the work runs. After `Session::run` returns, TensorFlow's two pool threads keep spinning for work on the 2 cores
(`perf`: `GlobalSteal`/`PopBack` about 16 % of all samples), so whatever the training thread does before the next
run gets a fraction of a core. Measured with probes in `train_floor` (one process, 16 cycles, MLP batch 64): a 10 us
busy pause between two floor steps slowed the epoch by about 25 us per step (0.89 of the floor); allocating fresh
tensors for each step (what `Tensor::new` does: allocate, zero-fill, free) 0.965; tfload's loader before this round
(gather into a fresh array, a fresh tensor per step) 0.865.

**What was changed.** (1) A batch's tensors go back to a pool when its step is over and the next batch is copied into
them: no allocation, zero-fill or free per step (`BoundSignature::prepare_reusing`). (2) In-memory data sets are
gathered straight into the arrays of the batch before (`Dataset::gather_into`), and (3) many batches at a time, up
to 8 MiB of them (`INLINE_AHEAD_BYTES`): one pause per 8 MiB instead of one per step, so the spinning threads are
met once. (4) The learning-rate tensor is rebuilt only when the schedule changes the rate. In the same probe
process, loader / floor went from 0.865 to about 0.94 and trainer / floor from about 0.945 to 0.99.

**What is left, and why it is not zero.** Copying the shuffled rows: 4 MB per epoch of 256-byte rows picked at
random, about 47 ns a row (a cache miss each), 0.8 ms per epoch. That is 1.5 % of the MLP's epoch at batch 64 and
about 5 % at batch 256, whose whole epoch takes some 16 ms. The floor never pays it: it feeds the same pre-built
tensors every epoch; a real training loop has to move fresh rows into the fed tensors. Hiding the copy behind the
step needs a core TensorFlow is not using; on 2 cores a background thread costs as much as it saves (measured
before this round: 0.88 with the loader thread against 0.87 inline). So on the MLP the 3 % target is missed by
the copy itself.

**Reading the floor column.** Each round runs tfload and the floor as separate processes a few seconds apart, and
on this machine (a VM sharing its host) a process's throughput moves by 10-30 % from one to the next even when
nothing else runs here: the range column shows it, and two runs of this script an hour apart gave MobileNetV2
0.87 and 1.05 with the same code. The layers table below, which compares neighbouring epochs in one process, is
the better measure; there `fit` / floor is within a few % of 1 on most rows, and the rows well below it are the
MLP-sized steps, where the copy above shows, and cycles during which the machine moved (the loader and `fit`
layers run the same per-step code, so a large difference between them is the machine, not tfload).

**One intra-op thread for small steps.** TensorFlow splits every CPU op across its intra-op pool (one thread
per core) whatever the op's size. For the digits models' ops, a few thousand elements each, handing half of the
work to the other thread and waiting for it costs more than it saves, and the pool's threads spin between steps
(above). So when the user leaves `--intra-op-threads` at 0, the step is not XLA-compiled and its work is small
(batch size x (one example's input elements + the model's weight elements) under 2^21,
`src/train/step_threads.rs`), tfload gives the session one intra-op thread; the inter-op pool is untouched. The
plain MLP and CNN rows here run that way; MobileNetV2 at 96x96 (about 27 M at batch 64) and the
`--jit-compile` exports keep TensorFlow's threads, because there one thread was slower (MobileNetV2 about 12 %,
the XLA CNN at batch 256 about 25 %, measured before this choice). Against the run before it, the floor's CNN step
went from 1360 to 860 us at batch 64 and from 2230 to 1840 us at batch 256, the MLP's from 155 to 126 us.

**The 2x target.** These rows train the digits models as the current exporter makes them, at bench time (fused
BatchNormalization; the step specialized on the mask, with TensorFlow's fused optimizer updates; one intra-op
thread). The plain CNN is now 2.75x / 2.13x Keras fit at batch 64 / 256 (1.67x / 1.94x the run before, with
TensorFlow's threads), the MLP 6.56x / 5.49x. Keras's own figure moves by 10-20 % between runs. The column "Keras
fit (1 intra-op thread)" gives Keras the same thread setting: it gains too (CNN 33.3 k against 26.8 k samples/s at
batch 64), and tfload stays 2.22x / 1.76x ahead of it on the CNN, 6.2x / 6.9x on the MLP, so most of the lead is
tfload's step and loop, not the thread setting. On the MLP tfload / floor fell (0.85 against 0.89): the floor's
step got shorter while tfload's per-step extras (the row copy and the pause above, some 15-40 us) did not, so the
same extras are a larger share. With one intra-op thread a core is idle during the MLP's step; a loader thread
there might hide the copy (not tried with one intra-op thread yet).

**XLA (`tfload-export --jit-compile`).** Specialized on the mask, the plain step runs fewer nodes than Keras's own
(CNN all trainable: 303 against about 528; MLP: 141 against 188; see "Training with frozen layers"), and with one
intra-op thread it is now faster than the XLA step (CNN 73.7 k against 58.9 k samples/s at batch 64, 128 k against
94 k at batch 256 in this run). XLA is not a default: on MobileNetV2 (96x96, alpha 0.35) the XLA step was about 8x
slower than the plain one (22 against 180 samples/s at batch 64, an earlier run), because XLA's CPU convolutions
do not use oneDNN. Keras fit with `jit_compile=True` is shown too: it gains little, as Keras's per-step Python
overhead stays.
"""

# --------------------------------------------------------------------------------------------
# Training with frozen layers: the tutorial's masks, the step specialized on the mask
# --------------------------------------------------------------------------------------------

FROZEN_ROUNDS = int(os.environ.get("TFLOAD_BENCH_FROZEN_ROUNDS", "2"))
FROZEN_EPOCHS = 3            # 1 warm-up + 2 timed
FROZEN_WAYS = ["tfload", "tfload_plain", "floor", "keras"]

# (kind, label, flags of tfload train and train_floor, Keras's trainable layers for freeze_keras)
FROZEN_MASKS = {
    "mlp": [("output layer only", ["--train-last-layers", "1"], "output"),
            ("all trainable", ["--train-all"], "all")],
    "cnn": [("base frozen (head only)", [], "@head"),
            ("last 3 layers (conv2, flatten, head)", ["--train-last-layers", "3"], "conv2,@head"),
            ("all trainable", ["--train-all"], "all")],
    "mobilenet": [("base frozen (head only)", ["--train-last-layers", "1"], "@head"),
                  ("all trainable", ["--train-all"], "all")],
}


def frozen_configs():
    mlp = lambda: os.path.join(digits_models(), "mlp_digits")  # noqa: E731
    cnn = lambda: os.path.join(digits_models(), "cnn_digits")  # noqa: E731
    rows = []
    for kind, model_of, data_of, batches in [("mlp", mlp, digits_data, (64, 256)),
                                             ("cnn", cnn, digits_data, (64, 256)),
                                             ("mobilenet", mobilenet_model, image_data, (64,))]:
        for label, flags, keras_trainable in FROZEN_MASKS[kind]:
            for batch in batches:
                rows.append((kind, label, flags, keras_trainable, model_of, data_of, batch))
    return rows


def run_frozen_way(way, kind, model_dir, data, batch, flags, keras_trainable):
    """One process of one way with one mask; returns {sps, rss}."""
    if way in ("tfload", "tfload_plain"):
        out = os.path.join(OUT, "run_frozen")
        shutil.rmtree(out, ignore_errors=True)
        plain = ["--no-specialize-step"] if way == "tfload_plain" else []
        _, _, rss = run_measured([release_bin(), "train", model_dir, "--data", data, "--out", out, "--epochs",
                                  str(FROZEN_EPOCHS), "--batch-size", str(batch), *flags, *plain,
                                  "--no-feature-cache", "-q"])  # the step itself: the cache has its own table
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = epoch_lines(f.read())
        shutil.rmtree(out, ignore_errors=True)
    elif way == "floor":
        stdout, _, rss = run_measured([release_example("train_floor"), model_dir, data, "--batch-size", str(batch),
                                       "--epochs", str(FROZEN_EPOCHS), *flags, "--mode", "floor"])
        lines = epoch_lines(stdout)
    else:
        stdout, _, rss = run_measured([PYTHON, os.path.abspath(__file__), "keras", kind, data, str(batch),
                                       str(FROZEN_EPOCHS), keras_trainable])
        lines = epoch_lines(stdout)
    if len(lines) != FROZEN_EPOCHS:
        raise RuntimeError(f"{way} on {kind}: {len(lines)} epoch lines, expected {FROZEN_EPOCHS}")
    return {"sps": timed_epochs(lines), "rss": rss}


def step_ops(model_dir, data, flags):
    """The executed graph's node and gradient counts of the plain and the specialized step."""
    stdout = subprocess.run([release_example("train_floor"), model_dir, data, "--batch-size", "64", *flags,
                             "--count-ops"], check=True, capture_output=True, text=True).stdout
    return {line["step"]: line for line in (json.loads(l) for l in stdout.splitlines() if l.startswith("{"))}


def bench_train_frozen():
    os.makedirs(OUT, exist_ok=True)
    build_floor()
    load = [os.getloadavg()[0]]
    rows, worst, short = [], float("inf"), []
    for kind, label, flags, keras_trainable, model_of, data_of, batch in frozen_configs():
        model_dir, data = model_of(), data_of()
        rounds = []
        for r in range(FROZEN_ROUNDS):
            order = FROZEN_WAYS[r % len(FROZEN_WAYS):] + FROZEN_WAYS[:r % len(FROZEN_WAYS)]
            row = {}
            for way in order:
                print(f"bench train_frozen: {kind} {label} batch {batch} round {r + 1}: {way}", file=sys.stderr, flush=True)
                row[way] = run_frozen_way(way, kind, model_dir, data, batch, flags, keras_trainable)
            rounds.append(row)
        c = {"rounds": rounds}
        ops = step_ops(model_dir, data, flags)
        plain, spec = ops["plain"], ops["specialized"]
        vs_keras = ratio(c, "tfload", "keras")
        worst = min(worst, vs_keras)
        if kind != "mobilenet" and vs_keras < 2.0:
            short.append(f"{kind} {label} batch {batch}: {vs_keras:.2f}x")
        grads = lambda o: f"{o['weight_gradients']}/{o['input_gradients']}"
        rows.append([{"mlp": "MLP", "cnn": "CNN", "mobilenet": "MobileNetV2 0.35 96x96"}[kind], label, batch,
                     f"{median_of(c, 'tfload'):,.0f}", f"{median_of(c, 'tfload_plain'):,.0f}",
                     f"{median_of(c, 'floor'):,.0f}", f"{median_of(c, 'keras'):,.0f}",
                     f"{ratio(c, 'tfload', 'tfload_plain'):.2f}x", f"{vs_keras:.2f}x",
                     f"{ratio(c, 'tfload', 'floor'):.2f}",
                     f"{median_of(c, 'tfload', 'rss'):.0f} / {median_of(c, 'keras', 'rss'):.0f} MiB",
                     f"{plain['nodes']} -> {spec['nodes']}", f"{grads(plain)} -> {grads(spec)}"])
    load.append(os.getloadavg()[0])
    return {
        "title": "Training with frozen layers",
        "what": "The tutorial's masks, not only `--train-all`: samples per second of **tfload** = `tfload train` "
                "with the mask flags shown and `--no-feature-cache` (the step itself; the cache has its own table, "
                "\"The tutorial's workflow\"), its `train_step` specialized on the mask (the default), **plain step** = "
                "the same with `--no-specialize-step` (the exported step fed the mask every step, as before), "
                "**floor** = `examples/train_floor.rs --mode floor`, a bare `Session::run` loop of the same "
                "specialized step, and **Keras fit** = `model.fit` on the equivalent Keras model with the same "
                "layers frozen (`layer.trainable = False`, BatchNormalization then in inference mode, as tfload's "
                "export does), arrays in memory. Mask flags: `--train-last-layers 1` (MLP: output layer; "
                "MobileNetV2: the head), none (CNN: its default, base frozen), `--train-last-layers 3` (CNN: conv2, "
                f"flatten and head), `--train-all`. {TINY_EXAMPLES} tiled digits per epoch (MLP, CNN), {MOBILENET_EXAMPLES} "
                f"random 96x96x3 images (MobileNetV2, Adam), {FROZEN_EPOCHS} epochs per process (1 warm-up left "
                f"out), {FROZEN_ROUNDS} rounds in rotating order; medians, ratios between processes of the same "
                "round. Peak RSS by GNU time (scripts/bench/peak_rss.py). \"nodes\" and \"weight/input "
                "gradients\" are the graph TensorFlow executed for one step (RunOptions "
                "`output_partition_graphs`; gradients = `*BackpropFilter` / `*BackpropInput` ops), plain -> "
                "specialized. Release build. Load average of the 2-core machine: "
                f"{load[0]:.1f} at the start, {load[1]:.1f} at the end.",
        "header": ["model", "mask", "batch", "tfload samples/s", "plain step", "floor (specialized)", "Keras fit",
                   "tfload / plain step", "tfload / Keras fit", "tfload / floor", "peak RSS tfload / Keras",
                   "step nodes", "weight/input gradients"],
        "rows": rows,
        "target": "; ".join([
            f"never slower than Keras fit with the same frozen layers: {'met' if worst >= 1.0 else 'MISSED'} "
            f"(lowest {worst:.2f}x)",
            ">= 2x Keras fit on the MLP and CNN: " + ("met" if not short else "MISSED (" + ", ".join(short) + ")"),
        ]),
        "notes": FROZEN_NOTES,
    }


FROZEN_NOTES = """**How the step is specialized.** After loading, tfload adds to the session's graph a copy of
the `train_step` signature's call node (`StatefulPartitionedCall`, same function, same variable handles) whose
`mask` input is a `Const` holding the run's mask (src/session/specialize.rs). The TF1 session inlines the function
body, and Grappler's constant folding folds every `tf.where` on a mask entry, after which a frozen variable's
gradient has no consumer and is pruned. Updates are TensorFlow's fused in-place ops (`ResourceApplyAdam`,
`ResourceApplyKerasMomentum`, `ResourceApplyGradientDescent`: Keras 3's formulas, one kernel per variable instead
of about 30 composite ops and selects), each under a `tf.cond` on its mask entry named
`tfload_masked_update_<i>/cond`. TensorFlow does not fold that cond (it is lowered to Switch/Merge before Grappler
runs, and a lowered cond's Switch nodes stay even with a constant predicate), so tfload copies the step's functions
with each such `If` node replaced by the branch the mask takes: a call of the fused update, or a `NoOp` for a
frozen variable (src/model/taken_branches.rs); its gradient reaches it through a `tf.where` that folds, so a
frozen gradient is pruned. BatchNormalization picks its training mode
by `tf.where` on the statistics instead of a `tf.cond` (whose two branches and Optional* gradient nodes all ran).
CNN, all trainable: 576 executed nodes before these changes, 389 with the selected BatchNormalization, and the table's "step nodes" with the conds resolved; Keras's own step is about 528. Losses, metrics and every
saved variable are bit-identical to the plain step's (tests/train/specialized_step.rs, also against Python). An
XLA-compiled step (`--jit-compile`) is one cluster the session does not inline: the constant folds nothing there
(same executed graph, 76 against 75 nodes on the CNN), so tfload runs it as exported.

**Frozen-base steps.** Specializing `train_step` alone left the backward pass through a frozen base with
BatchNormalization: folding a `tf.where` keeps a control edge to the input it drops (Grappler's rule), and a
BatchNormalization gradient `tf.cond` is already lowered to Switch/Merge when Grappler runs, so every input
gradient below the head stayed (MobileNetV2 head only: 0/51 weight and 51/51 input gradients left, 0.49x Keras fit
in the last round). A `tf.switch_case` on the mask inside `train_step` did not fold either (all branches stayed in
the executed graph, and the first step cost twice as much). So the exporter now writes, beside `train_step`, one
step per clean cut among the last layers, `train_step_from_<layer index>`: the base below the cut forward in
inference mode, then the head's step; tfload runs the highest one the mask allows (specialized on the mask as
`train_step` is). Models here are exported at bench time (the committed `saved_models/` predate these steps).
Parity with `train_step`: tests/train/frozen_base_step.rs and scripts/tests/test_frozen_base_steps.py.

**Fused BatchNormalization.** Keras 3 normalizes in training mode with composite ops (`moments`, then
`batch_normalization`: about thirty ops forward and back over the activations, Mul, SquaredDifference, RealDiv,
BroadcastTo and their gradients); the exporter runs TensorFlow's fused kernel there instead (`FusedBatchNormV3` and
`FusedBatchNormGradV3`, oneDNN's on this machine), with Keras's outputs and moving statistics to float32 rounding
(scripts/tests/test_export.py::test_batch_norm_in_training_mode_trains_like_keras, against `train_on_batch`, 1e-5).
Each mode reads its own fork of the input and the output is picked between them with gradients that fold on a
constant mask, so the mode a run does not take is pruned forward and back (tests/train/specialized_step.rs checks
both ways). CNN, all trainable: 344 -> 303 executed nodes, and the bare `Session::run` floor went from about 85 k to
130 k samples/s at batch 256 and from 39 k to 49 k at batch 64 (train_floor, 3 alternating rounds). The frozen
masks do not change: there bn1 runs in inference mode.

**Reading these figures.** Release build; single ratios move by 20 % and more between runs on this shared 2-core
machine (AMD EPYC), the Keras figures as much as tfload's.
"""

BENCHMARKS = {
    "train_frozen": bench_train_frozen,
    "train": bench_train_throughput,
    "train_overhead": bench_train_overhead,
    "train_memory": bench_train_memory,
}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    way, who, data, batch, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    if way in ("keras", "keras_xla", "keras_1t"):
        worker_keras(who, data, batch, epochs, jit_compile=way == "keras_xla",
                     trainable=sys.argv[6] if len(sys.argv) > 6 else "all",
                     intra_op_threads=1 if way == "keras_1t" else 0)
    elif way == "signature":
        worker_signature(who, data, batch, epochs)
    else:
        sys.exit(f"unknown worker {way!r}")
