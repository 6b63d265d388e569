"""The cut between a model's base and its head, for tfload's frozen-base feature cache.

When the mask freezes every variable below the cut, BatchNormalization below it runs in inference
mode and nothing below it is stochastic, the base's output for an example is the same in every
epoch: tfload computes it once (``features``) and trains the head on it (``head_train_step``).
So that a head step changes exactly what ``train_step`` would, both steps share the variables,
the optimizer (same slots, same ``iterations`` increment) and the loss, regularization included
(the frozen base's weight regularization is a constant, still added).

The record's ``feature_cut`` (optional, versioned by its own ``version``) describes the cut that
the signatures were exported for; ``feature_cuts`` lists the candidate cuts found among the last
layers (informational). Older exports have neither and train through ``train_step`` only.
"""
from __future__ import annotations

from ._tf import import_tf
from .contract import KEY_LABELS, KEY_LOSS, KEY_LR, KEY_MASK

FEATURE_CUT_VERSION = 1
SIG_FEATURES = "features"
SIG_HEAD_TRAIN = "head_train_step"
SIG_HEAD_EVAL = "head_eval_step"
# Frozen-base steps: ``train_step_from_<layer index>`` (see export.py ``frozen_base_steps``).
SIG_FROZEN_BASE_STEP_PREFIX = "train_step_from_"
KEY_FEATURES = "features"
# How many of the last ``model.layers`` are tried as cuts for the record's ``feature_cuts``.
CANDIDATE_LAYERS = 4


def _top_layers(model):
    _, keras = import_tf()
    return [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]


def _head_model(model, index, shared):
    """``keras.Model`` from the input of ``model.layers[index]`` to the model's output, when the
    layers from ``index`` on form a chain fed by that one tensor (no skip connection across it,
    no layer called twice: ``shared``, from ``_shared_layers``); ``None`` otherwise."""
    _, keras = import_tf()
    layers = model.layers
    tensor = getattr(layers[index], "input", None)
    if tensor is None or isinstance(tensor, (list, tuple, dict)) or len(model.outputs) != 1:
        return None
    above = [l for l in layers[index:] if not isinstance(l, keras.layers.InputLayer)]
    if any(id(l) in shared for l in above):
        return None
    try:
        head = keras.Model(tensor, model.outputs[0])
    except Exception:  # Keras raises ValueError (graph disconnected) and others here
        return None
    if {id(l) for l in _top_layers(head)} != {id(l) for l in above}:
        return None
    return head


def _shared_layers(model):
    """Ids of the layers that ``model``'s own graph calls more than once. Counted on the model's
    nodes, not the layers' ``_inbound_nodes``, which also count other models made on the same
    layers (an earlier export's head models)."""
    by_depth = getattr(model, "_nodes_by_depth", None)
    if by_depth is None:
        return {id(l) for l in model.layers if len(getattr(l, "_inbound_nodes", [])) != 1}
    calls = {}
    for nodes in by_depth.values():
        for node in nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    return {i for i, n in calls.items() if n > 1}


def _blockers(model, head, bn_was_trainable):
    """Layers below the cut that keep the base's output from being a function of the input and
    the frozen variables alone: stochastic layers (they hold a seed generator: Dropout,
    GaussianNoise, random augmentation), BatchNormalization without gamma/beta that trains by its
    Keras flag, and activity regularizers (a loss that the head step would not see)."""
    _, keras = import_tf()
    head_ids = {id(l) for l in head._flatten_layers(include_self=False, recursive=True)}
    stochastic, other = [], []
    for l in model._flatten_layers(include_self=False, recursive=True):
        if id(l) in head_ids:
            continue
        if getattr(l, "_seed_generators", None):
            stochastic.append(l.name)
        if isinstance(l, keras.layers.BatchNormalization) and not l._trainable_variables \
                and bn_was_trainable.get(id(l)):
            other.append(f"{l.name} (BatchNormalization without gamma/beta, trains by its flag)")
        if getattr(l, "activity_regularizer", None) is not None:
            other.append(f"{l.name} (activity regularizer)")
    return stochastic, other


def _cut_record(model, index, head, mask_vars, bn_was_trainable):
    head_ids = {id(v) for v in head.weights}
    stochastic, other = _blockers(model, head, bn_was_trainable)
    shape = [None if d is None else int(d) for d in head.inputs[0].shape]
    return {"layer_index": index, "layer": model.layers[index].name, "features_shape": shape,
            "features_dtype": str(head.inputs[0].dtype),
            "mask_indices_below": [i for i, v in enumerate(mask_vars) if id(v) not in head_ids],
            "mask_indices_head": [i for i, v in enumerate(mask_vars) if id(v) in head_ids],
            "stochastic_layers_below": stochastic, "other_blockers_below": other}


def _found_cuts(model, mask_vars, bn_was_trainable):
    """``({layer_index: (record, head_model)}, own_head_index)``: every chain cut among the last
    ``CANDIDATE_LAYERS`` layers and at the model's own classification head."""
    from .contract import ContractError
    from .head import head_layers

    layers = model.layers
    names = [l.name for l in layers]
    shared = _shared_layers(model)
    try:
        own_head = names.index(head_layers(model)[0].name)
    except ContractError:
        own_head = len(layers) - 1
    first = max(1, len(layers) - CANDIDATE_LAYERS)
    found = {}
    for index in sorted(set(range(first, len(layers))) | {own_head}):
        head = _head_model(model, index, shared)
        if head is not None:
            found[index] = (_cut_record(model, index, head, mask_vars, bn_was_trainable), head)
    return found, own_head


