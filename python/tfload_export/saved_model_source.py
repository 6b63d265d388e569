"""A TF2 SavedModel directory as an exporter source: train through one of its restored
signature functions, with an optional new head on one of its outputs.

Restored functions are differentiable, but they run exactly as they were traced: a Keras model's
serving function is its inference-mode graph (frozen BatchNormalization statistics, no dropout).
The record says so (``"source": {"kind": "saved_model", "training_mode": false}``).

Only the variables the signature function reads are saved (``ConcreteFunction.variables``):
Keras 3 exports carry a second, unread copy of every variable, and tfload's TF1-style loading
needs one resource handle per variable.
"""
from __future__ import annotations

import os

from ._tf import import_tf
from .allreduce import SIG_TRAIN_ALLREDUCE, add_allreduce_record, allreduce_concrete_function
from .contract import (KEY_LOSS, RESERVED_KEYS, SIG_EVAL, SIG_SERVE,
                       SIG_TRAIN, ContractError, build_record, checkpoint_key)
from .losses import CLASS_LOSSES, HEAD_ACTIVATION, LOSS_ALIASES, METRICS_FOR_LOSS, compute_metrics, loss_and_labels
from .optimizers import MaskedOptimizer, optimizer_config
from .preprocessing import preprocessing_spec


def _first_line(exc):
    """The line of a TF error that says what went wrong (autograph puts it last)."""
    lines = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
    if len(lines) > 1 and lines[0].rstrip(":") == "in user code":
        return lines[-1]
    return lines[0] if lines else type(exc).__name__


def load_signature(saved_model_dir, signature):
    """``(loaded object, concrete function)`` of ``signature`` in ``saved_model_dir``."""
    tf, _ = import_tf()
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ContractError(f"{saved_model_dir}: no saved_model.pb (not a SavedModel directory)")
    try:
        loaded = tf.saved_model.load(saved_model_dir)
    except Exception as exc:  # TF raises many types here; all mean "cannot restore"
        raise ContractError(f"{saved_model_dir}: tf.saved_model.load failed: {_first_line(exc)}") from None
    sigs = getattr(loaded, "signatures", None) or {}
    if signature not in sigs:
        raise ContractError(f"{saved_model_dir} has no signature {signature!r} "
                            f"(it has: {', '.join(sorted(sigs)) or 'none'})")
    return loaded, sigs[signature]


def _restored_variables(fn):
    """The variables ``fn`` reads, split into (trainable, non-trainable), each once."""
    seen, trainable, other = set(), [], []
    for v in fn.variables:
        if id(v) in seen:
            continue
        seen.add(id(v))
        (trainable if v.trainable else other).append(v)
    return trainable, other


def _unique_names(variables):
    seen, names = {}, []
    for v in variables:
        n = v.name[:-2] if v.name.endswith(":0") else v.name
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[n]}"
        else:
            seen[n] = 0
        names.append(n)
    return names


def _input_specs(fn):
    tf, _ = import_tf()
    args, kwargs = fn.structured_input_signature
    if args:
        raise ContractError("the signature takes positional inputs; only keyword (named) inputs are supported")
    specs = []
    for key in sorted(kwargs):
        spec = kwargs[key]
        if key in RESERVED_KEYS:
            raise ContractError(f"signature input {key!r} collides with a reserved key of the contract")
        dtype = tf.as_dtype(spec.dtype)
        if not dtype.is_floating:
            raise ContractError(f"signature input {key!r} is {dtype.name}: only float inputs can be trained "
                                "through")
        specs.append({"key": key, "keras_name": key, "dtype": dtype.name,
                      "shape": [None if d is None else int(d) for d in spec.shape],
                      "preprocessing": preprocessing_spec("none", None)})
    return specs


def _pick_output(fn, output):
    outs = fn.structured_outputs
    if not isinstance(outs, dict):
        raise ContractError("the signature's outputs are not named")
    if output is None:
        if len(outs) != 1:
            raise ContractError(f"the signature has outputs {sorted(outs)}: choose one with --output")
        output = next(iter(outs))
    if output not in outs:
        raise ContractError(f"the signature has no output {output!r} (it has: {', '.join(sorted(outs))})")
    return output, outs[output]


