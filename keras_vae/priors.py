"""Priors p(z): the standard normal and a learnable mixture of Gaussians.

A prior is a Keras layer (so its weights are tracked, trained and saved) whose
`distribution()` method returns a batchless `tfd.Distribution` with event shape
`[latent_dim]`.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import validation

tfd = tfp.distributions

__all__ = ["StandardNormalPrior", "MixturePrior", "PRIORS", "get_prior"]


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


# The registry of named priors: name -> class built as `cls(latent_dim)`. A name
# added here is a valid `prior=` argument, `--prior` flag value and config value.
PRIORS = {
    "standard_normal": StandardNormalPrior,
    "mixture": MixturePrior,
}


def get_prior(identifier, latent_dim):
    """A prior layer from `None` (standard normal), a name in `PRIORS`, or a prior layer as is."""
    if identifier is None:
        identifier = "standard_normal"
    if isinstance(identifier, str) and identifier in PRIORS:
        return PRIORS[identifier](latent_dim)
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
