"""Tests of the exporter (python/tfload_export, the `tfload-export` command), the committed digits models and the contract document.

Run: .venv/bin/python -m pytest scripts/tests -q

The TF1-session round trips mimic what tfload does through the C API: load with tag "serve",
run train_step by feeding the signature's tensor names, save through the SaverDef, copy
saved_model.pb + assets beside the new checkpoint, reload.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfload_export as te  # noqa: E402  (installed by scripts/setup.sh: pip install -e python/)
from test_frozen_base_steps import op_types  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAVED = os.path.join(ROOT, "saved_models")
DOC = os.path.join(ROOT, "docs", "train-step-contract.md")
# The console script pip put beside this interpreter (the venv need not be activated).
EXPORTER = os.path.join(os.path.dirname(sys.executable), "tfload-export")

tf, keras = te._import_tf()


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def tiny_mlp(n_in=6, hidden=5, n_out=3, seed=0, name=None, input_name=None):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,), name=input_name)
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(n_out, activation="softmax", name="out")(x)
    return keras.Model(inp, out, name=name or "tiny_mlp")


def tiny_cnn(seed=0):
    """conv -> BN -> relu -> flatten -> dense; base = conv + BN."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    out = keras.layers.Dense(4, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="tiny_cnn")


def ckpt_values(export_dir, rec):
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    groups = {}
    for group in ("mask_variables", "non_trainable_variables", "optimizer_variables"):
        groups[group] = [reader.get_tensor(r["checkpoint_key"]) for r in rec[group]]
    return groups


class TF1Session:
    """Loads a SavedModel the way the C API does and drives it by signature tensor names."""

    def __init__(self, export_dir):
        self.graph = tf.Graph()
        self.sess = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.mg = tf.compat.v1.saved_model.loader.load(self.sess, ["serve"], export_dir)
        self.export_dir = export_dir

    def run(self, signature, **feeds):
        sig = self.mg.signature_def[signature]
        assert sorted(feeds) == sorted(sig.inputs), (sorted(feeds), sorted(sig.inputs))
        feed = {sig.inputs[k].name: v for k, v in feeds.items()}
        fetch = {k: t.name for k, t in sig.outputs.items()}
        return {k: np.asarray(v) for k, v in self.sess.run(fetch, feed).items()}

    def save_as(self, new_dir):
        """Save through the SaverDef and make new_dir a complete SavedModel."""
        os.makedirs(os.path.join(new_dir, "variables"), exist_ok=True)
        sd = self.mg.saver_def
        self.sess.run(sd.save_tensor_name,
                      {sd.filename_tensor_name: os.path.join(new_dir, "variables", "variables")})
        shutil.copy(os.path.join(self.export_dir, "saved_model.pb"), new_dir)
        shutil.copytree(os.path.join(self.export_dir, "assets"), os.path.join(new_dir, "assets"),
                        dirs_exist_ok=True)
        return new_dir

    def close(self):
        self.sess.close()


def assert_same(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), f"{what} changed"


def assert_changed(a, b, what):
    assert not np.array_equal(a, b), f"{what} did not change"


def slots_of(rec, var_index):
    return [r["index"] for r in rec["optimizer_variables"] if r["variable_index"] == var_index]


def digits_batch(n=32, seed=0):
    rng = np.random.RandomState(seed)
    data = np.load(os.path.join(SAVED, "data", "digits_5_9_train.npz"))
    idx = rng.choice(len(data["y"]), n, replace=False)
    return data["x"][idx], data["y"][idx]


# ------------------------------------------------------------------------------------------
# committed models and data
# ------------------------------------------------------------------------------------------

EXPECTED_COMMITTED = {
    "mlp_digits": {"n_out": 10, "n_mask": 4, "optimizer": "sgd",
                   "class_names": [str(d) for d in range(10)], "default_mask": [1, 1, 1, 1]},
    "cnn_digits": {"n_out": 5, "n_mask": 7, "optimizer": "adam",
                   "class_names": ["5", "6", "7", "8", "9"], "default_mask": [0, 0, 0, 0, 0, 1, 1]},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_COMMITTED))
