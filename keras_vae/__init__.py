"""keras-vae: variational autoencoders for Keras 3 + TensorFlow Probability.

Encoders and decoders are Keras layers returning TFP distributions; `VAE` is a
`keras.Model` trained with `fit`; see README.md for a tour.
"""

import contextlib as _contextlib
import os as _os
import re as _re
import sys as _sys
import tempfile as _tempfile

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's C++ start-up writes these to stderr before its logging is set up
# (so TF_CPP_MIN_LOG_LEVEL cannot hide them); on a CPU machine they only alarm.
_STARTUP_NOISE = _re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc.*Could not find cuda"
    r"|This TensorFlow binary is optimized|To enable the following instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|cuda_platform\.cc.*failed call to cuInit"
    r"|port\.cc.*oneDNN custom operations are on")  # CPUs where oneDNN is on by default


@_contextlib.contextmanager
def _filtered_native_stderr():
    """Captures file descriptor 2 and replays it without the start-up noise above."""
    try:
        _sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters)
        yield
        return
    with _tempfile.TemporaryFile() as captured:
        _os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            _os.dup2(saved, 2)
            _os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _STARTUP_NOISE.search(line))
            if kept:
                _sys.stderr.write(kept)


with _filtered_native_stderr():
    import keras as _keras
    import tensorflow as _tf

    _tf.config.list_physical_devices()  # device discovery: where the CUDA probe speaks

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_vae needs the TensorFlow backend of Keras 3 (its distributions "
        "come from TensorFlow Probability). Set KERAS_BACKEND=tensorflow before "
        f"importing keras. Received: keras.backend.backend()="
        f"{_keras.backend.backend()!r}"
    )

from keras_vae import (
    applications,
    autoencoders,
    data,
    distributions,
    evaluation,
    execution,
    export,
    flows,
    latent,
    objectives,
    priors,
    tables,
    visualization,
)
from keras_vae.applications import anomaly_scores, impute
from keras_vae.autoencoders import Autoencoder, TiedMLPDecoder, pretrain_layerwise
from keras_vae.callbacks import EpochCounter, KLWarmup
from keras_vae.conditional import ConditionalVAE
from keras_vae.distributions import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiagonalGaussianPosterior,
    FullCovariancePosterior,
    GaussianLikelihood,
    IAFPosterior,
    LearnedGaussianLikelihood,
    PointMassPosterior,
)
from keras_vae.evaluation import log_likelihood
from keras_vae.hierarchical import HierarchicalVAE
from keras_vae.latent import embed
from keras_vae.likelihoods import TableLikelihood
from keras_vae.model import VAE
from keras_vae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, Standardization
from keras_vae.priors import MixturePrior, StandardNormalPrior, VampPrior
from keras_vae.semisupervised import SemiSupervisedVAE
from keras_vae.tables import Table

__version__ = "0.1.0"


def __getattr__(name):
    # Imported on first use, so `python -m keras_vae.distributed` does not find it
    # already imported (runpy warns about that).
    if name == "distributed":
        import importlib

        return importlib.import_module("keras_vae.distributed")
    raise AttributeError(f"module 'keras_vae' has no attribute {name!r}")

__all__ = [
    "VAE",
    "ConditionalVAE",
    "SemiSupervisedVAE",
    "HierarchicalVAE",
    "Autoencoder",
    "TiedMLPDecoder",
    "pretrain_layerwise",
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "DiagonalGaussianPosterior",
    "FullCovariancePosterior",
    "IAFPosterior",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "LearnedGaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "TableLikelihood",
    "Standardization",
    "Table",
    "PointMassPosterior",
    "StandardNormalPrior",
    "MixturePrior",
    "VampPrior",
    "KLWarmup",
    "EpochCounter",
    "data",
    "distributions",
    "flows",
    "objectives",
    "priors",
    "tables",
    "autoencoders",
    "evaluation",
    "latent",
    "applications",
    "visualization",
    "execution",
    "export",
    "distributed",
    "log_likelihood",
    "embed",
    "anomaly_scores",
    "impute",
    "__version__",
]
