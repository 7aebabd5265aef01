"""Distribution heads: Keras 3 layers that turn network outputs into TFP distributions.

A head follows the contract of TFP's (Keras 2) distribution layers, written anew
for Keras 3 because `tfp.layers` does not work with it:

- `head.params_size()` is the number of parameters the network in front of the
  head must produce per example (the size of the last axis);
- `head(params)` maps `params` of shape `batch_shape + [params_size]` to a
  `tfd.Distribution` with that `batch_shape` and the head's `event_shape`.

Posterior heads (`q(z|x)`) have event shape `[latent_dim]` (`PointMassPosterior`
is the deterministic encoder of a plain autoencoder); likelihood heads
(`p(x|z)`) have the data's event shape, e.g. `[28, 28, 1]`.

Distribution parameters are always float32: heads are float32 layers and cast
their input, so models under a `mixed_float16` or `mixed_bfloat16` policy still
compute log-probabilities in float32 (TFP raises dtype errors otherwise).

Reparameterized draws for Gaussians go through `reparameterized_sample`, which
uses the Philox stateless generator explicitly (XLA lowers TensorFlow's default
stateless generator to a slow kernel on CPU).
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = [
    "DiagonalGaussianPosterior",
    "FullCovariancePosterior",
    "PointMassPosterior",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "LearnedGaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "get_posterior",
    "get_likelihood",
    "POSTERIORS",
    "LIKELIHOODS",
    "reparameterized_sample",
    "stateless_normal",
]

_PACKAGE = "keras_vae"


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def _positive_float(name, value, allow_zero=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"`{name}` must be a finite number {bound}. Received: {name}={value!r}"
        )
    return value


def _event_shape(name, shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        given = tuple(shape)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in given):
            raise TypeError
        shape = tuple(int(d) for d in given)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a tuple of positive integers such as (28, 28, 1). "
            f"Received: {name}={shape!r}"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise ValueError(
            f"`{name}` must be a non-empty tuple of positive integers such as "
            f"(28, 28, 1). Received: {name}={shape!r}"
        )
    return shape


def stateless_normal(shape, seed, dtype=tf.float32):
    """Standard normal noise from a stateless `seed` (int32[2]) via Philox."""
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")


def reparameterized_sample(distribution, num_samples, seed):
    """Draws `num_samples` reparameterized samples, `z = loc + scale @ eps`.

    Args:
      distribution: a posterior from a head of this module (or any TFP
        distribution; non-Gaussian ones fall back to `distribution.sample`).
      num_samples: Python int or scalar int tensor L.
      seed: stateless seed, int32 tensor of shape [2].

    Returns:
      Tensor of shape `[L] + batch_shape + event_shape`, differentiable with
      respect to the distribution's parameters.
    """
    if isinstance(distribution, tfd.Independent) and isinstance(
        distribution.distribution, tfd.Normal
    ):
        base = distribution.distribution
        loc, scale = base.loc, base.scale
        shape = tf.concat([[num_samples], tf.shape(loc)], axis=0)
        return loc + scale * stateless_normal(shape, seed, loc.dtype)
    if isinstance(distribution, tfd.MultivariateNormalLinearOperator):
        loc = distribution.loc
        shape = tf.concat([[num_samples], tf.shape(loc)], axis=0)
        eps = stateless_normal(shape, seed, loc.dtype)
        return loc + distribution.scale.matvec(eps)
    if isinstance(distribution, tfd.VectorDeterministic):  # point mass: z = loc
        loc = distribution.loc
        return tf.broadcast_to(loc, tf.concat([[num_samples], tf.shape(loc)], axis=0))
    return distribution.sample(num_samples, seed=seed)


class _Head(keras.layers.Layer):
    """Base class: a float32 layer with `params_size()` and `call(params)`."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"  # distribution parameters stay float32
        super().__init__(**kwargs)

    def build(self, input_shape=None):
        self.built = True

    def params_size(self):
        raise NotImplementedError

    def _params(self, params):
        params = tf.cast(params, tf.float32)
        expected = self.params_size()
        if params.shape[-1] is not None and params.shape[-1] != expected:
            raise ValueError(
                f"{type(self).__name__} expects {expected} parameters on the last "
                f"axis. Received: params.shape={tuple(params.shape)}"
            )
        return params

    def compute_output_spec(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError(
            f"{type(self).__name__} returns a distribution and cannot be used in "
            "the Functional API; use it in a subclassed layer or model."
        )


# --------------------------------------------------------------------------
# Posteriors q(z|x)
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiagonalGaussianPosterior(_Head):
    """`q(z|x) = N(mu, diag(sigma^2))` with `sigma = softplus(raw) + min_scale`.

    #### Mathematical details

    ```none
    params = [mu, raw]                        # 2 * latent_dim numbers
    sigma  = softplus(raw + softplus^-1(1)) + min_scale   # sigma = 1 + min_scale at raw=0
    q(z|x) = prod_d Normal(z_d; mu_d, sigma_d)
    ```

    Args:
      latent_dim: size of z.
      min_scale: floor on sigma, keeps log q finite (default 1e-4).

    Call arguments:
      params: float tensor `batch_shape + [2 * latent_dim]`.

    Returns:
      `tfd.Independent(tfd.Normal)`, batch shape `batch_shape`, event shape
      `[latent_dim]`.
    """

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.min_scale = _positive_float("min_scale", min_scale, allow_zero=True)

    def params_size(self):
        return 2 * self.latent_dim

    def call(self, params):
        params = self._params(params)
        loc, raw = tf.split(params, 2, axis=-1)
        scale = tf.nn.softplus(raw + math.log(math.expm1(1.0))) + self.min_scale
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FullCovariancePosterior(_Head):
    """`q(z|x) = N(mu, L L^T)` with a lower-triangular Cholesky factor `L`.

    #### Mathematical details

    ```none
    params = [mu, vec(L_raw)]       # latent_dim + latent_dim * (latent_dim + 1) / 2
    L      = FillScaleTriL(L_raw)   # diagonal through softplus, plus min_scale
    q(z|x) = MultivariateNormalTriL(mu, L)
    ```

    Args:
      latent_dim: size of z.
      min_scale: added to the diagonal of L (default 1e-4).

    Returns:
      `tfd.MultivariateNormalTriL`, event shape `[latent_dim]`.
    """

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.min_scale = _positive_float("min_scale", min_scale, allow_zero=True)

    def params_size(self):
        d = self.latent_dim
        return d + d * (d + 1) // 2

    def call(self, params):
        params = self._params(params)
        loc, raw = tf.split(params, [self.latent_dim, -1], axis=-1)
        tril = tfb.FillScaleTriL(
            diag_bijector=tfb.Chain([tfb.Shift(self.min_scale), tfb.Softplus()]),
            diag_shift=None,
        )(raw + _tril_identity_offset(self.latent_dim))
        return tfd.MultivariateNormalTriL(loc, scale_tril=tril)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "min_scale": self.min_scale}


