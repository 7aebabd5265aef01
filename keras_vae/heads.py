"""The head contract shared by posterior and likelihood heads, and reparameterized draws.

A head is a float32 Keras layer mapping network outputs to a TFP distribution:
`head.params_size()` numbers per example in, a `tfd.Distribution` out
(`keras_vae.distributions` holds the posteriors, `keras_vae.likelihoods` the
likelihoods). Reparameterized Gaussian draws use the Philox stateless
generator explicitly (XLA lowers TensorFlow's default stateless generator to a
slow kernel on CPU).
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["Head", "stateless_normal", "reparameterized_sample"]


def stateless_normal(shape, seed, dtype=tf.float32):
    """Standard normal noise from a stateless `seed` (int32[2]) via Philox."""
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")


def _noise(shape, seed, dtype):
    """`stateless_normal(shape, seed)`; with per-example seeds `[B, 2]` (shape `[L, B, ...]`)
    each example b draws its own `[L, ...]` noise from `seed[b]`, so its draw does not
    depend on the batch it is in."""
    if seed.shape.rank != 2:
        return stateless_normal(shape, seed, dtype)
    row = tf.concat([shape[:1], shape[2:]], axis=0)
    per_example = tf.map_fn(lambda s: stateless_normal(row, s, dtype), seed,
                            fn_output_signature=dtype)           # [B, L, ...]
    rank = tf.size(shape)
    perm = tf.concat([[1, 0], tf.range(2, rank)], axis=0)
    return tf.transpose(per_example, perm)


def reparameterized_sample(distribution, num_samples, seed):
    """Draws `num_samples` reparameterized samples, `z = loc + scale @ eps`.

    Args:
      distribution: a posterior from a head of this module (or any TFP
        distribution; non-Gaussian ones fall back to `distribution.sample`).
      num_samples: Python int or scalar int tensor L.
      seed: stateless seed, int32 tensor of shape [2]; or `[B, 2]`, one seed per
        example of a batch shape `[B]` (Gaussian posteriors: each example's
        draw is then independent of the batch it comes in).

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
        return loc + scale * _noise(shape, tf.convert_to_tensor(seed), loc.dtype)
    if isinstance(distribution, tfd.MultivariateNormalLinearOperator):
        loc = distribution.loc
        shape = tf.concat([[num_samples], tf.shape(loc)], axis=0)
        eps = _noise(shape, tf.convert_to_tensor(seed), loc.dtype)
        return loc + distribution.scale.matvec(eps)
    if isinstance(distribution, tfd.VectorDeterministic):  # point mass: z = loc
        loc = distribution.loc
        return tf.broadcast_to(loc, tf.concat([[num_samples], tf.shape(loc)], axis=0))
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 2:  # other distributions: one seed for the batch
        seed = seed[0]
    return distribution.sample(num_samples, seed=seed)


class Head(keras.layers.Layer):
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
