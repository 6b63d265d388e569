"""What Python TensorFlow reads from a SavedModel that tfload trained (the multi-worker tests):
its mask variables from the checkpoint and its serving outputs on the first N examples of a
.npz, as JSON.

Run: .venv/bin/python scripts/parity/distributed_reference.py DIR DATA.npz N
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(model_dir, data_path, n):
    with open(os.path.join(model_dir, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "variables", "variables"))
    weights = {r["name"]: reader.get_tensor(r["checkpoint_key"]).ravel().tolist() for r in record["mask_variables"]}
    iterations = [r for r in record["optimizer_variables"] if r["slot"] == "iterations"][0]
    x = np.load(data_path)["x"][: int(n)]
    outputs = tf.saved_model.load(model_dir).signatures["serving_default"](inputs=tf.constant(x))["outputs"]
    print(json.dumps({"weights": weights, "iterations": int(reader.get_tensor(iterations["checkpoint_key"])),
                      "outputs": outputs.numpy().tolist()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
