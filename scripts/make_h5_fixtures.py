#!/usr/bin/env python3
"""Keras HDF5 weight files for the tests of `tfload import-weights`, and the Python side of those
tests (what Keras's own `load_weights` makes of the same files).

    make_h5_fixtures.py make [--out saved_models/h5]
    make_h5_fixtures.py compare MODEL_DIR OUT_DIR WEIGHTS ARCH [--kept-layers a,b]

`make` writes, deterministically (seed 1, weights unlike the committed models'):

  mlp_keras3.weights.h5   Keras 3 `model.save_weights` of the mlp_digits architecture
                          (layers/<key>/vars/<i>, the layer name in vars' `name` attribute).
  mlp_legacy_model.h5     Keras 3 `model.save("m.h5")`, the legacy whole-model writer
                          (model_weights/, layer_names, weight_names without `:0`).
  cnn_keras3.weights.h5   Keras 3 `save_weights` of the cnn_digits architecture (conv, BN with
                          moving statistics, Dense(5) head called `head`).
  cnn_tfkeras.h5          the cnn_digits base with a Dense(10) `head`, written with h5py in the
                          exact layout of tf.keras 2.x `model.save_weights("w.h5")`: fixed-length
                          byte-string attributes, weight names with `:0`, `backend`/`keras_version`
                          attributes, an empty `top_level_model_weights` group. (tf-keras itself
                          would pull the full CUDA TensorFlow wheel, see NOTES.md.)
  mlp_nobias.weights.h5   mlp_digits with a bias-free `hidden` layer: a weight count mismatch.
  not_keras.h5            an HDF5 file that holds no Keras weights.

`compare` loads WEIGHTS into a fresh Keras model of ARCH (mlp, cnn5: MODEL_DIR's architecture) with Keras's own
loader (`load_weights` for Keras 3 files; the legacy by-name loader with skip_mismatch for .h5),
copies the layers in --kept-layers from MODEL_DIR's checkpoint (tfload leaves them untouched),
and prints JSON comparing OUT_DIR (the SavedModel tfload wrote) with it: every variable of the
contract record read through `tf.train.load_checkpoint` (which checks each entry's CRC32C), and
`serving_default` of `tf.saved_model.load(OUT_DIR)` against the Keras model on the digits data.

Run: .venv/bin/python scripts/make_h5_fixtures.py make
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SEED = 1


def _keras():
    import keras

    return keras


def build(arch):
    """The Keras model of an architecture: mlp_digits' or cnn_digits' with a head of 5 or 10."""
    import make_digits_models as m

    keras = _keras()
    if arch == "mlp":
        return m.build_mlp(keras)
    if arch == "mlp_nobias":
        inp = keras.Input((8, 8, 1))
        x = keras.layers.Flatten(name="flatten")(inp)
        x = keras.layers.Dense(32, activation="relu", use_bias=False, name="hidden")(x)
        return keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="output")(x))
    units = {"cnn5": 5, "cnn10": 10}[arch]
    base = m.build_cnn_base_with_head(keras)
    features = base.get_layer("flatten").output
    head = keras.layers.Dense(units, activation="softmax", name="head")(features)
    return keras.Model(base.input, head, name="cnn_digits")


def perturbed(arch):
    """A model of `arch` whose every weight (biases and BN statistics too) is random."""
    keras = _keras()
    keras.utils.set_random_seed(SEED)
    model = build(arch)
    rng = np.random.RandomState(SEED)
    values = []
    for v in model.weights:
        w = np.asarray(v.numpy())
        noise = rng.normal(0.0, 0.1, size=w.shape).astype(w.dtype)
        values.append(np.abs(w + noise) + 0.5 if "moving_variance" in v.path else w + noise)
    model.set_weights(values)
    return model


def write_tf_keras_weights(path, model):
    """tf.keras 2.x `save_weights_to_hdf5_group`, byte for byte in structure: `layer_names`
    (fixed-length bytes), `backend`, `keras_version`, one group per layer sorted by name with
    `weight_names` (`layer/weight:0`) and a dataset per weight at `<layer>/<weight name>`."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.asarray([l.name.encode("utf8") for l in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for layer in sorted(model.layers, key=lambda l: l.name):
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{w.path}:0".encode("utf8") for w in weights]
            group.attrs["weight_names"] = np.asarray(names) if names else np.asarray([])
            for name, w in zip(names, weights):
                value = np.asarray(w.numpy())
                dataset = group.create_dataset(name.decode("utf8"), value.shape, dtype=value.dtype)
                dataset[()] = value
        f.create_group("top_level_model_weights").attrs["weight_names"] = np.asarray([])


