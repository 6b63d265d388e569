"""The all-reducing train step (contract extension ``allreduce``, version 1).

``train_step_allreduce`` sits beside ``train_step`` in every export. It takes the same inputs plus
three int32 scalars, ``group_size``, ``group_key`` and ``instance_key``, and runs: the forward pass
and the gradients on this worker's shard, then ONE ``CollectiveReduceV2`` (merge ``Add``, final
``Div``: the mean over the workers) of the gradients, the loss and the metrics packed into one flat
float32 vector, then the same masked optimizer update as ``train_step`` with the mean gradients.
Every worker of a TensorFlow gRPC cluster calling it with its shard of a global batch trains as one
process on the global batch would (shards of equal size). With ``group_size = 1`` no other task
is involved and the results are ``train_step``'s, bit for bit.

The collective cannot sit inside an XLA cluster ("Only compiling NCCL/auto collective is
supported"): with ``jit_compile`` the gradient part and the update part are compiled separately and
the reduce runs between them.
"""
from __future__ import annotations

from ._tf import import_tf

SIG_TRAIN_ALLREDUCE = "train_step_allreduce"
KEY_GROUP_SIZE = "group_size"
KEY_GROUP_KEY = "group_key"
KEY_INSTANCE_KEY = "instance_key"
COLLECTIVE_KEYS = (KEY_GROUP_SIZE, KEY_GROUP_KEY, KEY_INSTANCE_KEY)
ALLREDUCE_VERSION = 1
DEFAULT_TIMEOUT_SECONDS = 300.0
"""How long the reduce waits for a peer that is alive but not stepping before it fails. It must
cover the chief's validation and checkpoint writing at the end of an epoch, which the other
workers wait for in the next step's reduce."""


def collective_specs():
    """The ``TensorSpec``s of the three collective inputs (int32 scalars)."""
    tf, _ = import_tf()
    return tuple(tf.TensorSpec([], tf.int32, name=k) for k in COLLECTIVE_KEYS)


def _pack(grads, scalars):
    """One flat float32 vector: every non-None gradient (in order), then the scalars."""
    tf, _ = import_tf()
    parts = [tf.reshape(tf.cast(tf.convert_to_tensor(g), tf.float32), [-1]) for g in grads if g is not None]
    parts += [tf.reshape(tf.cast(s, tf.float32), [1]) for s in scalars]
    return tf.concat(parts, 0)


def _layout(grads):
    """Shape and dtype of each gradient (None where a variable has none): how to unpack."""
    tf, _ = import_tf()
    return [None if g is None else (tf.convert_to_tensor(g).shape, g.dtype) for g in grads]


def _unpack(flat, layout, n_scalars):
    """The inverse of ``_pack``: gradients shaped and typed per ``layout`` (None kept), the scalars."""
    tf, _ = import_tf()
    sizes = [int(shape.num_elements()) for shape, _ in filter(None, layout)] + [1] * n_scalars
    pieces = iter(tf.split(flat, sizes))
    grads = [None if entry is None else tf.cast(tf.reshape(next(pieces), entry[0]), entry[1]) for entry in layout]
    return grads, [tf.reshape(p, []) for p in pieces]


def all_reduce_mean(flat, group_size, group_key, instance_key, timeout_seconds):
    """The mean of ``flat`` over the group, one ring all-reduce."""
    tf, _ = import_tf()
    return tf.raw_ops.CollectiveReduceV2(
        input=flat, group_size=group_size, group_key=group_key, instance_key=instance_key,
        ordering_token=[], merge_op="Add", final_op="Div", communication_hint="ring",
        timeout_seconds=float(timeout_seconds))


def build_allreduce_step(gradients, update, metric_keys, check_mask, *, jit_compile,
                         timeout_seconds=DEFAULT_TIMEOUT_SECONDS):
    """The Python function to trace as ``train_step_allreduce``.

    gradients(inputs, labels, mask) -> (grads, loss, {metric: value}): the forward pass in training
        mode and the gradient of every mask variable (None where a variable has none);
    update(grads, mask, learning_rate): the masked optimizer update (it counts ``iterations``);
    check_mask(mask) -> mask: the runtime mask-length check (kept outside any XLA cluster).
    """
    tf, _ = import_tf()
    metric_keys = list(metric_keys)

    def step(inputs, labels, mask, learning_rate, group_size, group_key, instance_key):
        mask = check_mask(mask)
        layout = {}

        def gradient_part(inputs, labels, mask):
            grads, loss_value, metrics = gradients(inputs, labels, mask)
            layout["grads"] = _layout(grads)  # known once traced, which happens right here
            return _pack(grads, [loss_value] + [metrics[k] for k in metric_keys])

        def update_part(present, mask, learning_rate):
            it = iter(present)
            update([None if entry is None else next(it) for entry in layout["grads"]], mask, learning_rate)

        if jit_compile:
            gradient_part = tf.function(gradient_part, jit_compile=True)
            update_part = tf.function(update_part, jit_compile=True)
        flat = gradient_part(inputs, labels, mask)
        reduced = all_reduce_mean(flat, group_size, group_key, instance_key, timeout_seconds)
        grads, scalars = _unpack(reduced, layout["grads"], 1 + len(metric_keys))
        update_part([g for g in grads if g is not None], mask, learning_rate)
        return {"loss": scalars[0], **dict(zip(metric_keys, scalars[1:]))}

    return step


def allreduce_concrete_function(gradients, update, metric_keys, check_mask, step_specs, jit_compile,
                                timeout_seconds=DEFAULT_TIMEOUT_SECONDS):
    """``train_step_allreduce`` traced for ``step_specs`` (the ``train_step`` input specs) plus
    the three collective inputs; see ``build_allreduce_step`` for the other arguments."""
    tf, _ = import_tf()
    step = build_allreduce_step(gradients, update, metric_keys, check_mask, jit_compile=jit_compile,
                                timeout_seconds=timeout_seconds)
    return tf.function(step).get_concrete_function(*step_specs, *collective_specs())


def add_allreduce_record(record, timeout_seconds=DEFAULT_TIMEOUT_SECONDS):
    """Adds the record's ``allreduce`` object and the ``train_step_allreduce`` signature entry."""
    train = record["signatures"]["train_step"]
    record["allreduce"] = {
        "version": ALLREDUCE_VERSION,
        "signature": SIG_TRAIN_ALLREDUCE,
        "collective_inputs": {k: {"dtype": "int32", "shape": []} for k in COLLECTIVE_KEYS},
        "packing": "gradients of the mask variables that have one (mask order, flattened), then loss, "
                   "then the metrics in record order, as one float32 vector",
        "reduction": "CollectiveReduceV2 merge_op=Add final_op=Div communication_hint=ring (the mean "
                     "over the workers)",
        "timeout_seconds": float(timeout_seconds),
    }
    record["signatures"][SIG_TRAIN_ALLREDUCE] = {"inputs": train["inputs"] + list(COLLECTIVE_KEYS),
                                                 "outputs": list(train["outputs"])}
    return record
