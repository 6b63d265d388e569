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


WEIGHTED = {
    # name: (loss, activation, labels, keras weighting of a batch: y -> train_on_batch kwargs)
    "scce_sample_weight": ("sparse_categorical_crossentropy", "softmax", lambda rng, n: rng.randint(0, 3, n),
                           "sample"),
    "scce_class_weight": ("sparse_categorical_crossentropy", "softmax", lambda rng, n: rng.randint(0, 3, n),
                          "class"),
    "cce_class_weight_logits": ("categorical_crossentropy", "linear", one_hot, "class"),
    "bce_sample_weight": ("binary_crossentropy", "sigmoid", multi_hot, "sample"),
}
CLASS_WEIGHT = {0: 0.5, 1: 2.5, 2: 1.0}


def class_of(y):
    return y if y.ndim == 1 else np.argmax(y, axis=-1)


@pytest.mark.parametrize("case", sorted(WEIGHTED))
def test_weighted_losses_equal_keras_train_on_batch(tmp_path, case):
    """sample_weight fed per example (class weights turned into it, as Keras does) gives Keras's
    loss: sum(w * l) / batch size; eval_step's accuracy is Keras's compiled (unweighted) accuracy."""
    loss, activation, make_labels, kind = WEIGHTED[case]
    model = mlp(activation)
    rec = te.export_trainable(model, str(tmp_path / case), loss=loss, sample_weights=True,
                              optimizer=te.optimizer_config("adam", learning_rate=0.05))
    assert rec["contract_version"] == 2 and rec["sample_weight"]["shape"] == [None]
    assert rec["signatures"]["train_step"]["inputs"] == ["inputs", "labels", "sample_weight", "mask", "learning_rate"]
    assert te.check_export(str(tmp_path / case))["contract_version"] == 2
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    keras_loss = {"sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
                  "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
                  "binary_crossentropy": keras.losses.BinaryCrossentropy}[loss](from_logits=activation == "linear")
    ref.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras_loss, metrics=["accuracy"] if loss != "binary_crossentropy"
                else [keras.metrics.BinaryAccuracy(name="accuracy")])
    loaded = tf.saved_model.load(str(tmp_path / case))
    step = loaded.signatures["train_step"]
    rng = np.random.RandomState(3)
    mask = tf.constant(rec["default_mask"], tf.float32)
    for i in range(STEPS):
        x = rng.normal(size=(8, 6)).astype(np.float32) * 2.0
        y = make_labels(rng, 8)
        y = y.astype(np.int64) if y.ndim == 1 else y
        if kind == "sample":
            w = rng.uniform(0.0, 3.0, 8).astype(np.float32)
            theirs = float(ref.train_on_batch(x, y, sample_weight=w)[0])
        else:
            w = np.array([CLASS_WEIGHT[int(c)] for c in class_of(y)], np.float32)
            theirs = float(ref.train_on_batch(x, y, class_weight=CLASS_WEIGHT)[0])
        ours = float(step(inputs=tf.constant(x), labels=tf.constant(y), sample_weight=tf.constant(w), mask=mask,
                          learning_rate=tf.constant(0.05))["loss"])
        assert abs(ours - theirs) < 1e-5, (i, ours, theirs)
    ref.reset_metrics()
    x = rng.normal(size=(16, 6)).astype(np.float32)
    y = make_labels(rng, 16)
    y = y.astype(np.int64) if y.ndim == 1 else y
    w = rng.uniform(0.0, 3.0, 16).astype(np.float32)
    theirs = ref.evaluate(x, y, sample_weight=w, batch_size=16, verbose=0, return_dict=True)
    ours = loaded.signatures["eval_step"](inputs=tf.constant(x), labels=tf.constant(y), sample_weight=tf.constant(w))
    assert abs(float(ours["loss"]) - theirs["loss"]) < 1e-5
    assert abs(float(ours["accuracy"]) - theirs["accuracy"]) < 1e-5


def test_exports_without_sample_weights_keep_contract_version_1(tmp_path):
    rec = te.export_trainable(mlp("softmax"), str(tmp_path / "m"))
    assert rec["contract_version"] == 1 and "sample_weight" not in rec
    assert "sample_weight" not in rec["signatures"]["train_step"]["inputs"]
