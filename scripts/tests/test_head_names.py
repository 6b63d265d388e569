"""The exporter's --head-names and its --weights with --application: the user's head weights are
loaded by layer name or the export fails naming the layers left without (issue 16 item 4).

Run: .venv/bin/python -m pytest scripts/tests/test_head_names.py -q
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfload_export as te  # noqa: E402
from tfload_export.cli import run  # noqa: E402
from tfload_export.head import replace_head  # noqa: E402
from tfload_export.weights import load_by_name, read_layer_weights  # noqa: E402

tf, keras = te._import_tf()

APP = ["--application", "MobileNetV2", "--input-shape", "32,32,3", "--alpha", "0.35"]


def app_base():
    keras.utils.set_random_seed(3)
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                          weights=None, pooling="avg")


@pytest.fixture(scope="module")
def user_weights(tmp_path_factory):
    """The tutorial's shape at a small size: an application base, Dense(8, relu) `dense`,
    Dense(3, softmax) `dense_1` (Keras's automatic names), trained-looking random weights."""
    base = app_base()
    x = keras.layers.Dense(8, activation="relu", name="dense")(base.output)
    out = keras.layers.Dense(3, activation="softmax", name="dense_1")(x)
    user = keras.Model(base.input, out)
    rng = np.random.default_rng(1)
    user.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in user.get_weights()])
    path = str(tmp_path_factory.mktemp("user") / "user.weights.h5")
    user.save_weights(path)
    return path, {layer.name: layer.get_weights() for layer in user.layers if layer.weights}


def new_head_model(names=None):
    model, _ = replace_head(app_base(), 3, hidden_units=[8], whole_model_is_base=True, names=names)
    return model


def test_head_names_name_the_new_dense_layers_and_bad_ones_are_refused():
    model = new_head_model(["dense", "dense_1"])
    assert [layer.name for layer in model.layers[-2:]] == ["dense", "dense_1"]
    assert [layer.name for layer in new_head_model().layers[-2:]] == ["head_hidden", "head"]
    with pytest.raises(te.ContractError, match="gives 1 name.*has 2 Dense layer"):
        new_head_model(["dense"])
    with pytest.raises(te.ContractError, match="Conv1 already name"):
        new_head_model(["Conv1", "head"])


def test_weights_load_by_name_into_a_head_named_as_the_file(user_weights):
    path, expected = user_weights
    model = new_head_model(["dense", "dense_1"])
    report = load_by_name(model, path)
    assert not report.missing and not report.mismatched and not report.unused
    for layer in model.layers:
        if layer.weights:
            for got, want in zip(layer.get_weights(), expected[layer.name]):
                np.testing.assert_array_equal(got, want, err_msg=layer.name)


def test_a_head_the_file_does_not_name_is_an_error_that_says_what_to_do(user_weights):
    path, expected = user_weights
    model = new_head_model()
    before = model.get_layer("Conv1").get_weights()[0].copy()
    with pytest.raises(te.ContractError) as error:
        load_by_name(model, path)
    text = str(error.value)
    assert "holds no weights for 2 layer(s) of the model (head_hidden, head)" in text
    assert "the file's layer(s) dense, dense_1 match no layer" in text
    assert "--head-names dense,dense_1" in text and "--skip-mismatch" in text
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], before)  # nothing loaded
    report = load_by_name(model, path, skip_mismatch=True)
    assert report.missing == ["head_hidden", "head"]
    assert "kept their new values (--skip-mismatch): head_hidden, head" in report.summary()
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], expected["Conv1"][0])


def test_legacy_h5_files_are_read_by_layer_name(tmp_path, user_weights):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    _, expected = user_weights
    model = new_head_model(["dense", "dense_1"])
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(expected[layer.name])
    path = str(tmp_path / "legacy.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    stored = read_layer_weights(path)
    assert set(stored) == set(expected)
    np.testing.assert_array_equal(stored["dense_1"][1], expected["dense_1"][1])


def test_cli_refuses_writes_nothing_then_exports_with_head_names(tmp_path, user_weights, capsys):
    path, _ = user_weights
    out = tmp_path / "exported"
    args = [*APP, "--num-classes", "3", "--hidden-units", "8", "--weights", path, "-o", str(out)]
    with pytest.raises(te.ContractError, match="--head-names dense,dense_1"):
        run(args)
    assert not out.exists()
    assert run([*args, "--head-names", "dense,dense_1"]) == 0
    printed = capsys.readouterr().out
    assert f"loaded weights of {len(read_layer_weights(path))} layer(s) by name from {path}" in printed
    rec = te.check_export(str(out))
    names = [r["name"] for r in rec["mask_variables"]]
    assert "dense_1/kernel" in names and not any(n.startswith("head") for n in names)
    with pytest.raises(te.ContractError, match="give --num-classes"):
        run([*APP, "--head-names", "a", "-o", str(tmp_path / "other")])
