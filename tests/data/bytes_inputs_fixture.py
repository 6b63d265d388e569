"""Fixture for tests/bytes_inputs.rs: an Estimator-style TF1 SavedModel whose classify and regress
signatures take serialized tf.Examples, and an `echo` signature on raw byte strings.

  python fixture.py build DIR             writes the SavedModel, s.npy (dtype S) and object arrays
  python fixture.py call DIR SIG KEY=EXAMPLES   prints Python's outputs as JSON (saved_model_cli parsing)
  python fixture.py echo DIR SIG KEY NPY  prints signature SIG's outputs on NPY (or NPZ[NAME]) as JSON
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf


def build(out):
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        examples = tf1.placeholder(tf.string, [None], name="tf_example")
        spec = {
            "x": tf1.io.FixedLenFeature([2], tf.float32),
            "n": tf1.io.FixedLenFeature([1], tf.int64),
            "tag": tf1.io.FixedLenFeature([], tf.string, default_value=""),
        }
        features = tf1.io.parse_example(examples, spec)
        w = tf1.get_variable("w", initializer=tf.constant([[0.5, -1.0], [2.0, 0.25]]))
        logits = tf.matmul(features["x"], w) + tf.cast(features["n"], tf.float32)
        scores = tf.nn.softmax(logits)
        tag = features["tag"]
        classes = tf.stack([tf.strings.join([tag, "/a"]), tf.strings.join([tag, b"/\xff"])], axis=1)
        prediction = tf.reduce_sum(logits, axis=1, keepdims=True)
        raw = tf1.placeholder(tf.string, [None], name="raw")
        echoed = tf.strings.join([raw, tf.constant(b"\xfe")])
        grid = tf1.placeholder(tf.string, [None, None], name="grid")
        sd = tf1.saved_model.signature_def_utils
        signatures = {
            "classify": sd.classification_signature_def(examples, classes, scores),
            "regress": sd.regression_signature_def(examples, prediction),
            "echo": sd.predict_signature_def({"raw": raw}, {"echoed": echoed, "length": tf.strings.length(raw)}),
            "echo_grid": sd.predict_signature_def({"grid": grid}, {"echoed": tf.strings.join([grid, b"\xfe"])}),
        }
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            builder = tf1.saved_model.Builder(out)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
    parent = os.path.dirname(out)
    np.save(os.path.join(parent, "s.npy"), np.array([b"\xff\x00a", b"ok", b"\x80\x81"], dtype="S"))
    np.save(os.path.join(parent, "obj.npy"), np.array([b"\xff", b"ok"], dtype=object), allow_pickle=True)
    # Transposed (saved with fortran_order), long elements, a str among the bytes.
    grid = np.array([[b"a", b"\xff" * 300], [b"", "x\u00e9"]], dtype=object).T
    np.save(os.path.join(parent, "obj_grid.npy"), grid, allow_pickle=True)
    np.savez(os.path.join(parent, "obj.npz"), a=np.array([b"\x00\xff", b"\x80"], dtype=object))
    np.save(os.path.join(parent, "obj_int.npy"), np.array([1, b"x"], dtype=object), allow_pickle=True)


def as_json(value):
    value = value.numpy()
    if value.dtype == object:
        return {"hex": [v.hex() for v in value.reshape(-1)], "shape": list(value.shape)}
    return {"values": value.reshape(-1).tolist(), "shape": list(value.shape)}


def call(model_dir, signature, arg):
    from tensorflow.python.tools import saved_model_cli

    inputs = saved_model_cli.preprocess_input_examples_arg_string(arg)
    function = tf.saved_model.load(model_dir).signatures[signature]
    outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
    print(json.dumps({k: as_json(v) for k, v in outputs.items()}))


def echo(model_dir, signature, key, npy):
    function = tf.saved_model.load(model_dir).signatures[signature]
    if npy.endswith("]"):
        npy, name = npy[:-1].split("[")
        value = np.load(npy, allow_pickle=True)[name]
    else:
        value = np.load(npy, allow_pickle=True)
    outputs = function(**{key: tf.constant(value)})
    print(json.dumps({k: as_json(v) for k, v in outputs.items()}))


if __name__ == "__main__":
    {"build": build, "call": call, "echo": echo}[sys.argv[1]](*sys.argv[2:])
