"""Writing a Keras model as a trainable SavedModel (``serving_default``, ``train_step``,
``eval_step`` and the record), the way tfload's C API loading needs it.

tfload loads SavedModels the TF1 way (``SavedModelBundle::load``, tag ``serve``, restore through
the ``SaverDef``), which needs exactly ONE resource handle per variable in the saved graph.
Saving a ``keras.Model`` that is an attribute of a ``tf.Module`` (or using
``keras.export.ExportArchive``) yields two. So the saved ``tf.Module`` tracks only the raw
``tf.Variable``s (``[v.value for v in model.variables]`` and the optimizer's variables); the Keras
model is reached through a closure inside the traced functions.

A BatchNormalization layer whose trainable variables (gamma/beta) are all masked 0 runs in
inference mode during ``train_step`` and leaves its moving statistics alone (the semantics of the
Keras transfer-learning guide). Keras's two modes differ only in the statistics they normalize
with and in the moving-statistics update, so the step computes both and picks with ``tf.where``
on the layer's mask entries (a renormalizing layer takes a ``tf.cond`` instead): selects fold
when tfload specializes the step on a constant mask, a lowered ``tf.cond`` does not (both
branches and their gradient's Switch/Merge nodes stay in the executed step).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

from ._tf import import_tf
from .allreduce import (DEFAULT_TIMEOUT_SECONDS, SIG_TRAIN_ALLREDUCE, add_allreduce_record,
                        allreduce_concrete_function, build_allreduce_step, collective_specs)
from .check import check_export
from . import feature_cut as fc
from .contract import (CONTRACT_ASSET, KEY_LABELS, KEY_LOSS, KEY_LR, KEY_MASK, KEY_SAMPLE_WEIGHT, RESERVED_KEYS,
                       SIG_EVAL, SIG_SERVE, SIG_TRAIN, ContractError, build_record, checkpoint_key,
                       write_contract)
from .losses import CLASS_LOSSES, LOSS_ALIASES, METRICS_FOR_LOSS, check_label_smoothing, compute_metrics, loss_and_labels
from .optimizers import MaskedOptimizer, optimizer_config
from .preprocessing import apply_preprocessing, preprocessing_spec


def _module_class():
    tf, _ = import_tf()

    class TfloadTrainable(tf.Module):
        """Tracks ONLY raw tf.Variables (one resource handle each) and the contract asset."""

        def __init__(self, mask_variables, state_variables, optimizer_variables, asset_path):
            super().__init__(name="tfload_trainable")
            self.mask_variables = list(mask_variables)
            self.state_variables = list(state_variables)
            self.optimizer_variables = list(optimizer_variables)
            self.contract = tf.saved_model.Asset(asset_path)

    return TfloadTrainable


def _sanitize_key(name):
    key = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not key or key[0].isdigit():
        key = "_" + key
    return key


def _is_auto_input_name(name):
    return re.fullmatch(r"(input(_layer)?|keras_tensor)(_\d+)?", name) is not None


def _input_name(tensor):
    hist = getattr(tensor, "_keras_history", None)
    if hist is not None and getattr(hist, "operation", None) is not None:
        return hist.operation.name
    return tensor.name


def _output_kind(model):
    """'probabilities' if the model ends with softmax/sigmoid, else 'logits'."""
    _, keras = import_tf()
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return "probabilities"
    act = getattr(last, "activation", None)
    act_name = getattr(act, "__name__", str(act)) if act is not None else ""
    return "probabilities" if act_name in ("softmax", "sigmoid") else "logits"


def _layer_of_variables(model):
    owner = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for v in list(layer._trainable_variables) + list(layer._non_trainable_variables):
            owner[id(v)] = layer
        for sg in getattr(layer, "_seed_generators", []) or []:
            owner[id(sg.state)] = layer
    return owner


def _dims(shape):
    return [None if d is None else int(d) for d in shape]


def _input_specs(model, preprocess):
    """The record's ``inputs``: one key per model input, with its preprocessing."""
    tf, _ = import_tf()
    input_specs = []
    for t in model.inputs:
        name = _input_name(t)
        if len(model.inputs) == 1 and _is_auto_input_name(name):
            key = "inputs"
        else:
            key = _sanitize_key(name)
        if key in RESERVED_KEYS:
            raise ContractError(f"model input {name!r} collides with the reserved key {key!r}")
        dtype = tf.as_dtype(t.dtype)
        pspec = preprocess if isinstance(preprocess, dict) else preprocessing_spec(
            preprocess if dtype.is_floating else "none", t.shape[-1] if len(t.shape) else None)
        input_specs.append({"key": key, "keras_name": name, "dtype": dtype.name,
                            "shape": _dims(t.shape), "preprocessing": pspec})
    if len({s["key"] for s in input_specs}) != len(input_specs):
        raise ContractError(f"input keys collide: {[s['key'] for s in input_specs]}")
    return input_specs


