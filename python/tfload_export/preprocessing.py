"""The affine preprocessing baked in front of the model in all three signatures, so that callers
feed raw float pixels (0..255) and the record says what the model sees."""
from __future__ import annotations

import re

from ._tf import import_tf
from .contract import ContractError

PREPROCESS_MODES = ("none", "unit", "tf", "torch", "caffe")

# Preprocessing of keras.applications models (what their preprocess_input does).
# "none": the application scales its inputs itself and expects raw 0..255 pixels.
APPLICATION_PREPROCESS = [
    (r"^(MobileNet|MobileNetV2|InceptionV3|InceptionResNetV2|Xception|NASNet\w*|ResNet\d+V2)$", "tf"),
    (r"^(ResNet\d+|VGG\d+)$", "caffe"),
    (r"^DenseNet\d+$", "torch"),
    (r"^(EfficientNet\w*|ConvNeXt\w*|RegNet\w*|MobileNetV3\w*)$", "none"),
]


def preprocessing_spec(mode, channels=None):
    """Describe the affine preprocessing baked in front of the model.

    ``model_input = (raw[..., ::-1] if reverse_channels else raw) * scale + offset``
    with ``scale``/``offset`` broadcast over the last axis (length 1 or the channel count).
    ``mode`` is one of PREPROCESS_MODES or ``"affine:SCALE,OFFSET"``.
    """
    mode = (mode or "none").strip()
    spec = {"mode": mode, "reverse_channels": False, "scale": [1.0], "offset": [0.0],
            "raw_input_range": None,
            "formula": "model_input = (raw[..., ::-1] if reverse_channels else raw) * scale + offset"
                       " (scale/offset broadcast over the last axis)"}
    if mode == "none":
        spec["description"] = "none: the signatures feed the Keras model its inputs unchanged"
    elif mode == "unit":
        spec.update(scale=[1.0 / 255.0], raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255, scaled to 0..1 (x / 255)")
    elif mode == "tf":
        spec.update(scale=[1.0 / 127.5], offset=[-1.0], raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255 (RGB), scaled to -1..1 (x / 127.5 - 1)")
    elif mode == "torch":
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        spec.update(scale=[1.0 / (255.0 * s) for s in std], offset=[-m / s for m, s in zip(mean, std)],
                    raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255 (RGB), (x / 255 - ImageNet mean) / ImageNet std")
    elif mode == "caffe":
        spec.update(reverse_channels=True, offset=[-103.939, -116.779, -123.68],
                    raw_input_range=[0.0, 255.0],
                    description="raw float pixels 0..255 (RGB), converted to BGR, ImageNet BGR mean subtracted")
    elif mode.startswith("affine:"):
        try:
            scale, offset = (float(t) for t in mode[len("affine:"):].split(","))
        except ValueError as exc:
            raise ContractError(f"--preprocess {mode!r}: expected affine:SCALE,OFFSET") from exc
        spec.update(scale=[scale], offset=[offset],
                    description=f"model_input = raw * {scale!r} + {offset!r}")
    else:
        raise ContractError(f"unknown preprocessing {mode!r}; one of {PREPROCESS_MODES} or affine:S,O")
    n = max(len(spec["scale"]), len(spec["offset"]))
    if channels is not None and n > 1 and channels != n:
        raise ContractError(f"preprocessing {mode!r} needs {n} channels, the input has {channels}")
    if spec["reverse_channels"] and channels is not None and channels != 3:
        raise ContractError(f"preprocessing {mode!r} needs 3 channels, the input has {channels}")
    return spec


def application_preprocess_mode(name):
    """The preprocessing mode of a ``keras.applications`` model, or None when unknown."""
    for pattern, mode in APPLICATION_PREPROCESS:
        if re.match(pattern, name):
            return mode
    return None


def apply_preprocessing(x, spec):
    """``x`` with the preprocessing ``spec`` (from ``preprocessing_spec``) applied, as TF ops."""
    if spec["mode"] == "none":
        return x
    tf, _ = import_tf()
    if spec["reverse_channels"]:
        x = tf.reverse(x, axis=[-1])
    scale = tf.constant(spec["scale"], dtype=x.dtype)
    offset = tf.constant(spec["offset"], dtype=x.dtype)
    return x * scale + offset
