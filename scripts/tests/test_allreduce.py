"""Tests of ``train_step_allreduce`` (contract extension ``allreduce``): in a group of one it is
``train_step`` bit for bit (plain), or to float rounding (``--jit-compile``, where the step is
compiled in two parts around the reduce); the record describes it.

Run: .venv/bin/python -m pytest scripts/tests/test_allreduce.py -x -q
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfload_export as te  # noqa: E402

tf, keras = te._import_tf()


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    x = keras.layers.Dense(5, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inp, out, name="small")


def run_steps(export_dir, signature, steps, extra, weighted=False):
    rng = np.random.RandomState(0)
    losses = []
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        sig = mg.signature_def[signature]
        rec = te.read_contract(export_dir)
        n_mask = len(rec["mask_variables"])
        for _ in range(steps):
            x = rng.uniform(size=(8, 6)).astype(np.float32)
            y = rng.randint(0, 3, size=8).astype(np.int64)
            feed = {sig.inputs["inputs"].name: x, sig.inputs["labels"].name: y,
                    sig.inputs["mask"].name: np.ones(n_mask, np.float32),
                    sig.inputs["learning_rate"].name: np.float32(0.05)}
            feed.update({sig.inputs[k].name: np.int32(v) for k, v in extra.items()})
            if "sample_weight" in sig.inputs:
                w = rng.uniform(0.1, 3.0, size=8)  # drawn either way: the same x and y follow
                w = w if weighted else np.ones(8)
                feed[sig.inputs["sample_weight"].name] = w.astype(np.float32)
            out = sess.run({k: t.name for k, t in sig.outputs.items()}, feed)
            losses.append((out["loss"], out["accuracy"]))
        handles = [op for op in sess.graph.get_operations()
                   if op.type == "VarHandleOp" and op.get_attr("dtype") != tf.string]
        values = sess.run([tf.raw_ops.ReadVariableOp(resource=op.outputs[0], dtype=op.get_attr("dtype"))
                           for op in handles])
    return losses, values


@pytest.mark.parametrize("jit_compile", [False, True], ids=["plain", "xla"])
def test_group_of_one_is_train_step(tmp_path, jit_compile):
    for opt in ("adam", "sgd"):
        d = str(tmp_path / f"{opt}{int(jit_compile)}")
        rec = te.export_trainable(small_model(), d, optimizer=te.optimizer_config(opt, momentum=0.9)
                                  if opt == "sgd" else te.optimizer_config(opt), jit_compile=jit_compile)
        assert rec["allreduce"]["version"] == 1
        assert rec["signatures"]["train_step_allreduce"]["inputs"] == [
            "inputs", "labels", "mask", "learning_rate", "group_size", "group_key", "instance_key"]
        plain_losses, plain_vars = run_steps(d, "train_step", 5, {})
        one_losses, one_vars = run_steps(d, "train_step_allreduce", 5,
                                         {"group_size": 1, "group_key": 1, "instance_key": 1})
        assert len(plain_vars) == len(one_vars) > 0
        if jit_compile:
            np.testing.assert_allclose(plain_losses, one_losses, rtol=1e-5, atol=1e-6)
            for a, b in zip(plain_vars, one_vars):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert plain_losses == one_losses
            for a, b in zip(plain_vars, one_vars):
                assert a.dtype == b.dtype and np.array_equal(a, b)
        _, untrained = run_steps(d, "train_step", 0, {})
        assert any(not np.array_equal(a, b) for a, b in zip(untrained, one_vars)), "nothing trained"


@pytest.mark.parametrize("jit_compile", [False, True], ids=["plain", "xla"])
def test_group_of_one_with_sample_weights_is_train_step(tmp_path, jit_compile):
    d = str(tmp_path / f"weighted{int(jit_compile)}")
    rec = te.export_trainable(small_model(), d, optimizer=te.optimizer_config("adam"), sample_weights=True,
                              jit_compile=jit_compile)
    assert rec["signatures"]["train_step_allreduce"]["inputs"] == [
        "inputs", "labels", "sample_weight", "mask", "learning_rate", "group_size", "group_key", "instance_key"]
    plain_losses, plain_vars = run_steps(d, "train_step", 5, {}, weighted=True)
    one_losses, one_vars = run_steps(d, "train_step_allreduce", 5,
                                     {"group_size": 1, "group_key": 1, "instance_key": 1}, weighted=True)
    unweighted_losses, _ = run_steps(d, "train_step", 5, {})
    assert plain_losses != unweighted_losses, "the weights change the loss"
    np.testing.assert_allclose(plain_losses, one_losses, rtol=1e-6 if jit_compile else 0, atol=1e-7 if jit_compile else 0)
    for a, b in zip(plain_vars, one_vars):
        np.testing.assert_allclose(a, b, rtol=1e-5 if jit_compile else 0, atol=1e-6 if jit_compile else 0)


def test_check_accepts_the_extended_record(tmp_path):
    d = str(tmp_path / "m")
    te.export_trainable(small_model(), d, allreduce_timeout=12.5)
    rec = te.check_export(d)
    assert rec["allreduce"]["timeout_seconds"] == 12.5
    assert rec["contract_version"] == 1