def _variable_names(variables):
    """Each variable's ``path``, with ``#N`` appended to repeats (in the order given)."""
    seen, names = {}, []
    for v in variables:
        n = v.path
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[n]}"
        else:
            seen[n] = 0
        names.append(n)
    return names


def _layer_records(model, mask_vars):
    """Keras's ``model.layers``, in its order, each with the mask indices of the trainable
    variables it holds (with the layers nested in it): what ``--train-last-layers N`` counts, so
    that it means ``for layer in model.layers[:-N]: layer.trainable = False``. Layers without
    variables (pooling, activations, dropout) are entries too."""
    index = {id(v): i for i, v in enumerate(mask_vars)}
    return [{"name": layer.name,
             "mask_indices": sorted({index[id(v)] for v in layer.weights if id(v) in index})}
            for layer in model.layers]


def _variable_records(model, mask_vars, state_vars, default_on, bn_layers):
    """The record's ``mask_variables`` and ``non_trainable_variables``."""
    tf, _ = import_tf()
    owner = _layer_of_variables(model)
    names = _variable_names(mask_vars + state_vars)

    def layer_name(v):
        l = owner.get(id(v))
        return l.name if l is not None else v.path.rsplit("/", 1)[0]

    mask_records = []
    for i, v in enumerate(mask_vars):
        mask_records.append({"index": i, "name": names[i], "layer": layer_name(v),
                             "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name,
                             "trainable_by_default": id(v) in default_on,
                             "checkpoint_key": checkpoint_key("mask_variables", i)})
    bn_kind = {}
    for l in bn_layers:
        bn_kind[id(l.moving_mean)] = "batch_norm_moving_mean"
        bn_kind[id(l.moving_variance)] = "batch_norm_moving_variance"
    state_records = []
    for j, v in enumerate(state_vars):
        kind = bn_kind.get(id(v), "seed_generator_state" if v.name == "seed_generator_state" else "other")
        state_records.append({"index": j, "name": names[len(mask_vars) + j], "layer": layer_name(v),
                              "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name,
                              "kind": kind,
                              "checkpoint_key": checkpoint_key("state_variables", j)})
    return mask_records, state_records


def _patch_batch_norm(bn_layers, mask_vars, state_vars, default_on, was_trainable, switch, patched, *,
                      fused):
    """Make each BN layer train in ``train_step`` only if one of gamma/beta is masked 1; its
    training mode runs the fused kernel where ``fused`` and the layer allows it.

    Replaces each layer's ``call`` (undone by the caller through ``patched``); the traced
    ``train_step`` puts its per-layer flags in ``switch["flags"]``. Returns the record's
    ``batch_norm_layers``.
    """
    tf, _ = import_tf()
    mask_index = {id(v): i for i, v in enumerate(mask_vars)}
    state_index = {id(v): j for j, v in enumerate(state_vars)}
    bn_records = []
    for l in bn_layers:
        idx = [mask_index[id(v)] for v in l._trainable_variables]
        stats = [state_index[id(l.moving_mean)], state_index[id(l.moving_variance)]]
        default_training = any(id(v) in default_on for v in l._trainable_variables) if idx \
            else was_trainable[id(l)]
        bn_records.append({"layer": l.name, "mask_indices": idx,
                           "state_indices": stats, "training_by_default": bool(default_training)})
        orig = l.call

        def bn_call(inputs, training=None, mask=None, _orig=orig, _layer=l,
                    _static=bool(was_trainable[id(l)])):
            flags = switch["flags"]
            if not training or flags is None:
                return _orig(inputs, training=training, mask=mask)
            flag = flags.get(id(_layer))
            if flag is None:  # BN without gamma/beta: follows its Keras trainable flag
                return _orig(inputs, training=_static, mask=mask)
            if not _layer.renorm:
                return _batch_norm_selected(_layer, inputs, mask, flag, fused=fused)
            return tf.cond(flag,
                           lambda: _orig(inputs, training=True, mask=mask),
                           lambda: _orig(inputs, training=False, mask=mask))

        object.__setattr__(l, "call", bn_call)
        patched.append(l)
    return bn_records


