"""Where the Keras model comes from: a ``.keras``/full ``.h5`` file, an architecture (JSON,
model file or ``module:function``) with optional weights, or a ``keras.applications`` model."""
from __future__ import annotations

import os

from ._tf import import_tf
from .contract import ContractError


def _is_full_model_h5(path):
    import h5py

    with h5py.File(path, "r") as f:
        return "model_config" in f.attrs


def load_architecture(spec):
    """An architecture: a model JSON file (``model.to_json()``), a ``.keras``/full ``.h5`` file,
    or ``module:function`` / ``path/to/file.py:function`` (called without arguments)."""
    _, keras = import_tf()
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
    _, keras = import_tf()
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
      ``architecture`` (see ``load_architecture``), ``model_path`` or ``application``;
    * ``application``: a ``keras.applications`` name (weights=None) with ``input_shape``.
    """
    _, keras = import_tf()
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
        model = load_architecture(architecture)
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
