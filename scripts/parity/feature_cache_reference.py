"""The Python side of tests/train/feature_cache.rs: exports the models the feature-cache tests
train, and compares what tfload wrote.

    feature_cache_reference.py make cnn|mobilenet DIR   -> DIR/model, DIR/train.npz, DIR/x.npy
    feature_cache_reference.py weights A B              -> largest relative difference per variable
    feature_cache_reference.py outputs MODEL X.npy Y.npy -> tf.saved_model.load outputs against Y

Each prints one JSON document on stdout.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfload_export as te  # noqa: E402
from tfload_export.optimizers import optimizer_config  # noqa: E402
from tfload_export.sources import build_application  # noqa: E402

tf, keras = te._import_tf()


def small_cnn():
    """conv -> BN -> relu -> flatten (the base, frozen) | dense(L2) -> dense (the head)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv",
                            kernel_regularizer=keras.regularizers.l2(1e-3))(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(8, activation="relu", name="hid",
                           kernel_regularizer=keras.regularizers.l2(1e-3))(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="cnn_bn"), ["conv", "bn"], None, "unit"


def mobilenet():
    """MobileNetV2 (alpha 0.35, 32x32, weights=None) with a new 3-class head, base frozen."""
    keras.utils.set_random_seed(0)
    base = build_application("MobileNetV2", (32, 32, 3), alpha=0.35)
    model, head = te.replace_head(base, 3, whole_model_is_base=True)
    return model, [l.name for l in model.layers if l.name not in head], head, "tf"


def make(kind, out):
    model, frozen, head, preprocess = {"cnn": small_cnn, "mobilenet": mobilenet}[kind]()
    os.makedirs(out, exist_ok=True)
    te.export_trainable(model, os.path.join(out, "model"), optimizer=optimizer_config("adam", learning_rate=0.01),
                        frozen_layers=frozen, head_names=head, preprocess=preprocess, force=True)
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(1)
    n = 40 if kind == "cnn" else 24
    np.savez(os.path.join(out, "train.npz"), x=rng.uniform(0, 255, (n, *shape)).astype(np.float32),
             y=rng.integers(0, 3, n).astype(np.int64))
    np.save(os.path.join(out, "x.npy"), rng.uniform(0, 255, (5, *shape)).astype(np.float32))
    return {"model": os.path.join(out, "model")}


def checkpoint(model_dir):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "variables", "variables"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "VARIABLE_VALUE" in k}


def weights(a, b):
    va, vb = checkpoint(a), checkpoint(b)
    if va.keys() != vb.keys():
        return {"error": f"different variables: {sorted(va.keys() ^ vb.keys())}"}
    diff = {}
    for key in va:
        x, y = np.asarray(va[key], np.float64), np.asarray(vb[key], np.float64)
        diff[key] = float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1.0))) if x.size else 0.0
    return {"max_relative": diff}


def outputs(model_dir, x_path, ours_path):
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    theirs = fn(inputs=tf.constant(np.load(x_path)))["outputs"].numpy()
    ours = np.load(ours_path)
    return {"same_shape": ours.shape == theirs.shape,
            "max_relative": float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1.0)))}


def main(argv):
    command, args = argv[1], argv[2:]
    answer = {"make": make, "weights": weights, "outputs": outputs}[command](*args)
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv)
