"""The tutorial's way of doing what `tfload train` does on the bundled transfer-learning task, for
comparison: the same CNN in Keras with the weights of saved_models/cnn_digits (base pretrained on
digits 0-4, new 5-class head), base layers frozen (`layer.trainable = False`, so BatchNormalization
runs in inference mode), fitted with `model.fit` on the image folder of digits 5-9 read by
`keras.utils.image_dataset_from_directory`, then evaluated on the validation arrays.

Prints JSON: {"val_accuracy": ..., "val_loss": ...}.
Run: .venv/bin/python scripts/parity/keras_finetune_reference.py MODEL IMAGES VAL.npz --epochs 10 --batch-size 16 --lr 0.01 [--shuffle --seed 0]
"""

import argparse
import importlib.util
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tfload_export as te  # noqa: E402
from keras_from_export import load_export_into  # noqa: E402


def _fixture_script(name):
    """scripts/fixtures/NAME.py as a module (it defines the committed models' architectures)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits = _fixture_script("make_digits_models")


def keras_model_with_saved_weights(keras, tf, model_dir):
    """The cnn_digits architecture in Keras, holding the SavedModel's variables."""
    model, _ = te.replace_head(digits.build_cnn_base_with_head(keras), 5, activation="softmax", seed=digits.SEED)
    load_export_into(tf, model, model_dir)
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("images")
    parser.add_argument("val")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tf, keras = te._import_tf()
    keras.utils.set_random_seed(args.seed)
    model = keras_model_with_saved_weights(keras, tf, args.model)
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images = keras.utils.image_dataset_from_directory(
        args.images, image_size=(8, 8), color_mode="grayscale", batch_size=args.batch_size,
        shuffle=args.shuffle, seed=args.seed, verbose=False)
    images = images.map(lambda x, y: (x / 255.0, y))
    model.fit(images, epochs=args.epochs, verbose=0)
    val = np.load(args.val)
    loss, accuracy = model.evaluate(val["x"] / 255.0, val["y"], batch_size=args.batch_size, verbose=0)
    print(json.dumps({"val_accuracy": accuracy, "val_loss": loss}))


if __name__ == "__main__":
    main()
