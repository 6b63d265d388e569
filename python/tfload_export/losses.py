"""The losses a ``train_step`` can minimise, the labels each expects, and the metrics reported."""
from __future__ import annotations

from ._tf import import_tf
from .contract import KEY_LABELS

LOSS_ALIASES = {
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "cce": "categorical_crossentropy",
    "scce": "sparse_categorical_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "bce": "binary_crossentropy",
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
}
METRICS_FOR_LOSS = {
    "sparse_categorical_crossentropy": ["accuracy"],
    "categorical_crossentropy": ["accuracy"],
    "binary_crossentropy": ["accuracy"],
    "mean_squared_error": ["mean_absolute_error"],
}
CLASS_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")
"""The losses whose outputs are one score per class (the record's ``num_classes``)."""
HEAD_ACTIVATION = {"sparse_categorical_crossentropy": "softmax", "categorical_crossentropy": "softmax",
                   "binary_crossentropy": "sigmoid", "mean_squared_error": "linear"}
"""The activation of a new head's last layer for each loss (probabilities, or values for MSE)."""
SMOOTHED_LOSSES = ("categorical_crossentropy", "binary_crossentropy")
"""The losses that take ``label_smoothing`` (as Keras's do)."""


def check_label_smoothing(loss_name, label_smoothing):
    """``label_smoothing`` as a float after checking ``loss_name`` takes it and it is in [0, 1)."""
    from .contract import ContractError
    smoothing = float(label_smoothing or 0.0)
    if smoothing and loss_name not in SMOOTHED_LOSSES:
        raise ContractError(f"label smoothing applies to {' and '.join(SMOOTHED_LOSSES)}, not {loss_name}; "
                            "use --loss categorical_crossentropy with one-hot labels")
    if not 0.0 <= smoothing < 1.0:
        raise ContractError(f"label smoothing must be in [0, 1), not {label_smoothing!r}")
    return smoothing


def loss_and_labels(loss_name, from_logits, out_shape, label_smoothing=0.0):
    """``(keras loss object, record's labels spec)`` of a canonical loss name; ``label_smoothing``
    is baked into the loss (categorical and binary cross-entropy only)."""
    _, keras = import_tf()
    if loss_name == "categorical_crossentropy":
        return (keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing),
                {"key": KEY_LABELS, "dtype": "float32", "shape": out_shape,
                 "description": "one-hot (or soft) class probabilities per example, one per output unit"})
    if loss_name == "binary_crossentropy":
        return (keras.losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing),
                {"key": KEY_LABELS, "dtype": "float32", "shape": out_shape,
                 "description": "0 or 1 per output unit"})
    if loss_name == "sparse_categorical_crossentropy":
        return (keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                {"key": KEY_LABELS, "dtype": "int64", "shape": out_shape[:-1],
                 "description": "class index in 0..num_classes-1"})
    return (keras.losses.MeanSquaredError(),
            {"key": KEY_LABELS, "dtype": "float32", "shape": out_shape,
             "description": "target values, same shape as outputs"})


def compute_metrics(loss_name, from_logits, labels, out):
    """The metrics of METRICS_FOR_LOSS[loss_name] on one batch, as TF ops. Never weighted by
    sample or class weights: Keras weights only ``weighted_metrics``, not ``metrics``."""
    tf, _ = import_tf()
    if loss_name == "sparse_categorical_crossentropy":
        pred = tf.argmax(out, axis=-1, output_type=tf.int64)
        return {"accuracy": tf.reduce_mean(tf.cast(tf.equal(pred, labels), tf.float32))}
    if loss_name == "categorical_crossentropy":
        equal = tf.equal(tf.argmax(out, axis=-1), tf.argmax(labels, axis=-1))
        return {"accuracy": tf.reduce_mean(tf.cast(equal, tf.float32))}
    if loss_name == "binary_crossentropy":
        pred = out > (0.0 if from_logits else 0.5)
        return {"accuracy": tf.reduce_mean(tf.cast(tf.equal(pred, labels > 0.5), tf.float32))}
    return {"mean_absolute_error": tf.reduce_mean(tf.abs(tf.cast(out, tf.float32) - labels))}
