#!/usr/bin/env python3
"""Write a Keras model as a *trainable* SavedModel that tfload can run and fine-tune.

The SavedModel follows the tfload train-step contract, version 1 (docs/train-step-contract.md):

  serving_default  <input keys>                                  -> outputs
  train_step       <input keys>, labels, mask, learning_rate      -> loss, <metrics>
  eval_step        <input keys>, labels                           -> loss, <metrics>

plus a JSON record of the contract, ``assets/tfload_contract.json``, tracked as a
``tf.saved_model.Asset`` (so it is listed in the MetaGraphDef's ``asset_file_def``).

How it is built, and why (see the contract document for the long version):

* tfload loads SavedModels the TF1 way through the C API (``SavedModelBundle::load``, tag ``serve``,
  restore through the ``SaverDef``), which needs exactly ONE resource handle per variable in the
  saved graph.  Saving a ``keras.Model`` that is an attribute of a ``tf.Module`` (or using
  ``keras.export.ExportArchive``) yields two handles per variable.  So the saved ``tf.Module``
  tracks only the raw ``tf.Variable``s (``[v.value for v in model.variables]`` and the optimizer's
  variables); the Keras model is reached through a closure inside the traced functions.
* The optimizers (SGD with momentum / Nesterov, Adam, AdamW) are written here with plain TF ops
  and keep their state in ``tf.Variable``s saved with the model.  Their formulas are those of
  Keras 3.  Each update is masked per variable with ``tf.where``: a variable whose mask entry is
  0 keeps its value bit for bit and so do its optimizer slots (Adam keeps a step count per
  variable, so bias correction restarts for a variable that is unfrozen later).
* A BatchNormalization layer whose trainable variables (gamma/beta) are all masked 0 runs in
  inference mode during ``train_step`` and leaves its moving statistics alone (the semantics of
  the Keras transfer-learning guide); this is a ``tf.cond`` per BN layer on its mask entries.
* Preprocessing (e.g. ``x / 255`` or the ``keras.applications`` scaling) is baked into all three
  signatures, so callers feed raw float pixels in 0..255.

Use it as a command (``python scripts/tfload_export.py --help``) or import it:
``export_trainable(model, out_dir, ...)``, ``load_source_model(...)``, ``replace_head(...)``,
``check_export(dir)``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile

CONTRACT_VERSION = 1
CONTRACT_ASSET = "tfload_contract.json"
SIG_SERVE = "serving_default"
SIG_TRAIN = "train_step"
SIG_EVAL = "eval_step"
KEY_LABELS = "labels"
KEY_MASK = "mask"
KEY_LR = "learning_rate"
KEY_LOSS = "loss"
RESERVED_KEYS = (KEY_LABELS, KEY_MASK, KEY_LR)
REQUIRED_RECORD_KEYS = ("contract_version", "signatures", "inputs", "outputs", "labels", "mask",
                        "learning_rate", "default_mask", "mask_variables", "non_trainable_variables",
                        "optimizer_variables", "loss", "metrics", "optimizer", "class_names")

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
OPTIMIZER_DEFAULTS = {
    # Keras 3 defaults.
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "adamw": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
              "weight_decay": 0.004},
}

# Preprocessing of keras.applications models (what their preprocess_input does).
# "none": the application scales its inputs itself and expects raw 0..255 pixels.
APPLICATION_PREPROCESS = [
    (r"^(MobileNet|MobileNetV2|InceptionV3|InceptionResNetV2|Xception|NASNet\w*|ResNet\d+V2)$", "tf"),
    (r"^(ResNet\d+|VGG\d+)$", "caffe"),
    (r"^DenseNet\d+$", "torch"),
    (r"^(EfficientNet\w*|ConvNeXt\w*|RegNet\w*|MobileNetV3\w*)$", "none"),
]
PREPROCESS_MODES = ("none", "unit", "tf", "torch", "caffe")

tf = None
keras = None


def _import_tf():
    """Import TensorFlow and Keras lazily (so ``--help`` is instant)."""
    global tf, keras
    if tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as _tf
        import keras as _keras

        tf, keras = _tf, _keras
    return tf, keras


class ContractError(ValueError):
    """The model or the options cannot be exported to the contract, or a check failed."""


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

def preprocessing_spec(mode, channels=None):
    """Describe the affine preprocessing baked in front of the model.

    ``model_input = (raw[..., ::-1] if reverse_channels else raw) * scale + offset``
    with ``scale``/``offset`` broadcast over the last axis (length 1 or the channel count).
    ``mode`` is one of PREPROCESS_MODES or ``"affine:SCALE,OFFSET"``.
    """
    mode = (mode or "none").strip()
    spec = {"mode": mode, "reverse_channels": False, "scale": [1.0], "offset": [0.0],
            "raw_input_range": None,
            "formula": "model_input = (raw[..., ::-1] if reverse_channels else raw) * scale + offset"
                       " (scale/offset broadcast over the last axis)"}
    if mode == "none":
        spec["description"] = "none: the signatures feed the Keras model its inputs unchanged"
    elif mode == "unit":
        spec.update(scale=[1.0 / 255.0], raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255, scaled to 0..1 (x / 255)")
    elif mode == "tf":
        spec.update(scale=[1.0 / 127.5], offset=[-1.0], raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255 (RGB), scaled to -1..1 (x / 127.5 - 1)")
    elif mode == "torch":
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        spec.update(scale=[1.0 / (255.0 * s) for s in std], offset=[-m / s for m, s in zip(mean, std)],
                    raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255 (RGB), (x / 255 - ImageNet mean) / ImageNet std")
    elif mode == "caffe":
        spec.update(reverse_channels=True, offset=[-103.939, -116.779, -123.68],
                    raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255 (RGB), converted to BGR, ImageNet BGR mean subtracted")
    elif mode.startswith("affine:"):
        try:
            scale, offset = (float(t) for t in mode[len("affine:"):].split(","))
        except ValueError as exc:
            raise ContractError(f"--preprocess {mode!r}: expected affine:SCALE,OFFSET") from exc
        spec.update(scale=[scale], offset=[offset],
                    description=f"model_input = raw * {scale!r} + {offset!r}")
    else:
        raise ContractError(f"unknown preprocessing {mode!r}; one of {PREPROCESS_MODES} or affine:S,O")
    n = max(len(spec["scale"]), len(spec["offset"]))
    if channels is not None and n > 1 and channels != n:
        raise ContractError(f"preprocessing {mode!r} needs {n} channels, the input has {channels}")
    if spec["reverse_channels"] and channels is not None and channels != 3:
        raise ContractError(f"preprocessing {mode!r} needs 3 channels, the input has {channels}")
    return spec


def application_preprocess_mode(name):
    for pattern, mode in APPLICATION_PREPROCESS:
        if re.match(pattern, name):
            return mode
    return None


def _apply_preprocessing(x, spec):
    if spec["mode"] == "none":
        return x
    if spec["reverse_channels"]:
        x = tf.reverse(x, axis=[-1])
    scale = tf.constant(spec["scale"], dtype=x.dtype)
    offset = tf.constant(spec["offset"], dtype=x.dtype)
    return x * scale + offset


# --------------------------------------------------------------------------------------------
# Model sources and head replacement
# --------------------------------------------------------------------------------------------

def _is_full_model_h5(path):
    import h5py

    with h5py.File(path, "r") as f:
        return "model_config" in f.attrs


def _load_architecture(spec):
    """An architecture: a model JSON file (``model.to_json()``), a ``.keras``/full ``.h5`` file,
    or ``module:function`` / ``path/to/file.py:function`` (called without arguments)."""
    _import_tf()
    if spec.endswith(".json") and os.path.isfile(spec):
        with open(spec) as f:
            return keras.models.model_from_json(f.read())
    if spec.endswith((".keras", ".h5", ".hdf5")) and os.path.isfile(spec):
        return keras.models.load_model(spec, compile=False)
    if ":" in spec:
        mod_name, func_name = spec.rsplit(":", 1)
        if mod_name.endswith(".py"):
            import importlib.util

            mspec = importlib.util.spec_from_file_location("_tfload_arch", mod_name)
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            import importlib

            module = importlib.import_module(mod_name)
        model = getattr(module, func_name)()
        if not isinstance(model, keras.Model):
            raise ContractError(f"{spec} returned {type(model).__name__}, not a keras.Model")
        return model
    raise ContractError(f"architecture {spec!r}: expected a .json/.keras/.h5 file or module:function")


def build_application(name, input_shape, *, alpha=None, include_top=False, classes=1000,
                      pooling="avg"):
    """A ``keras.applications`` model with ``weights=None`` (no download)."""
    _import_tf()
    fn = getattr(keras.applications, name, None)
    if fn is None or not callable(fn):
        raise ContractError(f"keras.applications has no model {name!r}")
    kwargs = {"weights": None, "input_shape": tuple(input_shape), "include_top": include_top}
    if alpha is not None:
        kwargs["alpha"] = alpha
    if include_top:
        kwargs["classes"] = classes
    else:
        kwargs["pooling"] = pooling
    return fn(**kwargs)


def load_source_model(*, model_path=None, weights=None, architecture=None, application=None,
                      input_shape=None, alpha=None, include_top=True, classes=1000):
    """Build the Keras model from one of the supported sources.

    * ``model_path``: a ``.keras`` file or a legacy full-model ``.h5`` file;
    * ``weights`` (``.weights.h5`` Keras 3, or a legacy ``.h5`` weights file) plus
      ``architecture`` (see ``_load_architecture``), ``model_path`` or ``application``;
    * ``application``: a ``keras.applications`` name (weights=None) with ``input_shape``.
    """
    _import_tf()
    given = [s for s in (model_path, architecture, application) if s]
    if len(given) != 1:
        raise ContractError("give exactly one of a model file, an architecture or an application")
    if model_path:
        if not os.path.isfile(model_path):
            raise ContractError(f"{model_path}: no such file")
        if model_path.endswith(".weights.h5") or (
                model_path.endswith((".h5", ".hdf5")) and not _is_full_model_h5(model_path)):
            raise ContractError(f"{model_path} holds weights only: pass it as --weights with "
                                "--architecture (or --application)")
        model = keras.models.load_model(model_path, compile=False)
    elif architecture:
        model = _load_architecture(architecture)
    else:
        if not input_shape:
            raise ContractError("--application needs --input-shape, e.g. 96,96,3")
        model = build_application(application, input_shape, alpha=alpha, include_top=include_top,
                                  classes=classes)
    if weights:
        if not os.path.isfile(weights):
            raise ContractError(f"{weights}: no such file")
        model.load_weights(weights)
    if not model.built:
        raise ContractError("the model is not built (give it an Input)")
    return model


def _head_layers(model):
    """The classification head of ``model``: trailing Activation/Softmax layers, the last Dense
    layer and a Dropout layer just before it (top-level layers only)."""
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    head = []
    i = len(layers) - 1
    while i >= 0 and isinstance(layers[i], (keras.layers.Activation, keras.layers.Softmax)):
        head.append(layers[i])
        i -= 1
    if i < 0 or not isinstance(layers[i], keras.layers.Dense):
        raise ContractError("cannot find the model's head: its last layer (before activations) "
                            "is not a Dense layer")
    head.append(layers[i])
    i -= 1
    if i >= 0 and isinstance(layers[i], keras.layers.Dropout):
        head.append(layers[i])
    return head[::-1]


def _unique_name(taken, base):
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def replace_head(model, num_classes, *, hidden_units=(), dropout=0.0, activation="softmax",
                 whole_model_is_base=False, seed=0):
    """Replace the model's head by ``[Dropout] [Dense(h, relu) [Dropout]]... Dense(num_classes)``.

    ``whole_model_is_base``: the model is a headless feature extractor (e.g. an application with
    ``include_top=False``); otherwise the head found by ``_head_layers`` is dropped.
    Returns ``(new_model, head_layer_names)``.
    """
    _import_tf()
    if len(model.outputs) != 1:
        raise ContractError("head replacement needs a single-output model")
    if whole_model_is_base:
        x = model.outputs[0]
        dropped = []
    else:
        dropped = _head_layers(model)
        x = dropped[0].input
    dropped_names = {l.name for l in dropped}
    taken = {l.name for l in model._flatten_layers(include_self=True, recursive=True)} - dropped_names
    if len(x.shape) != 2:
        raise ContractError(f"the base's output has shape {tuple(x.shape)}; the new head needs a "
                            "flat [batch, features] tensor")
    head = []

    def add(layer, t):
        head.append(layer.name)
        return layer(t)

    k = 0
    for units in hidden_units:
        if dropout:
            x = add(keras.layers.Dropout(dropout, seed=seed + k, name=_unique_name(taken, "head_dropout")), x)
            k += 1
        x = add(keras.layers.Dense(units, activation="relu", name=_unique_name(taken, "head_hidden"),
                                   kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k)), x)
        k += 1
    if dropout:
        x = add(keras.layers.Dropout(dropout, seed=seed + k, name=_unique_name(taken, "head_dropout")), x)
        k += 1
    out = add(keras.layers.Dense(num_classes, activation=activation, name=_unique_name(taken, "head"),
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k)), x)
    new_model = keras.Model(model.inputs, out, name=model.name)
    return new_model, head


# --------------------------------------------------------------------------------------------
# Optimizers (Keras 3 formulas, state in tf.Variables, per-variable masking)
# --------------------------------------------------------------------------------------------

def optimizer_config(name, **overrides):
    name = name.lower()
    if name not in OPTIMIZER_DEFAULTS:
        raise ContractError(f"unknown optimizer {name!r}; one of {sorted(OPTIMIZER_DEFAULTS)}")
    cfg = {"name": name, **OPTIMIZER_DEFAULTS[name]}
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in cfg:
            raise ContractError(f"optimizer {name} has no setting {k!r}")
        cfg[k] = type(cfg[k])(v)
    return cfg


class _MaskedOptimizer:
    """Creates the optimizer's tf.Variables eagerly; ``apply`` is called inside a tf.function."""

    def __init__(self, cfg, tf_vars, var_names):
        self.cfg = cfg
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="optimizer/iterations")
        self.variables = [self.iterations]
        self.records = [{"index": 0, "name": "iterations", "slot": "iterations", "variable_index": None,
                         "shape": [], "dtype": "int64",
                         "description": "number of train_step calls (every call, whatever the mask)"}]
        self.slots = []
        for i, (v, vname) in enumerate(zip(tf_vars, var_names)):
            slots = {}
            names = []
            if cfg["name"] == "sgd" and cfg["momentum"] != 0.0:
                names = ["momentum"]
            elif cfg["name"] in ("adam", "adamw"):
                names = ["m", "v", "step"]
            for s in names:
                if s == "step":
                    var = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"optimizer/step/{vname}")
                else:
                    var = tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                      name=f"optimizer/{s}/{vname}")
                slots[s] = var
                self.variables.append(var)
                self.records.append({"index": len(self.records), "name": f"{s}/{vname}", "slot": s,
                                     "variable_index": i,
                                     "shape": list(var.shape), "dtype": var.dtype.name})
            self.slots.append(slots)

    def apply(self, grads, tf_vars, mask, lr):
        cfg = self.cfg
        for i, (g, var) in enumerate(zip(grads, tf_vars)):
            if g is None:  # not connected to the loss: nothing moves
                continue
            g = tf.convert_to_tensor(g)
            on = mask[i] > 0.0
            slots = self.slots[i]
            lr_ = tf.cast(lr, var.dtype)
            old = tf.identity(var)
            new_slots = {}
            if cfg["name"] == "sgd":
                if "momentum" in slots:
                    mom = tf.constant(cfg["momentum"], var.dtype)
                    m = slots["momentum"]
                    m_new = m * mom - g * lr_
                    new_slots["momentum"] = m_new
                    if cfg["nesterov"]:
                        new = old + (m_new * mom - g * lr_)
                    else:
                        new = old + m_new
                else:
                    new = old - g * lr_
            else:
                b1 = tf.constant(cfg["beta_1"], var.dtype)
                b2 = tf.constant(cfg["beta_2"], var.dtype)
                eps = tf.constant(cfg["epsilon"], var.dtype)
                step = slots["step"] + 1
                t = tf.cast(step, var.dtype)
                alpha = lr_ * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
                base = old
                if cfg["name"] == "adamw":
                    base = old - old * tf.constant(cfg["weight_decay"], var.dtype) * lr_
                m_new = slots["m"] + (g - slots["m"]) * (1.0 - b1)
                v_new = slots["v"] + (tf.square(g) - slots["v"]) * (1.0 - b2)
                new = base - (m_new * alpha) / (tf.sqrt(v_new) + eps)
                new_slots.update(m=m_new, v=v_new, step=step)
            for s, value in new_slots.items():
                slots[s].assign(tf.where(on, value, slots[s]))
            var.assign(tf.where(on, new, old))
        self.iterations.assign_add(1)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def _module_class():
    class TfloadTrainable(tf.Module):
        """Tracks ONLY raw tf.Variables (one resource handle each) and the contract asset."""

        def __init__(self, mask_variables, state_variables, optimizer_variables, asset_path):
            super().__init__(name="tfload_trainable")
            self.mask_variables = list(mask_variables)
            self.state_variables = list(state_variables)
            self.optimizer_variables = list(optimizer_variables)
            self.contract = tf.saved_model.Asset(asset_path)

    return TfloadTrainable


