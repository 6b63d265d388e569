"""The losses a ``train_step`` can minimise, the labels each expects, and the metrics reported."""
from __future__ import annotations

from ._tf import import_tf
from .contract import KEY_LABELS

LOSS_ALIASES = {
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "scce": "sparse_categorical_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "bce": "binary_crossentropy",
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
}
METRICS_FOR_LOSS = {
    "sparse_categorical_crossentropy": ["accuracy"],
    "binary_crossentropy": ["accuracy"],
    "mean_squared_error": ["mean_absolute_error"],
}


def loss_and_labels(loss_name, from_logits, out_shape):
    """``(keras loss object, record's labels spec)`` of a canonical loss name."""
    _, keras = import_tf()
    if loss_name == "sparse_categorical_crossentropy":
        return (keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                {"key": KEY_LABELS, "dtype": "int64", "shape": out_shape[:-1],
                 "description": "class index in 0..num_classes-1"})
    if loss_name == "binary_crossentropy":
        return (keras.losses.BinaryCrossentropy(from_logits=from_logits),
                {"key": KEY_LABELS, "dtype": "float32", "shape": out_shape,
                 "description": "0 or 1 per output unit"})
    return (keras.losses.MeanSquaredError(),
            {"key": KEY_LABELS, "dtype": "float32", "shape": out_shape,
             "description": "target values, same shape as outputs"})


def compute_metrics(loss_name, from_logits, labels, out):
    """The metrics of METRICS_FOR_LOSS[loss_name] on one batch, as TF ops."""
    tf, _ = import_tf()
    if loss_name == "sparse_categorical_crossentropy":
        pred = tf.argmax(out, axis=-1, output_type=tf.int64)
        return {"accuracy": tf.reduce_mean(tf.cast(tf.equal(pred, labels), tf.float32))}
    if loss_name == "binary_crossentropy":
        pred = out > (0.0 if from_logits else 0.5)
        return {"accuracy": tf.reduce_mean(tf.cast(tf.equal(pred, labels > 0.5), tf.float32))}
    return {"mean_absolute_error": tf.reduce_mean(tf.abs(tf.cast(out, tf.float32) - labels))}