def test_committed_model_record_and_signatures_agree(name):
    d = os.path.join(SAVED, name)
    exp = EXPECTED_COMMITTED[name]
    rec = te.check_export(d)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    assert size < 1024 * 1024, f"{name} is {size} bytes"
    mg = te.read_saved_model(d)
    sigs = {k: (sorted(v.inputs), sorted(v.outputs)) for k, v in mg.signature_def.items()
            if not k.startswith("__")}
    assert sigs == {
        "serving_default": (["inputs"], ["outputs"]),
        "train_step": (["inputs", "labels", "learning_rate", "mask"], ["accuracy", "loss"]),
        "eval_step": (["inputs", "labels"], ["accuracy", "loss"]),
    }
    ts = mg.signature_def["train_step"]
    assert ts.inputs["inputs"].dtype == tf.float32.as_datatype_enum
    assert te._sig_shape(ts.inputs["inputs"]) == [None, 8, 8, 1]
    assert ts.inputs["labels"].dtype == tf.int64.as_datatype_enum
    assert te._sig_shape(ts.inputs["labels"]) == [None]
    assert te._sig_shape(ts.inputs["mask"]) == [exp["n_mask"]]
    assert te._sig_shape(ts.inputs["learning_rate"]) == []
    assert te._sig_shape(mg.signature_def["serving_default"].outputs["outputs"]) == [None, exp["n_out"]]
    assert rec["optimizer"]["name"] == exp["optimizer"]
    assert rec["class_names"] == exp["class_names"]
    assert rec["default_mask"] == exp["default_mask"]
    assert rec["inputs"][0]["preprocessing"]["mode"] == "unit"
    assert rec["outputs"][0]["kind"] == "probabilities"
    if name == "cnn_digits":
        assert rec["batch_norm_layers"] == [{"layer": "bn1", "mask_indices": [1, 2],
                                             "state_indices": [0, 1], "training_by_default": False}]
        assert [r["kind"] for r in rec["non_trainable_variables"]] == [
            "batch_norm_moving_mean", "batch_norm_moving_variance"]


def _read_png_gray8(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert zlib.crc32(tag + body) == int.from_bytes(data[pos + 8 + n:pos + 12 + n], "big")
        if tag == b"IHDR":
            hdr = body
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = int.from_bytes(hdr[0:4], "big"), int.from_bytes(hdr[4:8], "big")
    assert hdr[8:10] == b"\x08\x00"  # 8-bit grayscale
    raw = zlib.decompress(idat)
    rows = [raw[r * (w + 1):(r + 1) * (w + 1)] for r in range(h)]
    assert all(row[0] == 0 for row in rows)
    return np.array([list(row[1:]) for row in rows], dtype=np.uint8)


def test_committed_data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = np.round(digits.images * (255.0 / 16.0))
    seen = 0
    for split in ("train", "val"):
        data = np.load(os.path.join(SAVED, "data", f"digits_5_9_{split}.npz"))
        x, y = data["x"], data["y"]
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (8, 8, 1)
        assert y.dtype == np.int64 and y.shape == (x.shape[0],)
        assert set(np.unique(y)) == {0, 1, 2, 3, 4}
        assert x.min() >= 0 and x.max() <= 255 and np.array_equal(x, np.round(x))
        seen += len(y)
    assert seen == int(np.isin(digits.target, [5, 6, 7, 8, 9]).sum())
    img_root = os.path.join(SAVED, "data", "digits_5_9_images")
    assert sorted(os.listdir(img_root)) == ["5", "6", "7", "8", "9"]
    for d in os.listdir(img_root):
        files = sorted(os.listdir(os.path.join(img_root, d)))
        assert 24 <= len(files) <= 60 and all(f.endswith(".png") for f in files)
        for f in files[:5]:
            img = _read_png_gray8(os.path.join(img_root, d, f))
            i = int(f[:-4])
            assert digits.target[i] == int(d)
            assert np.array_equal(img, raw[i])
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(SAVED) for f in fs)
    assert total < 5 * 1024 * 1024


def test_committed_cnn_frozen_base_finetune_learns():
    """A few TF2 train_step calls with the default mask improve the 5-9 val accuracy."""
    m = tf.saved_model.load(os.path.join(SAVED, "cnn_digits"))
    rec = te.read_contract(os.path.join(SAVED, "cnn_digits"))
    tr = np.load(os.path.join(SAVED, "data", "digits_5_9_train.npz"))
    va = np.load(os.path.join(SAVED, "data", "digits_5_9_val.npz"))
    ev = m.signatures["eval_step"]
    before = float(ev(inputs=tf.constant(va["x"]), labels=tf.constant(va["y"]))["accuracy"])
    mask = tf.constant(rec["default_mask"], tf.float32)
    for i in range(0, len(tr["y"]), 32):
        m.signatures["train_step"](inputs=tf.constant(tr["x"][i:i + 32]),
                                   labels=tf.constant(tr["y"][i:i + 32]), mask=mask,
                                   learning_rate=tf.constant(0.01))
    after = float(ev(inputs=tf.constant(va["x"]), labels=tf.constant(va["y"]))["accuracy"])
    assert before < 0.5 and after > 0.85, (before, after)


