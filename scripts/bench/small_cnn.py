"""The small CNN of the image-folder benchmark (bench_images.py), in a file of its own: the
benchmark exports it with `tfload-export --architecture scripts/bench/small_cnn.py:small_cnn`,
which loads this file by path, so it imports nothing from the benchmark scripts."""

CLASSES = 5
SMALL_SIZE = (64, 64)


def small_cnn():
    """A small CNN on 64x64x3, CLASSES outputs."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SMALL_SIZE, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="small_cnn")
