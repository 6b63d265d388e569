"""The optimizer registry's update rules against Keras 3 itself: the exported train_step's
per-step losses and final weights equal `train_on_batch` with the same optimizer on the same
batches, with part of the model masked (frozen in Keras), and the masked variables and their
slots stay byte for byte what they were.

Run: .venv/bin/python -m pytest scripts/tests -q
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import tfload_export as te

tf, keras = te.import_tf()

STEPS = 4

CASES = {
    "adam": ({"learning_rate": 0.01}, lambda: keras.optimizers.Adam(0.01)),
    "sgd": ({"learning_rate": 0.5}, lambda: keras.optimizers.SGD(0.5)),
    "sgd_momentum_nesterov": ({"learning_rate": 0.5, "momentum": 0.9, "nesterov": True},
                              lambda: keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True)),
    "rmsprop": ({"learning_rate": 0.01}, lambda: keras.optimizers.RMSprop(0.01)),
    "rmsprop_momentum_centered": ({"learning_rate": 0.01, "momentum": 0.9, "centered": True},
                                  lambda: keras.optimizers.RMSprop(0.01, momentum=0.9, centered=True)),
    "adagrad": ({"learning_rate": 0.1}, lambda: keras.optimizers.Adagrad(0.1)),
    "adagrad_initial": ({"learning_rate": 0.1, "initial_accumulator_value": 0.5, "epsilon": 1e-4},
                        lambda: keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.5, epsilon=1e-4)),
    "sgd_clipnorm": ({"learning_rate": 0.5, "clipnorm": 0.05}, lambda: keras.optimizers.SGD(0.5, clipnorm=0.05)),
    "sgd_momentum_clipvalue": ({"learning_rate": 0.5, "momentum": 0.9, "clipvalue": 0.01},
                               lambda: keras.optimizers.SGD(0.5, momentum=0.9, clipvalue=0.01)),
    "adam_global_clipnorm": ({"learning_rate": 0.01, "global_clipnorm": 0.05},
                             lambda: keras.optimizers.Adam(0.01, global_clipnorm=0.05)),
    "rmsprop_global_clipnorm": ({"learning_rate": 0.01, "global_clipnorm": 0.02},
                                lambda: keras.optimizers.RMSprop(0.01, global_clipnorm=0.02)),
    # Decoupled weight decay, large enough to change the losses beyond 1e-5 within STEPS steps.
    "sgd_weight_decay": ({"learning_rate": 0.5, "weight_decay": 0.2},
                         lambda: keras.optimizers.SGD(0.5, weight_decay=0.2)),
    "adam_weight_decay": ({"learning_rate": 0.05, "weight_decay": 0.5},
                          lambda: keras.optimizers.Adam(0.05, weight_decay=0.5)),
    "rmsprop_weight_decay": ({"learning_rate": 0.01, "weight_decay": 1.0, "momentum": 0.5},
                             lambda: keras.optimizers.RMSprop(0.01, weight_decay=1.0, momentum=0.5)),
    "adagrad_weight_decay": ({"learning_rate": 0.1, "weight_decay": 0.3},
                             lambda: keras.optimizers.Adagrad(0.1, weight_decay=0.3)),
    "adamw": ({"learning_rate": 0.05, "weight_decay": 0.3}, lambda: keras.optimizers.AdamW(0.05, weight_decay=0.3)),
}


def mlp(seed=3):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    x = keras.layers.Dense(5, activation="relu", name="base")(inp)
    x = keras.layers.Dense(4, activation="relu", name="hidden")(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="out")(x), name="mlp")


def checkpoint(export_dir, rec, group):
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    return [reader.get_tensor(r["checkpoint_key"]) for r in rec[group]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimizer_steps_equal_keras_train_on_batch_with_a_frozen_layer(tmp_path, case):
    settings, keras_optimizer = CASES[case]
    name = case.split("_")[0]
    model = mlp()
    exp_dir = str(tmp_path / case)
    rec = te.export_trainable(model, exp_dir, optimizer=te.optimizer_config(name, **settings),
                              frozen_layers=["base"])
    assert rec["default_mask"] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    for key, value in settings.items():
        assert rec["optimizer"][key] == value
    before = checkpoint(exp_dir, rec, "optimizer_variables")

    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    ref.get_layer("base").trainable = False
    ref.compile(optimizer=keras_optimizer(), loss=keras.losses.SparseCategoricalCrossentropy())
    loaded = tf.saved_model.load(exp_dir)
    step = loaded.signatures["train_step"]
    rng = np.random.RandomState(4)
    mask = tf.constant(rec["default_mask"], tf.float32)
    for i in range(STEPS):
        x = rng.normal(size=(8, 6)).astype(np.float32) * 3.0
        y = rng.randint(0, 3, 8).astype(np.int64)
        ours = float(step(inputs=tf.constant(x), labels=tf.constant(y), mask=mask,
                          learning_rate=tf.constant(settings["learning_rate"]))["loss"])
        theirs = float(ref.train_on_batch(x, y))
        assert abs(ours - theirs) < 1e-5, (i, ours, theirs)

    weights = {v.path: v.numpy() for v in ref.variables}
    for r, v in zip(rec["mask_variables"], loaded.mask_variables):
        np.testing.assert_allclose(v.numpy(), weights[r["name"]], rtol=1e-5, atol=1e-6, err_msg=r["name"])
        if not r["trainable_by_default"]:
            assert np.array_equal(v.numpy(), model.get_layer(r["layer"]).variables[r["index"] % 2].numpy())
    assert int(loaded.optimizer_variables[0].numpy()) == STEPS
    for r, b, v in zip(rec["optimizer_variables"], before, loaded.optimizer_variables):
        if r["variable_index"] is not None and not rec["mask_variables"][r["variable_index"]]["trainable_by_default"]:
            assert np.array_equal(v.numpy(), b), f"slot {r['name']} of a masked variable moved"
        elif r["variable_index"] is not None:
            assert not np.array_equal(v.numpy(), b), f"slot {r['name']} did not move"


def test_adagrad_accumulators_start_at_their_initial_value(tmp_path):
    rec = te.export_trainable(mlp(), str(tmp_path / "a"),
                              optimizer=te.optimizer_config("adagrad", initial_accumulator_value=0.25))
    slots = checkpoint(str(tmp_path / "a"), rec, "optimizer_variables")
    assert [r["slot"] for r in rec["optimizer_variables"]] == ["iterations"] + ["accumulator"] * 6
    assert all(np.all(s == np.float32(0.25)) for s in slots[1:])


def test_clipping_settings_are_checked_and_recorded_only_when_given():
    assert "clipnorm" not in te.optimizer_config("sgd")
    assert te.optimizer_config("adam", clipvalue=1)["clipvalue"] == 1.0
    with pytest.raises(te.ContractError, match="at most one"):
        te.optimizer_config("sgd", clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(te.ContractError, match="> 0"):
        te.optimizer_config("sgd", clipnorm=0)
    with pytest.raises(te.ContractError, match="no setting 'rho'"):
        te.optimizer_config("adam", rho=0.5)
    args = te.build_arg_parser().parse_args(["--optimizer", "rmsprop", "--centered", "--global-clipnorm", "2",
                                             "-o", "x"])
    assert args.centered is True and args.global_clipnorm == 2.0


def test_weight_decay_is_taken_by_every_optimizer_and_recorded_only_when_given():
    assert "weight_decay" not in te.optimizer_config("adam")
    assert te.optimizer_config("adamw")["weight_decay"] == 0.004
    assert te.optimizer_config("sgd", weight_decay=0.1)["weight_decay"] == 0.1
    with pytest.raises(te.ContractError, match=">= 0"):
        te.optimizer_config("rmsprop", weight_decay=-1)
    args = te.build_arg_parser().parse_args(["--optimizer", "sgd", "--weight-decay", "0.01", "-o", "x"])
    assert args.weight_decay == 0.01