# ------------------------------------------------------------------------------------------
# TF1-session round trips
# ------------------------------------------------------------------------------------------

def test_tf1_roundtrip_mlp_sgd_partial_mask(tmp_path):
    model = tiny_mlp()
    exp_dir = str(tmp_path / "mlp")
    rec = te.export_trainable(model, exp_dir, preprocess="unit",
                              optimizer=te.optimizer_config("sgd", momentum=0.9, nesterov=True))
    assert [r["name"] for r in rec["mask_variables"]] == [
        "hidden/kernel", "hidden/bias", "out/kernel", "out/bias"]
    rng = np.random.RandomState(1)
    x = rng.uniform(0, 255, (8, 6)).astype(np.float32)
    y = rng.randint(0, 3, 8).astype(np.int64)
    keras_loss = float(keras.losses.SparseCategoricalCrossentropy()(y, model(x / 255.0, training=True)))
    keras_probs = model(x / 255.0, training=False).numpy()
    v0 = ckpt_values(exp_dir, rec)

    s = TF1Session(exp_dir)
    try:
        np.testing.assert_allclose(s.run("serving_default", inputs=x)["outputs"], keras_probs, atol=1e-6)
        ones = np.ones(4, np.float32)
        out1 = s.run("train_step", inputs=x, labels=y, mask=ones, learning_rate=np.float32(0.1))
        assert abs(float(out1["loss"]) - keras_loss) < 1e-5, (out1["loss"], keras_loss)
        d1 = s.save_as(str(tmp_path / "after1"))
        partial = np.array([1, 1, 0, 0], np.float32)  # train "hidden", freeze "out"
        out2 = s.run("train_step", inputs=x, labels=y, mask=partial, learning_rate=np.float32(0.1))
        assert out2["loss"].shape == () and out2["accuracy"].shape == ()
        ev = s.run("eval_step", inputs=x, labels=y)
        d2 = s.save_as(str(tmp_path / "after2"))
    finally:
        s.close()

    v1, v2 = ckpt_values(d1, rec), ckpt_values(d2, rec)
    for i in range(4):
        assert_changed(v0["mask_variables"][i], v1["mask_variables"][i], f"var {i} step 1")
    for i in (0, 1):
        assert_changed(v1["mask_variables"][i], v2["mask_variables"][i], f"var {i} step 2")
        for k in slots_of(rec, i):
            assert_changed(v1["optimizer_variables"][k], v2["optimizer_variables"][k], f"slot {k}")
    for i in (2, 3):
        assert_same(v1["mask_variables"][i], v2["mask_variables"][i], f"frozen var {i}")
        for k in slots_of(rec, i):
            assert np.any(v1["optimizer_variables"][k] != 0), "momentum slot should be non-zero"
            assert_same(v1["optimizer_variables"][k], v2["optimizer_variables"][k], f"frozen slot {k}")
    assert int(v2["optimizer_variables"][0]) == 2  # iterations

    # reload the re-saved SavedModel with the TF2 loader: it has the new weights
    loaded = tf.saved_model.load(d2)
    for i, var in enumerate(loaded.mask_variables):
        assert_same(var.numpy(), v2["mask_variables"][i], f"reloaded var {i}")
    ev2 = loaded.signatures["eval_step"](inputs=tf.constant(x), labels=tf.constant(y))
    np.testing.assert_allclose(float(ev2["loss"]), float(ev["loss"]), rtol=1e-6)
    te.check_export(d2)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["plain", "xla"])