FUSED_MIN_EPSILON = 1.001e-5
"""The smallest epsilon TensorFlow's fused batch normalization takes (``tf.nn.fused_batch_norm``
raises a smaller one to this); a layer with a smaller epsilon keeps Keras's composite ops."""


def _batch_norm_selected(layer, inputs, mask, training, *, fused):
    """Keras 3's ``BatchNormalization.call`` (without renorm) in training mode where the scalar
    bool ``training`` is true and in inference mode where it is false, by ``tf.where``. Where
    ``training`` is false the moving statistics are assigned their own value, bit for bit.

    The training mode runs TensorFlow's fused kernel (``FusedBatchNormV3`` and its gradient, two
    kernels where Keras 3's composite ``moments`` and ``batch_normalization`` run some thirty ops
    forward and back over the activations; 2-2.5x faster on a CPU at the sizes of MobileNetV2's
    layers) where ``fused`` and the layer allows it (see ``_fusable``); the result equals
    Keras's to float32 rounding (one layer against float64: as close as Keras's ops, about 1e-7),
    not bit for bit, so a deep network trained from random weights, whose float32 training is
    chaotic, soon follows its own trajectory (docs/train-step-contract.md,
    scripts/tests/test_fused_batch_norm.py). Otherwise the same ops as Keras's, in the same order."""
    tf, keras = import_tf()
    ops, backend = keras.ops, keras.backend
    inputs = ops.cast(inputs, backend.result_type(inputs.dtype, "float32"))
    moving_mean = ops.cast(layer.moving_mean, inputs.dtype)
    moving_variance = ops.cast(layer.moving_variance, inputs.dtype)
    gamma = ops.cast(layer.gamma, inputs.dtype) if layer.scale else None
    beta = ops.cast(layer.beta, inputs.dtype) if layer.center else None
    if fused and _fusable(layer, inputs, mask):
        # Each mode reads its own fork of the input, whose gradient is the taken mode's, and the
        # output is picked between the modes: on a constant ``training`` everything of the mode
        # not taken is pruned, forward and back. In inference mode gamma and beta are masked 0 (the
        # layer trains when one of them does), so that mode takes no gradient for them.
        for_training, for_inference = _fork(tf, training, inputs)
        trained, batch_mean, batch_variance = _fused_training(tf, layer, for_training, gamma, beta)
        _update_moving(tf, ops, layer, training, moving_mean, moving_variance, batch_mean, batch_variance)
        inference = ops.batch_normalization(
            x=for_inference, mean=moving_mean, variance=moving_variance,
            axis=layer.axis, offset=None if beta is None else tf.stop_gradient(beta),
            scale=None if gamma is None else tf.stop_gradient(gamma), epsilon=layer.epsilon)
        return ops.cast(_pick(tf, training, trained, inference), layer.compute_dtype)
    batch_mean, batch_variance = layer._moments(inputs, mask)
    _update_moving(tf, ops, layer, training, moving_mean, moving_variance, batch_mean, batch_variance)
    outputs = ops.batch_normalization(
        x=inputs, mean=tf.where(training, batch_mean, moving_mean),
        variance=tf.where(training, batch_variance, moving_variance), axis=layer.axis, offset=beta,
        scale=gamma, epsilon=layer.epsilon)
    return ops.cast(outputs, layer.compute_dtype)


def _update_moving(tf, ops, layer, training, moving_mean, moving_variance, batch_mean, batch_variance):
    """Keras 3's moving-statistics update where ``training``; elsewhere each keeps its value."""
    for var, moving, batch in ((layer.moving_mean, moving_mean, batch_mean),
                               (layer.moving_variance, moving_variance, batch_variance)):
        updated = ops.cast(moving * layer.momentum + batch * (1.0 - layer.momentum), var.dtype)
        var.assign(tf.where(training, updated, var.value))


def _pick(tf, condition, when_true, when_false):
    """``tf.where(condition, when_true, when_false)`` for a scalar ``condition`` and two tensors of
    one shape, with a gradient that TensorFlow's graph optimizer folds when ``condition`` is a
    constant. ``tf.where``'s own gradient selects against a scalar zero, a broadcast that the
    optimizer cannot prove shape-preserving on a dynamic batch, so neither of its selects folds
    and the mode not taken keeps its backward pass; here each side selects against zeros of its
    own shape."""

    @tf.custom_gradient
    def pick(a, b):
        def grad(dy):
            return tf.where(condition, dy, tf.zeros_like(a)), tf.where(condition, tf.zeros_like(b), dy)

        return tf.where(condition, a, b), grad

    return pick(when_true, when_false)


