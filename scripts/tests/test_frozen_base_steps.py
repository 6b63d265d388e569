"""The exporter's frozen-base steps (export.py ``frozen_base_steps``): ``train_step_from_<layer>``
runs the base below a clean cut forward in inference mode and the head's step alone (no backward
pass below the cut), and for a mask that freezes everything below the cut it must change exactly
what ``train_step`` changes.

Run: .venv/bin/python -m pytest scripts/tests/test_frozen_base_steps.py -x -q

Both steps run in TF1 sessions, as tfload runs them through the C API: same batches, same mask,
per-step losses compared, then every saved variable compared after saving through the SaverDef;
the variables the mask freezes, and their optimizer slots, stay byte-identical.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfload_export as te  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tfload_export.contract import read_contract  # noqa: E402
from tfload_export.optimizers import optimizer_config  # noqa: E402

from test_feature_cache_export import (RTOL, batches, checkpoint, cnn_with_bn_base,  # noqa: E402
                                      save_through_saver_def)

tf, keras = te._import_tf()
BACKWARD = {"Conv2DBackpropFilter", "Conv2DBackpropInput", "DepthwiseConv2dNativeBackpropFilter",
            "DepthwiseConv2dNativeBackpropInput"}


def run_steps(export_dir, signature, data, mask, out_dir, lr=0.01):
    """Per-step losses of ``signature`` (fed train_step's inputs) in a TF1 session; saves to out_dir."""
    losses = []
    with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        sig = mg.signature_def[signature]
        for x, y in data:
            feed = {sig.inputs["inputs"].name: x, sig.inputs["labels"].name: y,
                    sig.inputs["mask"].name: mask, sig.inputs["learning_rate"].name: np.float32(lr)}
            losses.append(sess.run(sig.outputs["loss"].name, feed))
        save_through_saver_def(sess, mg, out_dir)
    return np.array(losses)


def mask_of(rec, trainable):
    return np.array([1.0 if r["name"] in trainable else 0.0 for r in rec["mask_variables"]], np.float32)


def assert_same_steps(rec, export_dir, signature, tmp_path, data, mask, tag):
    """``signature`` and ``train_step`` agree in per-step losses and every saved variable; the
    variables masked 0 (and their optimizer slots) are byte-identical to the export's."""
    a_dir, b_dir = str(tmp_path / f"{tag}_frozen_base"), str(tmp_path / f"{tag}_train_step")
    np.testing.assert_allclose(run_steps(export_dir, signature, data, mask, a_dir),
                               run_steps(export_dir, "train_step", data, mask, b_dir), rtol=RTOL)
    a, b, before = checkpoint(a_dir), checkpoint(b_dir), checkpoint(export_dir)
    assert a.keys() == b.keys() == before.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=1e-7, err_msg=key)
    frozen = {r["index"] for r in rec["mask_variables"] if mask[r["index"]] == 0.0}
    keys = [r["checkpoint_key"] for r in rec["mask_variables"] if r["index"] in frozen]
    keys += [r["checkpoint_key"] for r in rec["optimizer_variables"] if r.get("variable_index") in frozen]
    for key in keys:
        assert a[key].tobytes() == before[key].tobytes(), f"{key} moved although masked 0"
    return a, before


def op_types(export_dir, signature):
    """The op types of ``signature``'s function and every library function it calls."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    mg = sm.meta_graphs[0]
    call = mg.signature_def[signature].outputs["loss"].name.split(":")[0]
    node = next(n for n in mg.graph_def.node if n.name == call)
    funcs = {f.signature.name: f for f in mg.graph_def.library.function}
    seen, todo, ops = set(), [node.attr["f"].func.name], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in funcs:
            continue
        seen.add(name)
        for n in funcs[name].node_def:
            ops.add(n.op)
            todo.append(n.op)
            for attr in n.attr.values():
                todo.extend(f.name for f in attr.list.func)
                if attr.HasField("func"):
                    todo.append(attr.func.name)
    return ops


def test_frozen_base_steps_change_exactly_what_train_step_changes(tmp_path):
    out = str(tmp_path / "cnn")
    rec = te.export_trainable(cnn_with_bn_base(), out, optimizer=optimizer_config("adam"),
                              frozen_layers=["conv", "bn"])
    # One step: the cuts at flat and drop have the same variables below; drop's head is smaller.
    assert rec["frozen_base_steps"] == [{"signature": "train_step_from_5", "layer_index": 5, "layer": "drop",
                                         "mask_indices_below": [0, 1, 2, 3]}]
    assert read_contract(out)["frozen_base_steps"] == rec["frozen_base_steps"]
    data = batches(5, 8, (6, 6, 1), 4)
    for tag, mask in {"base_frozen": np.array(rec["default_mask"], np.float32),
                      "last_layer": mask_of(rec, {"head/kernel", "head/bias"})}.items():
        after, before = assert_same_steps(rec, out, "train_step_from_5", tmp_path, data, mask, tag)
        moved = {r["name"] for r in rec["mask_variables"]
                 if after[r["checkpoint_key"]].tobytes() != before[r["checkpoint_key"]].tobytes()}
        assert moved == {r["name"] for r in rec["mask_variables"] if mask[r["index"]] > 0}, tag


def test_a_frozen_base_step_has_no_backward_pass_below_its_cut_and_refuses_other_masks(tmp_path):
    out = str(tmp_path / "cnn")
    rec = te.export_trainable(cnn_with_bn_base(), out, frozen_layers=["conv", "bn"])
    assert "Conv2DBackpropFilter" in op_types(out, "train_step")
    frozen = op_types(out, "train_step_from_5")
    assert not frozen & BACKWARD, frozen & BACKWARD
    assert "MatMul" in frozen  # the head's forward and backward are there
    with pytest.raises(tf.errors.InvalidArgumentError, match="every mask entry below it"):
        run_steps(out, "train_step_from_5", batches(1, 4, (6, 6, 1), 4),
                  mask_of(rec, {"bn/gamma", "head/kernel"}), str(tmp_path / "refused"))


def test_no_frozen_base_steps_where_they_cannot_stand_in(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    x = keras.layers.Dropout(0.5, name="drop")(inp)  # stochastic below every cut
    x = keras.layers.Dense(5, name="d1")(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(x))
    assert "frozen_base_steps" not in te.export_trainable(model, str(tmp_path / "drop"))
    for name, kwargs in {"w": {"sample_weights": True}, "x": {"jit_compile": True},
                         "off": {"frozen_base_steps": False}}.items():
        rec = te.export_trainable(cnn_with_bn_base(), str(tmp_path / name), **kwargs)
        assert "frozen_base_steps" not in rec, name
        with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
            sigs = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(tmp_path / name)).signature_def
            assert not [k for k in sigs if k.startswith("train_step_from_")], name
