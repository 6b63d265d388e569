"""Writes a SavedModel this project's exporter did not make,
as users bring them. Keras 3's own `model.export()` of a `keras.applications.MobileNetV2`
(alpha 0.35, 64x64 RGB, 10 classes, random seeded weights, no download), so `tfload run`,
`predict` and the benchmarks are checked on a real architecture (BatchNorm, depthwise conv,
ReLU6) and on Keras's signature naming (`keras_tensor` in, `output_0` out).

Too large to commit (5 MB), so the tests and scripts/bench.py make it when they need it.

Run: .venv/bin/python scripts/make_foreign_model.py OUT_DIR
"""

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402


def make(out_dir):
    keras.utils.set_random_seed(7)
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10,
                                           classifier_activation="softmax")
    tmp = f"{out_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.export(tmp, format="tf_saved_model", verbose=False)
    try:
        os.rename(tmp, out_dir)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    make(sys.argv[1])
