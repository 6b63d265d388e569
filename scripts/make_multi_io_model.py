"""Writes saved_models/multi_io: a small tf.Module SavedModel with several signatures that covers
what `tfload signatures` and `tfload run` must handle beyond a plain image classifier:

- serving_default: one float32 input, two outputs (float32 scores and an int64 class id);
- lookup: int64 and string inputs, int64 and string outputs;
- any_rank: an input of unknown rank;
- constant: no inputs, a scalar output.

The values are fixed (no training, no randomness), so a re-run gives a model equal in meaning.
Run: .venv/bin/python scripts/make_multi_io_model.py [OUT_DIR]
"""

import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class MultiIO(tf.Module):
    def __init__(self):
        super().__init__()
        weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0 - 0.5
        self.kernel = tf.Variable(weights, name="dense/kernel")
        self.bias = tf.Variable([0.1, -0.2, 0.3], dtype=tf.float32, name="dense/bias")
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="calls")

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def serve(self, features):
        scores = tf.nn.softmax(tf.matmul(features, self.kernel) + self.bias)
        return {"scores": scores, "class_id": tf.argmax(scores, axis=-1, output_type=tf.int64)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="ids"),
            tf.TensorSpec([None], tf.string, name="names"),
        ]
    )
    def lookup(self, ids, names):
        return {"ids_plus_one": ids + 1, "greeting": tf.strings.join(["hello ", names])}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="values")])
    def any_rank(self, values):
        return {"total": tf.reduce_sum(values)}

    @tf.function(input_signature=[])
    def constant(self):
        return {"answer": tf.constant(42, dtype=tf.int32)}


def write(out_dir):
    module = MultiIO()
    signatures = {
        "serving_default": module.serve,
        "lookup": module.lookup,
        "any_rank": module.any_rank,
        "constant": module.constant,
    }
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".multi_io.", dir=parent)
    tf.saved_model.save(module, tmp, signatures=signatures)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write(sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "saved_models", "multi_io"))
