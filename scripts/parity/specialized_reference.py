"""Python's side of tests/train/specialized_step.rs: calls a trainable SavedModel's `train_step`
from Python TensorFlow with a given mask on the first STEPS batches of DATA (in order), and
compares every checkpoint variable of the runs tfload saved (the plain step and the step
specialized on the mask) with Python's result and with the input model.

Prints JSON: `losses` (Python's per-step losses) and `variables`, one entry per checkpoint key
of the input model: `plain_equals_specialized` and `specialized_equals_input` (byte for byte),
`max_abs_diff_vs_python` (specialized run against Python's) and `max_abs_value`.

Run: .venv/bin/python scripts/parity/specialized_reference.py MODEL DATA.npz PLAIN_PREFIX SPECIALIZED_PREFIX
     --mask 0,0,1 --batch-size N --steps N --lr F
"""

import argparse
import json
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("plain")
    parser.add_argument("specialized")
    parser.add_argument("--mask", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    args = parser.parse_args()

    data = np.load(args.data)
    x, y = data["x"], data["y"]
    mask = tf.constant([float(v) for v in args.mask.split(",")], tf.float32)
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "model")
        shutil.copytree(args.model, copy)
        reference = tf.saved_model.load(copy)
        train_step = reference.signatures["train_step"]
        losses = []
        for step in range(args.steps):
            start = step * args.batch_size
            out = train_step(inputs=tf.constant(x[start:start + args.batch_size]),
                             labels=tf.constant(y[start:start + args.batch_size]), mask=mask,
                             learning_rate=tf.constant(args.lr, tf.float32))
            losses.append(float(out["loss"]))
        python_prefix = os.path.join(tmp, "python", "variables")
        tf.train.Checkpoint(root=reference).write(python_prefix)
        python = values(python_prefix)
    original = values(os.path.join(args.model, "variables", "variables"))
    plain, specialized = values(args.plain), values(args.specialized)
    variables = []
    for key in sorted(original):
        if key.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            continue
        ours = specialized[key]
        theirs = python.get(key)
        entry = {
            "key": key,
            "plain_equals_specialized": plain[key].tobytes() == ours.tobytes(),
            "specialized_equals_input": original[key].tobytes() == ours.tobytes(),
            "max_abs_value": float(np.max(np.abs(ours))) if ours.size else 0.0,
        }
        if theirs is not None:
            entry["max_abs_diff_vs_python"] = float(np.max(np.abs(ours.astype(np.float64) - theirs))) if ours.size else 0.0
        variables.append(entry)
    print(json.dumps({"losses": losses, "variables": variables}))


if __name__ == "__main__":
    main()