def _fork(tf, condition, x):
    """Two copies of ``x`` whose gradient is the first one's where the scalar ``condition`` is
    true and the second one's where it is false: one select of two tensors of one shape, which
    folds on a constant ``condition`` and leaves the other copy's gradient unused (pruned)."""

    @tf.custom_gradient
    def fork(value):
        def grad(when_true, when_false):
            return tf.where(condition, when_true, when_false)

        return (tf.identity(value), tf.identity(value)), grad

    return fork(x)


def _fusable(layer, inputs, mask):
    """Whether ``FusedBatchNormV3`` computes ``layer``'s training mode: no mask, a float32 input
    of rank 4 or 5 normalized over its last axis (NHWC / NDHWC, Keras's default), not
    synchronized across replicas, and an epsilon the fused kernel takes."""
    rank = inputs.shape.rank
    return (mask is None and rank in (4, 5) and layer.axis % rank == rank - 1
            and inputs.dtype.name == "float32" and not getattr(layer, "synchronized", False)
            and layer.epsilon >= FUSED_MIN_EPSILON)


def _fused_training(tf, layer, inputs, gamma, beta):
    """``(outputs, batch mean, batch variance)`` of ``layer`` in training mode by
    ``FusedBatchNormV3``. The kernel returns the variance with Bessel's correction (n / (n - 1),
    n the values per channel) for moving averages; Keras 3 averages the plain (biased) variance,
    so the correction is undone."""
    channels = inputs.shape[-1]
    scale = gamma if gamma is not None else tf.ones([channels], inputs.dtype)
    offset = beta if beta is not None else tf.zeros([channels], inputs.dtype)
    empty = tf.constant([], inputs.dtype)
    outputs, batch_mean, corrected, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=layer.epsilon,
        exponential_avg_factor=1.0, data_format="NHWC" if inputs.shape.rank == 4 else "NDHWC", is_training=True)
    per_channel = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, inputs.dtype)
    # (n - 1) / n; with one value per channel both variances are 0 and so is this (no select,
    # which would stay in the specialized step: n is known only at run time).
    uncorrect = tf.maximum(per_channel - 1.0, 0.0) / tf.maximum(per_channel, 1.0)
    return outputs, batch_mean, corrected * uncorrect


def step_input_specs(input_specs, labels_spec, n_mask):
    """The ``TensorSpec``s the contract's signatures take: the model inputs (by key), the labels,
    the mask and the learning rate, named as the record names them."""
    tf, _ = import_tf()
    in_sig = {s["key"]: tf.TensorSpec(s["shape"], s["dtype"], name=s["key"]) for s in input_specs}
    labels_sig = tf.TensorSpec(labels_spec["shape"], labels_spec["dtype"], name=KEY_LABELS)
    return (in_sig, labels_sig, tf.TensorSpec([n_mask], tf.float32, name=KEY_MASK),
            tf.TensorSpec([], tf.float32, name=KEY_LR))


def with_regularization(loss_value, regularization_losses):
    """``loss_value`` as float32, plus the layers' regularization losses, as Keras's fit adds them."""
    tf, _ = import_tf()
    total = tf.cast(loss_value, tf.float32)
    if regularization_losses:
        total = total + tf.add_n([tf.cast(r, tf.float32) for r in regularization_losses])
    return total


def checked_mask(mask, n_mask):
    """``mask`` after a runtime check that it has ``n_mask`` entries (inside a traced function).

    A real runtime check: the C API does not compare a fed tensor's shape with the signature's,
    and tf.size() of a statically shaped tensor would fold to a constant.
    """
    tf, _ = import_tf()
    size = tf.raw_ops.Size(input=mask, out_type=tf.int32)
    check = tf.debugging.Assert(tf.equal(size, n_mask),
                                [f"mask must have {n_mask} entries (one per mask variable), got", size])
    with tf.control_dependencies([check]):
        return tf.identity(mask)