def _build_head(features, num_classes, hidden_units, dropout, activation, seed):
    """The new head as Keras layers built on ``features`` inputs; returns (call, layers)."""
    _, keras = import_tf()
    layers, k = [], 0
    for units in hidden_units:
        if dropout:
            layers.append(keras.layers.Dropout(dropout, seed=seed + k, name=f"head_dropout_{k}"))
            k += 1
        layers.append(keras.layers.Dense(units, activation="relu", name=f"head_hidden_{k}",
                                         kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k)))
        k += 1
    if dropout:
        layers.append(keras.layers.Dropout(dropout, seed=seed + k, name=f"head_dropout_{k}"))
        k += 1
    layers.append(keras.layers.Dense(num_classes, activation=activation, name="head",
                                     kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k)))
    head = keras.Sequential(layers, name="tfload_head")
    head.build((None, features))
    return head


def _variable_records(restored, head_vars, restored_names, default_restored):
    tf, _ = import_tf()
    records = []
    for i, (v, name) in enumerate(zip(restored, restored_names)):
        records.append({"index": i, "name": name, "layer": name.rsplit("/", 1)[0],
                        "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name,
                        "trainable_by_default": default_restored, "restored": True,
                        "checkpoint_key": checkpoint_key("mask_variables", i)})
    for j, v in enumerate(head_vars):
        i = len(restored) + j
        records.append({"index": i, "name": v.path, "layer": v.path.rsplit("/", 1)[0],
                        "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name,
                        "trainable_by_default": True, "restored": False,
                        "checkpoint_key": checkpoint_key("mask_variables", i)})
    return records


