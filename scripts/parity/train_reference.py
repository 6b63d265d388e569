"""Python's side of the training parity tests: trains a copy of a trainable SavedModel by calling
its `train_step` signature from Python TensorFlow on the same batches tfload used (no shuffling),
then compares with the SavedModel tfload wrote.

Prints JSON: the per-step losses; for each mask variable whether tfload's output equals the input
byte for byte and how far it is from Python's own result; and the serving outputs of tfload's
output model, computed by Python, on the validation features.

Run: .venv/bin/python scripts/parity/train_reference.py MODEL DATA.npz VAL.npz TFLOAD_OUT --batch-size N --epochs N --lr F
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def checkpoint_values(model_dir, keys):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "variables", "variables"))
    return {key: reader.get_tensor(key) for key in keys}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("val")
    parser.add_argument("tfload_out")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    args = parser.parse_args()

    with open(os.path.join(args.model, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    data = np.load(args.data)
    x, y = data["x"], data["y"]
    mask = tf.constant(record["default_mask"], tf.float32)
    lr = tf.constant(args.lr, tf.float32)
    reference = tf.saved_model.load(args.model)
    train_step = reference.signatures["train_step"]
    losses = []
    for _ in range(args.epochs):
        for start in range(0, len(x), args.batch_size):
            out = train_step(inputs=tf.constant(x[start:start + args.batch_size]),
                             labels=tf.constant(y[start:start + args.batch_size]), mask=mask, learning_rate=lr)
            losses.append(float(out["loss"]))

    keys = [v["checkpoint_key"] for v in record["mask_variables"]]
    before = checkpoint_values(args.model, keys)
    after = checkpoint_values(args.tfload_out, keys)
    variables = []
    for entry, key in zip(record["mask_variables"], keys):
        ours = reference.mask_variables[entry["index"]].numpy()
        variables.append({
            "name": entry["name"],
            "trainable": record["default_mask"][entry["index"]] > 0,
            "unchanged_bytes": before[key].tobytes() == after[key].tobytes(),
            "max_abs_diff_vs_python": float(np.max(np.abs(after[key] - ours))),
            "max_abs_value": float(np.max(np.abs(ours))),
        })
    val_x = np.load(args.val)["x"]
    trained = tf.saved_model.load(args.tfload_out)
    serving = trained.signatures["serving_default"](inputs=tf.constant(val_x))["outputs"].numpy()
    print(json.dumps({"losses": losses, "variables": variables, "serving_outputs": serving.tolist()}))


if __name__ == "__main__":
    main()