def checkpoint_key(group, index):
    """Key of a variable of the saved module in ``variables/variables.index``."""
    return f"{group}/{index}/.ATTRIBUTES/VARIABLE_VALUE"


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


def export_trainable(model, out_dir, *, optimizer=None, loss="sparse_categorical_crossentropy",
                     outputs="auto", class_names=None, preprocess="none", frozen_layers=(),
                     force=False, model_name=None, extra_info=None, jit_compile=False):
    """Export ``model`` to ``out_dir`` as a trainable SavedModel; returns the contract record.

    optimizer:      a dict from ``optimizer_config`` (default: SGD, Keras defaults)
    loss:           sparse_categorical_crossentropy | binary_crossentropy | mse (or aliases)
    outputs:        auto | probabilities | logits (what the model produces; picks from_logits)
    class_names:    list of str or None
    preprocess:     a mode for ``preprocessing_spec`` or a spec dict; applied to float inputs
    frozen_layers:  names of layers whose variables are masked 0 by default, on top of the
                    layers that are already ``trainable=False`` in the Keras model
    force:          replace an existing ``out_dir``
    jit_compile:    compile ``train_step``'s body with XLA (fuses the per-variable update ops;
                    the mask-size check stays outside, since XLA drops Assert)
    The output directory appears atomically (written to a temporary sibling, then renamed).
    """
    _import_tf()
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not force:
        raise FileExistsError(f"{out_dir} exists (pass force=True / --force to replace it)")
    optimizer = optimizer or optimizer_config("sgd")
    loss_name = LOSS_ALIASES.get(loss)
    if loss_name is None:
        raise ContractError(f"unknown loss {loss!r}; one of {sorted(LOSS_ALIASES)}")
    if len(model.outputs) != 1:
        raise ContractError("train_step needs a single-output model")
    output_kind = _output_kind(model) if outputs == "auto" else outputs
    if output_kind not in ("probabilities", "logits"):
        raise ContractError(f"outputs must be auto, probabilities or logits, not {outputs!r}")
    from_logits = output_kind == "logits"
    if loss_name == "mean_squared_error":
        output_kind, from_logits = "values", False
    out_shape = _dims(model.outputs[0].shape)
    num_classes = out_shape[-1] if loss_name == "sparse_categorical_crossentropy" else None
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        expected = out_shape[-1]
        if len(class_names) != expected:
            raise ContractError(f"{len(class_names)} class names for {expected} outputs")

    # ---- inputs ---------------------------------------------------------------------------
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
        owner = _layer_of_variables(model)
        mask_index = {id(v): i for i, v in enumerate(mask_vars)}
        names_seen = {}

        def vname(v):
            n = v.path
            if n in names_seen:
                names_seen[n] += 1
                n = f"{n}#{names_seen[n]}"
            else:
                names_seen[n] = 0
            return n

        def layer_name(v):
            l = owner.get(id(v))
            return l.name if l is not None else v.path.rsplit("/", 1)[0]

        mask_records = []
        for i, v in enumerate(mask_vars):
            mask_records.append({"index": i, "name": vname(v), "layer": layer_name(v),
                                 "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name,
                                 "trainable_by_default": id(v) in default_on,
                                 "checkpoint_key": checkpoint_key("mask_variables", i)})
        bn_layers = [l for l in layers if isinstance(l, keras.layers.BatchNormalization)]
        bn_kind = {}
        for l in bn_layers:
            bn_kind[id(l.moving_mean)] = "batch_norm_moving_mean"
            bn_kind[id(l.moving_variance)] = "batch_norm_moving_variance"
        state_records = []
        for j, v in enumerate(state_vars):
            kind = bn_kind.get(id(v), "seed_generator_state" if v.name == "seed_generator_state" else "other")
            state_records.append({"index": j, "name": vname(v), "layer": layer_name(v),
                                  "shape": list(v.shape), "dtype": tf.as_dtype(v.dtype).name,
                                  "kind": kind,
                                  "checkpoint_key": checkpoint_key("state_variables", j)})
        state_index = {id(v): j for j, v in enumerate(state_vars)}

        # BN layers: training mode in train_step only if one of gamma/beta is masked 1.
        bn_records = []
        switch = {"flags": None}
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
                return tf.cond(flag,
                               lambda: _orig(inputs, training=True, mask=mask),
                               lambda: _orig(inputs, training=False, mask=mask))

            object.__setattr__(l, "call", bn_call)
            patched.append(l)

        tf_mask_vars = [v.value for v in mask_vars]
        tf_state_vars = [v.value for v in state_vars]
        opt = _MaskedOptimizer(optimizer, tf_mask_vars, [r["name"] for r in mask_records])
        for r in opt.records:
            r["checkpoint_key"] = checkpoint_key("optimizer_variables", r["index"])

        # ---- losses and metrics -------------------------------------------------------------
        if loss_name == "sparse_categorical_crossentropy":
            loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
            labels_spec = {"key": KEY_LABELS, "dtype": "int64", "shape": out_shape[:-1],
                           "description": "class index in 0..num_classes-1"}
        elif loss_name == "binary_crossentropy":
            loss_obj = keras.losses.BinaryCrossentropy(from_logits=from_logits)
            labels_spec = {"key": KEY_LABELS, "dtype": "float32", "shape": out_shape,
                           "description": "0 or 1 per output unit"}
        else:
            loss_obj = keras.losses.MeanSquaredError()
            labels_spec = {"key": KEY_LABELS, "dtype": "float32", "shape": out_shape,
                           "description": "target values, same shape as outputs"}
        metrics = METRICS_FOR_LOSS[loss_name]

        def compute_metrics(labels, out):
            if loss_name == "sparse_categorical_crossentropy":
                pred = tf.argmax(out, axis=-1, output_type=tf.int64)
                return {"accuracy": tf.reduce_mean(tf.cast(tf.equal(pred, labels), tf.float32))}
            if loss_name == "binary_crossentropy":
                pred = out > (0.0 if from_logits else 0.5)
                return {"accuracy": tf.reduce_mean(tf.cast(tf.equal(pred, labels > 0.5), tf.float32))}
            return {"mean_absolute_error": tf.reduce_mean(tf.abs(tf.cast(out, tf.float32) - labels))}

        def forward(inputs, training):
            xs = [_apply_preprocessing(inputs[s["key"]], s["preprocessing"]) for s in input_specs]
            return model(xs[0] if len(xs) == 1 else xs, training=training)

        def compute_loss(labels, out):
            total = tf.cast(loss_obj(labels, out), tf.float32)
            reg = model.losses
            if reg:
                total = total + tf.add_n([tf.cast(r, tf.float32) for r in reg])
            return total

        in_sig = {s["key"]: tf.TensorSpec(s["shape"], s["dtype"], name=s["key"]) for s in input_specs}
        labels_sig = tf.TensorSpec(labels_spec["shape"], labels_spec["dtype"], name=KEY_LABELS)
        n_mask = len(mask_vars)
        mask_sig = tf.TensorSpec([n_mask], tf.float32, name=KEY_MASK)
        lr_sig = tf.TensorSpec([], tf.float32, name=KEY_LR)

        def serve(inputs):
            return {"outputs": forward(inputs, False)}

        def eval_step(inputs, labels):
            out = forward(inputs, False)
            return {KEY_LOSS: compute_loss(labels, out), **compute_metrics(labels, out)}

        def train_step(inputs, labels, mask, learning_rate):
            # A real runtime check: the C API does not compare a fed tensor's shape with the
            # signature's, and tf.size() of a statically shaped tensor would fold to a constant.
            check = tf.debugging.Assert(
                tf.equal(tf.raw_ops.Size(input=mask, out_type=tf.int32), n_mask),
                [f"mask must have {n_mask} entries (one per mask variable), got",
                 tf.raw_ops.Size(input=mask, out_type=tf.int32)])
            with tf.control_dependencies([check]):
                mask = tf.identity(mask)
            return train_body(inputs, labels, mask, learning_rate)

        def train_body_py(inputs, labels, mask, learning_rate):
            switch["flags"] = {id(l): tf.reduce_max(tf.gather(mask, r["mask_indices"])) > 0.0
                               for l, r in zip(bn_layers, bn_records) if r["mask_indices"]}
            try:
                with tf.GradientTape() as tape:
                    tape.watch(tf_mask_vars)
                    out = forward(inputs, True)
                    loss_value = compute_loss(labels, out)
            finally:
                switch["flags"] = None
            grads = tape.gradient(loss_value, tf_mask_vars)
            metric_values = compute_metrics(labels, out)
            opt.apply(grads, tf_mask_vars, mask, learning_rate)
            return {KEY_LOSS: loss_value, **metric_values}

        serve_cf = tf.function(serve).get_concrete_function(in_sig)
        eval_cf = tf.function(eval_step).get_concrete_function(in_sig, labels_sig)
        train_body = tf.function(train_body_py, jit_compile=True) if jit_compile else train_body_py
        train_cf = tf.function(train_step).get_concrete_function(in_sig, labels_sig, mask_sig, lr_sig)
    finally:
        for l in patched:
            object.__delattr__(l, "call")
        for l, t in saved_trainable:
            l._trainable = t
        for v, t in saved_var_trainable:
            v.trainable = t

    input_keys = [s["key"] for s in input_specs]
    metric_keys = list(metrics)
    record = {
        "contract_version": CONTRACT_VERSION,
        "producer": {"tool": "tfload_export.py", "tensorflow": tf.__version__, "keras": keras.__version__},
        "model_name": model_name or model.name,
        "task": {"sparse_categorical_crossentropy": "classification",
                 "binary_crossentropy": "binary_classification",
                 "mean_squared_error": "regression"}[loss_name],
        "inputs": input_specs,
        "preprocessing": "; ".join(f"{s['key']}: {s['preprocessing']['description']}" for s in input_specs),
        "outputs": [{"key": "outputs", "dtype": tf.as_dtype(model.outputs[0].dtype).name,
                     "shape": out_shape, "kind": output_kind}],
        "labels": labels_spec,
        "num_classes": num_classes,
        "class_names": class_names,
        "loss": {"name": loss_name, "from_logits": from_logits, "reduction": "mean_over_batch",
                 "includes_regularization_losses": True},
        "metrics": metric_keys,
        "optimizer": dict(optimizer),
        "mask": {"key": KEY_MASK, "dtype": "float32", "shape": [n_mask],
                 "description": "one entry per mask_variables[i]: 1 = train, 0 = frozen"},
        "learning_rate": {"key": KEY_LR, "dtype": "float32", "shape": [],
                          "default": optimizer["learning_rate"]},
        "default_mask": [1.0 if r["trainable_by_default"] else 0.0 for r in mask_records],
        "mask_variables": mask_records,
        "non_trainable_variables": state_records,
        "optimizer_variables": opt.records,
        "batch_norm_layers": bn_records,
        "batch_norm_policy": "per_layer_mask",
        "jit_compile": bool(jit_compile),
        "signatures": {
            SIG_SERVE: {"inputs": input_keys, "outputs": ["outputs"]},
            SIG_TRAIN: {"inputs": input_keys + [KEY_LABELS, KEY_MASK, KEY_LR],
                        "outputs": [KEY_LOSS] + metric_keys},
            SIG_EVAL: {"inputs": input_keys + [KEY_LABELS], "outputs": [KEY_LOSS] + metric_keys},
        },
    }
    if extra_info:
        record["extra"] = extra_info

    # ---- save atomically ------------------------------------------------------------------
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        with tempfile.TemporaryDirectory() as asset_dir:
            asset_path = os.path.join(asset_dir, CONTRACT_ASSET)
            with open(asset_path, "w") as f:
                json.dump(record, f, indent=1)
                f.write("\n")
            module = _module_class()(tf_mask_vars, tf_state_vars, opt.variables, asset_path)
            tf.saved_model.save(module, tmp, signatures={SIG_SERVE: serve_cf, SIG_TRAIN: train_cf,
                                                         SIG_EVAL: eval_cf})
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
    return record