def test_tf1_roundtrip_cnn_batchnorm_frozen_and_unfrozen(tmp_path, jit_compile):
    model = tiny_cnn()
    exp_dir = str(tmp_path / "cnn")
    rec = te.export_trainable(model, exp_dir, optimizer=te.optimizer_config("adam"),
                              preprocess="unit", frozen_layers=["conv", "bn"], jit_compile=jit_compile)
    assert rec["jit_compile"] is jit_compile
    names = [r["name"] for r in rec["mask_variables"]]
    assert names == ["conv/kernel", "bn/gamma", "bn/beta", "head/kernel", "head/bias"]
    default = np.array(rec["default_mask"], np.float32)
    assert default.tolist() == [0, 0, 0, 1, 1]
    bn = rec["batch_norm_layers"][0]
    assert bn["mask_indices"] == [1, 2] and not bn["training_by_default"]
    mm, mv = bn["state_indices"]

    rng = np.random.RandomState(2)
    x = rng.uniform(0, 255, (16, 6, 6, 1)).astype(np.float32)
    y = rng.randint(0, 4, 16).astype(np.int64)
    xs = x / 255.0
    # Keras reference for the frozen-base step: base.trainable=False -> BN in inference mode
    for name in ("conv", "bn"):
        model.get_layer(name).trainable = False
    loss_frozen = float(keras.losses.SparseCategoricalCrossentropy()(y, model(xs, training=True)))
    for name in ("conv", "bn"):
        model.get_layer(name).trainable = True
    v0 = ckpt_values(exp_dir, rec)

    s = TF1Session(exp_dir)
    try:
        out = s.run("train_step", inputs=x, labels=y, mask=default, learning_rate=np.float32(0.01))
        d1 = s.save_as(str(tmp_path / "s1"))
        s.run("train_step", inputs=x, labels=y, mask=np.ones(5, np.float32),
              learning_rate=np.float32(0.01))
        d2 = s.save_as(str(tmp_path / "s2"))
        s.run("train_step", inputs=x, labels=y, mask=default, learning_rate=np.float32(0.01))
        d3 = s.save_as(str(tmp_path / "s3"))
    finally:
        s.close()
    assert abs(float(out["loss"]) - loss_frozen) < 1e-5, (out["loss"], loss_frozen)
    v1, v2, v3 = (ckpt_values(d, rec) for d in (d1, d2, d3))

    # step 1, base frozen: BN stats, base weights and base slots bit-identical, head trained
    for j in (mm, mv):
        assert_same(v0["non_trainable_variables"][j], v1["non_trainable_variables"][j], f"BN stat {j}")
    for i in (0, 1, 2):
        assert_same(v0["mask_variables"][i], v1["mask_variables"][i], f"base var {i}")
        for k in slots_of(rec, i):
            assert_same(v0["optimizer_variables"][k], v1["optimizer_variables"][k], f"base slot {k}")
    for i in (3, 4):
        assert_changed(v0["mask_variables"][i], v1["mask_variables"][i], f"head var {i}")

    # step 2, all trained: BN in training mode, moving stats updated like Keras does
    conv_out = tf.nn.conv2d(xs, v1["mask_variables"][0], strides=1, padding="SAME")
    mean, var = tf.nn.moments(conv_out, axes=[0, 1, 2])
    momentum = model.get_layer("bn").momentum
    expected_mm = v1["non_trainable_variables"][mm] * momentum + mean.numpy() * (1 - momentum)
    expected_mv = v1["non_trainable_variables"][mv] * momentum + var.numpy() * (1 - momentum)
    assert_changed(v1["non_trainable_variables"][mm], v2["non_trainable_variables"][mm], "moving mean")
    np.testing.assert_allclose(v2["non_trainable_variables"][mm], expected_mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v2["non_trainable_variables"][mv], expected_mv, rtol=1e-5, atol=1e-6)
    for i in range(5):
        assert_changed(v1["mask_variables"][i], v2["mask_variables"][i], f"var {i} step 2")

    # step 3, base frozen again: non-zero Adam slots of the base stay put, BN stats too
    for j in (mm, mv):
        assert_same(v2["non_trainable_variables"][j], v3["non_trainable_variables"][j], f"BN stat {j}")
    for i in (0, 1, 2):
        assert_same(v2["mask_variables"][i], v3["mask_variables"][i], f"base var {i} step 3")
        for k in slots_of(rec, i):
            assert_same(v2["optimizer_variables"][k], v3["optimizer_variables"][k], f"base slot {k}")
    steps = {rec["optimizer_variables"][k]["variable_index"]: int(v3["optimizer_variables"][k])
             for k in range(len(rec["optimizer_variables"]))
             if rec["optimizer_variables"][k]["slot"] == "step"}
    assert steps == {0: 1, 1: 1, 2: 1, 3: 3, 4: 3}
    assert int(v3["optimizer_variables"][0]) == 3


