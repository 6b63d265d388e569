"""The Python side of tests/train/feature_cache.rs: exports the models the feature-cache tests
train, and compares what tfload wrote.

    feature_cache_reference.py make cnn|mobilenet DIR   -> DIR/model, DIR/train.npz, DIR/x.npy
    feature_cache_reference.py weights A B              -> largest relative difference per variable
    feature_cache_reference.py outputs MODEL X.npy Y.npy -> tf.saved_model.load outputs against Y
    feature_cache_reference.py keras-fit cnn|mobilenet DIR EPOCHS BATCH TFLOAD_OUT
        -> Keras's own frozen-base fine-tuning of DIR/model's architecture and weights
           (`layer.trainable = False` below the head, `train_on_batch` on DIR/train.npz in order):
           its per-step losses, and each variable's largest relative difference from TFLOAD_OUT's

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
from keras_from_export import load_export_into  # noqa: E402

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


BUILDERS = {"cnn": small_cnn, "mobilenet": mobilenet}


def make(kind, out):
    model, frozen, head, preprocess = BUILDERS[kind]()
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


def max_relative(ours, theirs):
    """The largest |ours - theirs| / max(|theirs|, 1) over the elements (0 for empty values)."""
    x, y = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1.0))) if x.size else 0.0


def weights(a, b):
    va, vb = checkpoint(a), checkpoint(b)
    if va.keys() != vb.keys():
        return {"error": f"different variables: {sorted(va.keys() ^ vb.keys())}"}
    return {"max_relative": {key: max_relative(va[key], vb[key]) for key in va}}


def outputs(model_dir, x_path, ours_path):
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    theirs = fn(inputs=tf.constant(np.load(x_path)))["outputs"].numpy()
    ours = np.load(ours_path)
    return {"same_shape": ours.shape == theirs.shape,
            "max_relative": max_relative(ours, theirs)}


def keras_model_like(kind, model_dir):
    """The Keras model `make` exported, holding the export's variables, frozen as its default mask."""
    model = BUILDERS[kind]()[0]
    record, entries = load_export_into(tf, model, model_dir)
    return model, record, entries


def keras_fit(kind, fixture_dir, epochs, batch_size, tfload_out):
    """What the tutorial does in Keras, on the batches `tfload train --no-shuffle` takes."""
    model_dir = os.path.join(fixture_dir, "model")
    model, record, entries = keras_model_like(kind, model_dir)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    spec = record["inputs"][0]["preprocessing"]
    data = np.load(os.path.join(fixture_dir, "train.npz"))
    assert not spec["reverse_channels"], spec
    x = data["x"] * np.float32(spec["scale"][0]) + np.float32(spec["offset"][0])
    y, batch_size = data["y"], int(batch_size)
    losses = []
    for _ in range(int(epochs)):
        for start in range(0, len(x), batch_size):
            end = start + batch_size
            losses.append(float(model.train_on_batch(x[start:end], y[start:end])))
    reader = tf.train.load_checkpoint(os.path.join(tfload_out, "variables", "variables"))
    by_path = {v.path: v for v in model.weights}
    diff = {entry["name"]: max_relative(reader.get_tensor(entry["checkpoint_key"]), by_path[entry["name"]].numpy())
            for entry in entries}
    # Keras 3 adds the weight regularizers of trainable variables only (Layer.losses); the
    # exported steps add every variable's, so tfload's loss is Keras's plus this constant.
    frozen_penalty = sum(float(v.regularizer(v)) for v in model.non_trainable_weights
                         if getattr(v, "regularizer", None) is not None)
    return {"losses": losses, "max_relative": diff, "frozen_regularization": frozen_penalty,
            "frozen_layers": sorted(l.name for l in model.layers if not l.trainable)}


def main(argv):
    command, args = argv[1], argv[2:]
    commands = {"make": make, "weights": weights, "outputs": outputs, "keras-fit": keras_fit}
    answer = commands[command](*args)
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv)
