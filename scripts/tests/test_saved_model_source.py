"""The exporter's SavedModel source (``tfload-export --saved-model DIR``): what it exports, and
the one-line errors (no traceback, exit code 1) where a SavedModel cannot be made trainable.

Run: .venv/bin/python -m pytest scripts/tests/test_saved_model_source.py -q
(The training parity with tfload is tests/train/saved_model_source.rs.)
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfload_export as te  # noqa: E402
from tfload_export import cli  # noqa: E402

tf, keras = te.import_tf()


def export_cli(*args):
    """``python -m tfload_export ARGS`` in a child process: (exit code, stdout, stderr)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "tfload_export", *args], env=env, capture_output=True,
                          text=True)
    return done.returncode, done.stdout, done.stderr


def assert_one_line_error(code, stderr, *needles):
    lines = [l for l in stderr.splitlines() if l.startswith("tfload-export: error:")]
    assert code == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


class Module(tf.Module):
    """A ``tf.Module`` whose signature reads ``v`` only through ``stop_gradient`` (no gradient)
    or not at all (no variables)."""

    def __init__(self, use_variable):
        super().__init__()
        self.v = tf.Variable(tf.ones([3]), name="v")
        self.use_variable = use_variable

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        if self.use_variable:
            return {"features": x + tf.stop_gradient(self.v)}
        return {"features": x * 2.0}


def save_module(path, use_variable):
    m = Module(use_variable)
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return str(path)


@pytest.fixture(scope="module")
def keras_saved(tmp_path_factory):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    # Named: Keras's automatic names count layers made earlier in the same process.
    x = keras.layers.Dense(4, activation="relu", name="dense")(inp)
    x = keras.layers.BatchNormalization(name="batch_normalization")(x)
    path = str(tmp_path_factory.mktemp("src") / "mlp")
    tf.saved_model.save(keras.Model(inp, x), path)
    return path


def test_exports_restored_frozen_head_trained(keras_saved, tmp_path):
    out = str(tmp_path / "out")
    rec = te.saved_model_source.export_saved_model_trainable(keras_saved, out, num_classes=3)
    restored = [r for r in rec["mask_variables"] if r["restored"]]
    assert [r["name"] for r in restored] == ["dense/kernel", "dense/bias", "batch_normalization/gamma",
                                             "batch_normalization/beta"]
    assert rec["default_mask"] == [0.0] * 4 + [1.0, 1.0]
    assert rec["source"]["kind"] == "saved_model" and rec["source"]["training_mode"] is False
    assert rec["outputs"][0]["shape"] == [None, 3]
    te.check_export(out)
    # One handle per variable: the checkpoint holds exactly the recorded variables (+ optimizer).
    keys = {k for k, _ in tf.train.list_variables(os.path.join(out, "variables", "variables"))}
    recorded = {r["checkpoint_key"] for group in ("mask_variables", "non_trainable_variables",
                                                 "optimizer_variables") for r in rec[group]}
    assert recorded <= keys
    assert not {k for k in keys - recorded if k.endswith("VARIABLE_VALUE")}


def test_train_step_moves_only_the_head(keras_saved, tmp_path):
    out = str(tmp_path / "out")
    rec = te.saved_model_source.export_saved_model_trainable(keras_saved, out, num_classes=3)
    m = tf.saved_model.load(out)
    before = [v.numpy().copy() for v in m.mask_variables]
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 6)).astype("float32"))
    m.signatures["train_step"](inputs=x, labels=tf.constant([0, 1, 2, 0, 1, 2, 0, 1], tf.int64),
                               mask=tf.constant(rec["default_mask"]), learning_rate=tf.constant(0.5))
    for r, b, v in zip(rec["mask_variables"], before, m.mask_variables):
        assert np.array_equal(b, v.numpy()) != r["trainable_by_default"], r["name"]


def test_no_variables_is_one_clear_error(tmp_path):
    src = save_module(tmp_path / "novars", use_variable=False)
    code, _, err = export_cli("--saved-model", src, "--num-classes", "2", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "reads no trainable variables")
    assert not (tmp_path / "o").exists()


def test_no_gradient_is_one_clear_error(tmp_path):
    src = save_module(tmp_path / "nograd", use_variable=True)
    code, _, err = export_cli("--saved-model", src, "--num-classes", "2", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "no gradient", "'v'")


def test_not_a_saved_model_and_missing_signature(tmp_path, keras_saved):
    code, _, err = export_cli("--saved-model", str(tmp_path), "--num-classes", "2", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "no saved_model.pb")
    code, _, err = export_cli("--saved-model", keras_saved, "--signature", "nope", "--num-classes", "2",
                              "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "no signature 'nope'", "serving_default")


def test_head_needs_a_feature_vector(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 1))
    src = str(tmp_path / "conv")
    tf.saved_model.save(keras.Model(inp, keras.layers.Conv2D(2, 3)(inp)), src)
    code, _, err = export_cli("--saved-model", src, "--num-classes", "2", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "needs a float [batch, features] tensor")


def test_a_failing_save_is_one_clear_error(keras_saved, tmp_path, monkeypatch, capsys):
    def failing_save(*args, **kwargs):
        raise ValueError("Found invalid capture Tensor(...) when saving custom gradients.\nmore detail")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    code = cli.main(["--saved-model", keras_saved, "--num-classes", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "saving the trainable SavedModel failed", "invalid capture")
    assert not (tmp_path / "o").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".o.tmp")]


def test_saved_model_excludes_keras_sources(keras_saved, tmp_path):
    code, _, err = export_cli("--saved-model", keras_saved, "--application", "MobileNetV2",
                              "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "cannot be combined with --application")