@pytest.mark.parametrize("jit_compile", [False, True], ids=["plain", "xla"])
def test_tf1_handles_one_per_variable_and_wrong_mask_length_fails(tmp_path, jit_compile):
    model = tiny_mlp()
    exp_dir = str(tmp_path / "m")
    rec = te.export_trainable(model, exp_dir, jit_compile=jit_compile)
    mg = te.read_saved_model(exp_dir)
    n_vars = len(rec["mask_variables"]) + len(rec["non_trainable_variables"]) + len(rec["optimizer_variables"])
    handles = [n for n in mg.graph_def.node if n.op == "VarHandleOp" and n.attr["dtype"].type != tf.string.as_datatype_enum]
    assert len(handles) == n_vars
    s = TF1Session(exp_dir)
    try:
        # The Python client refuses a wrongly shaped feed itself; the C API does not, so bypass
        # the client check (internal API, as tf.compat.v1.Session._run_fn uses it) to reach the
        # in-graph assertion that protects tfload.
        sig = s.mg.signature_def["train_step"]
        g = s.graph
        feeds = {"inputs": np.zeros((2, 6), np.float32), "labels": np.zeros(2, np.int64),
                 "mask": np.ones(5, np.float32), "learning_rate": np.float32(0.1)}
        feed = {g.get_tensor_by_name(sig.inputs[k].name)._as_tf_output(): v for k, v in feeds.items()}
        fetch = [g.get_tensor_by_name(sig.outputs["loss"].name)._as_tf_output()]
        with pytest.raises(tf.errors.InvalidArgumentError, match="mask must have 4 entries"):
            s.sess._call_tf_sessionrun(None, feed, fetch, [], None)
        feeds["mask"] = np.ones(4, np.float32)
        feed[g.get_tensor_by_name(sig.inputs["mask"].name)._as_tf_output()] = feeds["mask"]
        (loss,) = s.sess._call_tf_sessionrun(None, feed, fetch, [], None)
        assert np.isfinite(loss)
    finally:
        s.close()


def test_xla_step_trains_like_the_plain_step(tmp_path):
    """--jit-compile changes how train_step runs, not what it computes: same losses and weights
    (to float rounding) over steps with a partial and a full mask."""
    results = []
    for jit_compile in (False, True):
        exp_dir = str(tmp_path / f"jit{int(jit_compile)}")
        rec = te.export_trainable(tiny_cnn(), exp_dir, optimizer=te.optimizer_config("adam"),
                                  preprocess="unit", jit_compile=jit_compile)
        rng = np.random.RandomState(4)
        s = TF1Session(exp_dir)
        try:
            losses = []
            for step in range(4):
                x = rng.uniform(0, 255, (16, 6, 6, 1)).astype(np.float32)
                y = rng.randint(0, 4, 16).astype(np.int64)
                mask = np.array([0, 0, 0, 1, 1] if step % 2 else [1] * 5, np.float32)
                losses.append(float(s.run("train_step", inputs=x, labels=y, mask=mask,
                                          learning_rate=np.float32(0.01))["loss"]))
            out_dir = s.save_as(str(tmp_path / f"trained{int(jit_compile)}"))
        finally:
            s.close()
        results.append((losses, ckpt_values(out_dir, rec)))
    (plain_losses, plain), (xla_losses, xla) = results
    np.testing.assert_allclose(xla_losses, plain_losses, rtol=1e-5)
    for group in ("mask_variables", "non_trainable_variables", "optimizer_variables"):
        for a, b in zip(plain[group], xla[group]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=group)
    assert_changed(plain["mask_variables"][0], ckpt_values(str(tmp_path / "jit0"), rec)["mask_variables"][0],
                   "conv kernel")


# ------------------------------------------------------------------------------------------
# optimizers and losses vs Keras
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,settings,keras_opt", [
    ("sgd", {"learning_rate": 0.1}, lambda: keras.optimizers.SGD(0.1)),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
     lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)),
    ("adam", {"learning_rate": 0.01}, lambda: keras.optimizers.Adam(0.01)),
    ("adamw", {"learning_rate": 0.01, "weight_decay": 0.1},
     lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1)),
])
def test_optimizer_matches_keras(tmp_path, name, settings, keras_opt):
    model = tiny_mlp(seed=3)
    exp_dir = str(tmp_path / name)
    rec = te.export_trainable(model, exp_dir, optimizer=te.optimizer_config(name, **settings))
    loaded = tf.saved_model.load(exp_dir)
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    opt = keras_opt()
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    rng = np.random.RandomState(4)
    for step in range(3):
        x = rng.normal(size=(8, 6)).astype(np.float32)
        y = rng.randint(0, 3, 8).astype(np.int64)
        out = loaded.signatures["train_step"](inputs=tf.constant(x), labels=tf.constant(y),
                                              mask=tf.ones([4]), learning_rate=tf.constant(settings["learning_rate"]))
        with tf.GradientTape() as tape:
            loss = loss_fn(y, ref(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, ref.trainable_variables), ref.trainable_variables))
        assert abs(float(out["loss"]) - float(loss)) < 1e-5
    for i, v in enumerate(ref.trainable_variables):
        assert rec["mask_variables"][i]["name"] == v.path
        np.testing.assert_allclose(loaded.mask_variables[i].numpy(), v.numpy(), rtol=1e-5, atol=1e-6)


