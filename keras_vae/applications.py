"""Applications of a trained model: anomaly detection and missing-value imputation.

Anomaly detection scores each example by how unlikely the model finds it
(higher score = more anomalous), picks a threshold from held-out *normal*
data at a chosen false-positive rate, and is measured by ROC AUC.
Imputation fills missing values by iterating encode/decode with the
observed values clamped (a fixed point of the autoencoder, or the
pseudo-Gibbs chain of Rezende et al., 2014), and is compared with filling
each missing value with the mean of its dimension.

#### Mathematical details

```none
score "nll"                        : -IWAE_K(x) ~ -log p(x)
score "reconstruction_probability" : -1/L sum_l log p(x|z_l), z_l ~ q(z|x)   (An & Cho, 2015)
score "reconstruction_error"       : ||x - E[p(x | z = E q(z|x))]||^2       (no prior needed)
threshold(fpr) = (floor(fpr N) + 1)-th largest held-out normal score;  anomaly: score > threshold
impute, method "mean"        : x_m <- E[p(x_m | z)],  z = E[q(z | x_o, x_m)]
impute, method "pseudo_gibbs": z ~ q(z | x_o, x_m),  x_m ~ p(x_m | z);
                               returns the average of E[p(x_m | z)] over the last steps // 2 steps
```

Example:

>>> normal_scores = anomaly_scores(vae, x_heldout_normal)
>>> threshold = select_threshold(normal_scores, false_positive_rate=0.05)
>>> flagged = anomaly_scores(vae, x_new) > threshold
>>> filled = impute(vae, x_with_holes, mask=observed, steps=50)
"""

import numpy as np
import tensorflow as tf

from keras_vae import validation
from keras_vae.access import batch_seed, cached_function, check_inputs, decode, encode, reconstruct
from keras_vae.estimators import elbo_terms, log_likelihood

__all__ = [
    "SCORES",
    "anomaly_scores",
    "select_threshold",
    "roc_auc",
    "impute",
    "mean_fill",
    "imputation_error",
    "imputation_report",
]

SCORES = ("nll", "reconstruction_probability", "reconstruction_error")
_IMPUTE_METHODS = ("mean", "pseudo_gibbs")


# ------------------------------------------------------------ anomalies

def anomaly_scores(model, x, method="nll", num_samples=100, batch_size=100, seed=0):
    """Anomaly score per example; higher means less likely under the model.

    Args:
      model: trained VAE (or autoencoder, for "reconstruction_error").
      x: `[N] + data_shape` array.
      method: "nll" (negative importance-sampled log-likelihood, K =
        `num_samples`), "reconstruction_probability" (negative Monte Carlo
        reconstruction log-probability, L = `num_samples`), or
        "reconstruction_error" (squared error of the mean reconstruction).
      num_samples: K or L.
      batch_size: examples per batch.
      seed: integer seed.

    Returns:
      float64 array `[N]`.

    Raises:
      ValueError: unknown method, or a prior-based method on a model without one.

    Example:
      >>> s = anomaly_scores(vae, x_test, method="nll", num_samples=100)
    """
    if method not in SCORES:
        raise ValueError(f"`method` must be one of {SCORES}. Received: method={method!r}")
    if method == "nll":
        ll = log_likelihood(model, x, num_samples=num_samples,
                            batch_size=batch_size, seed=seed)
        return -ll.log_px
    if method == "reconstruction_probability":
        return elbo_terms(model, x, num_samples=num_samples,
                          batch_size=batch_size, seed=seed)["reconstruction"]
    x = check_inputs(model, x)
    recon = reconstruct(model, x, batch_size)
    return np.sum((recon - x).astype("float64") ** 2, axis=tuple(range(1, x.ndim)))


def _scores(name, scores):
    scores = np.asarray(scores, "float64").reshape(-1)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError(f"Expected a non-empty array of finite scores. "
                         f"Received: {name} with shape {scores.shape}")
    return scores


