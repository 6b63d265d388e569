"""TensorFlow and Keras, imported on first use so that ``tfload-export --help`` is instant."""
from __future__ import annotations

import os

_modules = None


def import_tf():
    """Return ``(tensorflow, keras)``, importing them (quietly) the first time."""
    global _modules
    if _modules is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow
        import keras

        _modules = (tensorflow, keras)
    return _modules