def batch_norm_model(kind):
    """A small model whose BatchNormalization takes the fused kernel in training mode (conv2d,
    conv3d, gamma only) or keeps Keras's composite ops (after a Dense, an epsilon below the fused
    kernel's)."""
    keras.utils.set_random_seed(6)
    shape = {"conv3d": (3, 4, 4, 1), "dense": (6,)}.get(kind, (5, 5, 2))
    inp = keras.Input(shape)
    if kind == "conv3d":
        x = keras.layers.Conv3D(3, 2, padding="same", use_bias=False, name="conv")(inp)
    elif kind == "dense":
        x = keras.layers.Dense(5, use_bias=False, name="conv")(inp)
    else:  # no bias before BatchNormalization: its gradient is rounding noise, which Adam scales up
        x = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inp)
    bn_args = {"gamma_only": {"center": False}, "tiny_epsilon": {"epsilon": 1e-6}}.get(kind, {})
    x = keras.layers.BatchNormalization(name="bn", momentum=0.8, **bn_args)(x)
    x = keras.layers.Flatten(name="flat")(keras.layers.ReLU(name="relu")(x))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(x), name=f"bn_{kind}")


@pytest.mark.parametrize("kind,fused", [("conv2d", True), ("conv3d", True), ("gamma_only", True),
                                        ("dense", False), ("tiny_epsilon", False)])
def test_batch_norm_in_training_mode_trains_like_keras(tmp_path, kind, fused):
    """All trainable, BatchNormalization in training mode: the step's losses, weights and moving
    statistics equal Keras's own ``train_on_batch`` (relative 1e-5) over steps of different batch
    sizes (one of a single example), whether the step runs the fused kernel or Keras's composite
    ops; and the exported step holds the fused kernel exactly where the layer allows it."""
    model = batch_norm_model(kind)
    exp_dir = str(tmp_path / kind)
    te.export_trainable(model, exp_dir, optimizer=te.optimizer_config("adam", learning_rate=0.01))
    ops = op_types(exp_dir, "train_step")
    assert ("FusedBatchNormV3" in ops) is fused, sorted(ops)
    loaded = tf.saved_model.load(exp_dir)
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    ref.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    n_mask = len(loaded.mask_variables)
    rng = np.random.RandomState(7)
    for batch in (8, 5, 8, 1, 8):
        x = rng.uniform(0, 1, (batch, *model.input_shape[1:])).astype(np.float32)
        y = rng.randint(0, 3, batch).astype(np.int64)
        out = loaded.signatures["train_step"](inputs=tf.constant(x), labels=tf.constant(y), mask=tf.ones([n_mask]),
                                              learning_rate=tf.constant(0.01))
        keras_loss = float(ref.train_on_batch(x, y))
        assert abs(float(out["loss"]) - keras_loss) <= 1e-5 * max(1.0, abs(keras_loss)), (batch, out["loss"], keras_loss)
    ours = {v.name.split(":")[0]: v.numpy() for v in loaded.mask_variables + loaded.state_variables}
    checked = 0
    for v in ref.weights:
        if v.path in ours:
            np.testing.assert_allclose(ours[v.path], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=v.path)
            checked += 1
    assert checked == len(ref.weights), (sorted(ours), [v.path for v in ref.weights])


@pytest.mark.parametrize("loss,outputs", [("binary_crossentropy", "sigmoid"), ("mse", "linear"),
                                          ("sparse_categorical_crossentropy", "linear")])