def select_threshold(scores_normal, false_positive_rate=0.05):
    """Threshold flagging at most `false_positive_rate` of held-out normal data.

    Args:
      scores_normal: `[N]` anomaly scores of held-out data known to be normal.
      false_positive_rate: target fraction of normal examples flagged, in [0, 1).

    Returns:
      float t, the (floor(fpr * N) + 1)-th largest normal score; flag an
      example when its score > t. The fraction of `scores_normal` above t is
      at most `false_positive_rate` (exactly floor(fpr * N) / N without ties).

    Example:
      >>> t = select_threshold(anomaly_scores(vae, x_val), false_positive_rate=0.01)
    """
    scores = _scores("scores_normal", scores_normal)
    rate = float(false_positive_rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError("`false_positive_rate` must be in [0, 1). "
                         f"Received: false_positive_rate={false_positive_rate!r}")
    n_flag = int(np.floor(rate * scores.size + 1e-9))  # normal examples allowed above t
    return float(np.sort(scores)[::-1][n_flag])


def roc_auc(scores, is_anomaly):
    """Area under the ROC curve of `scores` for the binary labels `is_anomaly`.

    0.5 is chance, 1.0 ranks every anomaly above every normal example.

    Args:
      scores: `[N]` anomaly scores (higher = more anomalous).
      is_anomaly: `[N]` booleans (both classes present).

    Returns:
      float in [0, 1].
    """
    from sklearn.metrics import roc_auc_score

    scores = _scores("scores", scores)
    labels = np.asarray(is_anomaly).reshape(-1).astype(bool)
    if labels.shape != scores.shape or labels.all() or not labels.any():
        raise ValueError(
            "Expected one boolean label per score with both normal and anomalous "
            f"examples. Received: is_anomaly with shape {labels.shape} and "
            f"{int(labels.sum())} anomalies"
        )
    return float(roc_auc_score(labels, scores))


# ------------------------------------------------------------ imputation

def _mask(mask, x):
    mask = np.asarray(mask)
    if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.number)
                                   and np.isin(mask, (0, 1)).all()):
        raise TypeError("`mask` must hold booleans (True = observed). "
                        f"Received: mask.dtype={mask.dtype}")
    try:
        return np.broadcast_to(mask.astype(bool), x.shape)
    except ValueError:
        raise ValueError(f"`mask` must have the shape of x {x.shape} or of one "
                         f"example {x.shape[1:]}. Received: mask.shape={mask.shape}") from None


def mean_fill(x, mask):
    """Baseline: each missing value becomes the mean of the observed values of its dimension.

    Args:
      x: `[N] + data_shape` array (values under `~mask` are ignored).
      mask: booleans broadcastable to `x`, True where the value is observed.

    Returns:
      float32 array like `x`. A dimension with no observed value gets the
      mean of all observed values.
    """
    x = np.asarray(x, "float32")
    mask = _mask(mask, x)
    if not mask.any():
        raise ValueError("`mask` marks no value as observed. Received: mask with 0 True")
    counts = mask.sum(axis=0)
    sums = np.where(mask, x, 0.0).sum(axis=0)
    fill = np.where(counts > 0, sums / np.maximum(counts, 1), x[mask].mean())
    return np.where(mask, x, fill[None]).astype("float32")


