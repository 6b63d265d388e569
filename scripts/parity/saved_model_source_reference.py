"""Python's side of the SavedModel-source training test (tests/train/saved_model_source.rs).

make KIND OUT_DIR
    Builds a small functional CNN with BatchNormalization (Keras 3, seed 0), saves it the
    ordinary way (KIND ``save``: ``tf.saved_model.save(model, dir)``; ``export``:
    ``model.export(dir)``) to OUT_DIR/source, exports it trainable with a new 3-class head by
    ``python -m tfload_export --saved-model`` (this checkout's package) to OUT_DIR/trainable, and
    writes OUT_DIR/train.npz and OUT_DIR/val.npz. Prints JSON: the paths and the input key.

reference SOURCE TRAINABLE DATA VAL TFLOAD_OUT --batch-size N --epochs N --lr F
    Calls TRAINABLE's ``train_step`` from Python on the batches tfload used (no shuffling) and
    prints JSON: the per-step losses; per mask variable whether tfload's result equals the
    source's value byte for byte (restored ones) and how far it is from Python's own result; and
    the serving outputs of TFLOAD_OUT computed by Python on VAL's features.

changed BEFORE AFTER
    Prints JSON: the names of BEFORE's mask variables whose checkpoint bytes differ in AFTER.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SHAPE = (16, 16, 3)


def small_cnn():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(SHAPE)
    x = keras.layers.Conv2D(6, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, x, name="small_cnn")
    # Give the BN statistics values other than 0/1, as a trained model has.
    model(np.random.default_rng(1).normal(size=(32, *SHAPE)).astype("float32"), training=True)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.linspace(-0.2, 0.3, layer.moving_mean.shape[0]))
            layer.moving_variance.assign(np.linspace(0.5, 1.5, layer.moving_variance.shape[0]))
    return model


def make(args):
    source = os.path.join(args.out_dir, "source")
    trainable = os.path.join(args.out_dir, "trainable")
    model = small_cnn()
    if args.kind == "save":
        tf.saved_model.save(model, source)
    else:
        model.export(source, verbose=False)
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-m", "tfload_export", "--saved-model", source, "--num-classes", "3",
                           "--optimizer", "adam", "--out", trainable], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"tfload_export failed:\n{done.stderr}")
    rng = np.random.default_rng(2)
    for name, n in (("train", 96), ("val", 10)):
        x = rng.normal(size=(n, *SHAPE)).astype("float32")
        y = (x[:, :8].mean(axis=(1, 2, 3)) > 0).astype("int64") + (x[..., 0].mean(axis=(1, 2)) > 0.05)
        np.savez(os.path.join(args.out_dir, f"{name}.npz"), x=x, y=y.astype("int64"))
    with open(os.path.join(trainable, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    print(json.dumps({"source": source, "trainable": trainable, "input_key": record["inputs"][0]["key"],
                      "record_source": record["source"], "summary": done.stdout.strip()}))


def checkpoint_values(model_dir, keys):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "variables", "variables"))
    return {key: reader.get_tensor(key) for key in keys}


def source_values(source, record):
    """The source SavedModel's values of the restored mask variables, by recorded name."""
    from tfload_export.saved_model_source import _restored_variables, _unique_names

    loaded = tf.saved_model.load(source)  # keeps the function's variables alive
    fn = loaded.signatures[record["source"]["signature"]]
    restored, state = _restored_variables(fn)
    names = _unique_names(restored + state)
    return {name: v.numpy() for name, v in zip(names, restored)}


def reference(args):
    with open(os.path.join(args.trainable, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    key = record["inputs"][0]["key"]
    data = np.load(args.data)
    x, y = data["x"], data["y"]
    mask = tf.constant(record["default_mask"], tf.float32)
    lr = tf.constant(args.lr, tf.float32)
    ref = tf.saved_model.load(args.trainable)
    train_step = ref.signatures["train_step"]
    losses = []
    for _ in range(args.epochs):
        for start in range(0, len(x), args.batch_size):
            out = train_step(**{key: tf.constant(x[start:start + args.batch_size])},
                             labels=tf.constant(y[start:start + args.batch_size]), mask=mask, learning_rate=lr)
            losses.append(float(out["loss"]))
    keys = [v["checkpoint_key"] for v in record["mask_variables"]]
    after = checkpoint_values(args.tfload_out, keys)
    original = source_values(args.source, record)
    variables = []
    for entry, ckey in zip(record["mask_variables"], keys):
        ours = ref.mask_variables[entry["index"]].numpy()
        src = original.get(entry["name"]) if entry["restored"] else None
        variables.append({
            "name": entry["name"], "restored": entry["restored"],
            "trainable": record["default_mask"][entry["index"]] > 0,
            "same_bytes_as_source": None if src is None else src.tobytes() == after[ckey].tobytes(),
            "max_abs_diff_vs_python": float(np.max(np.abs(after[ckey] - ours))),
            "max_abs_value": float(np.max(np.abs(ours))),
        })
    val_x = np.load(args.val)["x"]
    trained = tf.saved_model.load(args.tfload_out)
    serving = trained.signatures["serving_default"](**{key: tf.constant(val_x)})["outputs"].numpy()
    print(json.dumps({"losses": losses, "variables": variables, "serving_outputs": serving.tolist()}))


def changed(args):
    with open(os.path.join(args.before, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    keys = [v["checkpoint_key"] for v in record["mask_variables"]]
    before, after = checkpoint_values(args.before, keys), checkpoint_values(args.after, keys)
    print(json.dumps([v["name"] for v, key in zip(record["mask_variables"], keys)
                      if before[key].tobytes() != after[key].tobytes()]))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("kind", choices=["save", "export"])
    m.add_argument("out_dir")
    r = sub.add_parser("reference")
    for name in ("source", "trainable", "data", "val", "tfload_out"):
        r.add_argument(name)
    r.add_argument("--batch-size", type=int, required=True)
    r.add_argument("--epochs", type=int, required=True)
    r.add_argument("--lr", type=float, required=True)
    c = sub.add_parser("changed")
    c.add_argument("before")
    c.add_argument("after")
    args = parser.parse_args()
    {"make": make, "reference": reference, "changed": changed}[args.command](args)


if __name__ == "__main__":
    main()