def test_other_losses(tmp_path, loss, outputs):
    keras.utils.set_random_seed(5)
    inp = keras.Input((4,))
    out = keras.layers.Dense(2, activation=outputs)(keras.layers.Dense(3, activation="relu")(inp))
    model = keras.Model(inp, out)
    rec = te.export_trainable(model, str(tmp_path / "m"), loss=loss)
    rng = np.random.RandomState(6)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    if loss == "sparse_categorical_crossentropy":
        y = rng.randint(0, 2, 10).astype(np.int64)
        ref = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
        assert rec["loss"]["from_logits"] and rec["outputs"][0]["kind"] == "logits"
    elif loss == "binary_crossentropy":
        y = rng.randint(0, 2, (10, 2)).astype(np.float32)
        ref = keras.losses.BinaryCrossentropy()(y, model(x))
        assert rec["labels"] == {"key": "labels", "dtype": "float32", "shape": [None, 2],
                                 "description": "0 or 1 per output unit"}
    else:
        y = rng.normal(size=(10, 2)).astype(np.float32)
        ref = keras.losses.MeanSquaredError()(y, model(x))
        assert rec["metrics"] == ["mean_absolute_error"] and rec["class_names"] is None
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    ev = loaded.signatures["eval_step"](inputs=tf.constant(x), labels=tf.constant(y))
    assert sorted(ev) == sorted(["loss"] + rec["metrics"])
    assert abs(float(ev["loss"]) - float(ref)) < 1e-5


def test_named_input_and_reserved_name(tmp_path):
    rec = te.export_trainable(tiny_mlp(input_name="pixels"), str(tmp_path / "a"))
    assert rec["inputs"][0]["key"] == "pixels"
    assert rec["signatures"]["train_step"]["inputs"] == ["pixels", "labels", "mask", "learning_rate"]
    with pytest.raises(te.ContractError, match="reserved"):
        te.export_trainable(tiny_mlp(input_name="labels"), str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "b")


# ------------------------------------------------------------------------------------------
# model sources
# ------------------------------------------------------------------------------------------

def _serving_matches(export_dir, model, x, scale=1.0):
    loaded = tf.saved_model.load(export_dir)
    got = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    np.testing.assert_allclose(got, model(x * scale, training=False).numpy(), atol=1e-6)


def test_source_keras_file_and_h5_full_model(tmp_path):
    model = tiny_cnn(seed=7)
    x = np.random.RandomState(8).uniform(0, 255, (3, 6, 6, 1)).astype(np.float32)
    for fname in ("m.keras", "m.h5"):
        path = str(tmp_path / fname)
        model.save(path)
        loaded_model = te.load_source_model(model_path=path)
        out = str(tmp_path / (fname + ".export"))
        te.export_trainable(loaded_model, out, preprocess="unit")
        _serving_matches(out, model, x, 1 / 255.0)


