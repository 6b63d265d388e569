"""The tfload train-step contract, version 1: its reserved names and the JSON record
(``assets/tfload_contract.json``) written into every exported SavedModel.

The record's fields are described in docs/train-step-contract.md; tfload reads them back
(``src/train/contract.rs``), so a change here is a change of the contract.
"""
from __future__ import annotations

import json
import os

CONTRACT_VERSION = 1
CONTRACT_VERSION_SAMPLE_WEIGHT = 2
"""The version of records whose steps take ``sample_weight`` (version 1 plus that input), so
that a tfload that does not know the input refuses the model instead of failing to feed it."""
CONTRACT_ASSET = "tfload_contract.json"
SIG_SERVE = "serving_default"
SIG_TRAIN = "train_step"
SIG_EVAL = "eval_step"
KEY_LABELS = "labels"
KEY_MASK = "mask"
KEY_LR = "learning_rate"
KEY_LOSS = "loss"
KEY_SAMPLE_WEIGHT = "sample_weight"
RESERVED_KEYS = (KEY_LABELS, KEY_MASK, KEY_LR, KEY_SAMPLE_WEIGHT)
REQUIRED_RECORD_KEYS = ("contract_version", "signatures", "inputs", "outputs", "labels", "mask",
                        "learning_rate", "default_mask", "mask_variables", "non_trainable_variables",
                        "optimizer_variables", "loss", "metrics", "optimizer", "class_names")
# The record's informational `producer.tool`. Kept as the exporter's name before it became a
# package, so that the committed models' records are still exactly what the exporter writes.
PRODUCER_TOOL = "tfload_export.py"

TASK_OF_LOSS = {"sparse_categorical_crossentropy": "classification",
                "categorical_crossentropy": "classification",
                "binary_crossentropy": "binary_classification",
                "mean_squared_error": "regression"}


class ContractError(ValueError):
    """The model or the options cannot be exported to the contract, or a check failed."""


def checkpoint_key(group, index):
    """Key of a variable of the saved module in ``variables/variables.index``."""
    return f"{group}/{index}/.ATTRIBUTES/VARIABLE_VALUE"


def read_contract(export_dir):
    """The record of an exported SavedModel, as a dict."""
    with open(os.path.join(export_dir, "assets", CONTRACT_ASSET)) as f:
        return json.load(f)


def write_contract(record, path):
    """Write ``record`` as the asset file ``path`` (the layout tfload's committed models use)."""
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")


def build_record(*, versions, model_name, loss_name, from_logits, input_specs, output, labels_spec,
                 num_classes, class_names, metrics, optimizer, mask_records, state_records,
                 optimizer_records, bn_records, jit_compile, extra_info=None, layer_records=None,
                 label_smoothing=0.0, sample_weights=False):
    """The contract record of one export; every argument is already in its recorded form.

    ``versions``: ``(tensorflow, keras)`` version strings; ``output``: the outputs entry.
    """
    n_mask = len(mask_records)
    input_keys = [s["key"] for s in input_specs]
    metric_keys = list(metrics)
    record = {
        "contract_version": CONTRACT_VERSION,
        "producer": {"tool": PRODUCER_TOOL, "tensorflow": versions[0], "keras": versions[1]},
        "model_name": model_name,
        "task": TASK_OF_LOSS[loss_name],
        "inputs": input_specs,
        "preprocessing": "; ".join(f"{s['key']}: {s['preprocessing']['description']}" for s in input_specs),
        "outputs": [output],
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
        "optimizer_variables": optimizer_records,
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
    if label_smoothing:
        record["loss"]["label_smoothing"] = float(label_smoothing)
    if sample_weights:
        record["contract_version"] = CONTRACT_VERSION_SAMPLE_WEIGHT
        record["sample_weight"] = {"key": KEY_SAMPLE_WEIGHT, "dtype": "float32", "shape": [None],
                                   "description": "weight of each example (class and sample weights); "
                                                  "loss = sum(w * loss) / batch size, as Keras fit"}
        for step in (SIG_TRAIN, SIG_EVAL):
            keys = record["signatures"][step]["inputs"]
            keys.insert(keys.index(KEY_LABELS) + 1, KEY_SAMPLE_WEIGHT)
    if layer_records is not None:
        record["layers"] = layer_records
    if extra_info:
        record["extra"] = extra_info
    return record
