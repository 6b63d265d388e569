"""Builds SavedModels this project did not write, the ordinary ways users make them, for
tests/foreign_models.rs: each kind of SavedModel that `tfload run` and `tfload variables` must read.

  k3_save_mnv3    Keras 3 `tf.saved_model.save(model)` of keras.applications.MobileNetV3Small (32x32)
  k3_export_mnv3  the same model through Keras 3 `model.export()`
  k3_save_mn1     Keras 3 `tf.saved_model.save(model)` of keras.applications.MobileNet (alpha 0.25, 32x32)
  k3_export_mn1   the same model through `model.export()`
  module          a tf.Module with float64/int32/int64/bool/string variables and three signatures
  module_slots    the same with a tf.compat.v1 Adam optimizer, whose slot variables are saved (as a
                  Keras 2 optimizer's are); tf.saved_model.load cannot revive those, so no run parity
  tf1_two_tags    a TF1 `Builder` model saved under two tag sets with `assets_collection` each time
                  (TF 2.21 then lists its one asset twice in the MetaGraph)
  strings         string input, a vocabulary asset (StaticHashTable) and a MutableHashTable

Weights are random and seeded (weights=None, no download). Every model is written to OUT/NAME.

With --parity, also writes what Python TensorFlow says of each model, for the tests to compare:
OUT/parity.json lists, per model, the checkpoint keys (`tf.train.list_variables`) and per tag set
and signature the input files (seeded random values) and the `.npz` of the outputs of
`tf.saved_model.load(DIR, tags).signatures[KEY](**inputs)` (strings decoded as UTF-8).

Run: .venv/bin/python scripts/make_foreign_models.py [--parity] OUT [NAME ...]
"""

import json

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def keras_app(name):
    import keras

    keras.utils.set_random_seed(3)
    if name == "mnv3":
        model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=5,
                                                    include_preprocessing=False)
    else:
        model = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=5)
    # Random values everywhere (positive variances), so that a wrong (unrestored or swapped) variable
    # shows in the outputs.
    rng = np.random.default_rng(5)
    for variable in model.variables:
        if variable.dtype == "float32":
            low, high = (0.5, 1.5) if "variance" in variable.path else (-0.3, 0.3)
            variable.assign(rng.uniform(low, high, variable.shape).astype("float32"))
    return model


def k3_save(out, arch):
    tf.saved_model.save(keras_app(arch), out)


def k3_export(out, arch):
    keras_app(arch).export(out, format="tf_saved_model", verbose=False)


class Module(tf.Module):
    def __init__(self, with_slots):
        super().__init__()
        self.w = tf.Variable(np.linspace(-1, 1, 12).reshape(4, 3), dtype=tf.float64, name="w")
        self.b = tf.Variable([0.5, -0.25, 2.0], dtype=tf.float32, name="b")
        self.offset = tf.Variable([3, -7], dtype=tf.int32, name="offset")
        self.scale = tf.Variable(1 << 40, dtype=tf.int64, name="scale")
        self.flag = tf.Variable(True, name="flag")
        self.word = tf.Variable("hello", name="word")
        self.frozen = tf.Variable([1.0, 2.0], trainable=False, name="frozen")
        if with_slots:
            self.opt = tf.compat.v1.train.AdamOptimizer(0.01)
            self.opt.minimize(lambda: tf.reduce_sum(self.b * self.b), var_list=[self.b])

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float64)])
    def affine(self, x):
        return {"y": tf.matmul(x, self.w), "y32": tf.cast(tf.matmul(x, self.w), tf.float32) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int64)])
    def ints(self, a, n):
        return {"a": a * self.offset[0] + self.offset[1], "n": n * self.scale, "big": n > 3}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.bool)])
    def strings(self, s, keep):
        joined = tf.strings.join([s, tf.fill(tf.shape(s), self.word)], separator="-")
        return {"joined": joined, "keep": tf.logical_and(keep, self.flag)}


def module(out, with_slots=False):
    m = Module(with_slots)
    tf.saved_model.save(m, out, signatures={"serving_default": m.affine, "ints": m.ints, "strings": m.strings})


class Strings(tf.Module):
    def __init__(self, vocab_path):
        super().__init__()
        init = tf.lookup.TextFileInitializer(vocab_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                             tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
        self.vocab = tf.lookup.StaticHashTable(init, default_value=-1)
        self.counts = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=0)
        self.counts.insert(tf.constant(["cat", "dog", "emu"]), tf.constant([3, 5, 7], tf.int64))
        self.embed = tf.Variable(np.arange(8, dtype=np.float32).reshape(4, 2) / 4, name="embed")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, words):
        ids = self.vocab.lookup(words)
        vectors = tf.gather(self.embed, tf.maximum(ids, 0))
        return {"ids": ids, "counts": self.counts.lookup(words), "vectors": vectors,
                "upper": tf.strings.upper(words)}


