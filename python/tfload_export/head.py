"""Finding a model's classification head and replacing it by a new one (transfer learning)."""
from __future__ import annotations

from ._tf import import_tf
from .contract import ContractError


def head_layers(model):
    """The classification head of ``model``: trailing Activation/Softmax layers, the last Dense
    layer and a Dropout layer just before it (top-level layers only)."""
    _, keras = import_tf()
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


def _head_dense_names(taken, names, hidden_units):
    """The new Dense layers' names: ``names`` as given (one per hidden layer, then the output),
    else ``head_hidden``..., ``head``."""
    if names is None:
        return [_unique_name(taken, "head_hidden") for _ in hidden_units] + [_unique_name(taken, "head")]
    names = list(names)
    if len(names) != len(hidden_units) + 1:
        raise ContractError(f"--head-names gives {len(names)} name(s) ({', '.join(names)}), but the new head "
                            f"has {len(hidden_units) + 1} Dense layer(s) ({len(hidden_units)} from "
                            "--hidden-units, then the output): give one name each, in that order")
    clashes = sorted({n for n in names if n in taken or names.count(n) > 1})
    if clashes:
        raise ContractError(f"--head-names: {', '.join(clashes)} already name(s) a layer of the model "
                            "or of the head; give names of their own")
    taken.update(names)
    return names


def replace_head(model, num_classes, *, hidden_units=(), dropout=0.0, activation="softmax",
                 whole_model_is_base=False, seed=0, names=None):
    """Replace the model's head by ``[Dropout] [Dense(h, relu) [Dropout]]... Dense(num_classes)``.

    ``whole_model_is_base``: the model is a headless feature extractor (e.g. an application with
    ``include_top=False``); otherwise the head found by ``head_layers`` is dropped.
    ``names``: the new Dense layers' names (hidden ones, then the output), e.g. those of the
    file whose weights will be loaded; default ``head_hidden``..., ``head``.
    Returns ``(new_model, head_layer_names)``.
    """
    _, keras = import_tf()
    if len(model.outputs) != 1:
        raise ContractError("head replacement needs a single-output model")
    if whole_model_is_base:
        x = model.outputs[0]
        dropped = []
    else:
        dropped = head_layers(model)
        x = dropped[0].input
    dropped_names = {l.name for l in dropped}
    taken = {l.name for l in model._flatten_layers(include_self=True, recursive=True)} - dropped_names
    if len(x.shape) != 2:
        raise ContractError(f"the base's output has shape {tuple(x.shape)}; the new head needs a "
                            "flat [batch, features] tensor")
    head = []
    dense_names = iter(_head_dense_names(taken, names, hidden_units))

    def add(layer, t):
        head.append(layer.name)
        return layer(t)

    k = 0
    for units in hidden_units:
        if dropout:
            x = add(keras.layers.Dropout(dropout, seed=seed + k, name=_unique_name(taken, "head_dropout")), x)
            k += 1
        x = add(keras.layers.Dense(units, activation="relu", name=next(dense_names),
                                   kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k)), x)
        k += 1
    if dropout:
        x = add(keras.layers.Dropout(dropout, seed=seed + k, name=_unique_name(taken, "head_dropout")), x)
        k += 1
    out = add(keras.layers.Dense(num_classes, activation=activation, name=next(dense_names),
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k)), x)
    new_model = keras.Model(model.inputs, out, name=model.name)
    return new_model, head