def _impute_function(model_ref, data_shape, steps, sample):
    """`tf.function (x, observed, seed) -> imputed x` running `steps` encode/decode rounds."""
    keep_from = steps - max(1, steps // 2)

    @tf.function(input_signature=[tf.TensorSpec((None,) + data_shape, tf.float32),
                                  tf.TensorSpec((None,) + data_shape, tf.bool),
                                  tf.TensorSpec([2], tf.int32)])
    def run(xb, mb, seed_b):
        model = model_ref()

        def body(t, current, total):
            q = encode(model, current)
            seeds = tf.random.experimental.stateless_split(
                tf.random.experimental.stateless_fold_in(seed_b, t), 2)
            z = q.sample(seed=seeds[0]) if sample else q.mean()
            p = decode(model, z)
            mean = p.mean()
            new = p.sample(seed=seeds[1]) if sample else mean
            total = total + tf.where(t >= keep_from, mean, tf.zeros_like(mean))
            return t + 1, tf.where(mb, xb, new), total

        _, last, total = tf.while_loop(lambda t, *_: t < steps, body,
                                       (tf.constant(0), xb, tf.zeros_like(xb)))
        result = total / float(steps - keep_from) if sample else last
        return tf.where(mb, xb, result)

    return run


def impute(model, x, mask, steps=50, method="mean", batch_size=500, seed=0, init=None):
    """Fills the missing values of `x` by iterating encode/decode with observed values clamped.

    Args:
      model: trained VAE (any model with `.encoder`, `.decoder`).
      x: `[N] + data_shape` array; values under `~mask` are ignored (may be
        anything finite, e.g. 0).
      mask: booleans broadcastable to `x`: **True where the value is
        observed**, False where it is missing and must be filled.
      steps: number of encode/decode iterations (>= 1).
      method: "mean" (deterministic fixed-point iteration) or "pseudo_gibbs"
        (sampled chain, Rao-Blackwellised average of the last steps // 2).
      batch_size: examples per batch.
      seed: integer seed ("pseudo_gibbs" only).
      init: starting values for the missing entries (array like `x`);
        default `mean_fill(x, mask)`.

    Returns:
      float32 array like `x`: observed values unchanged, missing ones imputed.

    Raises:
      ValueError / TypeError: bad mask, method, steps or data.

    Example:
      >>> observed = np.ones(x.shape, bool); observed[:, 4:] = False   # hide the bottom half
      >>> filled = impute(vae, x, observed, steps=50)
    """
    if method not in _IMPUTE_METHODS:
        raise ValueError(f"`method` must be one of {_IMPUTE_METHODS}. "
                         f"Received: method={method!r}")
    steps = validation.positive_int("steps", steps)
    batch_size = validation.batch_size(batch_size)
    x_raw = np.asarray(x.numpy() if isinstance(x, tf.Tensor) else x, "float32")
    mask = _mask(mask, x_raw)
    start = mean_fill(x_raw, mask) if init is None else np.where(
        mask, x_raw, np.asarray(init, "float32"))
    start = check_inputs(model, start)
    sample = method == "pseudo_gibbs"

    run = cached_function(
        model, ("impute", start.shape[1:], steps, method),
        lambda ref: _impute_function(ref, start.shape[1:], steps, sample))
    out = [run(start[s:s + batch_size], mask[s:s + batch_size],
               batch_seed(seed, i)).numpy()
           for i, s in enumerate(range(0, len(start), batch_size))]
    return np.concatenate(out).astype("float32")


def imputation_error(x_true, x_imputed, mask):
    """Mean squared error over the missing values (`~mask`) only.

    Returns:
      float; raises ValueError when no value is missing.
    """
    x_true = np.asarray(x_true, "float64")
    mask = _mask(mask, x_true)
    if mask.all():
        raise ValueError("`mask` marks every value as observed; nothing was imputed. "
                         "Received: mask with no False")
    diff = (np.asarray(x_imputed, "float64") - x_true)[~mask]
    return float(np.mean(diff ** 2))


def imputation_report(model, x, missing_fraction=0.5, steps=50, method="mean",
                      batch_size=500, seed=0):
    """Hides a random `missing_fraction` of each example's values and imputes them.

    Returns:
      dict of floats: `imputation_mse` (model), `imputation_mse_mean_fill`
      (baseline), both the mean squared error on the hidden values, and
      `imputation_missing_fraction`.
    """
    x = check_inputs(model, x)
    fraction = float(missing_fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError("`missing_fraction` must be in (0, 1). "
                         f"Received: missing_fraction={missing_fraction!r}")
    rng = np.random.default_rng(validation.seed(seed))
    observed = rng.uniform(size=x.shape) >= fraction
    filled = impute(model, x, observed, steps=steps, method=method,
                    batch_size=batch_size, seed=seed)
    return {
        "imputation_mse": imputation_error(x, filled, observed),
        "imputation_mse_mean_fill": imputation_error(x, mean_fill(x, observed), observed),
        "imputation_missing_fraction": fraction,
    }