# --------------------------------------------------------------------------------------------
# Checking an export (no TF session; works for hand-written train steps too)
# --------------------------------------------------------------------------------------------

def read_saved_model(export_dir):
    _import_tf()
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return mg
    raise ContractError(f"{export_dir}: no MetaGraphDef tagged 'serve'")


def read_contract(export_dir):
    with open(os.path.join(export_dir, "assets", CONTRACT_ASSET)) as f:
        return json.load(f)


def _sig_shape(info):
    if info.tensor_shape.unknown_rank:
        return None
    return [None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim]


def check_export(export_dir):
    """Check that the record and the SavedModel agree; raises ContractError with all problems.

    Reads only files (saved_model.pb, the asset, the checkpoint index): no session.
    """
    _import_tf()
    problems = []
    mg = read_saved_model(export_dir)
    if not any(a.filename == CONTRACT_ASSET for a in mg.asset_file_def):
        problems.append(f"{CONTRACT_ASSET} is not in asset_file_def")
    rec = read_contract(export_dir)
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in rec]
    if missing:
        raise ContractError(f"{export_dir}: record lacks {missing}")
    if rec.get("contract_version") != CONTRACT_VERSION:
        problems.append(f"contract_version is {rec.get('contract_version')!r}, not {CONTRACT_VERSION}")
    specs = {s["key"]: s for s in rec["inputs"]}
    specs[rec["labels"]["key"]] = rec["labels"]
    specs[rec["mask"]["key"]] = rec["mask"]
    specs[rec["learning_rate"]["key"]] = rec["learning_rate"]
    out_specs = {s["key"]: s for s in rec["outputs"]}
    n_mask = len(rec["mask_variables"])
    if rec["mask"]["shape"] != [n_mask]:
        problems.append(f"mask shape {rec['mask']['shape']} but {n_mask} mask variables")
    if [r["index"] for r in rec["mask_variables"]] != list(range(n_mask)):
        problems.append("mask_variables indices are not 0..n-1 in order")
    if len(rec.get("default_mask", [])) != n_mask:
        problems.append("default_mask length differs from mask_variables")
    for sig_key, sig in rec["signatures"].items():
        if sig_key not in mg.signature_def:
            problems.append(f"signature {sig_key} is missing")
            continue
        sd = mg.signature_def[sig_key]
        if sorted(sd.inputs) != sorted(sig["inputs"]):
            problems.append(f"{sig_key} inputs {sorted(sd.inputs)} != record {sorted(sig['inputs'])}")
        if sorted(sd.outputs) != sorted(sig["outputs"]):
            problems.append(f"{sig_key} outputs {sorted(sd.outputs)} != record {sorted(sig['outputs'])}")
        for key, info in sd.inputs.items():
            spec = specs.get(key)
            if spec is None:
                continue
            dtype = tf.as_dtype(info.dtype).name
            if dtype != spec["dtype"] or _sig_shape(info) != spec["shape"]:
                problems.append(f"{sig_key}.{key}: {dtype}{_sig_shape(info)} != record "
                                f"{spec['dtype']}{spec['shape']}")
        for key, info in sd.outputs.items():
            dtype = tf.as_dtype(info.dtype).name
            if key in out_specs:
                if dtype != out_specs[key]["dtype"] or _sig_shape(info) != out_specs[key]["shape"]:
                    problems.append(f"{sig_key}.{key}: {dtype}{_sig_shape(info)} != record "
                                    f"{out_specs[key]['dtype']}{out_specs[key]['shape']}")
            elif dtype != "float32" or _sig_shape(info) != []:
                problems.append(f"{sig_key}.{key} is {dtype}{_sig_shape(info)}, not a float32 scalar")
    for required in (SIG_SERVE, SIG_TRAIN, SIG_EVAL):
        if required not in rec["signatures"]:
            problems.append(f"record has no signature {required}")
    # checkpoint keys and one VarHandleOp per variable
    all_vars = rec["mask_variables"] + rec["non_trainable_variables"] + rec["optimizer_variables"]
    ckpt = dict(tf.train.list_variables(os.path.join(export_dir, "variables", "variables")))
    for r in all_vars:
        shape = ckpt.get(r["checkpoint_key"])
        if shape is None:
            problems.append(f"{r['name']}: checkpoint key {r['checkpoint_key']} missing")
        elif list(shape) != list(r["shape"]):
            problems.append(f"{r['name']}: checkpoint shape {shape} != record {r['shape']}")
    # Each tf.saved_model.Asset adds one DT_STRING VarHandleOp holding its path; the loader's
    # init op fills it (it is not in the checkpoint).  All other handles are model variables.
    handles = [n for n in mg.graph_def.node if n.op == "VarHandleOp"]
    string_handles = [n for n in handles if n.attr["dtype"].type == tf.string.as_datatype_enum]
    var_handles = [n for n in handles if n.attr["dtype"].type != tf.string.as_datatype_enum]
    shared = {n.attr["shared_name"].s for n in var_handles}
    if len(var_handles) != len(all_vars) or len(shared) != len(var_handles):
        problems.append(f"{len(var_handles)} VarHandleOps ({len(shared)} shared names) in the graph "
                        f"for {len(all_vars)} variables: TF1-style loading needs exactly one per variable")
    if len(string_handles) > len(mg.asset_file_def):
        problems.append(f"{len(string_handles)} string VarHandleOps for {len(mg.asset_file_def)} assets")
    if problems:
        raise ContractError(f"{export_dir}: " + "; ".join(problems))
    return rec


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _ints(text):
    return [int(t) for t in text.split(",") if t.strip()]


