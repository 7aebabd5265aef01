"""Imputation by importance sampling: the conditional mean of the missing entries (SNIS)
and multiple imputation by sampling-importance-resampling (SIR).

Both use the encoder as proposal and weigh each latent draw by the observed
entries only (Mattei & Frellsen, 2019, section 4). They are written as plain
TensorFlow code on a batch, so `keras_vae.applications.impute` (in a cached
`tf.function`) and the exported `impute` signature
(`keras_vae.export.signatures`) run the same graph and agree to float32
rounding for the same seed.

#### Mathematical details

```none
z_l ~ q(z | x_o),   log w_l = log p(x_o | z_l) + log p(z_l) - log q(z_l | x_o),  l = 1..L
single (SNIS):   E[x_m | x_o] ~ sum_l softmax(log w)_l E[p(x_m | z_l)]
multiple (SIR):  x_m^(j) ~ p(x_m | z_(l_j)),  l_j ~ Categorical(softmax(log w)),  j = 1..M
```

The L samples are processed in chunks of C inside a `tf.while_loop`: SNIS
keeps a running maximum, sum of weights and weighted sum of means; SIR draws
each resampling index by the Gumbel-max trick over the chunks (the arg-max
of `log w_l + g_lj` with Gumbel noise `g` is a draw from the categorical), so
memory is O(C x B x max(D, M)) whatever L is. Sample l's latent noise comes
from `fold_in(seed, l)`, so the SNIS mean does not depend on C.
"""

import numpy as np
import tensorflow as tf

from keras_vae import objectives
from keras_vae.access import decode, encode, require_prior
from keras_vae.heads import reparameterized_sample

__all__ = ["importance_mean", "importance_draws"]


def _latent_draws(posterior, seed, ks):
    """`[C, B, d]` reparameterized draws, draw k from `fold_in(seed, k)`."""
    def draw(k):
        return reparameterized_sample(
            posterior, 1, tf.random.experimental.stateless_fold_in(seed, k))[0]
    return tf.map_fn(draw, ks, fn_output_signature=tf.float32, parallel_iterations=16)


def _chunk_weights(model, posterior, prior, x, mask, seed, ks, num_samples):
    """(likelihood p(x|z) with batch `[C, B]`, log weights `[C, B]`) for chunk `ks`."""
    z = _latent_draws(posterior, seed, ks)
    likelihood = decode(model, z)
    log_w = (objectives.masked_log_prob(likelihood, x, mask)
             + prior.log_prob(z) - posterior.log_prob(z))
    return likelihood, tf.where((ks < num_samples)[:, None], log_w, -np.inf)


def _prepare(model, x, mask, x_encoder):
    x = tf.convert_to_tensor(x, tf.float32)
    mask = tf.cast(mask, tf.bool)
    x_obs = tf.where(mask, x, tf.zeros_like(x))
    if x_encoder is None:  # the model's own fill (encoder.missing_fill) for missing entries
        x_encoder = tf.where(mask, x, tf.fill(tf.shape(x), tf.constant(np.nan, tf.float32)))
    posterior = encode(model, x_encoder)
    return x_obs, mask, posterior, require_prior(model, "importance imputation")


