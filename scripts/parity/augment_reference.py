"""Keras's image augmentation layers on fixed transforms, for tests/train/augment.rs.

Writes OUT.npz with `image` (a seeded random 9x7x3 image, values 0..255) and one array per case,
each the image after one Keras layer with its random draw pinned (a one-point factor range, or
`transform_images` with the transformation given). Prints the case names as JSON.

    python scripts/parity/augment_reference.py --out /tmp/augment.npz
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402


def one_point(value):
    """A Keras factor range holding one value: the layer's draw is that value."""
    return (value, value)


def cases(image):
    """Case name -> the image after that layer, each draw fixed."""
    batch = image[None]
    rotate = lambda fraction, **kw: layers.RandomRotation(one_point(fraction), **kw)  # noqa: E731
    out = {
        "flip_horizontal": layers.RandomFlip("horizontal").transform_images(
            batch, {"flips": np.ones((1, 1, 1, 1), bool)}
        ),
        "flip_vertical": layers.RandomFlip("vertical").transform_images(batch, {"flips": np.ones((1, 1, 1, 1), bool)}),
        "rotation_0.07_reflect": rotate(0.07)(batch, training=True),
        "rotation_-0.2_nearest": rotate(-0.2, fill_mode="nearest")(batch, training=True),
        "rotation_0.3_constant_9": rotate(0.3, fill_mode="constant", fill_value=9.0)(batch, training=True),
        "zoom_0.3": layers.RandomZoom(one_point(0.3))(batch, training=True),
        "zoom_-0.25_0.1": layers.RandomZoom(one_point(-0.25), one_point(0.1))(batch, training=True),
        "brightness_0.1": layers.RandomBrightness(one_point(0.1))(batch, training=True),
        "brightness_-0.3": layers.RandomBrightness(one_point(-0.3))(batch, training=True),
        "contrast_1.4": layers.RandomContrast(0.5).transform_images(
            batch, {"contrast_factor": np.full((1, 1, 1, 1), 1.4, np.float32)}
        ),
    }
    # RandomCrop to 5x4 from (2, 1), then resized back to the input size, as tfload's crop does.
    cropped = layers.RandomCrop(5, 4).transform_images(batch, (2, 1))
    out["crop_5_4_at_2_1"] = keras.ops.image.resize(cropped, (image.shape[0], image.shape[1]), interpolation="bilinear")
    return {name: np.asarray(keras.ops.convert_to_numpy(value))[0].astype(np.float32) for name, value in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    image = np.random.default_rng(0).uniform(0, 255, (9, 7, 3)).astype(np.float32)
    results = cases(image)
    np.savez(args.out, image=image, **results)
    print(json.dumps(sorted(results)))


if __name__ == "__main__":
    main()