def make(out):
    os.makedirs(out, exist_ok=True)
    mlp = perturbed("mlp")
    mlp.save_weights(os.path.join(out, "mlp_keras3.weights.h5"))
    mlp.save(os.path.join(out, "mlp_legacy_model.h5"))
    perturbed("cnn5").save_weights(os.path.join(out, "cnn_keras3.weights.h5"))
    write_tf_keras_weights(os.path.join(out, "cnn_tfkeras.h5"), perturbed("cnn10"))
    perturbed("mlp_nobias").save_weights(os.path.join(out, "mlp_nobias.weights.h5"))
    import h5py

    with h5py.File(os.path.join(out, "not_keras.h5"), "w") as f:
        f.create_dataset("measurements", data=np.arange(6, dtype=np.float32))
    for name in sorted(os.listdir(out)):
        print(f"{name}: {os.path.getsize(os.path.join(out, name))} bytes")


def keras_load(model, weights_path):
    """Keras's own loading: by path for Keras 3 files, by layer name for legacy .h5 files."""
    if weights_path.endswith(".weights.h5"):
        model.load_weights(weights_path)
        return
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(weights_path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        legacy_h5_format.load_weights_from_hdf5_group_by_name(group, model, skip_mismatch=True)


def record_variables(model_dir):
    with open(os.path.join(model_dir, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    return record["mask_variables"] + record["non_trainable_variables"] + record["optimizer_variables"]


def compare(model_dir, out_dir, weights_path, arch, kept_layers):
    import tensorflow as tf

    model = build(arch)
    keras_load(model, weights_path)
    before = tf.train.load_checkpoint(os.path.join(model_dir, "variables", "variables"))
    after = tf.train.load_checkpoint(os.path.join(out_dir, "variables", "variables"))
    by_path = {v.path: v for v in model.weights}
    for v in model.weights:
        if v.path.split("/")[0] in kept_layers:
            key = next(r["checkpoint_key"] for r in record_variables(model_dir) if r["name"] == v.path)
            v.assign(before.get_tensor(key))
    variables = []
    for r in record_variables(model_dir):
        ours = after.get_tensor(r["checkpoint_key"])
        entry = {"name": r["name"], "equals_input": bool(np.array_equal(ours, before.get_tensor(r["checkpoint_key"])))}
        if r["name"] in by_path:
            entry["equals_keras"] = bool(np.array_equal(ours, by_path[r["name"]].numpy()))
        variables.append(entry)
    data = np.load(os.path.join(ROOT, "saved_models", "data", "digits_5_9_val.npz"))
    raw = data["x"][:64]
    served = tf.saved_model.load(out_dir).signatures["serving_default"](inputs=tf.constant(raw))["outputs"]
    expected = model(raw / 255.0, training=False)
    diff = float(np.max(np.abs(np.asarray(served) - np.asarray(expected))))
    print(json.dumps({"variables": variables, "serving_max_abs_diff": diff}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("--out", default=os.path.join(ROOT, "saved_models", "h5"))
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("model_dir")
    cmp_.add_argument("out_dir")
    cmp_.add_argument("weights")
    cmp_.add_argument("arch", choices=["mlp", "cnn5", "cnn10"])
    cmp_.add_argument("--kept-layers", default="")
    args = ap.parse_args(argv)
    if args.command == "make":
        make(args.out)
    else:
        kept = [name for name in args.kept_layers.split(",") if name]
        compare(args.model_dir, args.out_dir, args.weights, args.arch, kept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
