"""Start-up and memory benchmarks for scripts/bench/bench.py: a whole `tfload run` process (start,
load the SavedModel, first prediction, exit) beside a Python process doing the same with
`tf.saved_model.load` and one call, and the peak memory (RSS) of each, on the same models and
inputs in one run.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import peak_rss

from common import PYTHON, ROOT, export_once

PY_FIRST_PREDICTION = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](inputs=tf.constant(np.load(sys.argv[2])))
print({k: v.shape for k, v in out.items()})
"""


def run_measured(command):
    """Wall seconds and peak RSS (MiB) of one process run to completion."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as report:
        start = time.perf_counter()
        process = subprocess.run(peak_rss.under_time(command, report.name),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        if process.returncode != 0:
            raise RuntimeError(f"{command} failed")
        return elapsed, peak_rss.peak_mib(report.name)


def median_run(command, runs):
    results = [run_measured(command) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def models(out_dir):
    """(name, SavedModel dir, input shape) of the benchmarked models."""
    mobilenet = export_once(os.path.join(out_dir, "startup_mobilenetv2"),
                            ["--application", "MobileNetV2", "--input-shape", "96,96,3", "--alpha", "0.35",
                             "--num-classes", "5"])
    return [("cnn_digits", os.path.join(ROOT, "saved_models", "cnn_digits"), (8, 8, 1)),
            ("MobileNetV2 0.35 96x96", mobilenet, (96, 96, 3))]


def bench_startup(tfload, out_dir):
    """Start-up to first prediction and peak RSS, tfload beside Python, batch 1 and 64."""
    rows = []
    for name, model, shape in models(out_dir):
        for batch in (1, 64):
            x = os.path.join(out_dir, f"startup_{abs(hash(name)) % 10000}_{batch}.npy")
            np.save(x, np.random.default_rng(0).uniform(0, 255, (batch,) + shape).astype(np.float32))
            ours, our_rss = median_run([tfload, "run", model, "-i", f"inputs={x}"], 7)
            theirs, their_rss = median_run([PYTHON, "-c", PY_FIRST_PREDICTION, model, x], 3)
            rows.append([name, batch, f"{ours * 1000:.0f} ms", f"{theirs * 1000:.0f} ms", f"{theirs / ours:.1f}x",
                         f"{our_rss:.0f} MiB", f"{their_rss:.0f} MiB", f"{their_rss / our_rss:.2f}x"])
    return {
        "title": "Start-up to first prediction, and its peak memory",
        "what": "A whole process that loads the SavedModel and makes one prediction: `tfload run DIR -i inputs=x.npy` "
                "(median of 7) beside `python -c 'tf.saved_model.load(DIR).signatures[\"serving_default\"](...)'` "
                "(median of 3), with the peak RSS of each process (GNU time's `%M`, see scripts/bench/peak_rss.py).",
        "header": ["model", "batch", "tfload", "Python", "ratio (faster)", "tfload RSS", "Python RSS",
                   "ratio (less memory)"],
        "rows": rows,
        "target": "faster than Python's load + first call; peak memory not above Python's",
    }


if __name__ == "__main__":
    print(bench_startup(sys.argv[1], sys.argv[2]))
