"""Evaluation of a trained model: log-likelihood by importance sampling, ELBO terms, metrics.

Everything here works for any model exposing `.encoder` (x -> q(z|x)),
`.decoder` (z [..., d] -> p(x|z)) and `.prior` (a keras_vae prior layer or a
`tfd.Distribution`; may be missing or None for a deterministic autoencoder,
in which case only the prior-free numbers are available). Inputs are numpy
arrays (or tensors) of shape `[N] + data_shape`; outputs are numpy arrays and
Python floats, in nats per example unless the name says bits per dimension.

#### Mathematical details

```none
log p(x) ~ IWAE_K(x) = log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)
           ELBO = E[IWAE_1] <= E[IWAE_K] <= E[IWAE_5000] <= log p(x)
bits/dim = -log p(x) / (D log 2),  D = number of data dimensions
```

The K importance samples are processed in chunks of `chunk_size` inside one
`tf.function` per batch, keeping a running log-sum-exp over the chunks, so
memory is O(chunk_size x batch_size x D) whatever K is. The noise of sample
k is drawn from the stateless seed `fold_in(fold_in(seed, batch), k)`, so the
estimate does not depend on `chunk_size`, and the same seed and batch size
give the same numbers. Each compiled function is traced once per model and
setting (`cached_function`) and released with the model.

Example:

>>> ll = log_likelihood(vae, x_test, num_samples=5000)
>>> ll.log_px.mean(), ll.bits_per_dim.mean()       # nats/example, bits/dim
>>> evaluate_model(vae, x_test, y_test)["knn_accuracy_latent"]

The latent-space numbers (embeddings, active units, PCA baseline) live in
`keras_vae.latent`, anomaly scores and imputation in
`keras_vae.applications`; both use the model-access helpers here
(`encode`, `decode`, `prior_distribution`, `check_inputs`, `batch_seed`).
"""

import dataclasses
import math
import weakref

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import objectives
from keras_vae import validation
from keras_vae.heads import reparameterized_sample

tfd = tfp.distributions

__all__ = [
    "LogLikelihood",
    "log_likelihood",
    "elbo_terms",
    "evaluate_model",
]

# Largest number of float32 elements one chunk may hold ([chunk, batch, width]).
_ELEMENT_BUDGET = 2 ** 22
# Posterior samples per example behind the ELBO terms that evaluate_model reports.
_ELBO_SAMPLES = 10


# ------------------------------------------------------------ model access

def prior_distribution(model):
    """`p(z)` of `model` as a `tfd.Distribution`, or None when it has no prior."""
    prior = getattr(model, "prior", None)
    if prior is None:
        return None
    if isinstance(prior, tfd.Distribution):
        return prior
    if hasattr(prior, "distribution"):
        return prior.distribution()
    raise TypeError(
        "`model.prior` must be a keras_vae prior layer, a tfd.Distribution or None. "
        f"Received: model.prior={prior!r}"
    )


def _require_prior(model, what):
    if prior_distribution(model) is None:
        raise ValueError(
            f"{what} needs a model with a prior p(z) (a VAE); deterministic "
            "autoencoders have none. Received: model.prior=None"
        )


def _call(layer, inputs):
    if isinstance(layer, keras.layers.Layer):
        return layer(inputs, training=False)
    return layer(inputs)


def encode(model, x):
    """`q(z|x)` for a float32 batch `x`."""
    return _call(model.encoder, x)


def decode(model, z):
    """`p(x|z)` for latents `z [..., d]`."""
    return _call(model.decoder, z)


def check_inputs(model, x, name="x"):
    """Validates `x` against the model and returns it as a float32 numpy array.

    Uses `keras_vae.base.check_data` when the model declares `data_shape`;
    otherwise requires a finite real array with a batch axis.
    """
    if isinstance(x, tf.data.Dataset) or x is None or isinstance(x, dict):
        raise TypeError(
            f"Expected `{name}` as an array of shape (batch,) + data_shape. "
            f"Received: {name} of type {type(x).__name__}"
        )
    data_shape = getattr(model, "data_shape", None)
    head = getattr(getattr(model, "decoder", None), "head", None)
    return validation.data_array(x, None if data_shape is None else tuple(data_shape),
                                 head, name=name)


