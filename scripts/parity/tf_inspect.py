"""Prints, as JSON, what Python TensorFlow itself reads from a SavedModel: its tag sets, the
signatures of one MetaGraph (through TensorFlow's own saved_model_utils, as saved_model_cli does)
and its variables (from the checkpoint through tf.train, names and trainable flags from the object
graph). The Rust tests compare `tfload signatures --json` and `tfload variables --json` with this.

Run: .venv/bin/python scripts/parity/tf_inspect.py DIR [TAG,...]
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from tensorflow.python.tools import saved_model_utils  # noqa: E402


def shape_of(proto):
    if proto.unknown_rank:
        return None
    return [None if d.size < 0 else d.size for d in proto.dim]


def dtype_name(enum_value):
    if enum_value == 0:
        return "invalid"
    dtype = tf.dtypes.as_dtype(enum_value)
    return "string" if dtype == tf.string else dtype.name


def tensor_info(info):
    return {"dtype": dtype_name(info.dtype), "shape": shape_of(info.tensor_shape), "name": info.name}


def inspect(model_dir, tags):
    tag_sets = sorted(sorted(t) for t in saved_model_utils.get_saved_model_tag_sets(model_dir))
    meta_graph = saved_model_utils.get_meta_graph_def(model_dir, ",".join(tags))
    signatures = {
        key: {
            "method_name": sig.method_name,
            "inputs": {k: tensor_info(v) for k, v in sig.inputs.items()},
            "outputs": {k: tensor_info(v) for k, v in sig.outputs.items()},
        }
        for key, sig in meta_graph.signature_def.items()
    }
    prefix = os.path.join(model_dir, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    checkpoint = {
        key: {"shape": shape, "dtype": dtype_name(dtypes[key].as_datatype_enum)}
        for key, shape in tf.train.list_variables(prefix)
        if key.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
    }
    saved_variables = [
        {"name": node.variable.name, "trainable": node.variable.trainable}
        for node in meta_graph.object_graph_def.nodes
        if node.WhichOneof("kind") == "variable"
    ]
    return {
        "tag_sets": tag_sets,
        "signatures": signatures,
        "checkpoint": checkpoint,
        "saved_variables": saved_variables,
    }


if __name__ == "__main__":
    tags = sys.argv[2].split(",") if len(sys.argv) > 2 else ["serve"]
    json.dump(inspect(sys.argv[1], tags), sys.stdout, indent=1, sort_keys=True)
