"""keras-vae: variational autoencoders for Keras 3 + TensorFlow Probability.

Encoders and decoders are Keras layers returning TFP distributions; `VAE` is a
`keras.Model` trained with `fit`; see README.md for a tour.
"""

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
from keras_vae import distributions  # noqa: E402
from keras_vae import objectives  # noqa: E402
from keras_vae import priors  # noqa: E402
from keras_vae.callbacks import EpochCounter, KLWarmup  # noqa: E402
from keras_vae.distributions import (  # noqa: E402
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiagonalGaussianPosterior,
    FullCovariancePosterior,
    GaussianLikelihood,
    LearnedGaussianLikelihood,
)
from keras_vae.model import VAE  # noqa: E402
from keras_vae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder  # noqa: E402
from keras_vae.priors import MixturePrior, StandardNormalPrior  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "DiagonalGaussianPosterior",
    "FullCovariancePosterior",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "LearnedGaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "StandardNormalPrior",
    "MixturePrior",
    "KLWarmup",
    "EpochCounter",
    "data",
    "distributions",
    "objectives",
    "priors",
    "__version__",
]
