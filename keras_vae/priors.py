"""Priors p(z): the standard normal, a learnable mixture of Gaussians, the VampPrior.

A prior is a Keras layer (so its weights are tracked, trained and saved) whose
`distribution()` method returns a batchless `tfd.Distribution` with event shape
`[latent_dim]`. The VampPrior is built on the model's encoder: the model hands
it over with `get_prior(..., encoder=...)` (the prior keeps a reference, not a
copy, so the encoder's weights are saved once, under the model's `encoder`).
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import validation

tfd = tfp.distributions

__all__ = ["StandardNormalPrior", "MixturePrior", "VampPrior", "VampMixture", "PRIORS",
           "get_prior"]

# Floats per tensor in the VampPrior's log-density ([rows, K, d] per chunk): 16 MB.
_ELEMENT_BUDGET = 2 ** 22


class _Prior(keras.layers.Layer):
    def __init__(self, latent_dim, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)

    def build(self, input_shape=None):
        self.built = True

    def distribution(self):
        raise NotImplementedError

    def call(self, inputs=None):
        return self.distribution()

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="keras_vae")
class StandardNormalPrior(_Prior):
    """`p(z) = N(0, I)`: `tfd.Independent(tfd.Normal(0, 1))`, event shape `[latent_dim]`.

    With a diagonal Gaussian posterior the KL term has the closed form
    `KL = 1/2 sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)`.
    """

    def distribution(self):
        zeros = tf.zeros([self.latent_dim], tf.float32)
        return tfd.Independent(tfd.Normal(zeros, 1.0), reinterpreted_batch_ndims=1)


@keras.saving.register_keras_serializable(package="keras_vae")
class MixturePrior(_Prior):
    """Learnable mixture of `num_components` diagonal Gaussians (a VampPrior-free MoG prior).

    #### Mathematical details

    ```none
    p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)),   pi = softmax(w),  s_k = softplus(r_k) + 1e-4
    ```

    KL(q || p) has no closed form for a mixture; the VAE estimates it by Monte
    Carlo with the same reparameterized samples as the reconstruction term.

    Args:
      latent_dim: size of z.
      num_components: K, default 10. Means are initialised from N(0, 1) with
        `seed`, scales at 1, weights uniform.
    """

    def __init__(self, latent_dim, num_components=10, seed=0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_components = validation.positive_int("num_components", num_components)
        self.seed = int(seed)

    def build(self, input_shape=None):
        k, d = self.num_components, self.latent_dim
        self.locs = self.add_weight(
            name="locs", shape=(k, d), dtype="float32",
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
        )
        self.raw_scales = self.add_weight(
            name="raw_scales", shape=(k, d), dtype="float32",
            initializer=keras.initializers.Constant(0.5413248546129181),  # softplus^-1(1)
        )
        self.logits = self.add_weight(
            name="logits", shape=(k,), dtype="float32", initializer="zeros"
        )
        self.built = True

    def distribution(self):
        components = tfd.Independent(
            tfd.Normal(self.locs, tf.nn.softplus(self.raw_scales) + 1e-4),
            reinterpreted_batch_ndims=1,
        )
        return tfd.MixtureSameFamily(tfd.Categorical(logits=self.logits), components)

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components,
                "seed": self.seed}


def _diagonal_mixture_log_prob(z, normal, log_w):
    """`log sum_k w_k N(z; mu_k, diag(s_k^2))` for `z [..., d]`, `normal` of batch `[K, d]`.

    The quadratic form expanded into two `[rows, d] x [d, K]` matmuls,
    `-1/2 z^2 . s^-2 + z . (mu s^-2) - 1/2 mu^2 . s^-2 - sum log s - d/2 log 2 pi`,
    in float64 (the expansion subtracts terms of size (z / s)^2 that cancel for
    a close component), so memory is `[rows, K]`, not `[rows, K, d]`, and no
    chunking is needed: for the K=5000 log-likelihood of a 500-component
    VampPrior the broadcast form was most of the evaluation time.
    """
    loc = tf.cast(tf.convert_to_tensor(normal.loc), tf.float64)
    scale = tf.broadcast_to(tf.cast(tf.convert_to_tensor(normal.scale), tf.float64),
                            tf.shape(loc))
    inv_var = 1.0 / tf.square(scale)                                          # [K, d]
    d = tf.cast(tf.shape(loc)[-1], tf.float64)
    const = (-0.5 * tf.reduce_sum(tf.square(loc) * inv_var, -1) - tf.reduce_sum(
        tf.math.log(scale), -1) - 0.5 * d * np.log(2.0 * np.pi))                # [K]
    lead = tf.shape(z)[:-1]
    flat = tf.reshape(tf.cast(z, tf.float64), [-1, tf.shape(loc)[-1]])        # [rows, d]
    log_n = (-0.5 * tf.matmul(tf.square(flat), inv_var, transpose_b=True)
             + tf.matmul(flat, loc * inv_var, transpose_b=True) + const)      # [rows, K]
    out = tf.reduce_logsumexp(log_n + tf.cast(log_w, tf.float64), axis=-1)
    return tf.reshape(tf.cast(out, tf.float32), lead)


class VampMixture(tfd.MixtureSameFamily):
    """`tfd.MixtureSameFamily` of the VampPrior, with a memory-bounded `log_prob` and a
    sampler that draws one component per sample.

    `log_prob(z)` for `z [..., d]`: for diagonal Gaussian components (the
    keras_vae encoders' posteriors), two matmuls (`_diagonal_mixture_log_prob`);
    otherwise it evaluates the K components on rows of `z` in chunks of at
    most `2**22 / (K d)` rows (a `[rows, K, d]` tensor of 16 MB at most), so
    an IWAE chunk `[C, B, d]` against 500 components stays bounded.
    `sample(n)` draws `k ~ Categorical`, then `z ~ q(z|u_k)` with the
    component's parameters gathered (`[n, d]` memory, not `[n, K, d]`).
    """

    def __init__(self, mixture_distribution, components_distribution, reparameterize=False,
                 validate_args=False, allow_nan_stats=True, name="VampMixture"):
        parameters = dict(locals())
        super().__init__(mixture_distribution, components_distribution,
                         reparameterize=reparameterize, validate_args=validate_args,
                         allow_nan_stats=allow_nan_stats, name=name)
        self._parameters = parameters

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return tfd.MixtureSameFamily._parameter_properties(dtype, num_classes=num_classes)

    def _log_prob(self, x):
        comps = self.components_distribution
        log_w = tf.math.log_softmax(self.mixture_distribution.logits_parameter())  # [K]
        x = tf.convert_to_tensor(x, tf.float32)
        if isinstance(comps, tfd.Independent) and isinstance(comps.distribution, tfd.Normal):
            return _diagonal_mixture_log_prob(x, comps.distribution, log_w)
        d = int(self.event_shape[-1])
        k = int(comps.batch_shape[-1])
        lead = tf.shape(x)[:-1]
        flat = tf.reshape(x, [-1, d])
        rows = max(1, _ELEMENT_BUDGET // (k * d))

        def chunk(z):  # [c, d] -> [c]
            return tf.reduce_logsumexp(comps.log_prob(z[:, None, :]) + log_w, axis=-1)

        if flat.shape[0] is not None and flat.shape[0] <= rows:
            out = chunk(flat)
        else:
            n = tf.shape(flat)[0]
            size = tf.minimum(rows, tf.maximum(n, 1))  # a small batch is not padded to `rows`
            num = (n + size - 1) // size
            padded = tf.pad(flat, [[0, num * size - n], [0, 0]])
            out = tf.map_fn(chunk, tf.reshape(padded, [num, size, d]),
                            fn_output_signature=tf.float32)
            out = tf.reshape(out, [-1])[:n]
        return tf.reshape(out, lead)

    def _sample_n(self, n, seed=None):
        seed_k, seed_z = tfp.random.split_seed(seed, n=2)
        k = self.mixture_distribution.sample(n, seed=seed_k)            # [n]
        comps = self.components_distribution
        if isinstance(comps, tfd.Independent) and isinstance(comps.distribution, tfd.Normal):
            base = comps.distribution
            loc = tf.convert_to_tensor(base.loc)
            scale = tf.broadcast_to(base.scale, tf.shape(loc))
            chosen = tfd.Normal(tf.gather(loc, k), tf.gather(scale, k))
            return tfd.Independent(chosen, 1).sample(seed=seed_z)
        if isinstance(comps, tfd.MultivariateNormalTriL):
            chosen = tfd.MultivariateNormalTriL(tf.gather(comps.loc, k),
                                                tf.gather(comps.scale.to_dense(), k))
            return chosen.sample(seed=seed_z)
        return super()._sample_n(n, seed=seed)


@keras.saving.register_keras_serializable(package="keras_vae")
class VampPrior(_Prior):
    """The VampPrior (Tomczak & Welling, 2018): a mixture of the encoder's posteriors
    at `num_components` learned pseudo-inputs.

    #### Mathematical details

    ```none
    p(z) = 1/K sum_k q(z | u_k),     u_k = c(r_k)  (K pseudo-inputs, data shape)
    c = clip to the likelihood's support [low, high]     pseudo_inputs="hardtanh"
        (for [0, 1] data the paper's hardtanh(0, 1))
    c = identity                                         pseudo_inputs="none"
    r_k ~ N(low + 0.05 (high - low), 0.01 (high - low))  hardtanh (paper: N(0.05, 0.01))
    r_k ~ N(0, 0.01)                                     none
    ```
    `pseudo_inputs="auto"` (default) picks "hardtanh" when the decoder's
    likelihood has a bounded support (Bernoulli, continuous Bernoulli: [0, 1])
    and "none" on the real line (Gaussian likelihoods). `initialize_from(x)`
    sets the pseudo-inputs to K training examples instead.

    KL(q || p) has no closed form: the VAE estimates it by Monte Carlo (also
    with `analytic_kl=True`, which falls back). The density runs the model's
    encoder on the pseudo-inputs (the prior holds a reference to it, set by the
    model; nothing is duplicated in the saved file). `log_prob` is
    memory-bounded (see `VampMixture`); `sample` picks a component, then
    draws from `q(z|u_k)`.

    Args:
      num_components: K, default 500 (the paper's value).
      latent_dim: None (default: the encoder's) or the encoder's latent size.
      pseudo_inputs: "auto", "hardtanh" or "none", see above.
      seed: seed of the initialisation of the pseudo-inputs.

    Raises:
      ValueError / TypeError: for bad arguments; when attached to an encoder
        without a fixed input shape, a conditional encoder, or a posterior
        whose density at arbitrary z needs more than a closed form (IAF,
        point mass).

    Example:
      >>> vae = VAE(MLPEncoder(8), MLPDecoder((8, 8, 1)), prior=VampPrior(50))
      >>> vae = VAE(MLPEncoder(8), MLPDecoder((8, 8, 1)), prior="vamp")   # K = 500
    """

    MODES = ("auto", "hardtanh", "none")

    def __init__(self, num_components=500, latent_dim=None, pseudo_inputs="auto", seed=0,
                 **kwargs):
        self.num_components = validation.positive_int("num_components", num_components)
        super().__init__(1 if latent_dim is None else latent_dim, **kwargs)
        self.latent_dim = None if latent_dim is None else self.latent_dim
        self.pseudo_inputs_mode = validation.choice("pseudo_inputs", pseudo_inputs, self.MODES)
        self.seed = validation.seed(seed)
        self.data_shape = None
        self.support = None

    def attach(self, encoder, data_shape, support=None):
        """Binds the prior to the model's `encoder` for inputs of `data_shape`.

        Args:
          encoder: the model's encoder (a keras_vae encoder layer).
          data_shape: the data shape after the batch axis (fully known).
          support: `(low, high)` of the decoder's likelihood, or None.

        Raises:
          ValueError: see the class docstring.
        """
        latent_dim = getattr(encoder, "latent_dim", None)
        if self.latent_dim is not None and self.latent_dim != latent_dim:
            raise ValueError(
                f"The prior's latent_dim must match the encoder's ({latent_dim}). "
                f"Received: prior.latent_dim={self.latent_dim}")
        spec = getattr(encoder, "input_spec_shape", None) or data_shape
        if spec is None or any(d is None for d in tuple(spec)):
            raise ValueError(
                "VampPrior needs an encoder with a fixed input shape (its pseudo-inputs "
                f"have the data's shape). Received: input shape {spec!r}")
        if getattr(encoder, "condition_dim", None):
            raise ValueError(
                "VampPrior is not supported with a conditional encoder q(z|x, y) (its "
                "pseudo-inputs would need labels). Received: encoder.condition_dim="
                f"{encoder.condition_dim}")
        head = getattr(encoder, "head", None)
        if type(head).__name__ in ("IAFPosterior", "PointMassPosterior"):
            raise ValueError(
                "VampPrior needs a posterior with a closed-form density at any z "
                "(posterior='diagonal' or 'full'); an IAF posterior would need its "
                "sequential inverse at every pseudo-input. Received: encoder.head="
                f"{type(head).__name__}")
        if self.built and tuple(spec) != self.data_shape:
            raise ValueError(f"This VampPrior was built for data of shape {self.data_shape}. "
                             f"Received: data shape {tuple(spec)}")
        self.latent_dim = latent_dim
        self.data_shape = tuple(int(d) for d in spec)
        self.support = None if support is None else (float(support[0]), float(support[1]))
        object.__setattr__(self, "_encoder_ref", encoder)  # a reference, not a tracked child

    @property
    def mode(self):
        """The resolved pseudo-input constraint, "hardtanh" or "none"."""
        if self.pseudo_inputs_mode != "auto":
            return self.pseudo_inputs_mode
        bounded = self.support is not None and all(np.isfinite(self.support))
        return "hardtanh" if bounded else "none"

    def _bounds(self):
        if self.mode == "hardtanh":
            if self.support is None or not all(np.isfinite(self.support)):
                raise ValueError(
                    "pseudo_inputs='hardtanh' needs a likelihood with a bounded support "
                    f"such as [0, 1]. Received: support={self.support}")
            return self.support
        return None

    def build(self, input_shape=None):
        if self.data_shape is None:
            raise ValueError("A VampPrior is built by its model (VAE(enc, dec, "
                             "prior=VampPrior(...))); it has no encoder yet.")
        bounds = self._bounds()
        if bounds is None:
            init = keras.initializers.RandomNormal(0.0, 0.01, seed=self.seed % 2 ** 31)
        else:
            low, high = bounds
            init = keras.initializers.RandomNormal(low + 0.05 * (high - low),
                                                   0.01 * (high - low), seed=self.seed % 2 ** 31)
        self.raw_pseudo_inputs = self.add_weight(
            name="raw_pseudo_inputs", shape=(self.num_components,) + self.data_shape,
            dtype="float32", initializer=init)
        self.built = True

    def get_build_config(self):
        """None: the model builds the prior after attaching it to the encoder."""
        return None

    def pseudo_inputs(self):
        """The pseudo-inputs `u`, float32 `[K] + data_shape`, inside the data's range."""
        bounds = self._bounds()
        raw = tf.convert_to_tensor(self.raw_pseudo_inputs)
        return raw if bounds is None else tf.clip_by_value(raw, bounds[0], bounds[1])

    def initialize_from(self, x, seed=0):
        """Sets the pseudo-inputs to K examples of `x` (drawn without replacement when
        `len(x) >= K`), the data-based initialisation of the paper.

        Args:
          x: array `[N] + data_shape` (in the data's range).
          seed: integer seed of the choice of examples.

        Raises:
          ValueError: for data of another shape.
        """
        x = np.asarray(x, dtype="float32")
        if tuple(x.shape[1:]) != self.data_shape or len(x) == 0:
            raise ValueError(f"Expected examples of shape [N] + {self.data_shape}. "
                             f"Received: x.shape={x.shape}")
        rng = np.random.default_rng(validation.seed(seed))
        rows = rng.choice(len(x), self.num_components, replace=len(x) < self.num_components)
        self.raw_pseudo_inputs.assign(x[rows])

    def distribution(self):
        encoder = getattr(self, "_encoder_ref", None)
        if encoder is None:
            raise ValueError("This VampPrior has no encoder: use it as the prior of a "
                             "model, VAE(enc, dec, prior=VampPrior(...)).")
        q = encoder(self.pseudo_inputs(), training=False)               # batch [K]
        logits = tf.zeros([self.num_components], tf.float32)
        return VampMixture(tfd.Categorical(logits=logits), q)

    def get_config(self):
        config = super().get_config()
        config.update({"num_components": self.num_components,
                       "pseudo_inputs": self.pseudo_inputs_mode, "seed": self.seed})
        return config


# The registry of named priors: name -> class built as `cls(latent_dim)`. A name
# added here is a valid `prior=` argument, `--prior` flag value and config value.
PRIORS = {
    "standard_normal": StandardNormalPrior,
    "mixture": MixturePrior,
    "vamp": VampPrior,
}


def get_prior(identifier, latent_dim, encoder=None, data_shape=None, support=None):
    """A prior layer from `None` (standard normal), a name in `PRIORS`, or a prior layer as is.

    Priors built on the encoder (`VampPrior`) are attached to `encoder` for
    inputs of `data_shape` (`support`: the likelihood's `(low, high)` or None).
    """
    if identifier is None:
        identifier = "standard_normal"
    if isinstance(identifier, str) and identifier in PRIORS:
        identifier = PRIORS[identifier](latent_dim=latent_dim)
    if isinstance(identifier, VampPrior):
        if encoder is None:
            raise ValueError("A VampPrior needs the model's encoder. Received: encoder=None")
        identifier.attach(encoder, data_shape, support)
        return identifier
    if isinstance(identifier, _Prior):
        if identifier.latent_dim != latent_dim:
            raise ValueError(
                f"The prior's latent_dim must match the encoder's ({latent_dim}). "
                f"Received: prior.latent_dim={identifier.latent_dim}"
            )
        return identifier
    raise ValueError(
        f"`prior` must be None, one of {sorted(PRIORS)} or a keras_vae prior "
        f"layer. Received: prior={identifier!r}"
    )
