#!/usr/bin/env python3
"""Build the committed digits models and data, deterministically (fixed seeds).

Data: scikit-learn's load_digits (1797 8x8 images, values 0..16).  Pixels are scaled to
0..255 and rounded, ``round(v * 255 / 16)``, so they are integer-valued float32 "raw pixels"
that match 8-bit PNGs exactly (white ink on black, like the original data).  The models bake
``x / 255`` into their signatures (preprocessing mode "unit"): callers feed the raw 0..255 floats.

A stratified split (20 % validation per digit, seed 0) is shared by everything below.

Writes, under --out (default: saved_models/):
  mlp_digits/   Flatten 64 -> Dense 32 relu -> Dense 10 softmax, pretrained on the training
                split of digits 0-9; exported with SGD (momentum 0.9); all variables trainable.
  cnn_digits/   Conv(8) -> BatchNorm -> ReLU -> MaxPool -> Conv(16) relu -> Flatten, pretrained with a
                head on digits 0-4; the head is replaced by a new Dense(5) softmax for digits 5-9
                (class names "5".."9"); base frozen by default (BN in inference mode); Adam.
  data/digits_5_9_train.npz, data/digits_5_9_val.npz
                x float32 [N, 8, 8, 1] raw pixels 0..255, y int64 [N] class index 0..4
                (= digit - 5, an index into cnn_digits' class_names).
  data/digits_5_9_images/{5,6,7,8,9}/NNNN.png
                8-bit grayscale PNGs (8x8), 30 per class, taken from the TRAINING split (so the
                val npz stays unseen); NNNN is the index in load_digits.

Run: .venv/bin/python scripts/make_digits_models.py [--out saved_models]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tfload_export as te  # noqa: E402

SEED = 0
VAL_FRACTION = 0.2
IMAGES_PER_CLASS = 30
FINE_TUNE_DIGITS = [5, 6, 7, 8, 9]


def load_digits_raw():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    return x, y


def stratified_split(y, val_fraction=VAL_FRACTION, seed=SEED):
    rng = np.random.RandomState(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train)), np.sort(np.array(val))


def write_png_gray8(path, img):
    """Minimal PNG writer: 8-bit grayscale, no filtering (no PIL needed)."""
    img = np.asarray(img, dtype=np.uint8)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def build_mlp(keras):
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten(name="flatten")(inp)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    out = keras.layers.Dense(10, activation="softmax", name="output")(x)
    return keras.Model(inp, out, name="mlp_digits")


def build_cnn_base_with_head(keras):
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    out = keras.layers.Dense(5, activation="softmax", name="pretrain_head")(x)
    return keras.Model(inp, out, name="cnn_digits")


TWIN_OPTIMIZERS = {"mlp": ("sgd", {"learning_rate": 0.05, "momentum": 0.9}),
                   "cnn": ("adam", {"learning_rate": 0.01})}


def export_twin(kind, out, *, jit_compile=False):
    """An untrained twin of the committed `kind` model (same architecture, optimizer, default mask
    and preprocessing; fresh weights from SEED), exported to `out`: quick to make, for tests and
    benchmarks that need an export variant such as ``jit_compile``. Returns the record."""
    tf, keras = te._import_tf()
    keras.utils.set_random_seed(SEED)
    model = build_mlp(keras) if kind == "mlp" else build_cnn_base_with_head(keras)
    frozen = [] if kind == "mlp" else [l.name for l in model.layers
                                       if l.name != "pretrain_head" and not isinstance(l, keras.layers.InputLayer)]
    name, settings = TWIN_OPTIMIZERS[kind]
    return te.export_trainable(model, out, optimizer=te.optimizer_config(name, **settings), preprocess="unit",
                               frozen_layers=frozen, force=True, model_name=f"{kind}_twin",
                               jit_compile=jit_compile)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "saved_models"))
    ap.add_argument("--twin", choices=sorted(TWIN_OPTIMIZERS),
                    help="only export an untrained twin of this model to --out (see export_twin)")
    ap.add_argument("--jit-compile", action="store_true", help="with --twin: an XLA train_step")
    args = ap.parse_args(argv)
    if args.twin:
        record = export_twin(args.twin, args.out, jit_compile=args.jit_compile)
        print(json.dumps({"out": args.out, "default_mask": record["default_mask"]}))
        return 0
    tf, keras = te._import_tf()
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()

    x, y = load_digits_raw()
    tr, va = stratified_split(y)
    x_unit = x / 255.0  # what the Keras models see (the exports bake this in)

    # ---- data for the fine-tune task (digits 5-9) -------------------------------------------
    data_dir = os.path.join(args.out, "data")
    os.makedirs(data_dir, exist_ok=True)
    for split_name, idx in (("train", tr), ("val", va)):
        sel = idx[np.isin(y[idx], FINE_TUNE_DIGITS)]
        np.savez(os.path.join(data_dir, f"digits_5_9_{split_name}.npz"),
                 x=x[sel].astype(np.float32), y=(y[sel] - 5).astype(np.int64))
        print(f"data/digits_5_9_{split_name}.npz: {len(sel)} examples")
    img_root = os.path.join(data_dir, "digits_5_9_images")
    shutil.rmtree(img_root, ignore_errors=True)
    for d in FINE_TUNE_DIGITS:
        os.makedirs(os.path.join(img_root, str(d)))
        for i in tr[y[tr] == d][:IMAGES_PER_CLASS]:
            write_png_gray8(os.path.join(img_root, str(d), f"{i:04d}.png"), x[i, :, :, 0])
    print(f"data/digits_5_9_images: {IMAGES_PER_CLASS} PNGs per class")

    # ---- MLP on digits 0-9 ------------------------------------------------------------------
    keras.utils.set_random_seed(SEED)
    mlp = build_mlp(keras)
    mlp.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    mlp.fit(x_unit[tr], y[tr], epochs=8, batch_size=32, shuffle=True, verbose=0)
    _, acc = mlp.evaluate(x_unit[va], y[va], verbose=0)
    print(f"mlp_digits: pretrained, val accuracy on digits 0-9 = {acc:.3f}")
    te.export_trainable(
        mlp, os.path.join(args.out, "mlp_digits"),
        optimizer=te.optimizer_config("sgd", learning_rate=0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy", class_names=[str(d) for d in range(10)],
        preprocess="unit", force=True, model_name="mlp_digits",
        extra_info={"built_by": "scripts/make_digits_models.py",
                    "pretraining": f"digits 0-9 training split, 8 epochs Adam, val accuracy {acc:.3f}",
                    "data": "raw pixels round(v * 255 / 16) of sklearn load_digits, 0..255"})

    # ---- CNN: base pretrained on digits 0-4, new head for 5-9 -----------------------------
    keras.utils.set_random_seed(SEED)
    cnn = build_cnn_base_with_head(keras)
    cnn.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    sel_tr = tr[y[tr] < 5]
    sel_va = va[y[va] < 5]
    cnn.fit(x_unit[sel_tr], y[sel_tr], epochs=15, batch_size=32, shuffle=True, verbose=0)
    _, acc = cnn.evaluate(x_unit[sel_va], y[sel_va], verbose=0)
    print(f"cnn_digits: base pretrained on digits 0-4, val accuracy {acc:.3f}")
    keras.utils.set_random_seed(SEED)
    cnn5, head = te.replace_head(cnn, 5, activation="softmax", seed=SEED)
    base_layers = [l.name for l in cnn5.layers
                   if l.name not in head and not isinstance(l, keras.layers.InputLayer)]
    te.export_trainable(
        cnn5, os.path.join(args.out, "cnn_digits"),
        optimizer=te.optimizer_config("adam", learning_rate=0.01),
        loss="sparse_categorical_crossentropy", class_names=[str(d) for d in FINE_TUNE_DIGITS],
        preprocess="unit", frozen_layers=base_layers, force=True, model_name="cnn_digits",
        extra_info={"built_by": "scripts/make_digits_models.py",
                    "pretraining": f"conv base + head on digits 0-4 (val accuracy {acc:.3f}); "
                                   "head replaced by a new Dense(5) for digits 5-9",
                    "data": "raw pixels round(v * 255 / 16) of sklearn load_digits, 0..255; "
                            "fine-tune data in data/digits_5_9_{train,val}.npz"})

    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    for name in ("mlp_digits", "cnn_digits"):
        d = os.path.join(args.out, name)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        print(f"{name}: {size / 1024:.0f} KiB")
    print(f"{args.out}: {total / 1024:.0f} KiB in total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
