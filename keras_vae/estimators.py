"""Estimators of log p(x) and of the ELBO terms, per example, in nats.

`log_likelihood` is the importance-sampled IWAE-K estimate of log p(x) with
the encoder as proposal; `elbo_terms` gives the ELBO, its reconstruction
term and the KL. For a model trained on incomplete data (`objective="miwae"`)
NaN marks a missing entry and both estimate the observed part: log p(x_o).
Both need a model with a prior (see `keras_vae.access` for
what a model must expose), take numpy arrays `[N] + data_shape` and return
float64 numpy arrays `[N]`.

#### Mathematical details

```none
log p(x) ~ IWAE_K(x) = log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)
           ELBO = E[IWAE_1] <= E[IWAE_K] <= E[IWAE_5000] <= log p(x)
bits/dim = -log p(x) / (D log 2),  D = number of data dimensions
```

The K importance samples are processed in chunks of `chunk_size` inside one
`tf.function` per batch, keeping a running log-sum-exp over the chunks, so
memory is O(chunk_size x batch_size x D) whatever K is (`resolve_chunk_size`,
`sample_width`). The noise of sample k is drawn from the stateless seed
`fold_in(fold_in(seed, batch), k)`, so the estimate does not depend on
`chunk_size`, and the same seed and batch size give the same numbers. Each
compiled function is traced once per model and setting
(`keras_vae.access.cached_function`) and released with the model.

Example:

>>> ll = log_likelihood(vae, x_test, num_samples=5000)
>>> ll.log_px.mean(), ll.bits_per_dim.mean()       # nats/example, bits/dim
>>> elbo_terms(vae, x_test)["kl"].mean()
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from keras_vae import flows, objectives, resources, validation
from keras_vae.access import (
    allows_missing,
    batch_seed,
    cached_function,
    check_inputs,
    conditions,
    decode,
    decode_log_prob,
    encode,
    prior_distribution,
    require_prior,
)
from keras_vae.heads import reparameterized_sample

__all__ = [
    "LogLikelihood",
    "log_likelihood",
    "elbo_terms",
    "resolve_chunk_size",
    "sample_width",
    "weights_hook",
]

# Largest number of float32 elements one chunk may hold ([chunk, batch, width]).
_ELEMENT_BUDGET = 2 ** 22


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


def resolve_chunk_size(chunk_size, num_samples, batch_size, width):
    """Importance samples C decoded at once by `log_likelihood`.

    Args:
      chunk_size: the caller's C, or None for the largest C with
        C x batch_size x width <= 2**22 float32 elements (16 MB per tensor).
      num_samples: K; C is at most K.
      batch_size: examples per batch B (the actual one: min(B, N)).
      width: `sample_width(model, D)`, floats per sample and example of the
        largest tensor.

    Returns:
      int C in [1, K].

    Raises:
      ValueError / TypeError: for a chunk_size that is not a positive int.
    """
    if chunk_size is None:
        return max(1, min(num_samples, _ELEMENT_BUDGET // max(1, batch_size * width)))
    return min(validation.positive_int("chunk_size", chunk_size), num_samples)


def sample_width(model, num_dims):
    """Floats per sample and example of the largest tensor the estimators hold.

    The maximum of the likelihood's parameter count, the data dimensions D
    = `num_dims` and the latent dimension: `[C, B, width]` bounds every
    per-chunk tensor.
    """
    head = getattr(getattr(model, "decoder", None), "head", None)
    params = head.params_size() if hasattr(head, "params_size") else num_dims
    latent_dim = getattr(model, "latent_dim", 1) or 1
    return max(int(params), int(num_dims), int(latent_dim))


def weights_hook(model):
    """The model's `log_importance_weights(x, seeds [C, 2]) -> (log w, log p(x|z))` (each
    `[C, B]`), or None: models whose proposal is more than one `q(z|x)` (e.g.
    `keras_vae.HierarchicalVAE`, over every stochastic layer) score their own samples."""
    hook = getattr(model, "log_importance_weights", None)
    return hook if callable(hook) else None


def _decoder_widths(model):
    """The decoder's hidden widths when it has them (`[C x B, h]` activations per chunk)."""
    hidden = getattr(getattr(model, "decoder", None), "hidden", ())
    try:
        return tuple(int(h) for h in hidden)
    except (TypeError, ValueError):
        return ()


