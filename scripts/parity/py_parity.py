"""What Python TensorFlow / Keras compute for the inputs tfload's parity tests give tfload, so the
Rust tests can compare `tfload run`, `tfload eval` and the image reader with them.

Run: .venv/bin/python scripts/parity/py_parity.py COMMAND ...
  run DIR KEY OUT.npz [NAME=FILE.npy ...] tf.saved_model.load(DIR).signatures[KEY](**inputs)
  eval DIR DATA.npz BATCH                 eval_step over the batches in order, as JSON
  images OUT.npz HxWxC,... IMAGE...       tf.io.decode_image + tf.image.resize: `i/HxWxC` each
  png SRC DST [CHANNELS]                  re-encodes an image as PNG (lossless) through TF
  image_folder DIR H W COLOR_MODE OUT.npz keras.utils.image_dataset_from_directory(shuffle=False)
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def to_numpy(tensor):
    value = tensor.numpy()
    if value.dtype == object:  # tf.string comes back as bytes
        value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[str])(value) if value.size else value.astype(str)
    return value


def run(model_dir, key, outputs_path, *inputs):
    signature = tf.saved_model.load(model_dir).signatures[key]
    feeds = {name: tf.constant(np.load(path)) for name, path in (item.split("=", 1) for item in inputs)}
    outputs = signature(**feeds)
    np.savez(outputs_path, **{name: to_numpy(value) for name, value in outputs.items()})


def evaluate(model_dir, data_path, batch_size):
    """Keras `evaluate`'s numbers: each eval_step output averaged over batches weighted by size."""
    signature = tf.saved_model.load(model_dir).signatures["eval_step"]
    input_key = next(k for k in signature.structured_input_signature[1] if k != "labels")
    with np.load(data_path) as data:
        x, y = data["x"], data["y"]
    sums, count = {}, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        for name, value in signature(**{input_key: tf.constant(xb), "labels": tf.constant(yb)}).items():
            sums[name] = sums.get(name, 0.0) + float(value.numpy()) * len(xb)
        count += len(xb)
    return {"examples": count, **{name: total / count for name, total in sums.items()}}


def read_image(path, height, width, channels):
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    return tf.image.resize(image, (height, width), method="bilinear").numpy()


def images(out_path, specs, paths):
    arrays = {}
    for spec in specs.split(","):
        height, width, channels = (int(n) for n in spec.split("x"))
        arrays.update({f"{i}/{spec}": read_image(p, height, width, channels) for i, p in enumerate(paths)})
    np.savez(out_path, **arrays)


def png(source, target, channels=0):
    image = tf.io.decode_image(tf.io.read_file(source), channels=channels, expand_animations=False)
    tf.io.write_file(target, tf.io.encode_png(image))


def image_folder(directory, height, width, color_mode, out_path):
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        directory, labels="inferred", label_mode="int", color_mode=color_mode, batch_size=None,
        image_size=(height, width), shuffle=False, verbose=False)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    np.savez(out_path, x=np.stack(xs).astype(np.float32), y=np.array(ys, dtype=np.int64),
             files=np.array(dataset.file_paths), class_names=np.array(dataset.class_names))


def main(argv):
    """Runs a command; prints its JSON answer ({} for those that write files)."""
    command, args, answer = argv[1], argv[2:], {}
    if command == "run":
        run(*args)
    elif command == "eval":
        answer = evaluate(args[0], args[1], int(args[2]))
    elif command == "images":
        images(args[0], args[1], args[2:])
    elif command == "png":
        png(args[0], args[1], int(args[2]) if len(args) > 2 else 0)
    elif command == "image_folder":
        image_folder(args[0], int(args[1]), int(args[2]), args[3], args[4])
    else:
        sys.exit(__doc__)
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv)