def _batch_size(batch_size):
    return validation.batch_size(batch_size)


def _seed(seed):
    return validation.seed32(seed)


_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> {key: tf.function}


def cached_function(model, key, build):
    """The `tf.function` `build(model_ref)` for `(model, key)`, traced once and reused.

    `build` receives a zero-argument callable returning the model and must
    only call it inside the function it builds; the cache holds the model
    weakly, so functions are dropped with their model. Objects that cannot
    be weakly referenced get a fresh function on every call.
    """
    try:
        per_model = _FUNCTIONS.setdefault(model, {})
    except TypeError:
        return build(lambda: model)
    if key not in per_model:
        per_model[key] = build(weakref.ref(model))
    return per_model[key]


def batch_seed(seed, index):
    """Stateless seed int32 [2] for batch `index` of a run with integer `seed`."""
    base = tf.constant([_seed(seed), 0], tf.int32)
    return tf.random.experimental.stateless_fold_in(base, int(index))


# ------------------------------------------------------------ log-likelihood

@dataclasses.dataclass(frozen=True, eq=False)
class LogLikelihood:
    """Per-example importance-sampled log-likelihood estimates.

    Behaves like the array of `log_px` (`np.asarray(result)`, `result.mean()`,
    `len(result)`, `result[i]`); `result["bits_per_dim"]` also works.

    Attributes:
      log_px: float64 `[N]`, IWAE_K estimates of log p(x) in nats per example.
      bits_per_dim: float64 `[N]`, `-log_px / (D log 2)`.
      num_samples: K.
      num_dims: D, the number of data dimensions per example.
      seed: the integer seed used.
    """

    log_px: np.ndarray
    bits_per_dim: np.ndarray
    num_samples: int
    num_dims: int
    seed: int

    def __array__(self, dtype=None, copy=None):
        return self.log_px if dtype is None else self.log_px.astype(dtype)

    def __len__(self):
        return len(self.log_px)

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in ("log_px", "bits_per_dim"):
                raise KeyError(f"Expected 'log_px' or 'bits_per_dim'. Received: key={key!r}")
            return getattr(self, key)
        return self.log_px[key]

    def mean(self):
        """Mean log p(x) estimate in nats per example."""
        return float(np.mean(self.log_px))


