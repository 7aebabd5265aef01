"""keras-vae: variational autoencoders for Keras 3 + TensorFlow Probability."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_vae needs the TensorFlow backend of Keras 3 (its distributions "
        "come from TensorFlow Probability). Set KERAS_BACKEND=tensorflow before "
        f"importing keras. Received: keras.backend.backend()="
        f"{_keras.backend.backend()!r}"
    )

from keras_vae import data  # noqa: E402

__version__ = "0.1.0"

__all__ = ["data", "__version__"]
