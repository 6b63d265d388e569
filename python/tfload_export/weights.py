"""Loading a Keras HDF5 weights file into a model by layer name, saying which layers got none.

Keras's own ``load_weights`` into a ``keras.applications`` model quietly ignores the file's layers
the model lacks: a head named ``head`` stays at its random values when the file's head is called
``dense_1``. Here every layer of the model with weights must find its layer in the file (same
name, same number and shapes of weights), or the export fails naming it, unless
``skip_mismatch`` keeps its values (and the summary names it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .contract import ContractError

SHOWN = 8


@dataclass
class WeightsReport:
    """What ``load_by_name`` did: layers loaded, kept (none in the file, or not fitting), unused."""
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    unused: list = field(default_factory=list)

    def summary(self):
        """One line for the export's output: what was loaded and which layers kept their values."""
        text = f"loaded weights of {len(self.loaded)} layer(s) by name"
        kept = self.missing + self.mismatched
        if kept:
            text += f"; kept their new values (--skip-mismatch): {_names(kept)}"
        return text


def _names(names):
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def read_layer_weights(path):
    """The file's weights by layer name, each layer's in its stored order. Reads Keras 3
    ``.weights.h5`` files (``layers/<key>/vars/<i>``, the layer's name in the ``vars`` group's
    ``name`` attribute) and legacy Keras 2 / tf.keras ``.h5``
    files (``layer_names`` and ``weight_names`` attributes, under ``model_weights`` in a
    whole-model file)."""
    import h5py

    if not os.path.isfile(path):
        raise ContractError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ContractError(f"{path} is not an HDF5 weights file ({exc})") from None
    layers = {}
    with handle as f:
        if "layer_names" in f.attrs or "model_weights" in f:
            group = f["model_weights"] if "model_weights" in f else f
            for name in group.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                weight_names = group[name].attrs.get("weight_names", [])
                arrays = [group[name][w.decode() if isinstance(w, bytes) else w][()] for w in weight_names]
                if arrays:
                    layers.setdefault(name, arrays)
            return layers

        def visit(path_name, item):
            if isinstance(item, h5py.Group) and "vars" in item and len(item["vars"]):
                variables = item["vars"]
                # The group key is Keras's class-based one (`dense_1`); the layer's own name is an attribute.
                name = variables.attrs.get("name", path_name.rsplit("/", 1)[-1])
                name = name.decode() if isinstance(name, bytes) else str(name)
                layers.setdefault(name, [variables[str(i)][()] for i in range(len(variables))])

        f.visititems(visit)
    return layers


def _weighted_layers(model):
    """The model's layers that hold weights themselves (nested models looked into), in order."""
    _, keras = _keras()
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if layer.weights and not isinstance(layer, keras.Model)]


def _keras():
    from ._tf import import_tf
    return import_tf()


def _shapes(arrays):
    return [tuple(a.shape) for a in arrays]


def load_by_name(model, path, *, skip_mismatch=False):
    """Loads ``path`` into ``model`` layer by layer name; returns a ``WeightsReport``. Without
    ``skip_mismatch``, a model layer the file has no weights for, or whose weights do not fit,
    is a ``ContractError`` naming every such layer, and nothing is loaded."""
    stored = read_layer_weights(path)
    report = WeightsReport()
    plan = []
    for layer in _weighted_layers(model):
        arrays = stored.get(layer.name)
        if arrays is None:
            report.missing.append(layer.name)
        elif _shapes(arrays) != [tuple(w.shape) for w in layer.weights]:
            report.mismatched.append(layer.name)
        else:
            plan.append((layer, arrays))
    names = {layer.name for layer in _weighted_layers(model)}
    report.unused = [name for name in stored if name not in names]
    if not skip_mismatch and (report.missing or report.mismatched):
        raise ContractError(_problem(path, model, stored, report))
    for layer, arrays in plan:
        layer.set_weights(arrays)
        report.loaded.append(layer.name)
    return report


def _problem(path, model, stored, report):
    """The error: which layers got no weights, the file's unused layers, and what to do."""
    parts = []
    if report.missing:
        parts.append(f"holds no weights for {len(report.missing)} layer(s) of the model "
                     f"({_names(report.missing)})")
    if report.mismatched:
        parts.append(f"has weights of other shapes for {_names(report.mismatched)}")
    text = f"--weights {path} " + " and ".join(parts)
    if report.unused:
        text += f"; the file's layer(s) {_names(report.unused)} match no layer of the model"
    suggestion = _head_names_suggestion(model, stored, report)
    fix = f"name the new head's layers as the file does ({suggestion})" if suggestion else \
        "name the new head's layers as the file does (--head-names NAME,...)"
    return f"{text}. If they are the same layers under other names, {fix}; or pass --skip-mismatch " \
           "to keep those layers' new values"


def _head_names_suggestion(model, stored, report):
    """``--head-names a,b`` when each missing layer's weights fit exactly one unused file layer."""
    layers = {layer.name: layer for layer in _weighted_layers(model)}
    chosen = []
    for name in report.missing:
        shapes = [tuple(w.shape) for w in layers[name].weights]
        fits = [u for u in report.unused if u not in chosen and _shapes(stored[u]) == shapes]
        if len(fits) != 1:
            return None
        chosen.append(fits[0])
    return "--head-names " + ",".join(chosen) if chosen else None