def strings(out):
    vocab = os.path.join(os.path.dirname(out), "vocab.txt")
    with open(vocab, "w") as f:
        f.write("cat\ndog\nemu\nyak\n")
    m = Strings(vocab)
    tf.saved_model.save(m, out, signatures={"serving_default": m.__call__})


def tf1_two_tags(out):
    vocab = os.path.join(os.path.dirname(out), "tf1_vocab.txt")
    with open(vocab, "w") as f:
        f.write("red\ngreen\nblue\n")
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        word = v1.placeholder(tf.string, [None], name="word")
        w = v1.get_variable("dense/kernel", initializer=tf.constant(np.arange(6).reshape(3, 2) / 5, tf.float32))
        b = v1.get_variable("dense/bias", initializer=tf.constant([0.1, -0.2]), use_resource=False)
        steps = v1.get_variable("global_step", initializer=tf.constant(42, tf.int64), trainable=False)
        y = tf.matmul(x, w) + b
        asset = tf.constant(vocab, name="vocab_path")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset)
        table = v1.lookup.StaticHashTable(
            v1.lookup.TextFileInitializer(asset, tf.string, v1.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                                          v1.lookup.TextFileIndex.LINE_NUMBER), -1)
        ids = table.lookup(word)
        with v1.Session(graph=graph) as sess:
            sess.run([v1.global_variables_initializer(), v1.tables_initializer()])
            builder = v1.saved_model.Builder(out)
            sig = v1.saved_model.predict_signature_def({"x": x}, {"y": y, "steps": steps + 0})
            words = v1.saved_model.predict_signature_def({"word": word}, {"ids": ids})
            assets = v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS)
            builder.add_meta_graph_and_variables(sess, ["serve"], {"serving_default": sig, "words": words},
                                                 assets_collection=assets, main_op=v1.tables_initializer())
            # The graph keeps the main op of the first tag set.
            builder.add_meta_graph(["serve", "gpu"], {"serving_default": sig}, assets_collection=assets)
            builder.save()


BUILDERS = {
    "k3_save_mnv3": lambda out: k3_save(out, "mnv3"),
    "k3_export_mnv3": lambda out: k3_export(out, "mnv3"),
    "k3_save_mn1": lambda out: k3_save(out, "mn1"),
    "k3_export_mn1": lambda out: k3_export(out, "mn1"),
    "module": module,
    "module_slots": lambda out: module(out, with_slots=True),
    "strings": strings,
    "tf1_two_tags": tf1_two_tags,
}


TAG_SETS = {"tf1_two_tags": [["serve"], ["serve", "gpu"]]}
WORDS = np.array(["cat", "yak", "zzz", "red", "blue", "dog"])


def example_input(spec, rng):
    shape = [2 if d is None else d for d in spec.shape.as_list()]
    if spec.dtype == tf.string:
        return WORDS[rng.integers(0, len(WORDS), shape)]
    if spec.dtype == tf.bool:
        return rng.integers(0, 2, shape).astype(bool)
    if spec.dtype.is_integer:
        return rng.integers(-5, 6, shape).astype(spec.dtype.as_numpy_dtype)
    return rng.uniform(-1, 1, shape).astype(spec.dtype.as_numpy_dtype)


def to_numpy(value):
    value = value.numpy()
    if value.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[str])(value) if value.size else value.astype(str)
    return value


def parity(out_root, name):
    model_dir = os.path.join(out_root, name)
    record = {"model": model_dir, "checkpoint_keys": [k for k, _ in tf.train.list_variables(
        os.path.join(model_dir, "variables", "variables"))], "calls": []}
    rng = np.random.default_rng(11)
    if name == "module_slots":
        return record
    for tags in TAG_SETS.get(name, [["serve"]]):
        loaded = tf.saved_model.load(model_dir, tags=tags)
        for key in sorted(loaded.signatures):
            function = loaded.signatures[key]
            where = os.path.join(out_root, "parity", name, ",".join(tags), key)
            os.makedirs(where, exist_ok=True)
            inputs = {}
            for input_name, spec in sorted(function.structured_input_signature[1].items()):
                inputs[input_name] = os.path.join(where, f"in_{input_name}.npy")
                np.save(inputs[input_name], example_input(spec, rng))
            outputs = function(**{k: tf.constant(np.load(path)) for k, path in inputs.items()})
            expected = os.path.join(where, "expected.npz")
            np.savez(expected, **{k: to_numpy(v) for k, v in outputs.items()})
            record["calls"].append({"tags": ",".join(tags), "signature": key, "inputs": inputs, "expected": expected})
    return record


def main(argv):
    with_parity = argv[:1] == ["--parity"]
    argv = argv[1:] if with_parity else argv
    out_root, names = argv[0], argv[1:] or list(BUILDERS)
    os.makedirs(out_root, exist_ok=True)
    for name in names:
        BUILDERS[name](os.path.join(out_root, name))
    if with_parity:
        records = {name: parity(out_root, name) for name in names}
        with open(os.path.join(out_root, "parity.json"), "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