def export_saved_model_trainable(saved_model_dir, out_dir, *, signature=SIG_SERVE, output=None,
                                 num_classes=None, hidden_units=(), dropout=0.0, optimizer=None,
                                 loss="sparse_categorical_crossentropy", outputs="auto",
                                 class_names=None, train_restored=None, force=False, model_name=None,
                                 seed=0, feature_cache=True):
    """Export a trainable SavedModel from ``saved_model_dir``'s ``signature``; returns the record.

    num_classes:    put a new head (``[Dropout] [Dense(h, relu)]... Dense(N)``) on ``output``,
                    which must be a ``[batch, features]`` float tensor
    train_restored: the restored variables' default mask entry (default: frozen when a head is
                    added, trained otherwise)
    outputs:        what the (new or restored) output is: auto | probabilities | logits; auto is
                    probabilities for a new head, logits for a restored output
    feature_cache:  with a new head, record the cut at it and export the feature cache's
                    signatures (feature_cut.py); the restored function is the base
    """
    from .export import _save_atomically, checked_mask, step_input_specs, with_regularization  # shared

    tf, keras = import_tf()
    keras.utils.set_random_seed(seed)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not force:
        raise FileExistsError(f"{out_dir} exists (pass force=True / --force to replace it)")
    loss_name = LOSS_ALIASES.get(loss)
    if loss_name is None:
        raise ContractError(f"unknown loss {loss!r}; one of {sorted(LOSS_ALIASES)}")
    optimizer = optimizer or optimizer_config("sgd")
    loaded, fn = load_signature(saved_model_dir, signature)  # ``loaded`` owns fn's variables
    input_specs = _input_specs(fn)
    out_key, out_spec = _pick_output(fn, output)
    restored, state = _restored_variables(fn)
    if not restored:
        raise ContractError(f"{saved_model_dir}: signature {signature!r} reads no trainable variables "
                            "(a TF1 graph or a constant-folded model cannot be trained)")
    head = None
    if num_classes is not None:
        if out_spec.shape.rank != 2 or out_spec.shape[-1] is None or not out_spec.dtype.is_floating:
            raise ContractError(f"output {out_key!r} is {out_spec.dtype.name}{out_spec.shape}: a new head "
                                "needs a float [batch, features] tensor (choose one with --output)")
        activation = HEAD_ACTIVATION[loss_name]
        if outputs == "logits":
            activation = "linear"
        head = _build_head(int(out_spec.shape[-1]), num_classes, hidden_units, dropout, activation, seed)
        output_kind = "logits" if activation == "linear" else "probabilities"
        out_shape = [None, num_classes]
    else:
        output_kind = "logits" if outputs == "auto" else outputs
        out_shape = [None if d is None else int(d) for d in out_spec.shape]
    from_logits = output_kind == "logits"
    if loss_name == "mean_squared_error":
        output_kind, from_logits = "values", False
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != out_shape[-1]:
            raise ContractError(f"{len(class_names)} class names for {out_shape[-1]} outputs")
    if train_restored is None:
        train_restored = head is None
    head_vars = [v.value for v in head.trainable_variables] if head is not None else []
    head_state = [v.value for v in head.non_trainable_variables] if head is not None else []
    mask_vars = list(restored) + head_vars
    state_vars = list(state) + head_state
    names = _unique_names(list(restored) + list(state))
    mask_records = _variable_records(restored, head.trainable_variables if head else [],
                                     names[:len(restored)], bool(train_restored))
    state_records = [{"index": j, "name": names[len(restored) + j], "layer": names[len(restored) + j].rsplit("/", 1)[0],
                      "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name, "kind": "other",
                      "checkpoint_key": checkpoint_key("state_variables", j)}
                     for j, v in enumerate(state)]
    for v in (head.non_trainable_variables if head else []):
        j = len(state_records)
        state_records.append({"index": j, "name": v.path, "layer": v.path.rsplit("/", 1)[0],
                              "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name,
                              "kind": "seed_generator_state" if v.name == "seed_generator_state" else "other",
                              "checkpoint_key": checkpoint_key("state_variables", j)})
    opt = MaskedOptimizer(optimizer, mask_vars, [r["name"] for r in mask_records])
    for r in opt.records:
        r["checkpoint_key"] = checkpoint_key("optimizer_variables", r["index"])
    loss_obj, labels_spec = loss_and_labels(loss_name, from_logits, out_shape)
    metrics = METRICS_FOR_LOSS[loss_name]

    def base(inputs):
        assert loaded is not None  # held until the traced functions are saved
        return fn(**{s["key"]: inputs[s["key"]] for s in input_specs})[out_key]

    def forward(inputs, training):
        out = base(inputs)
        return head(out, training=training) if head is not None else out

    def compute_loss(labels, out):
        return with_regularization(loss_obj(labels, out), head.losses if head is not None else [])

    n_mask = len(mask_vars)
    in_sig, labels_sig, mask_sig, lr_sig = step_input_specs(input_specs, labels_spec, n_mask)

    def serve(inputs):
        return {"outputs": forward(inputs, False)}

    def eval_step(inputs, labels):
        out = forward(inputs, False)
        return {KEY_LOSS: compute_loss(labels, out), **compute_metrics(loss_name, from_logits, labels, out)}

    def gradients(inputs, labels, mask):
        with tf.GradientTape() as tape:
            tape.watch(mask_vars)
            out = forward(inputs, True)
            loss_value = compute_loss(labels, out)
        grads = tape.gradient(loss_value, mask_vars)
        # Raised after tracing (an exception inside it comes back wrapped by autograph).
        no_gradient[:] = [r["name"] for r, g in zip(mask_records, grads) if g is None]
        grads = [tf.zeros_like(v) if g is None else g for v, g in zip(mask_vars, grads)]
        return grads, loss_value, compute_metrics(loss_name, from_logits, labels, out)

    def update(grads, mask, learning_rate):
        opt.apply(grads, mask_vars, mask, learning_rate)

    def train_step(inputs, labels, mask, learning_rate):
        mask = checked_mask(mask, n_mask)
        grads, loss_value, metric_values = gradients(inputs, labels, mask)
        update(grads, mask, learning_rate)
        return {KEY_LOSS: loss_value, **metric_values}

    no_gradient = []
    try:
        serve_cf = tf.function(serve).get_concrete_function(in_sig)
        eval_cf = tf.function(eval_step).get_concrete_function(in_sig, labels_sig)
        train_cf = tf.function(train_step).get_concrete_function(in_sig, labels_sig, mask_sig, lr_sig)
        allreduce_cf = allreduce_concrete_function(gradients, update, metrics, lambda m: checked_mask(m, n_mask),
                                                   (in_sig, labels_sig, mask_sig, lr_sig), False)
    except Exception as exc:  # gradient registry / tracing errors of the restored graph
        raise ContractError(f"{saved_model_dir}: cannot build train_step through signature {signature!r}: "
                            f"TensorFlow cannot take its gradient ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
    if no_gradient:
        raise ContractError(f"{saved_model_dir}: TensorFlow built no gradient through signature "
                            f"{signature!r} for {len(no_gradient)} of the variables it reads, e.g. "
                            f"{no_gradient[0]!r}: the function cannot be trained")

    signatures = {SIG_SERVE: serve_cf, SIG_TRAIN: train_cf, SIG_EVAL: eval_cf, SIG_TRAIN_ALLREDUCE: allreduce_cf}
    cut = None
    if head is not None and feature_cache:
        cut = _feature_cut(base, head, loss_name, from_logits, compute_loss, opt, mask_vars, len(restored),
                           [s["key"] for s in input_specs], metrics,
                           (in_sig, labels_sig, mask_sig, lr_sig), int(out_spec.shape[-1]), signatures)
    record = build_record(
        versions=(tf.__version__, keras.__version__),
        model_name=model_name or os.path.basename(os.path.normpath(saved_model_dir)),
        loss_name=loss_name, from_logits=from_logits, input_specs=input_specs,
        output={"key": "outputs", "dtype": "float32", "shape": out_shape, "kind": output_kind},
        labels_spec=labels_spec, num_classes=out_shape[-1] if loss_name in CLASS_LOSSES else None,
        class_names=class_names, metrics=metrics, optimizer=optimizer, mask_records=mask_records,
        state_records=state_records, optimizer_records=opt.records, bn_records=[], jit_compile=False)
    record["source"] = {"kind": "saved_model", "path": os.path.abspath(saved_model_dir),
                        "signature": signature, "output": out_key, "training_mode": False,
                        "description": "restored functions run as traced (inference mode: frozen "
                                       "BatchNormalization statistics, no dropout)"}
    add_allreduce_record(record)
    if cut is not None:
        record["feature_cut"], record["feature_cuts"] = cut
    try:
        _save_atomically(out_dir, force, record, (mask_vars, state_vars, opt.variables), signatures)
    except (ContractError, FileExistsError):
        raise
    except Exception as exc:
        raise ContractError(f"{saved_model_dir}: saving the trainable SavedModel failed "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
    return record


def _feature_cut(base, head, loss_name, from_logits, compute_loss, opt, mask_vars, n_restored, input_keys,
                 metrics, sigs, n_features, signatures):
    """The feature cache's signatures (added to ``signatures``) with the cut at the new head: the
    restored function (inference mode as traced, so nothing below is stochastic) is the base.
    Returns the record's ``(feature_cut, feature_cuts)``."""
    from . import feature_cut as fc

    in_sig, labels_sig, mask_sig, lr_sig = sigs
    step = {"tf_mask_vars": mask_vars, "opt": opt, "loss": compute_loss, "n_mask": len(mask_vars),
            "metrics": lambda labels, out: compute_metrics(loss_name, from_logits, labels, out)}
    cut = {"layer_index": None, "layer": head.layers[0].name, "features_shape": [None, n_features],
           "mask_indices_below": list(range(n_restored)),
           "mask_indices_head": list(range(n_restored, len(mask_vars))),
           "stochastic_layers_below": [], "other_blockers_below": []}
    signatures.update(fc.head_signatures(
        features_fn=base,
        head_forward=lambda features, training, mask: head(features, training=training),
        step=step, in_sig=in_sig, labels_sig=labels_sig, mask_sig=mask_sig, lr_sig=lr_sig,
        features_shape=cut["features_shape"], head_var_ids={id(v) for v in mask_vars[n_restored:]}))
    candidates = [{k: cut[k] for k in ("layer_index", "layer", "features_shape", "mask_indices_below")}]
    return fc.finish_record(cut, input_keys, metrics, candidates)
