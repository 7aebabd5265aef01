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

from keras_vae import flows, validation
from keras_vae.heads import Head, reparameterized_sample, stateless_normal

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = [
    "DiagonalGaussianPosterior",
    "FullCovariancePosterior",
    "PointMassPosterior",
    "IAFPosterior",
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
    "Head",
]

_PACKAGE = "keras_vae"  # registration package of every serialisable class


# --------------------------------------------------------------------------
# Posteriors q(z|x)
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiagonalGaussianPosterior(Head):
    """`q(z|x) = N(mu, diag(sigma^2))` with `sigma = softplus(raw) + min_scale` (or `exp`).

    #### Mathematical details

    ```none
    params = [mu, raw]                        # 2 * latent_dim numbers
    scale="softplus": sigma = softplus(raw + softplus^-1(1)) + min_scale  # 1 + min_scale at raw=0
    scale="exp":      sigma = exp(raw) + min_scale                        # 1 + min_scale at raw=0
    q(z|x) = prod_d Normal(z_d; mu_d, sigma_d)
    ```

    `"exp"` is the parameterisation of the IWAE paper's recipe (and of a
    `log_var` head: raw = log_var / 2); its gradient with respect to raw
    is sigma itself, where softplus's is at most 1 (see
    `benchmarks/parity.py` for what the choice changes in training).

    Args:
      latent_dim: size of z.
      min_scale: floor on sigma, keeps log q finite (default 1e-4).
      scale: "softplus" (default) or "exp", the map from raw to sigma.

    Call arguments:
      params: float tensor `batch_shape + [2 * latent_dim]`.

    Returns:
      `tfd.Independent(tfd.Normal)`, batch shape `batch_shape`, event shape
      `[latent_dim]`.
    """

    scales = ("softplus", "exp")  # the `scale` choices (MLPEncoder(..., scale=...) checks this)

    def __init__(self, latent_dim, min_scale=1e-4, scale="softplus", **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)
        self.min_scale = validation.non_negative_float("min_scale", min_scale)
        self.scale = validation.choice("scale", scale, self.scales)

    def params_size(self):
        return 2 * self.latent_dim

    def call(self, params):
        params = self._params(params)
        loc, raw = tf.split(params, 2, axis=-1)
        if self.scale == "exp":
            scale = tf.exp(raw) + self.min_scale
        else:
            scale = tf.nn.softplus(raw + math.log(math.expm1(1.0))) + self.min_scale
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "min_scale": self.min_scale, "scale": self.scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FullCovariancePosterior(Head):
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
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)
        self.min_scale = validation.non_negative_float("min_scale", min_scale)

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
class PointMassPosterior(Head):
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
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)

    def params_size(self):
        return self.latent_dim

    def call(self, params):
        return tfd.VectorDeterministic(self._params(params))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IAFPosterior(Head):
    """`q(z|x)`: a diagonal Gaussian followed by `flow_steps` IAF steps (Kingma et al., 2016).

    #### Mathematical details

    ```none
    params = [mu, raw, h]                      # 2 d + context_dim numbers
    z_0 = mu + sigma * eps                     # sigma as in DiagonalGaussianPosterior
    z_t = g_t * z_{t-1} + (1 - g_t) * m_t,     [m_t, s_t] = MADE_t(z_{t-1}, h),
                                               g_t = sigmoid(s_t + forget_bias)
    log q(z_T|x) = log N(z_0; mu, sigma) - sum_t sum_i log g_t,i
    ```
    Order reversal between steps; details, caching and the exact (sequential)
    inverse for arbitrary `z` in `keras_vae.flows`. The base Gaussian is a
    `keras_vae.distributions.DiagonalGaussianPosterior` (same scale
    parameterisation and `min_scale`).

    Args:
      latent_dim: d.
      flow_steps: number T of IAF steps, default 2.
      flow_hidden: widths of each step's MADE, default `(2 * latent_dim,)`
        (at least 8).
      context_dim: width of the context `h` the encoder network produces in
        addition to the base parameters, fed to every step's MADE; default
        `latent_dim`, 0 for none.
      forget_bias: added to `s` before the sigmoid gate, default 2.0 (each
        step starts close to the identity, `g ~ 0.88`).
      min_scale: floor on the base's sigma (default 1e-4).

    Call arguments:
      params: float tensor `[B, 2 * latent_dim + context_dim]`.

    Returns:
      `FlowDistribution`, batch shape `[B]`, event shape `[latent_dim]`.

    Raises:
      ValueError / TypeError: for bad arguments, e.g. `flow_steps <= 0`.

    Example:
      >>> enc = MLPEncoder(latent_dim=8, posterior="iaf")
      >>> enc = MLPEncoder(8, posterior=IAFPosterior(8, flow_steps=4))
    """

    def __init__(self, latent_dim, flow_steps=2, flow_hidden=None, context_dim=None,
                 forget_bias=2.0, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)
        self.flow_steps = validation.positive_int("flow_steps", flow_steps)
        if flow_hidden is None:
            flow_hidden = (max(8, 2 * self.latent_dim),)
        if isinstance(flow_hidden, (int, np.integer)):
            flow_hidden = (flow_hidden,)
        try:
            flow_hidden = tuple(flow_hidden)
        except TypeError:
            raise TypeError("`flow_hidden` must be a tuple of positive integers. "
                            f"Received: flow_hidden={flow_hidden!r}") from None
        if not flow_hidden:
            raise ValueError("`flow_hidden` must name at least one layer width. "
                             f"Received: flow_hidden={flow_hidden!r}")
        self.flow_hidden = tuple(validation.positive_int("flow_hidden", h) for h in flow_hidden)
        self.context_dim = (self.latent_dim if context_dim is None
                            else validation.non_negative_int("context_dim", context_dim))
        self.forget_bias = _finite_float("forget_bias", forget_bias)
        self.min_scale = validation.non_negative_float("min_scale", min_scale)
        self.base = DiagonalGaussianPosterior(self.latent_dim, min_scale=self.min_scale)
        self.steps = [flows.MADE(self.latent_dim, self.flow_hidden, self.context_dim,
                           reverse=bool(t % 2), name=f"made_{t}")
                      for t in range(self.flow_steps)]

    def build(self, input_shape=None):
        if not self.base.built:
            self.base.build((None, self.base.params_size()))
        for made in self.steps:
            if not made.built:
                made.build()
        self.built = True

    def params_size(self):
        return 2 * self.latent_dim + self.context_dim

    def bijector(self, context=None):
        """The flow `z_0 -> z_T` as a `tfb.Chain` of IAF steps (given the context `[B, c]`)."""
        steps = [flows.IAFStep(made, context, self.forget_bias, name=f"iaf_step_{t}")
                 for t, made in enumerate(self.steps)]
        return tfb.Chain(steps[::-1])  # Chain applies its last bijector first

    def call(self, params):
        params = self._params(params)
        base_params, context = tf.split(
            params, [2 * self.latent_dim, self.context_dim], axis=-1)
        base = self.base(base_params)
        return flows.FlowDistribution(base, self.bijector(context if self.context_dim else None))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "flow_steps": self.flow_steps, "flow_hidden": list(self.flow_hidden),
                "context_dim": self.context_dim, "forget_bias": self.forget_bias,
                "min_scale": self.min_scale}


