"""Parity: keras_vae against a plain hand-written TF implementation of the IWAE paper's recipe.

The recipe (Burda et al., 2016, one stochastic layer): MLP 784-200-200-50,
tanh, Bernoulli likelihood, `q(z|x) = N(mu, exp(raw)^2)`, Adam(1e-3,
epsilon=1e-4), batch 128, dynamic binarization of Fashion-MNIST, ELBO (K=1).

Every arm is trained for the same budget in this one process; seeds are
interleaved (seed 0: every arm, then seed 1, ...; the starting arm rotates),
and within a seed every arm sees the same batches in the same order with the
same binarization draws (keras_vae's epoch-keyed `make_dataset`; the plain
model's in-step binarization `u < x` leaves binary batches unchanged), except
the `plain:own-data` arm, which uses the plain model's own pipeline. All arms
are evaluated by one estimator, `kv.log_likelihood` (the plain models' weights
are copied into a `kv.VAE` with the same `scale` and `min_scale`, which
computes the same functions: tests/test_parity_option.py), on the same
statically binarized test images (seed 1) with the same noise seed.

Arms (each changes one factor of its base; `plain` is the recipe):

```none
plain           PlainMLPVAE(**RECIPE): sigma = exp(raw), no floor, Adam eps 1e-4, own glorot init
plain:softplus  sigma = softplus(raw + softplus^-1(1)) + 1e-4 (keras_vae's default)
plain:eps1e-7   Adam epsilon 1e-7 (Keras's default)
plain:kv-init   initial weights copied from the keras_vae model of the same seed
plain:own-data  its own pipeline: index shuffle + in-step Philox binarization
kv              kv.VAE(MLPEncoder(50, (200, 200), "tanh"), MLPDecoder(...)), Adam eps 1e-4
kv:eps1e-7      kv with Keras's default Adam epsilon (what `benchmarks quality` used)
kv:exp          kv with MLPEncoder(..., scale="exp", min_scale=0.0)
```

Weight and bias initialisation are the same distributions on both sides
(glorot_uniform kernels, zero biases); `plain:kv-init` removes even the draw.
"""

import math
import time

import numpy as np

__all__ = ["ARMS", "DEFAULT_ARMS", "parity_benchmark", "summarize"]

ARMS = ("plain", "plain:softplus", "plain:eps1e-7", "plain:kv-init", "plain:own-data", "kv",
        "kv:eps1e-7", "kv:exp")
DEFAULT_ARMS = ARMS
_KV_ARMS = {"kv": {"epsilon": 1e-4},
            "kv:eps1e-7": {"epsilon": 1e-7},
            "kv:exp": {"epsilon": 1e-4,
                       "encoder_kwargs": {"scale": "exp", "min_scale": 0.0}}}
_PLAIN_CHANGES = {"plain": {}, "plain:softplus": {"scale": "softplus", "min_scale": 1e-4},
                  "plain:eps1e-7": {"epsilon": 1e-7}, "plain:kv-init": {},
                  "plain:own-data": {}}


def _kv_dataset(x_train, batch_size, seed):
    import tensorflow as tf

    import keras_vae as kv

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    ds = kv.data.make_dataset(x_train, batch_size=batch_size, binarize="dynamic", seed=seed,
                              drop_remainder=True, epoch=epoch)
    return ds, epoch


def _train_plain(arm, x_train, epochs, batch_size, seed):
    """Trains one plain arm; returns (model, seconds, last-epoch mean loss)."""
    from benchmarks import reference

    model = reference.PlainMLPVAE(784, latent_dim=50, seed=seed,
                                  **{**reference.RECIPE, **_PLAIN_CHANGES[arm]})
    if arm == "plain:kv-init":  # the keras_vae model's initial weights, same seed
        import keras

        import keras_vae as kv
        keras.utils.set_random_seed(seed)
        vae = kv.VAE(kv.MLPEncoder(50, hidden=(200, 200), activation="tanh"),
                     kv.MLPDecoder((28, 28, 1), hidden=(200, 200), activation="tanh"),
                     seed=seed)
        model.copy_from_keras(vae)
    start = time.perf_counter()
    if arm == "plain:own-data":
        ds = reference.plain_dataset(x_train, batch_size, seed=seed)
        for _ in range(epochs):
            losses = [float(model.train_step(xb)) for xb in ds]
    else:
        ds, epoch = _kv_dataset(x_train, batch_size, seed)
        for e in range(epochs):
            epoch.assign(e)  # what kv.EpochCounter does at on_epoch_begin
            losses = [model.train_step(xb) for xb in ds]
        losses = [float(v) for v in losses]
    return model, time.perf_counter() - start, float(np.mean(losses))


def _train_kv(arm, x_train, epochs, batch_size, seed):
    from benchmarks import quality

    vae, seconds, history = quality.train_model(x_train, "elbo", 1, epochs,
                                                batch_size=batch_size, seed=seed,
                                                **_KV_ARMS[arm])
    return vae, seconds, float(history["loss"][-1])


