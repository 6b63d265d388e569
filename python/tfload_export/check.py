"""Checking an exported SavedModel against its record, from files alone (no TF session), so it
works for hand-written train steps too (``tfload-export --check DIR``)."""
from __future__ import annotations

import os

from ._tf import import_tf
from .contract import (CONTRACT_ASSET, CONTRACT_VERSION, CONTRACT_VERSION_SAMPLE_WEIGHT, REQUIRED_RECORD_KEYS,
                       SIG_EVAL, SIG_SERVE, SIG_TRAIN, ContractError, read_contract)


def read_saved_model(export_dir):
    """The MetaGraphDef tagged ``serve`` of ``export_dir/saved_model.pb``."""
    import_tf()
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return mg
    raise ContractError(f"{export_dir}: no MetaGraphDef tagged 'serve'")


def sig_shape(info):
    """A signature TensorInfo's shape as a list (None for an unknown dimension or rank)."""
    if info.tensor_shape.unknown_rank:
        return None
    return [None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim]


def _mask_problems(rec):
    n_mask = len(rec["mask_variables"])
    problems = []
    if rec["mask"]["shape"] != [n_mask]:
        problems.append(f"mask shape {rec['mask']['shape']} but {n_mask} mask variables")
    if [r["index"] for r in rec["mask_variables"]] != list(range(n_mask)):
        problems.append("mask_variables indices are not 0..n-1 in order")
    if len(rec.get("default_mask", [])) != n_mask:
        problems.append("default_mask length differs from mask_variables")
    return problems


def _signature_problems(tf, mg, rec):
    """Each recorded signature against the MetaGraphDef's: keys, dtypes and shapes."""
    specs = {s["key"]: s for s in rec["inputs"]}
    specs[rec["labels"]["key"]] = rec["labels"]
    specs[rec["mask"]["key"]] = rec["mask"]
    specs[rec["learning_rate"]["key"]] = rec["learning_rate"]
    if "sample_weight" in rec:
        specs[rec["sample_weight"]["key"]] = rec["sample_weight"]
    out_specs = {s["key"]: s for s in rec["outputs"]}
    problems = []
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
            if dtype != spec["dtype"] or sig_shape(info) != spec["shape"]:
                problems.append(f"{sig_key}.{key}: {dtype}{sig_shape(info)} != record "
                                f"{spec['dtype']}{spec['shape']}")
        for key, info in sd.outputs.items():
            dtype = tf.as_dtype(info.dtype).name
            if key in out_specs:
                if dtype != out_specs[key]["dtype"] or sig_shape(info) != out_specs[key]["shape"]:
                    problems.append(f"{sig_key}.{key}: {dtype}{sig_shape(info)} != record "
                                    f"{out_specs[key]['dtype']}{out_specs[key]['shape']}")
            elif dtype != "float32" or sig_shape(info) != []:
                problems.append(f"{sig_key}.{key} is {dtype}{sig_shape(info)}, not a float32 scalar")
    for required in (SIG_SERVE, SIG_TRAIN, SIG_EVAL):
        if required not in rec["signatures"]:
            problems.append(f"record has no signature {required}")
    return problems


def _variable_problems(tf, export_dir, mg, rec):
    """Checkpoint keys and shapes of every recorded variable, and one VarHandleOp per variable."""
    problems = []
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
    return problems


def check_export(export_dir):
    """Check that the record and the SavedModel agree; raises ContractError with all problems.

    Reads only files (saved_model.pb, the asset, the checkpoint index): no session.
    """
    tf, _ = import_tf()
    problems = []
    mg = read_saved_model(export_dir)
    if not any(a.filename == CONTRACT_ASSET for a in mg.asset_file_def):
        problems.append(f"{CONTRACT_ASSET} is not in asset_file_def")
    if not os.path.isfile(os.path.join(export_dir, "assets", CONTRACT_ASSET)):
        raise ContractError(f"{export_dir}: no assets/{CONTRACT_ASSET}, so not a trainable SavedModel; "
                            "export the Keras model with tfload-export")
    rec = read_contract(export_dir)
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in rec]
    if missing:
        raise ContractError(f"{export_dir}: record lacks {missing}")
    expected_version = CONTRACT_VERSION_SAMPLE_WEIGHT if "sample_weight" in rec else CONTRACT_VERSION
    if rec.get("contract_version") != expected_version:
        problems.append(f"contract_version is {rec.get('contract_version')!r}, not {expected_version}")
    problems += _mask_problems(rec) + _signature_problems(tf, mg, rec) + _variable_problems(tf, export_dir, mg, rec)
    if problems:
        raise ContractError(f"{export_dir}: " + "; ".join(problems))
    return rec