def test_source_weights_files_plus_architecture(tmp_path):
    model = tiny_mlp(seed=9)
    x = np.random.RandomState(10).normal(size=(3, 6)).astype(np.float32)
    arch = tmp_path / "arch.json"
    arch.write_text(model.to_json())
    # Keras 3 weights file
    model.save_weights(str(tmp_path / "w.weights.h5"))
    # legacy (Keras 2 style) HDF5 weights file
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(str(tmp_path / "legacy.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    for wname in ("w.weights.h5", "legacy.h5"):
        m = te.load_source_model(weights=str(tmp_path / wname), architecture=str(arch))
        for a, b in zip(m.get_weights(), model.get_weights()):
            assert_same(a, b, wname)
        out = str(tmp_path / (wname + ".export"))
        te.export_trainable(m, out)
        _serving_matches(out, model, x)
    with pytest.raises(te.ContractError, match="weights only"):
        te.load_source_model(model_path=str(tmp_path / "legacy.h5"))


def test_cli_application_source(tmp_path):
    """MobileNetV2 alpha 0.35 at 32x32 (weights=None) through the command line; not trained. With
    ``--no-fused-batch-norm`` the step keeps Keras's composite batch-norm ops, as recorded."""
    out = str(tmp_path / "mnv2")
    res = subprocess.run(
        [EXPORTER, "--application", "MobileNetV2",
         "--input-shape", "32,32,3", "--alpha", "0.35", "--num-classes", "3", "--dropout", "0.2",
         "--default-freeze-base", "--optimizer", "adamw", "--class-names", "a,b,c", "--no-fused-batch-norm",
         "-o", out],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = te.check_export(out)
    assert rec["inputs"][0]["shape"] == [None, 32, 32, 3]
    assert rec["inputs"][0]["preprocessing"]["mode"] == "tf"
    assert rec["class_names"] == ["a", "b", "c"] and rec["optimizer"]["name"] == "adamw"
    on = [r["name"] for r in rec["mask_variables"] if r["trainable_by_default"]]
    assert on == ["head/kernel", "head/bias"]
    assert len(rec["batch_norm_layers"]) > 10
    assert not any(b["training_by_default"] for b in rec["batch_norm_layers"])
    assert rec["fused_batch_norm"] is False and "FusedBatchNormV3" not in op_types(out, "train_step")
    kinds = {r["kind"] for r in rec["non_trainable_variables"]}
    assert kinds == {"batch_norm_moving_mean", "batch_norm_moving_variance", "seed_generator_state"}
    loaded = tf.saved_model.load(out)
    probs = loaded.signatures["serving_default"](inputs=tf.zeros([2, 32, 32, 3]))["outputs"].numpy()
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_cli_help_overwrite_and_head_options(tmp_path):
    res = subprocess.run([EXPORTER, "--help"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "train_step" in res.stdout and "--default-freeze-base" in res.stdout
    model_path = str(tmp_path / "m.keras")
    tiny_cnn(seed=11).save(model_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = [EXPORTER, "--model", model_path, "--num-classes", "2", "--hidden-units", "4",
            "--dropout", "0.5", "--default-freeze-base", "--optimizer", "sgd", "--momentum", "0.5",
            "--preprocess", "unit", "--class-names", "no,yes", "-o", str(out)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "exists" in res.stderr
    assert (out / "keep.txt").exists()
    res = subprocess.run(args + ["--force"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (out / "keep.txt").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary dirs left behind"
    rec = te.check_export(str(out))
    assert rec["optimizer"] == {"name": "sgd", "learning_rate": 0.01, "momentum": 0.5, "nesterov": False}
    on = [r["name"] for r in rec["mask_variables"] if r["trainable_by_default"]]
    assert on == ["head_hidden/kernel", "head_hidden/bias", "head/kernel", "head/bias"]
    # the new head (with dropout, i.e. seed generator state variables) trains in a TF1 session
    s = TF1Session(str(out))
    try:
        x = np.random.RandomState(12).uniform(0, 255, (4, 6, 6, 1)).astype(np.float32)
        res = s.run("train_step", inputs=x, labels=np.array([0, 1, 0, 1]),
                    mask=np.array(rec["default_mask"], np.float32), learning_rate=np.float32(0.1))
        assert np.isfinite(res["loss"])
        d = s.save_as(str(tmp_path / "trained"))
    finally:
        s.close()
    v0, v1 = ckpt_values(str(out), rec), ckpt_values(d, rec)
    for r in rec["mask_variables"]:
        if r["trainable_by_default"]:
            assert_changed(v0["mask_variables"][r["index"]], v1["mask_variables"][r["index"]], r["name"])
        else:
            assert_same(v0["mask_variables"][r["index"]], v1["mask_variables"][r["index"]], r["name"])
    res = subprocess.run([EXPORTER, "--check", d], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "OK" in res.stdout


# ------------------------------------------------------------------------------------------
# the contract document's custom train_step example
# ------------------------------------------------------------------------------------------

def test_doc_custom_train_step_example(tmp_path):
    with open(DOC) as f:
        doc = f.read()
    m = re.search(r"<!-- tfload-doc-example: custom-train-step -->\s*```python\n(.*?)```", doc, re.S)
    assert m, "example block not found in docs/train-step-contract.md"
    ns = {"__name__": "doc_example"}
    exec(compile(m.group(1), DOC, "exec"), ns)
    exp_dir = str(tmp_path / "custom")
    rec = ns["export_custom"](exp_dir)
    assert te.check_export(exp_dir)["model_name"] == rec["model_name"]
    x = np.random.RandomState(13).uniform(0, 255, (6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], np.int64)
    v0 = ckpt_values(exp_dir, rec)
    s = TF1Session(exp_dir)
    try:
        ev = s.run("eval_step", inputs=x, labels=y)
        out = s.run("train_step", inputs=x, labels=y, mask=np.array([1, 0], np.float32),
                    learning_rate=np.float32(0.5))
        assert abs(float(out["loss"]) - float(ev["loss"])) < 1e-6
        d = s.save_as(str(tmp_path / "trained"))
    finally:
        s.close()
    v1 = ckpt_values(d, rec)
    assert_changed(v0["mask_variables"][0], v1["mask_variables"][0], "kernel")
    assert_same(v0["mask_variables"][1], v1["mask_variables"][1], "bias (masked)")
    assert int(v1["optimizer_variables"][0]) == 1
    loaded = tf.saved_model.load(d)
    after = loaded.signatures["eval_step"](inputs=tf.constant(x), labels=tf.constant(y))
    assert float(after["loss"]) < float(ev["loss"])
