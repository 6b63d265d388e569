"""Reads TensorBoard event files with TensorFlow's own reader and prints their scalars as JSON:
the Python side of tfload's TensorBoard tests (tests/tensorboard.rs).

  .venv/bin/python scripts/parity/read_events.py LOGDIR

Prints {"RUN": {"file_version": "...", "files": N, "scalars": [[tag, step, value], ...]}} for each
run folder under LOGDIR (train, validation), events in file order, reading every event file
with tf.compat.v1.train.summary_iterator. Scalars are taken from simple_value, or from a scalar
tensor (what tf.summary.scalar writes), so Keras's own logs can be read the same way.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402


def scalar(value):
    if value.HasField("simple_value"):
        return value.simple_value
    return float(tf.make_ndarray(value.tensor))


def read_run(folder):
    files = sorted(f for f in os.listdir(folder) if f.startswith("events.out.tfevents."))
    run = {"file_version": None, "files": len(files), "scalars": [], "restarts": []}
    for name in files:
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            if event.HasField("file_version"):
                run["file_version"] = event.file_version
            elif event.HasField("session_log"):
                run["restarts"].append(event.step)
            for value in event.summary.value:
                run["scalars"].append([value.tag, event.step, scalar(value)])
    return run


def main():
    logdir = sys.argv[1]
    runs = {name: read_run(os.path.join(logdir, name)) for name in sorted(os.listdir(logdir))
            if os.path.isdir(os.path.join(logdir, name))}
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
