"""Losses and labels against Keras 3 itself: categorical cross-entropy on one-hot and soft
labels, label smoothing (categorical and binary), from probabilities and from logits. The
exported train_step's per-step losses equal `train_on_batch` on the same batches (1e-5) and
eval_step's accuracy is Keras's by the argmax of the labels.

Run: .venv/bin/python -m pytest scripts/tests/test_labels.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

import tfload_export as te

tf, keras = te.import_tf()

STEPS = 4


def mlp(activation, seed=5):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    x = keras.layers.Dense(5, activation="relu", name="base")(inp)
    return keras.Model(inp, keras.layers.Dense(3, activation=activation, name="out")(x), name="mlp")


def one_hot(rng, n):
    return np.eye(3, dtype=np.float32)[rng.randint(0, 3, n)]


def soft(rng, n):
    p = rng.uniform(0.05, 1.0, size=(n, 3)).astype(np.float32)
    return p / p.sum(axis=1, keepdims=True)


def multi_hot(rng, n):
    return (rng.uniform(size=(n, 3)) > 0.5).astype(np.float32)


CASES = {
    # name: (loss, activation, label_smoothing, labels, keras loss)
    "cce_one_hot": ("categorical_crossentropy", "softmax", 0.0, one_hot,
                    lambda: keras.losses.CategoricalCrossentropy()),
    "cce_soft_logits": ("categorical_crossentropy", "linear", 0.0, soft,
                        lambda: keras.losses.CategoricalCrossentropy(from_logits=True)),
    "cce_smoothing": ("categorical_crossentropy", "softmax", 0.2, one_hot,
                      lambda: keras.losses.CategoricalCrossentropy(label_smoothing=0.2)),
    "cce_smoothing_logits": ("categorical_crossentropy", "linear", 0.1, one_hot,
                             lambda: keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)),
    "bce_smoothing": ("binary_crossentropy", "sigmoid", 0.2, multi_hot,
                      lambda: keras.losses.BinaryCrossentropy(label_smoothing=0.2)),
    "bce_smoothing_logits": ("binary_crossentropy", "linear", 0.3, multi_hot,
                             lambda: keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.3)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_losses_equal_keras_train_on_batch(tmp_path, case):
    loss, activation, smoothing, make_labels, keras_loss = CASES[case]
    model = mlp(activation)
    rec = te.export_trainable(model, str(tmp_path / case), loss=loss, label_smoothing=smoothing,
                              optimizer=te.optimizer_config("sgd", learning_rate=0.5))
    assert rec["labels"]["dtype"] == "float32" and rec["labels"]["shape"] == [None, 3]
    assert rec["loss"]["from_logits"] == (activation == "linear")
    assert rec["loss"].get("label_smoothing", 0.0) == smoothing
    if loss == "categorical_crossentropy":
        assert rec["num_classes"] == 3 and rec["task"] == "classification"
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    ref.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras_loss())
    loaded = tf.saved_model.load(str(tmp_path / case))
    step = loaded.signatures["train_step"]
    rng = np.random.RandomState(7)
    mask = tf.constant(rec["default_mask"], tf.float32)
    for i in range(STEPS):
        x = rng.normal(size=(8, 6)).astype(np.float32) * 2.0
        y = make_labels(rng, 8)
        ours = float(step(inputs=tf.constant(x), labels=tf.constant(y), mask=mask,
                          learning_rate=tf.constant(0.5))["loss"])
        theirs = float(ref.train_on_batch(x, y))
        assert abs(ours - theirs) < 1e-5, (i, ours, theirs)


def test_categorical_accuracy_is_by_the_argmax_of_the_labels(tmp_path):
    model = mlp("softmax")
    te.export_trainable(model, str(tmp_path / "m"), loss="cce")
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    rng = np.random.RandomState(1)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    y = soft(rng, 16)
    ours = float(loaded.signatures["eval_step"](inputs=tf.constant(x), labels=tf.constant(y))["accuracy"])
    metric = keras.metrics.CategoricalAccuracy()
    metric.update_state(y, model(x))
    assert abs(ours - float(metric.result())) < 1e-6


def test_label_smoothing_is_refused_where_keras_has_none():
    with pytest.raises(te.ContractError, match="label smoothing applies to"):
        te.export_trainable(mlp("softmax"), "/nonexistent/never", label_smoothing=0.1)
    with pytest.raises(te.ContractError, match=r"in \[0, 1\)"):
        te.export_trainable(mlp("softmax"), "/nonexistent/never", loss="cce", label_smoothing=1.0)
    args = te.build_arg_parser().parse_args(["--loss", "categorical_crossentropy", "--label-smoothing", "0.1",
                                             "-o", "x"])
    assert args.loss == "categorical_crossentropy" and args.label_smoothing == 0.1