def importance_mean(model, x, mask, seed, num_samples, chunk_size, x_encoder=None):
    """Self-normalised importance estimate of `E[x_m | x_o]`, observed entries kept.

    Args:
      model: a VAE (encoder, decoder, prior); its likelihood must factorise.
      x: float32 `[B] + data_shape`; entries under `~mask` are ignored (NaN allowed).
      mask: bool like `x`, True where observed.
      seed: int32 `[2]` stateless seed.
      num_samples: Python int L.
      chunk_size: Python int C (samples decoded at once), 1 <= C <= L.
      x_encoder: what the encoder sees, `[B] + data_shape`; default: `x` with
        missing entries as NaN, which a MIWAE model fills with
        `encoder.missing_fill`.

    Returns:
      float32 `[B] + data_shape`: `x` where observed, the estimate elsewhere.
    """
    x_obs, mask, posterior, prior = _prepare(model, x, mask, x_encoder)
    num_chunks = -(-num_samples // chunk_size)
    event_rank = len(x_obs.shape) - 1

    def body(j, top, total, weighted):
        ks = j * chunk_size + tf.range(chunk_size)
        likelihood, log_w = _chunk_weights(model, posterior, prior, x_obs, mask, seed, ks,
                                           num_samples)
        new_top = tf.maximum(top, tf.reduce_max(log_w, axis=0))              # [B]
        rescale = tf.exp(top - new_top)
        w = tf.exp(log_w - new_top)                                           # [C, B]
        w_event = tf.reshape(w, tf.concat([tf.shape(w), [1] * event_rank], 0))
        mean = tf.cast(likelihood.mean(), tf.float32)                         # [C, B, ...]
        rescale_event = tf.reshape(rescale, tf.concat([tf.shape(rescale), [1] * event_rank],
                                                      0))
        return (j + 1, new_top, total * rescale + tf.reduce_sum(w, axis=0),
                weighted * rescale_event + tf.reduce_sum(w_event * mean, axis=0))

    batch = tf.shape(x_obs)[:1]
    init = (tf.constant(0), tf.fill(batch, tf.constant(-np.inf, tf.float32)),
            tf.zeros(batch, tf.float32), tf.zeros_like(x_obs))
    _, _, total, weighted = tf.while_loop(lambda j, *_: j < num_chunks, body, init)
    total = tf.reshape(total, tf.concat([tf.shape(total), [1] * event_rank], 0))
    return tf.where(mask, x_obs, weighted / total)


def importance_draws(model, x, mask, seed, num_samples, num_imputations, chunk_size,
                     x_encoder=None):
    """`num_imputations` completed copies of `x` by sampling-importance-resampling.

    Args: as `importance_mean`, plus `num_imputations` M (Python int).

    Returns:
      float32 `[M, B] + data_shape`: `x` where observed; each copy's missing
      entries are one draw of `p(x_m | z)` at a latent resampled with
      probabilities proportional to the importance weights.
    """
    x_obs, mask, posterior, prior = _prepare(model, x, mask, x_encoder)
    num_chunks = -(-num_samples // chunk_size)
    m = num_imputations
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, -1), 2)

    def body(j, best, chosen):
        ks = j * chunk_size + tf.range(chunk_size)
        likelihood, log_w = _chunk_weights(model, posterior, prior, x_obs, mask, seed, ks,
                                           num_samples)
        draws = tf.cast(likelihood.sample(
            seed=tf.random.experimental.stateless_fold_in(seeds[0], j)), tf.float32)
        u = tf.random.stateless_uniform(
            tf.concat([tf.shape(log_w), [m]], 0),
            tf.random.experimental.stateless_fold_in(seeds[1], j),
            minval=1e-12, maxval=1.0, alg="philox")
        score = log_w[:, :, None] - tf.math.log(-tf.math.log(u))             # [C, B, M]
        index = tf.argmax(score, axis=0, output_type=tf.int32)               # [B, M]
        top = tf.reduce_max(score, axis=0)
        rank = len(draws.shape)
        per_row = tf.transpose(draws, [1, 0] + list(range(2, rank)))         # [B, C, ...]
        picked = tf.gather(per_row, index, axis=1, batch_dims=1)             # [B, M, ...]
        better = top > best
        better_event = tf.reshape(better, tf.concat([tf.shape(better), [1] * (rank - 2)], 0))
        return j + 1, tf.where(better, top, best), tf.where(better_event, picked, chosen)

    shape = tf.shape(x_obs)
    init = (tf.constant(0), tf.fill(tf.stack([shape[0], m]), tf.constant(-np.inf)),
            tf.zeros(tf.concat([shape[:1], [m], shape[1:]], 0), tf.float32))
    _, _, chosen = tf.while_loop(lambda j, *_: j < num_chunks, body, init)
    rank = len(x_obs.shape) + 1
    chosen = tf.transpose(chosen, [1, 0] + list(range(2, rank)))             # [M, B, ...]
    return tf.where(mask[None], x_obs[None], chosen)