def _save_atomically(out_dir, force, record, module_args, signatures):
    """Save the module to a temporary sibling of ``out_dir``, check it, then rename it into place."""
    tf, _ = import_tf()
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        with tempfile.TemporaryDirectory() as asset_dir:
            asset_path = os.path.join(asset_dir, CONTRACT_ASSET)
            write_contract(record, asset_path)
            module = _module_class()(*module_args, asset_path)
            tf.saved_model.save(module, tmp, signatures=signatures)
        check_export(tmp)
        if os.path.exists(out_dir):
            if not force:
                raise FileExistsError(f"{out_dir} appeared while exporting")
            trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(trash, "old"))
            os.rename(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_trainable(model, out_dir, *, optimizer=None, loss="sparse_categorical_crossentropy",
                     outputs="auto", class_names=None, preprocess="none", frozen_layers=(),
                     force=False, model_name=None, extra_info=None, jit_compile=False,
                     label_smoothing=0.0, sample_weights=False,
                     allreduce_timeout=DEFAULT_TIMEOUT_SECONDS, head_names=None, feature_cache=True,
                     frozen_base_steps=True, fused_batch_norm=True):
    """Export ``model`` to ``out_dir`` as a trainable SavedModel; returns the contract record.

    optimizer:      a dict from ``optimizer_config`` (default: SGD, Keras defaults)
    loss:           sparse_categorical_crossentropy | categorical_crossentropy (one-hot or soft
                    float32 labels) | binary_crossentropy | mse (or aliases)
    outputs:        auto | probabilities | logits (what the model produces; picks from_logits)
    class_names:    list of str or None
    preprocess:     a mode for ``preprocessing_spec`` or a spec dict; applied to float inputs
    frozen_layers:  names of layers whose variables are masked 0 by default, on top of the
                    layers that are already ``trainable=False`` in the Keras model
    force:          replace an existing ``out_dir``
    label_smoothing: Keras's label_smoothing of categorical / binary cross-entropy, baked into
                    the loss of train_step and eval_step and recorded as ``loss.label_smoothing``
    sample_weights: give train_step and eval_step a ``sample_weight`` input (float32 [batch]),
                    applied as Keras fit applies sample/class weights (loss = sum(w * l) / batch
                    size; metrics unweighted, as Keras's ``metrics``); the record is then contract version 2
    jit_compile:    compile ``train_step``'s body with XLA (fuses the per-variable update ops;
                    the mask-size check stays outside, since XLA drops Assert)
    allreduce_timeout: seconds ``train_step_allreduce``'s reduce waits for a stalled peer
    head_names:     the layers of a new head (the cut of the feature cache is at the first);
                    default: the model's own classification head
    feature_cache:  record the base/head cut and export ``features``, ``head_train_step`` and
                    ``head_eval_step`` (see feature_cut.py) where the model has a clean cut
                    (not with ``sample_weights``: the head steps take no weights)
    frozen_base_steps: export, for each clean cut (see ``feature_cut.clean_cuts``), a signature
                    ``train_step_from_<layer index>`` taking ``train_step``'s inputs: the base below
                    the cut forward in inference mode, then the head's step alone (no gradient, no
                    backward pass below the cut); for masks with every entry below the cut 0, it
                    changes exactly what ``train_step`` changes (others are refused at run time).
                    Recorded as ``frozen_base_steps`` (not with ``sample_weights`` or ``jit_compile``).
    fused_batch_norm: run a training-mode BatchNormalization through TensorFlow's fused kernel
                    where the layer allows it (faster; equal to Keras to float32 rounding per
                    step); False keeps Keras's composite ops, whose step equals Keras's
                    ``train_on_batch`` to float32 rounding of the same ops (MobileNetV2: 254 of
                    262 variables identical, the rest within 1.2e-7). Recorded as ``fused_batch_norm``
                    when the model has a BatchNormalization layer.
    The output directory appears atomically (written to a temporary sibling, then renamed).
    """
    tf, keras = import_tf()
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not force:
        raise FileExistsError(f"{out_dir} exists (pass force=True / --force to replace it)")
    optimizer = optimizer or optimizer_config("sgd")
    loss_name = LOSS_ALIASES.get(loss)
    if loss_name is None:
        raise ContractError(f"unknown loss {loss!r}; one of {sorted(LOSS_ALIASES)}")
    label_smoothing = check_label_smoothing(loss_name, label_smoothing)
    if len(model.outputs) != 1:
        raise ContractError("train_step needs a single-output model")
    output_kind = _output_kind(model) if outputs == "auto" else outputs
    if output_kind not in ("probabilities", "logits"):
        raise ContractError(f"outputs must be auto, probabilities or logits, not {outputs!r}")
    from_logits = output_kind == "logits"
    if loss_name == "mean_squared_error":
        output_kind, from_logits = "values", False
    out_shape = _dims(model.outputs[0].shape)
    num_classes = out_shape[-1] if loss_name in CLASS_LOSSES else None
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        expected = out_shape[-1]
        if len(class_names) != expected:
            raise ContractError(f"{len(class_names)} class names for {expected} outputs")
    input_specs = _input_specs(model, preprocess)

    # ---- variables ------------------------------------------------------------------------
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    saved_trainable = [(l, l._trainable) for l in layers]
    was_trainable = {id(l): bool(t) for l, t in saved_trainable}
    saved_var_trainable = [(v, v.trainable) for v in model.variables]
    default_on = {id(v) for v in model.trainable_variables}
    frozen_layers = set(frozen_layers)
    unknown = frozen_layers - {l.name for l in layers}
    if unknown:
        raise ContractError(f"unknown frozen layers: {sorted(unknown)}")
    for l in layers:
        if l.name in frozen_layers:
            for v in l.trainable_variables:
                default_on.discard(id(v))
    patched = []
    try:
        model.trainable = True  # the mask decides at run time
        mask_vars = list(model.trainable_variables)
        state_vars = list(model.non_trainable_variables)
        if len(mask_vars) + len(state_vars) != len(model.variables) or \
                {id(v) for v in mask_vars + state_vars} != {id(v) for v in model.variables}:
            raise ContractError("model.variables is not trainable + non-trainable variables")
        if not mask_vars:
            raise ContractError("the model has no trainable variables")
        bn_layers = [l for l in layers if isinstance(l, keras.layers.BatchNormalization)]
        mask_records, state_records = _variable_records(model, mask_vars, state_vars, default_on, bn_layers)
        layer_records = _layer_records(model, mask_vars)
        switch = {"flags": None}
        bn_records = _patch_batch_norm(bn_layers, mask_vars, state_vars, default_on, was_trainable,
                                       switch, patched, fused=fused_batch_norm)

        tf_mask_vars = [v.value for v in mask_vars]
        tf_state_vars = [v.value for v in state_vars]
        opt = MaskedOptimizer(optimizer, tf_mask_vars, [r["name"] for r in mask_records])
        for r in opt.records:
            r["checkpoint_key"] = checkpoint_key("optimizer_variables", r["index"])

        # ---- losses and metrics -------------------------------------------------------------
        loss_obj, labels_spec = loss_and_labels(loss_name, from_logits, out_shape, label_smoothing)
        metrics = METRICS_FOR_LOSS[loss_name]

        def forward(inputs, training):
            xs = [apply_preprocessing(inputs[s["key"]], s["preprocessing"]) for s in input_specs]
            return model(xs[0] if len(xs) == 1 else xs, training=training)

        def compute_loss(labels, out, weight=None):
            return with_regularization(loss_obj(labels, out, sample_weight=weight), model.losses)

        n_mask = len(mask_vars)
        in_sig, labels_sig, mask_sig, lr_sig = step_input_specs(input_specs, labels_spec, n_mask)

        def serve(inputs):
            return {"outputs": forward(inputs, False)}

        def eval_body(inputs, labels, weight=None):
            out = forward(inputs, False)
            return {KEY_LOSS: compute_loss(labels, out, weight),
                    **compute_metrics(loss_name, from_logits, labels, out)}

        def bn_flags(mask):
            return {id(l): tf.reduce_max(tf.gather(mask, r["mask_indices"])) > 0.0
                    for l, r in zip(bn_layers, bn_records) if r["mask_indices"]}

        def gradients_py(inputs, labels, mask, weight=None):
            switch["flags"] = bn_flags(mask)
            try:
                with tf.GradientTape() as tape:
                    tape.watch(tf_mask_vars)
                    out = forward(inputs, True)
                    loss_value = compute_loss(labels, out, weight)
            finally:
                switch["flags"] = None
            grads = tape.gradient(loss_value, tf_mask_vars)
            return grads, loss_value, compute_metrics(loss_name, from_logits, labels, out)

        def update_py(grads, mask, learning_rate):
            opt.apply(grads, tf_mask_vars, mask, learning_rate)

        def train_body_py(inputs, labels, mask, learning_rate, weight=None):
            grads, loss_value, metric_values = gradients_py(inputs, labels, mask, weight)
            update_py(grads, mask, learning_rate)
            return {KEY_LOSS: loss_value, **metric_values}

        step = {"tf_mask_vars": tf_mask_vars, "opt": opt, "loss": compute_loss, "n_mask": n_mask,
                "metric_keys": list(metrics),
                "metrics": lambda labels, out: compute_metrics(loss_name, from_logits, labels, out)}
        train_body = tf.function(train_body_py, jit_compile=True) if jit_compile else train_body_py
        serve_cf = tf.function(serve).get_concrete_function(in_sig)
        check = lambda m: checked_mask(m, n_mask)  # noqa: E731
        if sample_weights:
            weight_sig = tf.TensorSpec([None], tf.float32, name=KEY_SAMPLE_WEIGHT)

            def eval_step(inputs, labels, sample_weight):
                return eval_body(inputs, labels, sample_weight)

            def train_step(inputs, labels, sample_weight, mask, learning_rate):
                return train_body(inputs, labels, check(mask), learning_rate, sample_weight)

            def allreduce_step(inputs, labels, sample_weight, mask, learning_rate, *collective):
                step = build_allreduce_step(lambda i, l, m: gradients_py(i, l, m, sample_weight), update_py,
                                            metrics, check, jit_compile=jit_compile,
                                            timeout_seconds=allreduce_timeout)
                return step(inputs, labels, mask, learning_rate, *collective)

            step_specs = (in_sig, labels_sig, weight_sig, mask_sig, lr_sig)
            eval_cf = tf.function(eval_step).get_concrete_function(in_sig, labels_sig, weight_sig)
            train_cf = tf.function(train_step).get_concrete_function(*step_specs)
            allreduce_cf = tf.function(allreduce_step).get_concrete_function(*step_specs, *collective_specs())
        else:
            def train_step(inputs, labels, mask, learning_rate):
                return train_body(inputs, labels, check(mask), learning_rate)

            eval_cf = tf.function(eval_body).get_concrete_function(in_sig, labels_sig)
            train_cf = tf.function(train_step).get_concrete_function(in_sig, labels_sig, mask_sig, lr_sig)
            allreduce_cf = allreduce_concrete_function(
                gradients_py, update_py, metrics, check, (in_sig, labels_sig, mask_sig, lr_sig), jit_compile,
                allreduce_timeout)
        signatures = {SIG_SERVE: serve_cf, SIG_TRAIN: train_cf, SIG_EVAL: eval_cf,
                      SIG_TRAIN_ALLREDUCE: allreduce_cf}
        frozen_steps = []
        if frozen_base_steps and not jit_compile and not sample_weights:
            cuts = _cuts_for_frozen_base_steps(model, mask_vars, was_trainable)
            frozen_steps = _frozen_base_steps(model, cuts, step, bn_flags, switch, input_specs, check,
                                              (in_sig, labels_sig, mask_sig, lr_sig), signatures)
        cut_records = None
        if feature_cache and not sample_weights:
            cut_records = _feature_cut(model, head_names, mask_vars, was_trainable, default_on, step, bn_flags,
                                       switch, input_specs, (in_sig, labels_sig, mask_sig, lr_sig),
                                       signatures)
    finally:
        for l in patched:
            object.__delattr__(l, "call")
        for l, t in saved_trainable:
            l._trainable = t
        for v, t in saved_var_trainable:
            v.trainable = t

    record = build_record(
        versions=(tf.__version__, keras.__version__), model_name=model_name or model.name,
        loss_name=loss_name, from_logits=from_logits, input_specs=input_specs,
        output={"key": "outputs", "dtype": tf.as_dtype(model.outputs[0].dtype).name,
                "shape": out_shape, "kind": output_kind},
        labels_spec=labels_spec, num_classes=num_classes, class_names=class_names, metrics=metrics,
        optimizer=optimizer, mask_records=mask_records, state_records=state_records,
        optimizer_records=opt.records, bn_records=bn_records, jit_compile=jit_compile,
        extra_info=extra_info, layer_records=layer_records, label_smoothing=label_smoothing,
        sample_weights=sample_weights)
    add_allreduce_record(record, allreduce_timeout)
    if cut_records is not None:
        record["feature_cut"], record["feature_cuts"] = cut_records
    if frozen_steps:
        record["frozen_base_steps"] = frozen_steps
    if bn_records:
        record["fused_batch_norm"] = bool(fused_batch_norm)
    _save_atomically(out_dir, force, record, (tf_mask_vars, tf_state_vars, opt.variables), signatures)
    return record


def _feature_cut(model, head_names, mask_vars, was_trainable, default_on, step, bn_flags, switch,
                 input_specs, sigs, signatures):
    """Adds the feature cache's signatures to ``signatures`` for the model's head cut; returns
    the record's ``(feature_cut, feature_cuts)``, or ``None`` when the model has no clean cut."""
    tf, keras = import_tf()
    chosen, candidates = fc.keras_cuts(model, head_names, mask_vars, was_trainable, default_on)
    if chosen is None:
        return None
    cut, head_model = chosen
    features_fn = _base_forward(model, cut["layer_index"], input_specs)
    head_forward = _head_forward(head_model, bn_flags, switch)
    in_sig, labels_sig, mask_sig, lr_sig = sigs
    head_ids = {id(step["tf_mask_vars"][i]) for i in cut["mask_indices_head"]}
    signatures.update(fc.head_signatures(
        features_fn=features_fn, head_forward=head_forward, step=step, in_sig=in_sig,
        labels_sig=labels_sig, mask_sig=mask_sig, lr_sig=lr_sig,
        features_shape=cut["features_shape"], head_var_ids=head_ids))
    return fc.finish_record(cut, [s["key"] for s in input_specs], step["metric_keys"], candidates)


def _base_forward(model, layer_index, input_specs):
    """``inputs -> the input of model.layers[layer_index]``, preprocessing included, in inference
    mode (the base of a cut, frozen)."""
    _, keras = import_tf()
    base_model = keras.Model(model.inputs, model.layers[layer_index].input)

    def forward(inputs):
        xs = [apply_preprocessing(inputs[s["key"]], s["preprocessing"]) for s in input_specs]
        return base_model(xs[0] if len(xs) == 1 else xs, training=False)

    return forward


def _head_forward(head_model, bn_flags, switch):
    """``(features, training, mask) -> output`` of a cut's head, its BatchNormalization layers
    training by their mask entries as in ``train_step``."""
    def forward(features, training, mask):
        switch["flags"] = bn_flags(mask) if training else None
        try:
            return head_model(features, training=training)
        finally:
            switch["flags"] = None

    return forward


def _cuts_for_frozen_base_steps(model, mask_vars, was_trainable):
    """The clean cuts that get a frozen-base step, lowest first, one per set of mask entries below
    (of cuts with the same set, the highest: the smallest head). A cut with nothing below it
    would only repeat ``train_step``."""
    by_below = {}
    for rec, head in fc.clean_cuts(model, mask_vars, was_trainable):
        if rec["mask_indices_below"]:
            by_below[tuple(rec["mask_indices_below"])] = (rec, head)
    return sorted(by_below.values(), key=lambda cut: cut[0]["layer_index"])


def _frozen_base_steps(model, cuts, step, bn_flags, switch, input_specs, check, sigs, signatures):
    """Adds a ``train_step_from_<layer index>`` signature to ``signatures`` for each cut: the base
    forward in inference mode, then the head's step (``feature_cut.head_step_body``), which
    changes exactly what the full step changes when the mask freezes everything below the cut
    (the feature cache's parity). A mask with an entry below the cut on fails its run (an
    ``Assert``, folded away when the mask is a constant). Returns the record's entries."""
    tf, _ = import_tf()
    records = []
    for rec, head_model in cuts:
        name = fc.frozen_base_step_name(rec["layer_index"])
        base = _base_forward(model, rec["layer_index"], input_specs)
        head_ids = {id(step["tf_mask_vars"][i]) for i in rec["mask_indices_head"]}
        head_step = fc.head_step_body(_head_forward(head_model, bn_flags, switch), step, head_ids)
        below = rec["mask_indices_below"]
        message = (f"{name} trains the layers from {rec['layer']} up only: every mask entry below it "
                   f"({len(below)} entries) must be 0; run train_step for this mask")

        def frozen_step(inputs, labels, mask, learning_rate, _base=base, _step=head_step, _below=below,
                        _message=message):
            mask = check(mask)
            frozen = tf.debugging.Assert(tf.reduce_max(tf.gather(mask, _below)) <= 0.0, [_message])
            with tf.control_dependencies([frozen]):
                mask = tf.identity(mask)
            return _step(_base(inputs), labels, mask, learning_rate)

        signatures[name] = tf.function(frozen_step).get_concrete_function(*sigs)
        records.append({"signature": name, **{k: rec[k] for k in ("layer_index", "layer", "mask_indices_below")}})
    return records