def _finite_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)


POSTERIORS = {
    "diagonal": DiagonalGaussianPosterior,
    "full": FullCovariancePosterior,
    "point_mass": PointMassPosterior,
    "iaf": IAFPosterior,
}


def get_posterior(identifier, latent_dim, scale=None, **kwargs):
    """Returns a posterior head from a name ("diagonal", "full", "point_mass", "iaf") or a head.

    `scale` (None: the head's default) is passed on to heads that have a
    `scales` choice (`DiagonalGaussianPosterior`) and refused for the others.
    """
    if isinstance(identifier, Head):
        if scale is not None:
            raise ValueError("A posterior head instance carries its own parameterisation: give "
                             f"`scale` to the head. Received: posterior={identifier!r}, "
                             f"scale={scale!r}")
        return identifier
    if identifier not in POSTERIORS:
        raise ValueError(
            f"Unknown posterior: expected one of {sorted(POSTERIORS)}. "
            f"Received: posterior={identifier!r}"
        )
    cls = POSTERIORS[identifier]
    if scale is not None:
        with_scale = sorted(n for n, c in POSTERIORS.items() if getattr(c, "scales", None))
        if not getattr(cls, "scales", None):
            raise ValueError(
                f"`scale` is an option of posterior={'/'.join(repr(n) for n in with_scale)} "
                f"only. Received: posterior={identifier!r}, scale={scale!r}")
        kwargs["scale"] = scale
    return cls(latent_dim, **kwargs)


# The likelihood heads live in keras_vae/likelihoods.py (both kinds extend
# keras_vae.heads.Head); they are importable from here too, as one head contract.
from keras_vae.likelihoods import (  # noqa: E402
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    LearnedGaussianLikelihood,
    get_likelihood,
)