def _log_px_function(model_ref, data_shape, num_samples, chunk_size, condition_width=None):
    """A `tf.function (x [B] + data_shape, seed int32 [2]) -> log p(x) [B]`; with
    `condition_width` c, `(x, condition [B, c], seed) -> log p(x|c) [B]`."""
    num_chunks = -(-num_samples // chunk_size)
    log_chunk = math.log(chunk_size)
    signature = [tf.TensorSpec((None,) + data_shape, tf.float32), tf.TensorSpec([2], tf.int32)]
    if condition_width:
        signature.insert(1, tf.TensorSpec((None, condition_width), tf.float32))

    def batch_log_px(x, *args):
        model = model_ref()
        condition, seed = args if len(args) == 2 else (None, args[0])
        hook = weights_hook(model)
        posterior = None if hook else encode(model, x, condition)
        prior = prior_distribution(model)
        mask = None
        if allows_missing(model):  # log p(x_o): the observed entries only
            mask, x = objectives.observed_mask(x)

        # A flow posterior: draw its base, push the stacked draws through the flow once
        # (log q then comes from the bijector cache, not the sequential inverse).
        proposal, flow = (None, None) if hook else flows.split_flow(posterior)

        def body(j, acc):
            ks = j * chunk_size + tf.range(chunk_size)
            if hook is not None:  # the model's own proposal (e.g. HierarchicalVAE)
                log_w, _ = hook(x, tf.map_fn(
                    lambda k: tf.random.experimental.stateless_fold_in(seed, k), ks,
                    fn_output_signature=tf.int32))                        # [C, B]
            else:
                # sample k's noise depends on (seed, k) only, not on the chunk
                z = reparameterized_sample(proposal, chunk_size, seed,
                                           first_sample=j * chunk_size)  # [C, B, d]
                z = z if flow is None else flow.forward(z)
                log_w, _ = objectives.log_importance_weights(
                    x, posterior, lambda zz: decode(model, zz, condition), prior, z,
                    mask=mask, log_prob_fn=lambda zz: decode_log_prob(model, zz, x, condition))
            log_w = tf.where((ks < num_samples)[:, None], log_w, -np.inf)  # pad of last chunk
            chunk_lse = objectives.iwae_bound(log_w) + log_chunk          # logsumexp, [B]
            return j + 1, tf.reduce_logsumexp(tf.stack([acc, chunk_lse]), axis=0)

        acc = tf.fill(tf.shape(x)[:1], tf.constant(-np.inf, tf.float32))
        _, acc = tf.while_loop(lambda j, _: j < num_chunks, body, (tf.constant(0), acc))
        return acc - math.log(num_samples)

    return tf.function(batch_log_px, input_signature=signature)


def log_likelihood(model, x, num_samples=1000, batch_size=100, chunk_size=None, seed=0,
                   y=None, verbose=0):
    """Importance-sampled estimate of log p(x) per example (the IWAE-K bound).

    With K = `num_samples` samples from the encoder's posterior as proposal,
    the estimate is a lower bound in expectation that tightens as K grows
    (Burda et al., 2016); K=1 is an unbiased estimate of the ELBO, and with
    the exact posterior every K gives log p(x) exactly.

    A model with the `log_importance_weights` hook (see `weights_hook`, e.g.
    `keras_vae.HierarchicalVAE`, whose proposal is `q(z1|x) q(z2|z1)`) draws and
    scores its own samples; the chunking, seeds and memory bound are the same.

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
      y: for a conditional model (`keras_vae.ConditionalVAE`), the labels
        `[N]` (or condition vectors `[N, k]`): the estimate is then of
        log p(x|y), with `q(z|x, y)` as proposal. None for other models.
      verbose: 0 (default, quiet) or 1: a `keras.utils.Progbar` over the
        examples on stdout (K=5000 on 10,000 images takes minutes).

    Returns:
      `LogLikelihood` with `log_px` `[N]` (nats) and `bits_per_dim` `[N]`.

    Raises:
      ValueError: if the model has no prior, for bad arguments or data, for
        labels missing (conditional model), given (unconditional) or bad.
      keras_vae.resources.ResourceLimitError (a ValueError): for num_samples
        above `resources.MAX_IMPORTANCE_SAMPLES` (10^6) or a chunk that would
        not fit in memory.
      TypeError: for a non-integer seed or non-array data.

    Example:
      >>> ll = log_likelihood(vae, x_test[:100], num_samples=500)
      >>> ll.log_px.shape
      (100,)
    """
    require_prior(model, "log_likelihood")
    x = check_inputs(model, x)
    condition = conditions(model, y, len(x))
    num_samples = resources.check_importance_samples(num_samples)
    batch_size = validation.batch_size(batch_size)
    seed = validation.seed32(seed)
    verbose = validation.choice("verbose", verbose, (0, 1))
    data_shape = tuple(x.shape[1:])
    num_dims = int(np.prod(data_shape))
    width = sample_width(model, num_dims)
    chunk = resolve_chunk_size(chunk_size, num_samples, min(batch_size, len(x)), width)
    resources.check_memory(
        "one chunk of log_likelihood",
        resources.estimate_loglik_chunk_bytes(chunk, min(batch_size, len(x)), width,
                                              _decoder_widths(model)),
        "lower batch_size or chunk_size", chunk_size=chunk, batch_size=batch_size,
        num_samples=num_samples)
    width = None if condition is None else condition.shape[1]
    fn = cached_function(model, ("log_px", data_shape, num_samples, chunk, width),
                         lambda ref: _log_px_function(ref, data_shape, num_samples, chunk,
                                                      width))

    def batch(start):
        rows = slice(start, start + batch_size)
        return (x[rows],) if condition is None else (x[rows], condition[rows])

    progress = keras.utils.Progbar(len(x), unit_name="example") if verbose else None
    parts = []
    for i, start in enumerate(range(0, len(x), batch_size)):
        parts.append(fn(*batch(start), batch_seed(seed, i)).numpy())
        if progress is not None:
            progress.update(min(len(x), start + batch_size),
                            values=[("log_px", float(np.mean(parts[-1])))])
    log_px = np.concatenate(parts).astype("float64")
    return LogLikelihood(log_px=log_px,
                         bits_per_dim=objectives.bits_per_dim(-log_px, num_dims),
                         num_samples=num_samples, num_dims=num_dims, seed=seed)


def elbo_terms(model, x, num_samples=1, batch_size=500, seed=0, y=None):
    """Per-example ELBO, reconstruction term and KL, in nats (beta plays no part).

    Uses `objectives.elbo` with the model's `analytic_kl` setting (default
    True), L = `num_samples` reparameterized draws per example. A model with
    the `log_importance_weights` hook (`weights_hook`, e.g. a
    `keras_vae.HierarchicalVAE`) gives the Monte Carlo ELBO `mean_l log w_l`
    over its own proposal, `kl` being the ELBO's non-reconstruction part.

    Args:
      model: a VAE, or any object with `.encoder`, `.decoder`, `.prior`.
      x: `[N] + data_shape` float array.
      num_samples: L posterior draws per example.
      batch_size: examples per batch.
      seed: integer; the same seed (and batch_size) gives the same numbers.
      y: labels or condition vectors for a conditional model (the terms of
        the conditional ELBO, a bound on log p(x|y)); None otherwise.

    Returns:
      dict of float64 arrays `[N]`: `elbo`, `reconstruction` (E_q[-log p(x|z)])
      and `kl` (KL(q(z|x) || p(z))).

    Raises:
      ValueError: if the model has no prior, for bad arguments or data.
      keras_vae.resources.ResourceLimitError (a ValueError): for num_samples
        above `resources.MAX_IMPORTANCE_SAMPLES` or L x B samples that would not
        fit in memory (elbo_terms draws all L at once).

    Example:
      >>> terms = elbo_terms(vae, x_test, num_samples=10)
      >>> terms["elbo"].mean(), terms["kl"].mean()     # nats per example
    """
    require_prior(model, "elbo_terms")
    x = check_inputs(model, x)
    condition = conditions(model, y, len(x))
    num_samples = resources.check_importance_samples(num_samples)
    batch_size = validation.batch_size(batch_size)
    num_dims = int(np.prod(x.shape[1:]))
    resources.check_memory(
        "one batch of elbo_terms",
        resources.estimate_loglik_chunk_bytes(num_samples, min(batch_size, len(x)),
                                              sample_width(model, num_dims),
                                              _decoder_widths(model)),
        "lower num_samples or batch_size", num_samples=num_samples, batch_size=batch_size)
    analytic = bool(getattr(model, "analytic_kl", True))

    width = None if condition is None else condition.shape[1]

    def build(model_ref):
        signature = [tf.TensorSpec((None,) + x.shape[1:], tf.float32),
                     tf.TensorSpec([2], tf.int32)]
        if width:
            signature.insert(1, tf.TensorSpec((None, width), tf.float32))

        def terms(xb, *args):
            model = model_ref()
            c, s = args if len(args) == 2 else (None, args[0])
            hook = weights_hook(model)
            if hook is not None:  # Monte Carlo over the model's own proposal
                log_w, log_px_z = hook(xb, tf.random.split(s, num_samples))
                rec = -tf.reduce_mean(log_px_z, axis=0)
                elbo = tf.reduce_mean(log_w, axis=0)
                return {"elbo": elbo, "reconstruction": rec, "kl": -elbo - rec}
            posterior, mask = encode(model, xb, c), None
            if allows_missing(model):
                mask, xb = objectives.observed_mask(xb)
            out = objectives.elbo(xb, posterior, lambda z: decode(model, z, c),
                                  prior_distribution(model), seed=s,
                                  num_samples=num_samples, analytic_kl=analytic, mask=mask)
            return {k: out[k] for k in ("elbo", "reconstruction", "kl")}
        return tf.function(terms, input_signature=signature)

    terms = cached_function(model, ("elbo", x.shape[1:], num_samples, analytic, width), build)

    def batch(start):
        rows = slice(start, start + batch_size)
        return (x[rows],) if condition is None else (x[rows], condition[rows])

    parts = [terms(*batch(start), batch_seed(seed, i))
             for i, start in enumerate(range(0, len(x), batch_size))]
    return {k: np.concatenate([p[k].numpy() for p in parts]).astype("float64")
            for k in ("elbo", "reconstruction", "kl")}
