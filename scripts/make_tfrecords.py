"""TFRecord data sets of tf.train.Example records, written and read by Python TensorFlow: the
committed fixtures, and the reference side of tfload's TFRecord tests.

  write: the bundled digit images (saved_models/data/digits_5_9_images, in Keras's
         image_dataset_from_directory order: classes sorted, files sorted) as TFRecords.
           .venv/bin/python scripts/make_tfrecords.py write                # the committed fixtures
           .venv/bin/python scripts/make_tfrecords.py write --out-dir D --shards 3 --compression gzip
         Each record holds image/encoded (the PNG file's bytes), image/format, image/filename,
         image/class/label (int64), image/class/text, and image/pixels (64 floats, the decoded
         8x8 pixels 0..255). With --rgb-sizes, every record also gets image/rgb (a PNG of HxW RGB
         pixels made from the digit, to test decoding and resizing).
  parse: reads TFRecord files with tf.data.TFRecordDataset + tf.io.parse_single_example and
         prints the tensors as JSON: what tfload must give on the same files.
           .venv/bin/python scripts/make_tfrecords.py parse FILE... --compression GZIP \\
               --image image/encoded:8x8x1 --floats image/pixels:8x8x1 --label image/class/label

Committed output (regenerate with `write`): saved_models/data/digits_5_9.tfrecord and
saved_models/data/digits_5_9.tfrecord.gz (the same 150 records, GZIP).
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "saved_models", "data", "digits_5_9_images")


def image_files():
    """(path, label, class name) in Keras's order: class folders sorted, files sorted."""
    classes = sorted(d for d in os.listdir(IMAGES) if os.path.isdir(os.path.join(IMAGES, d)))
    for label, name in enumerate(classes):
        folder = os.path.join(IMAGES, name)
        for file in sorted(f for f in os.listdir(folder) if f.endswith(".png")):
            yield os.path.join(folder, file), label, name


def example(path, label, name, rgb_sizes):
    encoded = open(path, "rb").read()
    pixels = tf.io.decode_png(encoded, channels=1)
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[os.path.basename(path).encode()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image/class/text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        "image/pixels": tf.train.Feature(float_list=tf.train.FloatList(value=pixels.numpy().astype("float32").ravel())),
    }
    if rgb_sizes:
        height, width = rgb_sizes
        # A colour image of another size: the digit in red, its inverse in green, a gradient in blue.
        grey = tf.image.resize(tf.cast(pixels, tf.float32), (height, width), method="nearest")
        blue = tf.cast(tf.reshape(tf.range(height * width) % 256, (height, width, 1)), tf.float32)
        rgb = tf.cast(tf.concat([grey, 255.0 - grey, blue], axis=-1), tf.uint8)
        feature["image/rgb"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(rgb).numpy()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write(args):
    os.makedirs(args.out_dir, exist_ok=True)
    records = [example(path, label, name, args.rgb_sizes) for path, label, name in image_files()]
    kinds = {"none": [("", "")], "gzip": [("GZIP", ".gz")], "both": [("", ""), ("GZIP", ".gz")]}[args.compression]
    for compression, suffix in kinds:
        for shard in range(args.shards):
            name = args.name if args.shards == 1 else f"{args.name}-{shard:05d}-of-{args.shards:05d}"
            path = os.path.join(args.out_dir, f"{name}.tfrecord{suffix}")
            with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(compression_type=compression)) as writer:
                for record in records[shard::args.shards] if args.interleave else chunk(records, args.shards, shard):
                    writer.write(record)
            print(f"{os.path.relpath(path, ROOT)}: {os.path.getsize(path)} bytes")


def chunk(records, shards, shard):
    """The shard-th of `shards` consecutive runs of records (so the files in order keep the order)."""
    size = -(-len(records) // shards)
    return records[shard * size:(shard + 1) * size]


def shape(text):
    return [int(d) for d in text.split("x")]


def parse(args):
    spec = {args.label: tf.io.FixedLenFeature([], tf.int64)}
    images = [item.split(":") for item in args.image]
    floats = [item.split(":") for item in args.floats]
    for key, _ in images:
        spec[key] = tf.io.FixedLenFeature([], tf.string)
    for key, dims in floats:
        spec[key] = tf.io.FixedLenFeature(shape(dims), tf.float32)
    dataset = tf.data.TFRecordDataset(args.files, compression_type=args.compression)
    out = {"labels": [], **{key: [] for key, _ in images + floats}}
    for record in dataset:
        parsed = tf.io.parse_single_example(record, spec)
        out["labels"].append(int(parsed[args.label]))
        for key, dims in images:
            height, width, channels = shape(dims)
            # What Keras's image_dataset_from_directory does to a file's bytes.
            image = tf.io.decode_image(parsed[key], channels=channels, expand_animations=False)
            image = tf.image.resize(image, (height, width), method="bilinear")
            out[key].append(image.numpy().ravel().tolist())
        for key, _ in floats:
            out[key].append(parsed[key].numpy().ravel().tolist())
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("write", help="write the digit images as TFRecords")
    w.add_argument("--out-dir", default=os.path.join(ROOT, "saved_models", "data"))
    w.add_argument("--name", default="digits_5_9")
    w.add_argument("--shards", type=int, default=1)
    w.add_argument("--interleave", action="store_true", help="deal records round-robin over shards")
    w.add_argument("--compression", choices=["none", "gzip", "both"], default="both")
    w.add_argument("--rgb-sizes", type=shape, default=None, metavar="HxW")
    p = commands.add_parser("parse", help="read TFRecords with tf.data and print the tensors as JSON")
    p.add_argument("files", nargs="+")
    p.add_argument("--compression", default="", help='"" or GZIP or ZLIB')
    p.add_argument("--label", required=True)
    p.add_argument("--image", action="append", default=[], metavar="KEY:HxWxC")
    p.add_argument("--floats", action="append", default=[], metavar="KEY:SHAPE")
    args = parser.parse_args()
    write(args) if args.command == "write" else parse(args)


if __name__ == "__main__":
    main()
