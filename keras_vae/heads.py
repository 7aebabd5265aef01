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

__all__ = ["Head", "stateless_normal", "indexed_normal", "reparameterized_sample"]


def stateless_normal(shape, seed, dtype=tf.float32):
    """Standard normal noise from a stateless `seed` (int32[2]) via Philox."""
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")


def indexed_normal(shape, seed, first_sample, dtype=tf.float32):
    """Standard normal noise `shape = [L, ...]` whose row l is row `first_sample + l` of
    one Philox stream keyed by `seed` (int32[2]).

    A row's numbers depend on (seed, its index) only, not on how many rows are
    drawn at once, and all L come from one op (the K=5000 log-likelihood's
    chunks: a per-row `stateless_normal` in `tf.map_fn` cost twice as much).
    Philox gives 4 normals per counter step, so each row takes `ceil(n / 4)`
    steps (n numbers per row; the few padding numbers of a row not a multiple
    of 4 are dropped), row i starting `i * ceil(n / 4)` steps into the stream.
    With `first_sample=0` and n a multiple of 4 it is
    `stateless_normal(shape, seed)` itself.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    n = tf.reduce_prod(shape[1:])
    steps = (n + 3) // 4
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    offset = tf.cast(first_sample, tf.uint64) * tf.cast(steps, tf.uint64)
    counter = counter + tf.stack([offset, tf.constant(0, tf.uint64)])
    rows = tf.raw_ops.StatelessRandomNormalV2(
        shape=tf.stack([shape[0], 4 * steps]), key=key, counter=counter,
        alg=tf.random.Algorithm.PHILOX.value, dtype=dtype)
    return tf.reshape(rows[:, :n], shape)


def _noise(shape, seed, dtype, first_sample=None):
    """`stateless_normal(shape, seed)`; with per-example seeds `[B, 2]` (shape `[L, B, ...]`)
    each example b draws its own `[L, ...]` noise from `seed[b]`, so its draw does not
    depend on the batch it is in. With `first_sample`, the L samples are rows
    `first_sample ...` of `indexed_normal`'s stream."""
    def draw(shape, seed):
        if first_sample is None:
            return stateless_normal(shape, seed, dtype)
        return indexed_normal(shape, seed, first_sample, dtype)

    if seed.shape.rank != 2:
        return draw(shape, seed)
    row = tf.concat([shape[:1], shape[2:]], axis=0)
    per_example = tf.map_fn(lambda s: draw(row, s), seed,
                            fn_output_signature=dtype)           # [B, L, ...]
    rank = tf.size(shape)
    perm = tf.concat([[1, 0], tf.range(2, rank)], axis=0)
    return tf.transpose(per_example, perm)


def reparameterized_sample(distribution, num_samples, seed, first_sample=None):
    """Draws `num_samples` reparameterized samples, `z = loc + scale @ eps`.

    Args:
      distribution: a posterior from a head of this module (or any TFP
        distribution; non-Gaussian ones fall back to `distribution.sample`).
      num_samples: Python int or scalar int tensor L.
      seed: stateless seed, int32 tensor of shape [2]; or `[B, 2]`, one seed per
        example of a batch shape `[B]` (Gaussian posteriors: each example's
        draw is then independent of the batch it comes in).
      first_sample: None, or a scalar int tensor i: the draws are samples
        `i, ..., i + L - 1` of the seed's sequence, each depending on (seed,
        its index) only, so drawing K samples in chunks gives the same K
        whatever the chunks (Gaussians: `indexed_normal`; other
        distributions: one `sample` per index, seeded by `(seed, index)`).

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
        return loc + scale * _noise(shape, tf.convert_to_tensor(seed), loc.dtype, first_sample)
    if isinstance(distribution, tfd.MultivariateNormalLinearOperator):
        loc = distribution.loc
        shape = tf.concat([[num_samples], tf.shape(loc)], axis=0)
        eps = _noise(shape, tf.convert_to_tensor(seed), loc.dtype, first_sample)
        return loc + distribution.scale.matvec(eps)
    if isinstance(distribution, tfd.VectorDeterministic):  # point mass: z = loc
        loc = distribution.loc
        return tf.broadcast_to(loc, tf.concat([[num_samples], tf.shape(loc)], axis=0))
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 2:  # other distributions: one seed for the batch
        seed = seed[0]
    if first_sample is not None:
        return tf.map_fn(
            lambda i: distribution.sample(seed=tf.random.experimental.stateless_fold_in(seed, i)),
            first_sample + tf.range(num_samples), fn_output_signature=distribution.dtype)
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
