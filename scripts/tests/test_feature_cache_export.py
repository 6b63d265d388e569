"""The exporter's feature-cache signatures (python/tfload_export/feature_cut.py): ``features`` then
``head_train_step`` must change exactly what ``train_step`` changes with the base frozen.

Run: .venv/bin/python -m pytest scripts/tests/test_feature_cache_export.py -x -q

Both paths run in TF1 sessions, as tfload runs them through the C API: same batches, same mask,
per-step losses compared, then every saved variable (weights, BN statistics, optimizer slots,
``iterations``, dropout seed states) compared after saving through the SaverDef.
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfload_export as te  # noqa: E402
from tfload_export import feature_cut as fc  # noqa: E402
from tfload_export.contract import read_contract  # noqa: E402
from tfload_export.optimizers import optimizer_config  # noqa: E402
from tfload_export.sources import build_application  # noqa: E402

tf, keras = te._import_tf()
RTOL = 1e-5


def cnn_with_bn_base(seed=0):
    """conv (L2) -> BN -> relu -> flatten | dropout -> dense(L2) -> dense: base = conv + BN."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv",
                            kernel_regularizer=keras.regularizers.l2(0.01))(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dropout(0.3, seed=1, name="drop")(x)
    x = keras.layers.Dense(5, activation="relu", name="hid",
                           kernel_regularizer=keras.regularizers.l2(0.01))(x)
    out = keras.layers.Dense(4, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="cnn_bn")


def batches(n_steps, batch, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0, 255, (batch, *shape)).astype(np.float32),
             rng.integers(0, classes, batch).astype(np.int64)) for _ in range(n_steps)]


def run_steps(export_dir, data, mask, cached, out_dir, lr=0.01):
    """Per-step losses of ``train_step`` (or ``features`` + ``head_train_step``); saves to out_dir."""
    losses = []
    with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        sigs = mg.signature_def
        for x, y in data:
            if cached:
                feats = sess.run(sigs["features"].outputs["features"].name, {sigs["features"].inputs["inputs"].name: x})
                sig, first = sigs["head_train_step"], ("features", feats)
            else:
                sig, first = sigs["train_step"], ("inputs", x)
            feed = {sig.inputs[first[0]].name: first[1], sig.inputs["labels"].name: y,
                    sig.inputs["mask"].name: mask, sig.inputs["learning_rate"].name: np.float32(lr)}
            losses.append(sess.run(sig.outputs["loss"].name, feed))
        save_through_saver_def(sess, mg, out_dir)
    return np.array(losses)


def save_through_saver_def(sess, meta_graph, out_dir):
    """Writes the session's variables to ``out_dir/variables`` through the MetaGraph's SaverDef."""
    sd = meta_graph.saver_def
    os.makedirs(os.path.join(out_dir, "variables"), exist_ok=True)
    sess.run(sd.save_tensor_name, {sd.filename_tensor_name: os.path.join(out_dir, "variables", "variables")})


def checkpoint(out_dir):
    reader = tf.train.load_checkpoint(os.path.join(out_dir, "variables", "variables"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "VARIABLE_VALUE" in k}


def assert_same_training(export_dir, tmp_path, data, mask):
    full = run_steps(export_dir, data, mask, False, str(tmp_path / "full"))
    cached = run_steps(export_dir, data, mask, True, str(tmp_path / "cached"))
    np.testing.assert_allclose(cached, full, rtol=RTOL)
    a, b = checkpoint(str(tmp_path / "full")), checkpoint(str(tmp_path / "cached"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=RTOL, atol=1e-7, err_msg=key)
    return a


def test_head_step_after_features_equals_train_step_with_frozen_base(tmp_path):
    out = str(tmp_path / "cnn")
    rec = te.export_trainable(cnn_with_bn_base(), out, optimizer=optimizer_config("adam"),
                              frozen_layers=["conv", "bn"])
    cut = rec["feature_cut"]
    assert cut["version"] == fc.FEATURE_CUT_VERSION and cut["mask"] == "full"
    # The highest cut with every default-trainable variable above it: the dropout is in the head.
    assert cut["layer"] == "drop" and cut["features_shape"] == [None, 108]
    names = [v["name"] for v in rec["mask_variables"]]
    assert [names[i] for i in cut["mask_indices_below"]] == ["conv/kernel", "conv/bias", "bn/gamma", "bn/beta"]
    assert cut["stochastic_layers_below"] == [] and cut["other_blockers_below"] == []
    assert any(c["layer"] == "flat" for c in rec["feature_cuts"])
    assert read_contract(out)["feature_cut"] == cut
    mask = np.array(rec["default_mask"], np.float32)
    before = checkpoint(out)
    after = assert_same_training(out, tmp_path, batches(6, 8, (6, 6, 1), 4), mask)
    moved = {r["name"] for r in rec["mask_variables"]
             if not np.array_equal(after[r["checkpoint_key"]], before[r["checkpoint_key"]])}
    assert moved == {"hid/kernel", "hid/bias", "head/kernel", "head/bias"}
    it = next(r for r in rec["optimizer_variables"] if r["slot"] == "iterations")
    assert after[it["checkpoint_key"]] == 6


def test_application_new_head_cut_is_at_the_head(tmp_path):
    keras.utils.set_random_seed(0)
    base = build_application("MobileNetV2", (32, 32, 3), alpha=0.35)
    model, head_names = te.replace_head(base, 3, whole_model_is_base=True)
    frozen = [l.name for l in model.layers if l.name not in head_names]
    out = str(tmp_path / "mnv2")
    rec = te.export_trainable(model, out, optimizer=optimizer_config("adam", learning_rate=1e-3),
                              frozen_layers=frozen, preprocess="tf", head_names=head_names)
    cut = rec["feature_cut"]
    assert cut["layer"] == head_names[0] and cut["features_shape"][-1] == model.layers[-1].input.shape[-1]
    assert cut["mask_indices_head"] == [len(rec["mask_variables"]) - 2, len(rec["mask_variables"]) - 1]
    assert_same_training(out, tmp_path, batches(3, 4, (32, 32, 3), 3), np.array(rec["default_mask"], np.float32))


def test_dropout_below_the_cut_is_recorded_and_no_feature_cut_option(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    x = keras.layers.Dense(6, name="d1")(inp)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Dense(5, name="d2")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    rec = te.export_trainable(model, str(tmp_path / "a"), frozen_layers=["d1", "d2"])
    assert rec["feature_cut"]["layer"] == "drop"  # the highest cut with nothing stochastic below
    rec = te.export_trainable(model, str(tmp_path / "h"), frozen_layers=["d1", "d2"], head_names=["head"])
    assert rec["feature_cut"]["layer"] == "head"
    assert rec["feature_cut"]["stochastic_layers_below"] == ["drop"]
    rec = te.export_trainable(model, str(tmp_path / "b"), feature_cache=False)
    assert "feature_cut" not in rec
    with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(tmp_path / "b"))
        assert "head_train_step" not in mg.signature_def