def _tril_identity_offset(d):
    """Raw offset that makes L = I (up to min_scale) when the network outputs 0."""
    diag = tf.linalg.diag(tf.fill([d], math.log(math.expm1(1.0))))
    return tfb.FillTriangular().inverse(diag)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PointMassPosterior(_Head):
    """Deterministic encoder: `q(z|x) = delta(z - f(x))`, the code of a plain autoencoder.

    #### Mathematical details

    ```none
    params = [f(x)]                   # latent_dim numbers
    q(z|x) = VectorDeterministic(f(x)),  mean = sample = f(x)
    ```
    A point mass has no density with respect to a Gaussian prior, so it has no
    ELBO: `keras_vae.VAE` refuses it; `keras_vae.Autoencoder` uses it.

    Args:
      latent_dim: size of z.

    Call arguments:
      params: float tensor `batch_shape + [latent_dim]`.

    Returns:
      `tfd.VectorDeterministic`, batch shape `batch_shape`, event shape
      `[latent_dim]`.
    """

    def __init__(self, latent_dim, **kwargs):
        kwargs.pop("min_scale", None)  # accepted for a uniform get_posterior signature
        super().__init__(**kwargs)
        self.latent_dim = _positive_int("latent_dim", latent_dim)

    def params_size(self):
        return self.latent_dim

    def call(self, params):
        return tfd.VectorDeterministic(self._params(params))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


