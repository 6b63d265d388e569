"""Write a Keras model as a *trainable* SavedModel that tfload can run and fine-tune.

The SavedModel follows the tfload train-step contract, version 1 (docs/train-step-contract.md):

  serving_default  <input keys>                                  -> outputs
  train_step       <input keys>, labels, mask, learning_rate      -> loss, <metrics>
  eval_step        <input keys>, labels                           -> loss, <metrics>

plus a JSON record of the contract, ``assets/tfload_contract.json``, tracked as a
``tf.saved_model.Asset`` (so it is listed in the MetaGraphDef's ``asset_file_def``).
Preprocessing (e.g. ``x / 255`` or the ``keras.applications`` scaling) is baked into all three
signatures, so callers feed raw float pixels in 0..255.

Use it as a command (``tfload-export --help``) or import it:
``export_trainable(model, out_dir, ...)``, ``load_source_model(...)``, ``replace_head(...)``,
``check_export(dir)``. The modules: ``sources`` (where the Keras model comes from), ``head``,
``optimizers`` (a registry of update rules), ``losses``, ``preprocessing``, ``contract`` (the
record), ``export``, ``check``, ``cli``.
"""
from ._tf import import_tf
from .check import check_export, read_saved_model, sig_shape
from .contract import (CONTRACT_ASSET, CONTRACT_VERSION, KEY_LABELS, KEY_LOSS, KEY_LR, KEY_MASK,
                       RESERVED_KEYS, SIG_EVAL, SIG_SERVE, SIG_TRAIN, ContractError, checkpoint_key,
                       read_contract)
from .export import export_trainable
from .head import head_layers, replace_head
from .losses import LOSS_ALIASES, METRICS_FOR_LOSS
from .optimizers import OPTIMIZERS, Optimizer, optimizer_config, register
from .preprocessing import PREPROCESS_MODES, application_preprocess_mode, preprocessing_spec
from .sources import build_application, load_source_model
from . import saved_model_source
from .saved_model_source import export_saved_model_trainable
from .cli import build_arg_parser, main

# The names the single-file exporter had, for callers written against it.
_import_tf = import_tf
_sig_shape = sig_shape
_head_layers = head_layers

__all__ = [
    "CONTRACT_ASSET", "CONTRACT_VERSION", "KEY_LABELS", "KEY_LOSS", "KEY_LR", "KEY_MASK", "LOSS_ALIASES",
    "METRICS_FOR_LOSS", "OPTIMIZERS", "Optimizer", "PREPROCESS_MODES", "RESERVED_KEYS", "SIG_EVAL", "SIG_SERVE",
    "SIG_TRAIN", "ContractError", "application_preprocess_mode", "build_application", "build_arg_parser",
    "check_export", "checkpoint_key", "export_saved_model_trainable", "export_trainable", "head_layers", "import_tf", "load_source_model",
    "main", "optimizer_config", "preprocessing_spec", "read_contract", "read_saved_model", "register",
    "replace_head", "sig_shape",
]
