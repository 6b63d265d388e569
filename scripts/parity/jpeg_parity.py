"""JPEG files and TensorFlow's decoding of them, for tests/jpeg_parity.rs.

  jpeg_parity.py make DIR         writes JPEGs of many kinds (Pillow and TensorFlow encoders) into
                                  DIR; prints their paths as JSON
  jpeg_parity.py decode OUT FILE...  tf.io.decode_jpeg(channels=3) and (channels=1) of each FILE,
                                  saved in OUT.npz as "I/3" and "I/1" (uint8); a file TensorFlow
                                  refuses gets "I/C/error" instead
  jpeg_parity.py predict MODEL HEIGHT WIDTH CHANNELS FILE...
                                  the serving signature's first output on each FILE decoded by
                                  tf.io.decode_jpeg and resized bilinear, as Keras feeds it; JSON
"""

import io
import json
import os
import sys

import numpy as np
import tensorflow as tf


def photo(name):
    import sklearn.datasets

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    return os.path.join(folder, name)


def tensorflow_encoded(directory, source):
    """TensorFlow's own encoder: qualities, 4:2:0 and 4:4:4, progressive, gray, odd sizes."""
    image = tf.io.decode_jpeg(tf.io.read_file(source), channels=3)
    odd = image[13:13 + 101, 7:7 + 77]
    written = []
    variants = [
        ("tf_q30_420", image, dict(quality=30)),
        ("tf_q95_444", image, dict(quality=95, chroma_downsampling=False)),
        ("tf_q75_progressive", image, dict(quality=75, progressive=True)),
        ("tf_q90_odd_size", odd, dict(quality=90)),
        ("tf_q80_gray", tf.image.rgb_to_grayscale(odd), dict(quality=80)),
        ("tf_q100_optimized", odd, dict(quality=100, optimize_size=True)),
    ]
    for name, pixels, options in variants:
        path = os.path.join(directory, name + ".jpg")
        tf.io.write_file(path, tf.io.encode_jpeg(pixels, **options))
        written.append(path)
    return written


def pillow_encoded(directory, source):
    """Pillow's encoder: 4:2:2, restart markers, CMYK (Adobe), EXIF orientation, gray."""
    try:
        from PIL import Image
    except ImportError:
        return []
    image = Image.open(source).convert("RGB").crop((30, 20, 30 + 203, 20 + 150))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: TensorFlow ignores it
    variants = [
        ("pil_q85_422", image, dict(quality=85, subsampling=1)),
        ("pil_q60_420", image, dict(quality=60, subsampling=2)),
        ("pil_q92_444_progressive", image, dict(quality=92, subsampling=0, progressive=True)),
        ("pil_q75_restarts", image, dict(quality=75, restart_marker_blocks=3)),
        ("pil_q75_restart_rows", image, dict(quality=75, restart_marker_rows=2)),
        ("pil_q80_cmyk", image.convert("CMYK"), dict(quality=80)),
        ("pil_q70_gray_progressive", image.convert("L"), dict(quality=70, progressive=True)),
        ("pil_q85_exif_rotated", image, dict(quality=85, exif=exif.tobytes())),
    ]
    written = []
    for name, pixels, options in variants:
        path = os.path.join(directory, name + ".jpg")
        try:
            pixels.save(path, "JPEG", **options)
        except (TypeError, ValueError, OSError):
            continue  # an option this Pillow does not have
        written.append(path)
    return written


def make(directory):
    os.makedirs(directory, exist_ok=True)
    return tensorflow_encoded(directory, photo("china.jpg")) + pillow_encoded(directory, photo("flower.jpg"))


def decode(out_path, paths):
    arrays = {}
    for i, path in enumerate(paths):
        data = tf.io.read_file(path)
        for channels in (3, 1):
            try:
                arrays[f"{i}/{channels}"] = tf.io.decode_jpeg(data, channels=channels).numpy()
            except tf.errors.InvalidArgumentError as error:
                arrays[f"{i}/{channels}/error"] = np.array(str(error.message))
    np.savez(out_path, **arrays)


def predict(model_dir, height, width, channels, paths):
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    (input_key,) = signature.structured_input_signature[1].keys()
    output_key = sorted(signature.structured_outputs.keys())[0]
    images = [tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(p), channels=channels), (height, width))
              for p in paths]
    scores = signature(**{input_key: tf.stack(images)})[output_key]
    return scores.numpy().tolist()


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "make":
        print(json.dumps(make(args[0])))
    elif command == "decode":
        decode(args[0], args[1:])
        print(json.dumps({}))
    elif command == "predict":
        print(json.dumps(predict(args[0], int(args[1]), int(args[2]), int(args[3]), args[4:])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