def _as_kv(model):
    """A `kv.VAE` computing what the plain `model` computes (same weights, same sigma map)."""
    import keras_vae as kv

    vae = kv.VAE(kv.MLPEncoder(50, hidden=(200, 200), activation="tanh", scale=model.scale,
                               min_scale=model.min_scale),
                 kv.MLPDecoder((28, 28, 1), hidden=(200, 200), activation="tanh"))
    return model.copy_to_keras(vae)


def parity_benchmark(x_train, x_test, epochs=10, seeds=(0, 1, 2), arms=DEFAULT_ARMS,
                     eval_n=1000, eval_k=5000, batch_size=128, log=print, on_run=None):
    """Trains every arm for every seed and evaluates test log p(x) with one estimator.

    Args:
      x_train: `[60000, 28, 28, 1]` grey images in [0, 1].
      x_test: grey test images; the first `eval_n` are binarized once (seed 1).
      epochs, batch_size: the budget of every arm.
      seeds: initialisation, data and noise seeds (interleaved).
      arms: names from `ARMS`.
      eval_n, eval_k: test images and importance samples.
      on_run: optional function called with each finished run dict (e.g. to
        keep the runs of an interrupted benchmark).

    Returns:
      list of run dicts: `arm`, `seed`, `train_seconds`, `train_loss`,
      `test_log_px` (mean over images), `eval_seconds`, `_log_px` (per image).
    """
    import keras_vae as kv

    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"Unknown parity arm: expected any of {ARMS}. Received: {unknown[0]!r}")
    x_eval = kv.data.binarize_static(x_test[:eval_n], seed=1)
    runs = []
    for i, seed in enumerate(seeds):
        order = list(arms[i % len(arms):]) + list(arms[:i % len(arms)])
        for arm in order:
            log(f"  seed {seed}: training {arm} for {epochs} passes ...")
            if arm.startswith("kv"):
                vae, seconds, loss = _train_kv(arm, x_train, epochs, batch_size, seed)
            else:
                model, seconds, loss = _train_plain(arm, x_train, epochs, batch_size, seed)
                vae = _as_kv(model)
            start = time.perf_counter()
            ll = kv.log_likelihood(vae, x_eval, num_samples=eval_k, batch_size=100, seed=0).log_px
            run = {"arm": arm, "seed": seed, "epochs": epochs, "eval_n": len(x_eval),
                   "eval_k": eval_k, "train_seconds": seconds,
                   "train_loss": loss, "test_log_px": float(np.mean(ll)),
                   "eval_seconds": time.perf_counter() - start, "_log_px": np.asarray(ll)}
            log(f"    log p(x) {run['test_log_px']:.2f} (train {seconds:.0f} s, "
                f"eval {run['eval_seconds']:.0f} s)")
            runs.append(run)
            if on_run is not None:
                on_run(run)
    return runs


def summarize(runs, base="plain"):
    """One row per arm: mean and spread over seeds, and the paired difference to `base`.

    Returns:
      list of row dicts: `arm`, `seeds`, `mean` (mean over seeds of the
      test log p(x)), `sd` (sample standard deviation over seeds), `diff`
      (mean over seeds of arm minus `base`, same seed and test images),
      `diff_sd` (its standard deviation over seeds), `diff_se` (`diff_sd /
      sqrt(seeds)`), `image_se` (standard error over test images of the
      pooled paired difference), `verdict` ("within noise" when |diff| <
      2 diff_se, else "higher" / "lower").
    """
    by = {}
    for r in runs:
        by.setdefault(r["arm"], {})[r["seed"]] = r
    rows = []
    for arm, seeds in by.items():
        values = np.array([seeds[s]["test_log_px"] for s in sorted(seeds)])
        row = {"arm": arm, "seeds": len(values), "mean": float(values.mean()),
               "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
               "train_seconds": float(np.mean([seeds[s]["train_seconds"] for s in seeds])),
               "train_loss": float(np.mean([seeds[s]["train_loss"] for s in seeds]))}
        common = sorted(set(seeds) & set(by.get(base, {})))
        if common:
            diffs = np.array([seeds[s]["test_log_px"] - by[base][s]["test_log_px"]
                              for s in common])
            per_image = np.concatenate([seeds[s]["_log_px"] - by[base][s]["_log_px"]
                                        for s in common])
            sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
            se = sd / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
            row.update({"diff": float(diffs.mean()), "diff_sd": sd, "diff_se": se,
                        "image_se": float(per_image.std() / math.sqrt(len(per_image)))})
            if arm == base:
                row["verdict"] = "base"
            elif not se == se:  # nan: one seed, no spread
                row["verdict"] = "one seed: no spread"
            else:
                row["verdict"] = ("within noise" if abs(row["diff"]) < 2 * se
                                  else ("higher" if row["diff"] > 0 else "lower"))
        rows.append(row)
    return rows