def _is_clean(record):
    """Whether the base below a cut is a function of its input and frozen variables alone."""
    return not record["stochastic_layers_below"] and not record["other_blockers_below"]


def clean_cuts(model, mask_vars, bn_was_trainable):
    """The chain cuts (``(record, head_model)``, lowest layer first) with nothing stochastic or
    otherwise blocking below them: where frozen-base steps can stand in for ``train_step``."""
    found, _ = _found_cuts(model, mask_vars, bn_was_trainable)
    return [found[i] for i in sorted(found) if _is_clean(found[i][0])]


def keras_cuts(model, head_names, mask_vars, bn_was_trainable, default_on):
    """``(chosen, candidates)`` for a Keras model: every chain cut among the last
    ``CANDIDATE_LAYERS`` layers, and the chosen one, ``(record, head_model)`` or ``None``.

    The chosen cut: at the first layer of ``head_names`` (a new head) when given; else the
    highest candidate with no variable trainable by default (``default_on``: ids) and nothing
    stochastic below it, so that the default mask can use the cache; else the model's own
    classification head.
    """
    names = [l.name for l in model.layers]
    found, own_head = _found_cuts(model, mask_vars, bn_was_trainable)
    if head_names:
        chosen_index = min(names.index(n) for n in head_names if n in names)
    else:
        usable = [i for i, (rec, _) in found.items()
                  if _is_clean(rec) and not any(id(mask_vars[j]) in default_on for j in rec["mask_indices_below"])]
        chosen_index = max(usable) if usable else own_head
    candidates = [{k: rec[k] for k in ("layer_index", "layer", "features_shape", "mask_indices_below")}
                  for _, (rec, _) in sorted(found.items())]
    return found.get(chosen_index), candidates


def signature_record(input_keys, metric_keys):
    """The record's ``feature_cut.signatures``: input and output keys of the three signatures."""
    return {
        SIG_FEATURES: {"inputs": list(input_keys), "outputs": [KEY_FEATURES]},
        SIG_HEAD_TRAIN: {"inputs": [KEY_FEATURES, KEY_LABELS, KEY_MASK, KEY_LR],
                         "outputs": [KEY_LOSS] + list(metric_keys)},
        SIG_HEAD_EVAL: {"inputs": [KEY_FEATURES, KEY_LABELS], "outputs": [KEY_LOSS] + list(metric_keys)},
    }


def head_signatures(*, features_fn, head_forward, step, in_sig, labels_sig, mask_sig, lr_sig,
                    features_shape, head_var_ids):
    """The concrete functions ``features``, ``head_train_step`` and ``head_eval_step``.

    features_fn(inputs) -> the head's input, inference mode, preprocessing included;
    head_forward(features, training, mask) -> the model's output;
    step: the export's shared pieces, a dict with ``tf_mask_vars``, ``opt`` (MaskedOptimizer),
    ``loss`` (labels, out -> loss with regularization), ``metrics`` (labels, out -> dict),
    ``n_mask``; head_var_ids: ids of the head's mask variables (the only ones with a gradient).
    ``mask`` is the FULL mask (one entry per mask variable, as ``train_step`` takes it).
    """
    tf, _ = import_tf()
    from .export import checked_mask

    feat_sig = tf.TensorSpec(features_shape, tf.float32, name=KEY_FEATURES)

    def features(inputs):
        return {KEY_FEATURES: tf.cast(features_fn(inputs), tf.float32)}

    head_step = head_step_body(head_forward, step, head_var_ids)

    def head_train_step(features, labels, mask, learning_rate):
        return head_step(features, labels, checked_mask(mask, step["n_mask"]), learning_rate)

    def head_eval_step(features, labels):
        out = head_forward(features, False, None)
        return {KEY_LOSS: step["loss"](labels, out), **step["metrics"](labels, out)}

    return {
        SIG_FEATURES: tf.function(features).get_concrete_function(in_sig),
        SIG_HEAD_TRAIN: tf.function(head_train_step).get_concrete_function(feat_sig, labels_sig, mask_sig, lr_sig),
        SIG_HEAD_EVAL: tf.function(head_eval_step).get_concrete_function(feat_sig, labels_sig),
    }


def head_step_body(head_forward, step, head_var_ids):
    """``(features, labels, mask, learning_rate) -> {loss, metrics}``: one training step of the
    head alone (gradients of the head's variables only, the shared optimizer's masked update of
    every variable), ``mask`` being the full, already checked mask. See ``head_signatures``."""
    tf, _ = import_tf()
    variables = step["tf_mask_vars"]
    head_vars = [v for v in variables if id(v) in head_var_ids]

    def body(features, labels, mask, learning_rate):
        with tf.GradientTape() as tape:
            tape.watch(head_vars)
            out = head_forward(features, True, mask)
            loss_value = step["loss"](labels, out)
        grads = dict(zip([id(v) for v in head_vars], tape.gradient(loss_value, head_vars)))
        metric_values = step["metrics"](labels, out)
        step["opt"].apply([grads.get(id(v)) for v in variables], variables, mask, learning_rate)
        return {KEY_LOSS: loss_value, **metric_values}

    return body


def frozen_base_step_name(layer_index):
    """The signature key of the frozen-base step that trains ``model.layers[layer_index:]``."""
    return f"{SIG_FROZEN_BASE_STEP_PREFIX}{layer_index}"


def finish_record(cut, input_keys, metric_keys, candidates):
    """``(feature_cut, feature_cuts)`` for the record, ``cut`` being a ``_cut_record``."""
    feature_cut = {"version": FEATURE_CUT_VERSION, **cut, "features_dtype": "float32",
                   "mask": "full",
                   "signatures": signature_record(input_keys, metric_keys)}
    return feature_cut, candidates
