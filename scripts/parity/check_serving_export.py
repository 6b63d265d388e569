"""Checks a `tfload export-serving` version directory against the model it came from, in Python
TensorFlow, and prints the findings as JSON for tests/export_serving.rs:

    check_serving_export.py SOURCE EXPORT [INPUT.npy]

- `signatures`: the keys `tf.saved_model.load(EXPORT).signatures` has;
- `max_abs_diff`: the largest difference between the two models' serving_default outputs on
  INPUT.npy (or on random inputs of the signature's shapes);
- `checkpoint_keys`: `tf.train.list_variables` of the export's checkpoint;
- `different_values`: kept checkpoint keys whose bytes differ from the source's under the same key;
- `warmup`: the decoded `assets.extra/tf_serving_warmup_requests` records, if the file exists:
  signature name and, per input, dtype, shape and whether the values equal INPUT.npy.

    check_serving_export.py --make-no-default OUT

writes a small SavedModel whose only signature is `predict` (no serving_default).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.core.framework import tensor_pb2  # noqa: F401 (registers TensorProto)


def prediction_log_class():
    """tensorflow.serving.PredictionLog, built here from TF Serving's field numbers so that the
    test needs no tensorflow-serving-api package."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tfload_check/prediction_log.proto",
        package="tensorflow.serving",
        dependency=["tensorflow/core/framework/tensor.proto"],
        syntax="proto3",
    )

    def message(name, fields, nested=()):
        m = file.message_type.add(name=name)
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        for field_name, number, kind, type_name, label in fields:
            field = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    entry = descriptor_pb2.DescriptorProto(name="InputsEntry")
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, type_name=".tensorflow.TensorProto", label=opt)
    entry.options.map_entry = True
    message("ModelSpec", [("name", 1, f.TYPE_STRING, "", opt), ("signature_name", 3, f.TYPE_STRING, "", opt)])
    message(
        "PredictRequest",
        [
            ("model_spec", 1, f.TYPE_MESSAGE, ".tensorflow.serving.ModelSpec", opt),
            ("inputs", 2, f.TYPE_MESSAGE, ".tensorflow.serving.PredictRequest.InputsEntry", rep),
            ("output_filter", 3, f.TYPE_STRING, "", rep),
        ],
        nested=[entry],
    )
    message("PredictLog", [("request", 1, f.TYPE_MESSAGE, ".tensorflow.serving.PredictRequest", opt)])
    message("PredictionLog", [("predict_log", 6, f.TYPE_MESSAGE, ".tensorflow.serving.PredictLog", opt)])
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.PredictionLog"))


def serving_inputs(function, npy):
    spec = function.structured_input_signature[1]
    if npy is not None:
        (key,) = spec.keys()
        return {key: tf.constant(np.load(npy))}
    rng = np.random.default_rng(0)
    inputs = {}
    for key, tensor_spec in spec.items():
        shape = [3 if d is None else d for d in tensor_spec.shape.as_list()]
        inputs[key] = tf.constant(rng.standard_normal(shape).astype(tensor_spec.dtype.as_numpy_dtype))
    return inputs


def warmup_records(export, npy):
    path = os.path.join(export, "assets.extra", "tf_serving_warmup_requests")
    if not os.path.exists(path):
        return None
    log_class = prediction_log_class()
    expected = np.load(npy) if npy else None
    records = []
    for raw in tf.data.TFRecordDataset(path):
        log = log_class()
        log.ParseFromString(raw.numpy())
        request = log.predict_log.request
        inputs = {}
        for key, tensor in request.inputs.items():
            value = tf.make_ndarray(tensor)
            inputs[key] = {
                "dtype": str(value.dtype),
                "shape": list(value.shape),
                "equal": expected is not None and np.array_equal(value, expected),
            }
        records.append({"signature_name": request.model_spec.signature_name, "inputs": inputs})
    return records


def check(source, export, npy):
    original = tf.saved_model.load(source)
    served = tf.saved_model.load(export)
    inputs = serving_inputs(served.signatures["serving_default"], npy)
    want = original.signatures["serving_default"](**inputs)
    got = served.signatures["serving_default"](**inputs)
    diff = max(float(np.max(np.abs(want[k].numpy() - got[k].numpy()))) for k in want)
    source_reader = tf.train.load_checkpoint(os.path.join(source, "variables", "variables"))
    export_prefix = os.path.join(export, "variables", "variables")
    export_reader = tf.train.load_checkpoint(export_prefix)
    keys = [name for name, _ in tf.train.list_variables(export_prefix)]
    different = [
        key
        for key in keys
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH"
        and export_reader.get_tensor(key).tobytes() != source_reader.get_tensor(key).tobytes()
    ]
    return {
        "signatures": sorted(served.signatures.keys()),
        "max_abs_diff": diff,
        "checkpoint_keys": keys,
        "different_values": different,
        "warmup": warmup_records(export, npy),
    }


def make_no_default(out):
    module = tf.Module()
    module.w = tf.Variable([1.0, 2.0])
    predict = tf.function(lambda x: {"y": x * module.w}, input_signature=[tf.TensorSpec([2], tf.float32)])
    tf.saved_model.save(module, out, signatures={"predict": predict})


def main():
    if sys.argv[1] == "--make-no-default":
        make_no_default(sys.argv[2])
        print(json.dumps({"written": sys.argv[2]}))
        return
    npy = sys.argv[3] if len(sys.argv) > 3 else None
    print(json.dumps(check(sys.argv[1], sys.argv[2], npy)))


if __name__ == "__main__":
    main()
