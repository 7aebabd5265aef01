"""Objectives: pure functions of distributions, in nats.

Everything here takes a posterior `q(z|x)` (batch shape `[B]`, event `[d]`), a
prior `p(z)` (batchless, event `[d]`), a `likelihood_fn` mapping latents of shape
`[L, B, d]` to `p(x|z)` (batch shape `[L, B]`, event = data shape) and the data
`x` of shape `[B] + event_shape`. Per-example values are summed over data and
latent dimensions; the scalar `loss` is their mean over the batch.

#### Mathematical details

```none
ELBO(x)  = E_q[log p(x|z)] - KL(q(z|x) || p(z))                 <= log p(x)
SGVB     : E_q[log p(x|z)] ~ 1/L sum_l log p(x|z_l),  z_l = mu + sigma * eps_l
KL (analytic, diagonal Gaussians vs N(0, I)):
           1/2 sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)
KL (Monte Carlo): 1/L sum_l [log q(z_l|x) - log p(z_l)]
IWAE_K(x) = log 1/K sum_k w_k,  w_k = p(x|z_k) p(z_k) / q(z_k|x)
           (ELBO = IWAE_1 <= IWAE_K <= log p(x))
free bits (Kingma et al., 2016): KL term = sum_d max(E_batch KL_d, lambda)
MIWAE_K(x) (Mattei & Frellsen, 2019), incomplete x with mask m (1 = observed):
           log p(x_o|z) = sum_i m_i log p(x_i|z)   (a likelihood factorising over entries)
           MIWAE_K(x) = log 1/K sum_k p(x_o|z_k) p(z_k) / q(z_k|x_o),  z_k ~ q(z|x_o)
           <= log p(x_o); the encoder sees missing entries filled with a constant
```
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae.distributions import reparameterized_sample

tfd = tfp.distributions

__all__ = [
    "flat_entries",
    "kl_divergence",
    "kl_per_dimension",
    "diagonal_normal",
    "log_importance_weights",
    "iwae_bound",
    "elbo",
    "iwae",
    "miwae",
    "observed_mask",
    "entry_log_prob",
    "masked_log_prob",
    "check_factorises",
    "bits_per_dim",
    "WARMUP_SCHEDULES",
    "warmup_beta",
    "reconstruction_objective",
    "OBJECTIVES",
]

OBJECTIVES = ("elbo", "iwae", "miwae")


def _analytic_kl(posterior, prior):
    """KL(q || p) in closed form, or None when TFP has no registered formula."""
    try:
        return tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        pass
    # N(0, I) given as Independent(Normal) pairs with full-covariance posteriors
    # only as a MultivariateNormalDiag.
    if isinstance(prior, tfd.Independent) and isinstance(prior.distribution, tfd.Normal):
        base = prior.distribution
        as_mvn = tfd.MultivariateNormalDiag(
            base.loc * tf.ones_like(base.scale), base.scale * tf.ones_like(base.loc)
        )
        try:
            return tfd.kl_divergence(posterior, as_mvn)
        except NotImplementedError:
            return None
    return None


def kl_divergence(posterior, prior, z=None, analytic=True):
    """Per-example KL(q(z|x) || p(z)), shape `[B]`, in nats.

    Args:
      posterior: `q(z|x)`, batch shape `[B]`, event shape `[d]`.
      prior: `p(z)`, event shape `[d]`.
      z: samples from the posterior, shape `[L, B, d]`; needed for the Monte
        Carlo estimate.
      analytic: use the closed form when TFP knows one (falls back to Monte
        Carlo otherwise, e.g. for a mixture prior).

    Raises:
      ValueError: if a Monte Carlo estimate is needed and `z` is None.
    """
    if analytic:
        kl = _analytic_kl(posterior, prior)
        if kl is not None:
            return kl
    if z is None:
        raise ValueError(
            "A Monte Carlo KL estimate needs posterior samples. Received: z=None"
        )
    return tf.reduce_mean(posterior.log_prob(z) - prior.log_prob(z), axis=0)


def diagonal_normal(dist):
    """The `tfd.Normal` under a diagonal Gaussian `tfd.Independent`, else None."""
    if isinstance(dist, tfd.Independent) and isinstance(dist.distribution, tfd.Normal):
        return dist.distribution
    return None


def kl_per_dimension(posterior, prior):
    """KL per latent dimension, shape `[B, d]`, when both are diagonal Gaussians; else None."""
    q, p = diagonal_normal(posterior), diagonal_normal(prior)
    if q is None or p is None:
        return None
    return tfd.kl_divergence(q, p)


def observed_mask(x):
    """`(mask, x_filled)` of a batch with NaN for missing entries.

    `mask` is True where `x` is observed (not NaN), `x_filled` is `x` with 0
    in place of NaN (a finite value every log_prob accepts; it is masked out).
    Infinity counts as observed: the data checks refuse it before this point.
    """
    x = tf.convert_to_tensor(x)
    mask = tf.logical_not(tf.math.is_nan(x))
    return mask, tf.where(mask, x, tf.zeros_like(x))


def entry_log_prob(likelihood, x):
    """The un-reduced log-probability of each entry, shape `batch_shape + event_shape`.

    A likelihood may define `per_entry_log_prob(x)` itself (e.g. a mixed-type
    head, one value per column); otherwise it must be a `tfd.Independent` over
    a distribution with scalar events (every head of `keras_vae.likelihoods`),
    whose `.distribution.log_prob` gives the entries.

    Raises:
      ValueError: for a likelihood that does not factorise over entries.
    """
    if hasattr(likelihood, "per_entry_log_prob"):
        return likelihood.per_entry_log_prob(x)
    check_factorises(likelihood)
    return likelihood.distribution.log_prob(x)


def _factorises(likelihood):
    """True for a `tfd.Independent` over a distribution with scalar events."""
    base = getattr(likelihood, "distribution", None)
    # tfd.Independent over a distribution that is not a CompositeTensor (e.g. the
    # tables' TableColumns) is TFP's `_Independent`, not an instance of tfd.Independent:
    # recognise it by its attribute.
    independent = isinstance(likelihood, tfd.Independent) or hasattr(
        likelihood, "reinterpreted_batch_ndims")
    return independent and base is not None and base.event_shape.rank == 0


def check_factorises(likelihood):
    """Raises ValueError unless `likelihood` factorises over the entries of its event."""
    if hasattr(likelihood, "per_entry_log_prob"):
        return
    base = getattr(likelihood, "distribution", None)
    if not _factorises(likelihood):
        raise ValueError(
            "Training or scoring with missing entries needs a likelihood that factorises "
            "over the data entries (a tfd.Independent over scalar distributions, or one "
            "with per_entry_log_prob), so missing entries can be left out of log p(x|z). "
            f"Received: a likelihood of type {type(likelihood).__name__}"
            + (f" over {type(base).__name__} with event shape {base.event_shape}"
               if base is not None else ""))


def masked_log_prob(likelihood, x, mask=None):
    """`log p(x_o|z) = sum_i m_i log p(x_i|z)`, shape `batch_shape`; `likelihood.log_prob(x)`
    when `mask` is None.

    A likelihood that factorises over entries with an event of rank 2 or more
    (images: `[28, 28, 1]`) is scored on flat `[..., 784]` views of its parameters
    and of `x` (`flat_entries`): the same number, but under XLA on CPU the
    elementwise log-probability and its gradient over `[L, B, 28, 28, 1]` took
    about 1.5x as long as over `[L, B, 784]` (innermost axis of size 1; issue 17).

    Args:
      likelihood: `p(x|z)`, batch shape `[...]`, event shape = data shape.
      x: `[B] + event_shape`, finite (missing entries filled with any value).
      mask: None, or booleans / 0-1 floats like `x`, 1 where observed.
    """
    flat = flat_entries(likelihood)
    if flat is not None:
        base, rank = flat
        entries = base.log_prob(_flatten_event(tf.cast(x, base.dtype), rank))
        if mask is not None:
            mask = _flatten_event(tf.cast(mask, tf.bool), rank)
            entries = tf.where(mask, entries, tf.zeros_like(entries))
        return tf.reduce_sum(entries, axis=-1)
    if mask is None:
        return likelihood.log_prob(x)
    entries = entry_log_prob(likelihood, x)
    mask = tf.cast(mask, tf.bool)  # where, not a product: a filled entry may score -inf
    event_rank = len(likelihood.event_shape)
    return tf.reduce_sum(tf.where(mask, entries, tf.zeros_like(entries)),
                         axis=list(range(-event_rank, 0)))


def _flatten_event(t, rank):
    shape = tf.shape(t)
    return tf.reshape(t, tf.concat([shape[:tf.rank(t) - rank], [-1]], 0))


def flat_entries(likelihood):
    """`(base, event_rank)`: the per-entry distribution of `likelihood` over flat events.

    For a `tfd.Independent` over scalar-event entries with a static event shape
    of rank >= 2 whose tensor parameters are scalars or end in the event shape:
    `base` is the same entries with each such parameter reshaped from
    `[...] + event_shape` to `[..., prod(event_shape)]`, so `base.log_prob` of
    `x` reshaped the same way gives the per-entry values in a flat layout.
    None for anything else (the caller then uses `likelihood` itself).
    """
    if hasattr(likelihood, "per_entry_log_prob") or not _factorises(likelihood):
        return None
    event = likelihood.event_shape
    if event.rank is None or event.rank < 2 or not event.is_fully_defined():
        return None
    base, rank = likelihood.distribution, event.rank
    params = {}
    for name, value in base.parameters.items():
        if value is None or isinstance(value, (bool, str, int, float, tf.dtypes.DType)):
            continue  # settings, and Python numbers (they broadcast)
        if not (tf.is_tensor(value) or isinstance(value, tf.Variable)):
            return None  # e.g. a NumPy array or a nested distribution: left as it is
        shape = value.shape
        if shape.rank == 0:
            continue
        if shape.rank is None or shape.rank < rank or shape[-rank:] != event:
            return None
        params[name] = _flatten_event(value, rank)
    if not params:
        return None
    return base.copy(**params), rank


def log_importance_weights(x, posterior, likelihood_fn, prior, z, beta=1.0, mask=None,
                           log_prob_fn=None):
    """`log w = log p(x|z) + beta * (log p(z) - log q(z|x))`, shape `[K, B]`.

    Also returns `log p(x|z)` (shape `[K, B]`) so callers can report the
    reconstruction term without decoding twice. With `mask` (True where
    observed) `log p(x|z)` is `log p(x_o|z)`, the sum over observed entries.
    `log_prob_fn` (`z -> log p(x|z)`, e.g. `access.decode_log_prob`), when
    given and there is no mask, replaces `likelihood_fn(z).log_prob(x)`.
    """
    if log_prob_fn is not None and mask is None:
        log_px_z = log_prob_fn(z)
    else:
        log_px_z = masked_log_prob(likelihood_fn(z), x, mask)
    log_w = log_px_z + beta * (prior.log_prob(z) - posterior.log_prob(z))
    return log_w, log_px_z


def iwae_bound(log_w):
    """`log 1/K sum_k exp(log_w_k)` over axis 0: `[K, B] -> [B]`, numerically stable."""
    k = tf.cast(tf.shape(log_w)[0], log_w.dtype)
    return tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(k)


def _kl_for_loss(posterior, prior, kl, free_bits):
    """Batch-mean KL term entering the loss, with free bits when asked."""
    if not free_bits:
        return tf.reduce_mean(kl)
    per_dim = kl_per_dimension(posterior, prior)
    if per_dim is not None:
        return tf.reduce_sum(tf.maximum(tf.reduce_mean(per_dim, axis=0), free_bits))
    latent_dim = posterior.event_shape[-1]
    return tf.maximum(tf.reduce_mean(kl), free_bits * latent_dim)


def elbo(x, posterior, likelihood_fn, prior, *, seed, num_samples=1,
         analytic_kl=True, beta=1.0, free_bits=0.0, mask=None):
    """The (beta-weighted) ELBO estimated with `num_samples` reparameterized draws.

    Args:
      x: data, `[B] + event_shape`, float32.
      posterior, likelihood_fn, prior: see the module docstring.
      seed: stateless seed, int32 `[2]`.
      num_samples: L, the number of Monte Carlo samples per example (SGVB).
      analytic_kl: closed-form KL when available, else Monte Carlo.
      beta: weight of the KL term in the loss (scalar, may be a variable).
      free_bits: lambda in nats per latent dimension (0 disables).
      mask: None, or booleans like `x` (True = observed): the reconstruction
        term then sums over observed entries only (`x` finite under the mask).

    Returns:
      dict with per-example tensors `[B]`: `elbo` (nats, <= log p(x)),
      `reconstruction` (E_q[-log p(x|z)]), `kl`; and the scalar `loss`
      = mean(reconstruction) + beta * KL term.
    """
    z = reparameterized_sample(posterior, num_samples, seed)
    log_px_z = masked_log_prob(likelihood_fn(z), x, mask)  # [L, B]
    reconstruction = -tf.reduce_mean(log_px_z, axis=0)  # [B]
    kl = kl_divergence(posterior, prior, z=z, analytic=analytic_kl)
    loss = tf.reduce_mean(reconstruction) + beta * _kl_for_loss(
        posterior, prior, kl, free_bits
    )
    return {"loss": loss, "elbo": -(reconstruction + kl),
            "reconstruction": reconstruction, "kl": kl}


def iwae(x, posterior, likelihood_fn, prior, *, seed, num_samples=5,
         analytic_kl=True, beta=1.0, free_bits=0.0):
    """The importance-weighted bound (Burda et al., 2016) with K = `num_samples`.

    Returns the same keys as `elbo`; `loss` = -mean(IWAE_K), and `iwae` holds
    the per-example bound. The reported `elbo`, `reconstruction` and `kl` are
    estimated from the same K samples (analytic KL when available). `beta`
    weights `log p(z) - log q(z|x)` inside the weights (1 = the IWAE bound);
    `free_bits` does not apply to this objective and must be 0.
    """
    if free_bits:
        raise ValueError(
            "free_bits applies to the 'elbo' objective only. "
            f"Received: objective='iwae', free_bits={free_bits!r}"
        )
    z = reparameterized_sample(posterior, num_samples, seed)
    log_w, log_px_z = log_importance_weights(x, posterior, likelihood_fn, prior, z, beta)
    bound = iwae_bound(log_w)
    reconstruction = -tf.reduce_mean(log_px_z, axis=0)
    kl = kl_divergence(posterior, prior, z=z, analytic=analytic_kl)
    return {"loss": -tf.reduce_mean(bound), "elbo": -(reconstruction + kl),
            "reconstruction": reconstruction, "kl": kl, "iwae": bound}


def miwae(x, posterior, likelihood_fn, prior, *, seed, num_samples=5,
          analytic_kl=True, beta=1.0, free_bits=0.0, mask=None):
    """The missing-data importance-weighted bound MIWAE_K (Mattei & Frellsen, 2019).

    Args:
      x: data `[B] + event_shape` with NaN for missing entries (or finite `x`
        and `mask`).
      posterior: `q(z|x_o)`, computed by the caller from `x` with missing
        entries filled (the model fills them with `encoder.missing_fill`).
      likelihood_fn, prior, seed, analytic_kl, beta: as for `iwae`.
      num_samples: K.
      free_bits: must be 0.
      mask: None (observed = not NaN) or booleans like `x`, True where observed.

    Returns:
      dict like `iwae`: `loss` = -mean(MIWAE_K), per-example `miwae` (the
      bound, <= log p(x_o)), and `elbo`, `reconstruction` (over observed
      entries), `kl` from the same K samples. With every entry observed,
      MIWAE_K equals IWAE_K.

    Raises:
      ValueError: free_bits given; a likelihood that does not factorise.
    """
    if free_bits:
        raise ValueError(
            "free_bits applies to the 'elbo' objective only. "
            f"Received: objective='miwae', free_bits={free_bits!r}"
        )
    nan_mask, x = observed_mask(x)
    mask = nan_mask if mask is None else tf.logical_and(tf.cast(mask, tf.bool), nan_mask)
    z = reparameterized_sample(posterior, num_samples, seed)
    log_w, log_px_z = log_importance_weights(x, posterior, likelihood_fn, prior, z, beta,
                                             mask=mask)
    bound = iwae_bound(log_w)
    reconstruction = -tf.reduce_mean(log_px_z, axis=0)
    kl = kl_divergence(posterior, prior, z=z, analytic=analytic_kl)
    return {"loss": -tf.reduce_mean(bound), "elbo": -(reconstruction + kl),
            "reconstruction": reconstruction, "kl": kl, "miwae": bound}


def bits_per_dim(nats, num_dims):
    """Converts nats per example into bits per data dimension."""
    return nats / (num_dims * math.log(2.0))


def reconstruction_objective(x, posterior, likelihood_fn):
    """The autoencoder's objective: `-log p(x | z = E[q(z|x)])` in nats.

    Args:
      x: data, `[B] + event_shape`, float32 (the clean target).
      posterior: `q(z|x)` (a point mass), batch shape `[B]`, event `[d]`.
      likelihood_fn: maps `z [B, d]` to `p(x|z)` with batch shape `[B]`.

    Returns:
      dict with per-example `reconstruction` `[B]` and the scalar `loss`, its
      batch mean.
    """
    reconstruction = -masked_log_prob(likelihood_fn(posterior.mean()), x)
    return {"loss": tf.reduce_mean(reconstruction), "reconstruction": reconstruction}


WARMUP_SCHEDULES = ("linear", "cyclical")


def warmup_beta(step, steps, schedule="linear", start=0.0, target=1.0, ratio=0.5):
    """The KL weight beta at optimizer step `step` of a warm-up: the one schedule
    behind `VAE(warmup_steps=...)` (in the compiled step) and `KLWarmup` (a callback).

    #### Mathematical details

    ```none
    linear   (Bowman et al., 2016): beta(t) = start + (target - start) * min(1, t / steps)
    cyclical (Fu et al., 2019):     u = (t mod steps) / steps,
                                    beta(t) = start + (target - start) * min(1, u / ratio)
    ```

    Computed in float64 (so a Python caller gets exactly the float formula above)
    from TensorFlow ops, so `step` may be the `optimizer.iterations` variable
    inside a compiled (XLA, `steps_per_execution > 1`) training step.

    Args:
      step: int (or int tensor), the optimizer steps done before this batch.
      steps: positive int, the ramp (linear) or cycle (cyclical) length.
      schedule: "linear" or "cyclical" (a Python string, fixed at tracing).
      start, target: beta at step 0 and at the end of the ramp.
      ratio: cyclical only, the share of each cycle spent increasing, in (0, 1].

    Returns:
      float64 scalar tensor.

    Example:
      >>> float(warmup_beta(250, 1000))
      0.25
    """
    if schedule not in WARMUP_SCHEDULES:
        raise ValueError(f"`schedule` must be one of {list(WARMUP_SCHEDULES)}. "
                         f"Received: schedule={schedule!r}")
    t = tf.cast(step, tf.float64)
    n = tf.constant(float(steps), tf.float64)
    if schedule == "linear":
        progress = tf.minimum(tf.constant(1.0, tf.float64), t / n)
    else:
        progress = tf.minimum(tf.constant(1.0, tf.float64),
                              tf.math.floormod(t, n) / n / float(ratio))
    return float(start) + (float(target) - float(start)) * progress