POSTERIORS = {
    "diagonal": DiagonalGaussianPosterior,
    "full": FullCovariancePosterior,
    "point_mass": PointMassPosterior,
}


def get_posterior(identifier, latent_dim, **kwargs):
    """Returns a posterior head from a name ("diagonal", "full", "point_mass") or a head."""
    if isinstance(identifier, _Head):
        return identifier
    if identifier not in POSTERIORS:
        raise ValueError(
            f"Unknown posterior: expected one of {sorted(POSTERIORS)}. "
            f"Received: posterior={identifier!r}"
        )
    return POSTERIORS[identifier](latent_dim, **kwargs)


# --------------------------------------------------------------------------
# Likelihoods p(x|z)
# --------------------------------------------------------------------------


class _LikelihoodHead(_Head):
    """Per-element likelihood with `num_params` numbers per data element.

    Subclasses implement `_distribution(*params)` on tensors of shape
    `batch_shape + event_shape` and may declare a support `(low, high)`.
    """

    num_params = 1
    support = None  # (low, high) inclusive, or None for the real line
    support_name = "the real line"

    def __init__(self, event_shape, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = _event_shape("event_shape", event_shape)

    def params_size(self):
        return int(np.prod(self.event_shape)) * self.num_params

    def call(self, params):
        params = self._params(params)
        batch_shape = tf.shape(params)[:-1]
        shape = tf.concat([batch_shape, self.event_shape, [self.num_params]], 0)
        parts = tf.unstack(tf.reshape(params, shape), num=self.num_params, axis=-1)
        return tfd.Independent(
            self._distribution(*parts),
            reinterpreted_batch_ndims=len(self.event_shape),
        )

    def check_support(self, x, name="x"):
        """Raises ValueError if the numpy array `x` lies outside the support."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(
                f"`{name}` must be a real-valued array. Received: {name}.dtype={x.dtype}"
            )
        if x.size and not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise ValueError(
                f"`{name}` must be finite; it holds {bad} NaN/Inf values. "
                f"Received: {name} with NaN or Inf"
            )
        if self.support is not None and x.size:
            lo, hi = float(x.min()), float(x.max())
            if lo < self.support[0] or hi > self.support[1]:
                raise ValueError(
                    f"The {self.likelihood_name!r} likelihood needs data in "
                    f"{self.support_name}; scale the data (e.g. divide pixels by "
                    f"255) or choose a Gaussian likelihood. Received: {name} with "
                    f"min={lo:g}, max={hi:g}"
                )

    def get_config(self):
        return {**super().get_config(), "event_shape": list(self.event_shape)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BernoulliLikelihood(_LikelihoodHead):
    """`p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i))`; -log p is binary cross-entropy.

    #### Mathematical details

    ```none
    log p(x|z) = sum_i x_i log s(l_i) + (1 - x_i) log(1 - s(l_i)),   s = sigmoid
    ```

    Defined for x in [0, 1] (grey values give the cross-entropy used for
    non-binarized images). Event shape `event_shape`; the mean is `sigmoid(l)`.
    """

    likelihood_name = "bernoulli"
    support = (0.0, 1.0)
    support_name = "[0, 1]"

    def _distribution(self, logits):
        return _LogitBernoulli(logits=logits, dtype=tf.float32)


class _LogitBernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli(logits=l)` whose `log_prob(x)` is `x * l - softplus(l)`.

    The same function as TFP's `x log p + (1 - x) log(1 - p)` (also for grey
    x in [0, 1]) with one softplus instead of two softplus and two
    `multiply_no_nan`: about 2x faster log_prob + gradient on CPU in graph
    mode, where it is a large share of a decoder's cost (IWAE, K=5000
    log-likelihood). Needs finite logits, which decoders produce.
    """

    def _log_prob(self, event):
        logits = tf.convert_to_tensor(self._logits)
        return tf.cast(event, logits.dtype) * logits - tf.nn.softplus(logits)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ContinuousBernoulliLikelihood(_LikelihoodHead):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019), a proper density on [0, 1].

    #### Mathematical details

    ```none
    p(x|l) = C(s) s^x (1 - s)^(1 - x),   s = sigmoid(l),
    C(s)   = 2 atanh(1 - 2 s) / (1 - 2 s)   (C(1/2) = 2)
    ```
    """

    likelihood_name = "continuous_bernoulli"
    support = (0.0, 1.0)
    support_name = "[0, 1]"

    def _distribution(self, logits):
        return tfd.ContinuousBernoulli(logits=logits)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianLikelihood(_LikelihoodHead):
    """Gaussian with a fixed scale: -log p is a scaled squared error plus a constant.

    #### Mathematical details

    ```none
    log p(x|z) = sum_i -(x_i - mu_i)^2 / (2 scale^2) - log(scale) - log(2 pi) / 2
    ```

    Args:
      event_shape: data shape.
      scale: the fixed standard deviation (default 1.0; 0.1 suits [0, 1] images).
    """

    likelihood_name = "gaussian"

    def __init__(self, event_shape, scale=1.0, **kwargs):
        super().__init__(event_shape, **kwargs)
        self.scale = _positive_float("scale", scale)

    def _distribution(self, loc):
        return tfd.Normal(loc, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LearnedGaussianLikelihood(_LikelihoodHead):
    """Gaussian whose scale is learned: per pixel (from z) or one shared scalar.

    #### Mathematical details

    ```none
    per_pixel: params = [mu, raw] per element, sigma = softplus(raw) + min_scale
    shared:    params = [mu],  sigma = softplus(w) + min_scale, w one trainable scalar
    ```

    Args:
      event_shape: data shape.
      scale: "per_pixel" (default) or "shared".
      min_scale: floor on sigma (default 1e-3), prevents unbounded density on
        constant pixels.
    """

    likelihood_name = "gaussian_learned"

    def __init__(self, event_shape, scale="per_pixel", min_scale=1e-3, **kwargs):
        super().__init__(event_shape, **kwargs)
        if scale not in ("per_pixel", "shared"):
            raise ValueError(
                "`scale` must be 'per_pixel' or 'shared'. "
                f"Received: scale={scale!r}"
            )
        self.scale = scale
        self.min_scale = _positive_float("min_scale", min_scale, allow_zero=True)
        self.num_params = 2 if scale == "per_pixel" else 1

    def build(self, input_shape=None):
        if self.scale == "shared":
            self.raw_scale = self.add_weight(
                name="raw_scale", shape=(), initializer="zeros", dtype="float32"
            )
        self.built = True

    def _distribution(self, loc, raw=None):
        if raw is None:
            raw = self.raw_scale
        return tfd.Normal(loc, tf.nn.softplus(raw) + self.min_scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_scale": self.min_scale}


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "gaussian_learned": LearnedGaussianLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
}


def get_likelihood(identifier, event_shape, **kwargs):
    """Returns a likelihood head from a name in `LIKELIHOODS` or a head instance."""
    if isinstance(identifier, _LikelihoodHead):
        return identifier
    if identifier not in LIKELIHOODS:
        raise ValueError(
            f"Unknown likelihood: expected one of {sorted(LIKELIHOODS)}. "
            f"Received: likelihood={identifier!r}"
        )
    return LIKELIHOODS[identifier](event_shape, **kwargs)
