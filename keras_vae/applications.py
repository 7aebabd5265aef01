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
impute, method "importance"  : E[x_m | x_o] by self-normalised importance sampling, L samples
impute, method "multiple"    : M completed copies by sampling-importance-resampling
                               (see keras_vae.imputation)
```
For a model trained on incomplete data (`VAE(objective="miwae")`) NaN marks
a missing entry: the scores are then of the observed part (`"nll"`:
-log p(x_o)), and `impute` needs no mask.

Example:

>>> normal_scores = anomaly_scores(vae, x_heldout_normal)
>>> threshold = select_threshold(normal_scores, false_positive_rate=0.05)
>>> flagged = anomaly_scores(vae, x_new) > threshold
>>> filled = impute(vae, x_with_holes, mask=observed, steps=50)
>>> filled = impute(miwae_model, x_with_nan, num_samples=1000, method="importance")
"""

import numpy as np
import tensorflow as tf

from keras_vae import imputation, resources, validation
from keras_vae.access import (
    allows_missing,
    batch_seed,
    cached_function,
    check_inputs,
    decode,
    encode,
    reconstruct,
    require_prior,
)
from keras_vae.estimators import (
    elbo_terms,
    log_likelihood,
    resolve_chunk_size,
    sample_width,
)

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
_IMPUTE_METHODS = ("mean", "pseudo_gibbs", "importance", "multiple")


# ------------------------------------------------------------ anomalies

def anomaly_scores(model, x, method="nll", num_samples=100, batch_size=100, seed=0):
    """Anomaly score per example; higher means less likely under the model.

    Args:
      model: trained VAE (or autoencoder, for "reconstruction_error").
      x: `[N] + data_shape` array (NaN for missing entries allowed for a model
        trained with `objective="miwae"`: the score is then of the observed
        entries, e.g. -log p(x_o)).
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
    # nansum: a missing entry (NaN, MIWAE models only) adds nothing
    return np.nansum((recon - x).astype("float64") ** 2, axis=tuple(range(1, x.ndim)))


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


def _missing_mask(mask, x_raw):
    """The observed mask: `~isnan(x)` when `mask` is None, else `mask` checked against NaN."""
    nan = np.isnan(x_raw)
    if mask is None:
        if not nan.any():
            raise ValueError("Nothing marks a missing value: give `mask` (True = observed) "
                             "or NaN for the missing entries of `x`. Received: mask=None and "
                             "x without NaN")
        return ~nan
    mask = _mask(mask, x_raw)
    if (nan & mask).any():
        raise ValueError("`x` holds NaN at entries `mask` marks as observed (True); mark "
                         "them False or leave mask out. Received: "
                         f"{int((nan & mask).sum())} such entries")
    return mask


def _importance_impute(model, x_enc, start, mask, method, num_samples, num_imputations,
                       chunk_size, batch_size, seed):
    """Batches of `keras_vae.imputation.importance_mean` / `importance_draws`."""
    require_prior(model, f"impute(method={method!r})")
    num_samples = resources.check_importance_samples(num_samples)
    rows = min(batch_size, len(start))
    num_dims = int(np.prod(start.shape[1:]))
    width = max(sample_width(model, num_dims), num_imputations or 1)
    chunk = resolve_chunk_size(chunk_size, num_samples, rows, width)
    resources.check_memory(
        f"one chunk of impute(method={method!r})",
        resources.estimate_loglik_chunk_bytes(chunk, rows, width,
                                              tuple(getattr(model.decoder, "hidden", ()))),
        "lower batch_size or chunk_size", chunk_size=chunk, batch_size=batch_size,
        num_samples=num_samples)
    data_shape = tuple(start.shape[1:])
    signature = [tf.TensorSpec((None,) + data_shape, tf.float32),
                 tf.TensorSpec((None,) + data_shape, tf.float32),
                 tf.TensorSpec((None,) + data_shape, tf.bool), tf.TensorSpec([2], tf.int32)]

    def build(model_ref):
        if method == "importance":
            def run(xe, xb, mb, sb):
                return imputation.importance_mean(model_ref(), xb, mb, sb, num_samples, chunk,
                                                  x_encoder=xe)
        else:
            def run(xe, xb, mb, sb):
                return imputation.importance_draws(model_ref(), xb, mb, sb, num_samples,
                                                   num_imputations, chunk, x_encoder=xe)
        return tf.function(run, input_signature=signature)

    run = cached_function(model, ("impute", method, data_shape, num_samples, chunk,
                                  num_imputations), build)
    out = [run(x_enc[s:s + batch_size], start[s:s + batch_size], mask[s:s + batch_size],
               batch_seed(seed, i)).numpy()
           for i, s in enumerate(range(0, len(start), batch_size))]
    return np.concatenate(out, axis=0 if method == "importance" else 1)


def impute(model, x, mask=None, steps=50, method=None, batch_size=500, seed=0, init=None,
           num_samples=1000, num_imputations=5, chunk_size=None):
    """Fills the missing values of `x` with a trained model.

    Args:
      model: trained VAE (any model with `.encoder`, `.decoder`; "importance"
        and "multiple" also need a prior and a likelihood that factorises
        over entries).
      x: `[N] + data_shape` array; NaN or the entries under `~mask` are missing.
      mask: booleans broadcastable to `x`: **True where the value is
        observed**, False where it is missing and must be filled. Optional
        when the missing entries of `x` are NaN (then `mask = ~isnan(x)`).
      steps: encode/decode iterations of "mean" and "pseudo_gibbs" (>= 1).
      method: "mean" (deterministic fixed-point iteration), "pseudo_gibbs"
        (sampled chain, Rao-Blackwellised average of the last steps // 2),
        "importance" (E[x_m | x_o] by self-normalised importance sampling
        with L = `num_samples`, Mattei & Frellsen 2019) or "multiple"
        (`num_imputations` completed copies by sampling-importance-
        resampling). Default: "importance" for a model trained with
        `objective="miwae"`, else "mean".
      batch_size: examples per batch.
      seed: integer seed (all but "mean"); the same seed and batch size give
        the same numbers.
      init: starting values for the missing entries (array like `x`);
        default `mean_fill(x, mask)`. For "importance"/"multiple" it is what
        the encoder of a complete-data model sees in the missing entries (a
        MIWAE model's encoder sees `encoder.missing_fill` instead).
      num_samples: L importance samples per example ("importance", "multiple").
      num_imputations: M copies ("multiple").
      chunk_size: samples decoded at once (memory O(chunk x batch x D)); default
        the largest within 2**22 floats per tensor. "importance" does not
        depend on it.

    Returns:
      an array like `x` (float32, or the float dtype of `x`): every observed
      entry bit for bit as given, every missing one imputed; for
      "multiple", shape `[M, N] + data_shape`.

    Raises:
      ValueError / TypeError: bad mask, method, steps, sample counts or data;
        NaN under an observed entry of `mask`.

    Example:
      >>> observed = np.ones(x.shape, bool); observed[:, 4:] = False   # hide the bottom half
      >>> filled = impute(vae, x, observed, steps=50)
      >>> filled = impute(miwae_vae, x_with_nan, num_samples=1000, method="importance")
    """
    if method is None:
        method = "importance" if allows_missing(model) else "mean"
    if method not in _IMPUTE_METHODS:
        raise ValueError(f"`method` must be one of {_IMPUTE_METHODS}. "
                         f"Received: method={method!r}")
    steps = validation.positive_int("steps", steps)
    batch_size = validation.batch_size(batch_size)
    if method == "multiple":
        num_imputations = validation.positive_int("num_imputations", num_imputations,
                                                  maximum=10_000)
    x_given = x.numpy() if isinstance(x, tf.Tensor) else np.asarray(x)
    if x_given.dtype == object or x_given.dtype.kind not in "biuf":
        raise TypeError(f"Expected `x` to hold real numbers. Received: x.dtype={x_given.dtype}")
    x_raw = x_given.astype("float32")
    mask = _missing_mask(mask, x_raw)
    start = mean_fill(x_raw, mask) if init is None else np.where(
        mask, x_raw, np.asarray(init, "float32"))
    start = check_inputs(model, start)
    mask = np.ascontiguousarray(mask)
    if method in ("importance", "multiple"):
        x_enc = np.where(mask, start, np.nan).astype("float32") if (
            allows_missing(model) and init is None) else start
        filled = _importance_impute(model, x_enc, start, mask, method, num_samples,
                                    num_imputations if method == "multiple" else None,
                                    chunk_size, batch_size, seed)
    else:
        sample = method == "pseudo_gibbs"
        run = cached_function(
            model, ("impute", start.shape[1:], steps, method),
            lambda ref: _impute_function(ref, start.shape[1:], steps, sample))
        filled = np.concatenate([
            run(start[s:s + batch_size], mask[s:s + batch_size], batch_seed(seed, i)).numpy()
            for i, s in enumerate(range(0, len(start), batch_size))])
    dtype = x_given.dtype if x_given.dtype.kind == "f" else np.dtype("float32")
    # observed entries come from the caller's array itself: bit for bit unchanged
    return np.where(mask, x_given.astype(dtype, copy=False), filled.astype(dtype))


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