def build_arg_parser():
    p = argparse.ArgumentParser(
        prog="tfload_export.py",
        description="Export a Keras model as a trainable SavedModel (tfload train-step contract v1: "
                    "signatures serving_default, train_step, eval_step; record in "
                    "assets/tfload_contract.json).",
        epilog="Examples:\n"
               "  tfload_export.py --model m.keras --num-classes 5 --default-freeze-base "
               "--optimizer adam -o out/\n"
               "  tfload_export.py --weights w.weights.h5 --architecture arch.json -o out/\n"
               "  tfload_export.py --application MobileNetV2 --input-shape 96,96,3 --alpha 0.35 "
               "--num-classes 3 --default-freeze-base -o out/\n"
               "  tfload_export.py --check out/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model source (one of --model, --architecture, --application)")
    src.add_argument("--model", help="a .keras file or a legacy full-model .h5 file")
    src.add_argument("--weights", help="a .weights.h5 (Keras 3) or legacy .h5 weights file, loaded into "
                                       "the model from --architecture / --application / --model")
    src.add_argument("--architecture",
                     help="model JSON (model.to_json()), a .keras/.h5 model file, or module:function "
                          "/ file.py:function returning a keras.Model")
    src.add_argument("--application", help="a keras.applications name, built with weights=None")
    src.add_argument("--input-shape", type=_ints, help="application input shape, e.g. 96,96,3")
    src.add_argument("--alpha", type=float, help="application width multiplier (MobileNet*)")
    src.add_argument("--app-classes", type=int, default=1000,
                     help="application classes when its own head is kept (no --num-classes)")
    head = p.add_argument_group("head")
    head.add_argument("--num-classes", type=int, help="replace the head by a new Dense(N) layer, keeping the base")
    head.add_argument("--hidden-units", type=_ints, default=[], help="hidden Dense(relu) layers of the new head, e.g. 64 or 128,64")
    head.add_argument("--dropout", type=float, default=0.0, help="dropout rate before each new head Dense layer")
    head.add_argument("--default-freeze-base", action="store_true",
                      help="default mask: base variables 0 (frozen), head variables 1")
    head.add_argument("--class-names", help="comma-separated class names, in output order")
    tr = p.add_argument_group("training")
    tr.add_argument("--loss", default="sparse_categorical_crossentropy", choices=sorted(LOSS_ALIASES))
    tr.add_argument("--outputs", default="auto", choices=["auto", "probabilities", "logits"],
                    help="what the model outputs (sets from_logits); auto: probabilities if it ends in "
                         "softmax/sigmoid. A new head outputs probabilities unless 'logits'")
    tr.add_argument("--optimizer", default="sgd", choices=sorted(OPTIMIZER_DEFAULTS))
    tr.add_argument("--learning-rate", type=float, help="default learning rate recorded (train_step takes it as input)")
    tr.add_argument("--momentum", type=float)
    tr.add_argument("--nesterov", action="store_true", default=None)
    tr.add_argument("--beta-1", type=float)
    tr.add_argument("--beta-2", type=float)
    tr.add_argument("--epsilon", type=float)
    tr.add_argument("--weight-decay", type=float)
    p.add_argument("--preprocess", default="auto",
                   help="none | unit (x/255) | tf (x/127.5-1) | torch | caffe | affine:SCALE,OFFSET; "
                        "auto = the application's own preprocessing, else none")
    tr.add_argument("--jit-compile", action="store_true",
                    help="compile train_step with XLA (faster on small models; tfload runs it through the C API)")
    p.add_argument("--name", help="model name recorded (default: the Keras model's name)")
    p.add_argument("--seed", type=int, default=0, help="seed for new layers (default 0)")
    p.add_argument("-o", "--out", help="output SavedModel directory")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--check", metavar="DIR", help="only check an exported SavedModel against its record")
    return p


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    if args.check:
        rec = check_export(args.check)
        print(f"{args.check}: OK (contract v{rec['contract_version']}, {len(rec['mask_variables'])} mask "
              f"variables, signatures {', '.join(rec['signatures'])})")
        return 0
    if not args.out:
        print("tfload_export.py: error: --out is required", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not args.force:
        print(f"tfload_export.py: error: {args.out} exists (use --force to replace it)", file=sys.stderr)
        return 1
    _import_tf()
    keras.utils.set_random_seed(args.seed)
    replace = args.num_classes is not None
    model = load_source_model(model_path=args.model, weights=args.weights, architecture=args.architecture,
                              application=args.application, input_shape=args.input_shape,
                              alpha=args.alpha, include_top=not replace, classes=args.app_classes)
    loss = LOSS_ALIASES[args.loss]
    head_names = None
    outputs = args.outputs
    if replace:
        activation = {"sparse_categorical_crossentropy": "softmax", "binary_crossentropy": "sigmoid",
                      "mean_squared_error": "linear"}[loss]
        if outputs == "logits":
            activation = "linear"
        model, head_names = replace_head(model, args.num_classes, hidden_units=args.hidden_units,
                                         dropout=args.dropout, activation=activation,
                                         whole_model_is_base=bool(args.application), seed=args.seed)
    frozen = []
    if args.default_freeze_base:
        if head_names is None:
            head_names = [l.name for l in _head_layers(model)]
        frozen = [l.name for l in model.layers if l.name not in head_names
                  and not isinstance(l, keras.layers.InputLayer)]
    preprocess = args.preprocess
    if preprocess == "auto":
        preprocess = "none"
        if args.application:
            preprocess = application_preprocess_mode(args.application)
            if preprocess is None:
                raise ContractError(f"no known preprocessing for {args.application}; pass --preprocess")
    opt = optimizer_config(args.optimizer, learning_rate=args.learning_rate, momentum=args.momentum,
                           nesterov=args.nesterov, beta_1=args.beta_1, beta_2=args.beta_2,
                           epsilon=args.epsilon, weight_decay=args.weight_decay)
    class_names = args.class_names.split(",") if args.class_names else None
    rec = export_trainable(model, args.out, optimizer=opt, loss=loss, outputs=outputs,
                           class_names=class_names, preprocess=preprocess, frozen_layers=frozen,
                           force=args.force, model_name=args.name, jit_compile=args.jit_compile)
    n_on = int(sum(rec["default_mask"]))
    print(f"wrote {args.out}: {len(rec['mask_variables'])} mask variables ({n_on} trainable by default), "
          f"{len(rec['non_trainable_variables'])} non-trainable, optimizer {opt['name']}, "
          f"signatures {', '.join(rec['signatures'])}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ContractError, FileExistsError) as exc:
        print(f"tfload_export.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