def _chunk_size(chunk_size, num_samples, batch_size, width):
    if chunk_size is None:
        return max(1, min(num_samples, _ELEMENT_BUDGET // max(1, batch_size * width)))
    return min(validation.positive_int("chunk_size", chunk_size), num_samples)


def _width(model, num_dims):
    head = getattr(getattr(model, "decoder", None), "head", None)
    params = head.params_size() if hasattr(head, "params_size") else num_dims
    latent_dim = getattr(model, "latent_dim", 1) or 1
    return max(int(params), int(num_dims), int(latent_dim))


def _log_px_function(model_ref, data_shape, num_samples, chunk_size):
    """A `tf.function (x [B] + data_shape, seed int32 [2]) -> log p(x) [B]`."""
    num_chunks = -(-num_samples // chunk_size)
    log_chunk = math.log(chunk_size)

    @tf.function(input_signature=[tf.TensorSpec((None,) + data_shape, tf.float32),
                                  tf.TensorSpec([2], tf.int32)])
    def batch_log_px(x, seed):
        model = model_ref()
        posterior = encode(model, x)
        prior = prior_distribution(model)

        def draw(k):  # sample k's noise depends on (seed, k) only, not on the chunk
            seed_k = tf.random.experimental.stateless_fold_in(seed, k)
            return reparameterized_sample(posterior, 1, seed_k)[0]

        def body(j, acc):
            ks = j * chunk_size + tf.range(chunk_size)
            z = tf.map_fn(draw, ks, fn_output_signature=tf.float32,
                          parallel_iterations=16)                         # [C, B, d]
            log_w, _ = objectives.log_importance_weights(
                x, posterior, lambda zz: decode(model, zz), prior, z)     # [C, B]
            log_w = tf.where((ks < num_samples)[:, None], log_w, -np.inf)  # pad of last chunk
            chunk_lse = objectives.iwae_bound(log_w) + log_chunk          # logsumexp, [B]
            return j + 1, tf.reduce_logsumexp(tf.stack([acc, chunk_lse]), axis=0)

        acc = tf.fill(tf.shape(x)[:1], tf.constant(-np.inf, tf.float32))
        _, acc = tf.while_loop(lambda j, _: j < num_chunks, body, (tf.constant(0), acc))
        return acc - math.log(num_samples)

    return batch_log_px


def log_likelihood(model, x, num_samples=1000, batch_size=100, chunk_size=None, seed=0):
    """Importance-sampled estimate of log p(x) per example (the IWAE-K bound).

    With K = `num_samples` samples from the encoder's posterior as proposal,
    the estimate is a lower bound in expectation that tightens as K grows
    (Burda et al., 2016); K=1 is an unbiased estimate of the ELBO, and with
    the exact posterior every K gives log p(x) exactly.

    Args:
      model: a VAE, or any object with `.encoder`, `.decoder`, `.prior`.
      x: `[N] + data_shape` float array.
      num_samples: K importance samples per example (e.g. 5000 for reported
        numbers).
      batch_size: examples per batch B.
      chunk_size: samples decoded at once C; memory is O(C x B x D). Default:
        the largest C with C x B x D <= 2**22 floats (16 MB per tensor).
        The result does not depend on it.
      seed: integer; the same seed (and batch_size) gives the same numbers.

    Returns:
      `LogLikelihood` with `log_px` `[N]` (nats) and `bits_per_dim` `[N]`.

    Raises:
      ValueError: if the model has no prior, for bad arguments or data.
      TypeError: for a non-integer seed or non-array data.

    Example:
      >>> ll = log_likelihood(vae, x_test[:100], num_samples=500)
      >>> ll.log_px.shape
      (100,)
    """
    _require_prior(model, "log_likelihood")
    x = check_inputs(model, x)
    num_samples = validation.positive_int("num_samples", num_samples)
    batch_size = _batch_size(batch_size)
    seed = _seed(seed)
    data_shape = tuple(x.shape[1:])
    num_dims = int(np.prod(data_shape))
    chunk = _chunk_size(chunk_size, num_samples, min(batch_size, len(x)),
                        _width(model, num_dims))
    fn = cached_function(model, ("log_px", data_shape, num_samples, chunk),
                         lambda ref: _log_px_function(ref, data_shape, num_samples, chunk))
    log_px = np.concatenate([
        fn(x[start:start + batch_size], batch_seed(seed, i)).numpy()
        for i, start in enumerate(range(0, len(x), batch_size))
    ]).astype("float64")
    return LogLikelihood(log_px=log_px,
                         bits_per_dim=objectives.bits_per_dim(-log_px, num_dims),
                         num_samples=num_samples, num_dims=num_dims, seed=seed)


def elbo_terms(model, x, num_samples=1, batch_size=500, seed=0):
    """Per-example ELBO, reconstruction term and KL, in nats (beta plays no part).

    Uses `objectives.elbo` with the model's `analytic_kl` setting (default
    True), L = `num_samples` reparameterized draws per example.

    Returns:
      dict of float64 arrays `[N]`: `elbo`, `reconstruction` (E_q[-log p(x|z)])
      and `kl` (KL(q(z|x) || p(z))).

    Raises:
      ValueError: if the model has no prior, for bad arguments or data.
    """
    _require_prior(model, "elbo_terms")
    x = check_inputs(model, x)
    num_samples = validation.positive_int("num_samples", num_samples)
    batch_size = _batch_size(batch_size)
    analytic = bool(getattr(model, "analytic_kl", True))

    def build(model_ref):
        @tf.function(input_signature=[tf.TensorSpec((None,) + x.shape[1:], tf.float32),
                                      tf.TensorSpec([2], tf.int32)])
        def terms(xb, s):
            model = model_ref()
            out = objectives.elbo(xb, encode(model, xb), lambda z: decode(model, z),
                                  prior_distribution(model), seed=s,
                                  num_samples=num_samples, analytic_kl=analytic)
            return {k: out[k] for k in ("elbo", "reconstruction", "kl")}
        return terms

    terms = cached_function(model, ("elbo", x.shape[1:], num_samples, analytic), build)
    parts = [terms(x[start:start + batch_size], batch_seed(seed, i))
             for i, start in enumerate(range(0, len(x), batch_size))]
    return {k: np.concatenate([p[k].numpy() for p in parts]).astype("float64")
            for k in ("elbo", "reconstruction", "kl")}


# ------------------------------------------------------------ entry point

def evaluate_model(model, x, y=None, num_samples=1000, batch_size=100, seed=0):
    """All evaluation numbers for a trained model, as JSON-serialisable floats.

    For models with a prior: `log_likelihood` (mean IWAE-K estimate of log p(x),
    nats per example, K = `num_samples`), `log_likelihood_bits_per_dim`,
    `elbo`, `elbo_bits_per_dim`, `reconstruction` (E_q[-log p(x|z)]) and `kl`
    (means over examples, 10 posterior samples each, the model's KL setting),
    and `active_units`. Without a prior (deterministic autoencoders) these are
    left out and `reconstruction` is -log p(x | z = E[q(z|x)]).

    Always: `num_samples`, `num_examples`, `num_dims`, `latent_dim`, `seed`,
    the latent-vs-PCA numbers of `keras_vae.latent.latent_vs_pca` (sum-of-squares
    reconstruction error per example at equal dimension; k=5 NN accuracy when
    `y` is given), and imputation of a random half of each example's values
    (`imputation_mse` vs `imputation_mse_mean_fill`, mean squared error on the
    hidden values; see `keras_vae.applications.imputation_report`).

    Args:
      model: trained VAE (or autoencoder).
      x: `[N] + data_shape` evaluation data.
      y: optional `[N]` labels.
      num_samples: K for the log-likelihood estimate.
      batch_size: examples per batch.
      seed: integer seed for every random draw.

    Returns:
      dict of str -> float/int.
    """
    from keras_vae import applications, latent  # both build on this module

    x = check_inputs(model, x)
    num_samples = validation.positive_int("num_samples", num_samples)
    num_dims = int(np.prod(x.shape[1:]))
    metrics = {"num_samples": num_samples, "num_examples": int(len(x)),
               "num_dims": num_dims, "seed": _seed(seed)}
    if prior_distribution(model) is not None:
        ll = log_likelihood(model, x, num_samples=num_samples, batch_size=batch_size,
                            seed=seed)
        terms = elbo_terms(model, x, num_samples=_ELBO_SAMPLES, batch_size=batch_size,
                           seed=seed)
        metrics.update({
            "log_likelihood": ll.mean(),
            "log_likelihood_bits_per_dim": float(np.mean(ll.bits_per_dim)),
            "elbo": float(np.mean(terms["elbo"])),
            "elbo_bits_per_dim": float(objectives.bits_per_dim(-np.mean(terms["elbo"]),
                                                               num_dims)),
            "reconstruction": float(np.mean(terms["reconstruction"])),
            "kl": float(np.mean(terms["kl"])),
            "active_units": latent.active_units(model, x, batch_size=batch_size),
        })
    else:
        q = [encode(model, tf.constant(x[s:s + batch_size])).mean()
             for s in range(0, len(x), batch_size)]
        nll = [-decode(model, z).log_prob(x[i * batch_size:(i + 1) * batch_size])
               for i, z in enumerate(q)]
        metrics["reconstruction"] = float(np.mean(np.concatenate(nll)))
    metrics.update(latent.latent_vs_pca(model, x, y, batch_size=max(batch_size, 500)))
    metrics.update(applications.imputation_report(model, x, seed=seed,
                                                  batch_size=max(batch_size, 500)))
    return metrics
