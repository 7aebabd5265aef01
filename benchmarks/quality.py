"""Quality: test log p(x) of the IWAE paper's MLP on dynamically binarized Fashion-MNIST.

Three models, one budget: the MLP 784-200-200-50 (tanh, Bernoulli likelihood)
trained with the ELBO (K=1), the IWAE bound with K=5 and with K=50, for the
same number of passes over the 60,000 training images (dynamic binarization
in the compiled step, `VAE(binarize="dynamic")`,
Adam), then evaluated on statically binarized test images (seed 1) with
`kv.log_likelihood(K=5000)` and the one-sample ELBO.

Schedules:

```none
short  (default): `epochs` passes, batch 128, Adam(1e-3)
paper  (Burda et al., 2016, section 5): batch 20, Adam(beta_1=0.9, beta_2=0.999,
        epsilon=1e-4), 3^i passes at learning rate 1e-3 * 10^(-i/7) for
        i = 0..7 (3,280 passes) -- days on a CPU: a documented recipe, not CI
```
"""

import math
import os
import time

import numpy as np

__all__ = ["train_model", "quality_benchmark", "paper_learning_rate", "OBJECTIVES"]

OBJECTIVES = (("elbo", 1), ("iwae", 5), ("iwae", 50))
PAPER_PASSES = sum(3 ** i for i in range(8))  # 3280


def paper_learning_rate(epoch):
    """The IWAE paper's learning rate at (0-based) pass `epoch`: 1e-3 * 10^(-i/7)."""
    i, start = 0, 0
    while epoch >= start + 3 ** i and i < 7:
        start += 3 ** i
        i += 1
    return 1e-3 * 10 ** (-i / 7)


def train_model(x_train, objective, k, epochs, schedule="short", batch_size=None, seed=0,
                jit_compile=False, steps_per_execution=10, verbose=0, epsilon=1e-7,
                encoder_kwargs=None, on_built=None):
    """Trains the MLP VAE with `objective` ("elbo" or "iwae") and K = `k` samples.

    Args:
      epsilon: Adam's epsilon of the "short" schedule (1e-7, Keras's default;
        the IWAE paper's recipe uses 1e-4, as the "paper" schedule does).
      encoder_kwargs: extra `kv.MLPEncoder` arguments (e.g. `scale="exp"`).
      on_built: optional function called with the untrained model (e.g. to
        copy its initial weights).

    Returns:
      (vae, seconds, history dict).
    """
    import keras
    import tensorflow as tf

    import keras_vae as kv

    keras.utils.set_random_seed(seed)
    vae = kv.VAE(kv.MLPEncoder(50, hidden=(200, 200), activation="tanh", **(encoder_kwargs or {})),
                 kv.MLPDecoder((28, 28, 1), hidden=(200, 200), activation="tanh"),
                 objective=objective, num_samples=k, seed=seed,
                 binarize="dynamic")  # drawn in the compiled step (issue 17)
    callbacks = []
    if schedule == "paper":
        batch_size = batch_size or 20
        optimizer = keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-4)
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: paper_learning_rate(epoch)))
        epochs = PAPER_PASSES
    else:
        batch_size = batch_size or 128
        optimizer = keras.optimizers.Adam(1e-3, epsilon=epsilon)
    vae.compile(optimizer=optimizer, jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    ds = kv.data.make_dataset(x_train, batch_size=batch_size, seed=seed,  # grey batches
                              drop_remainder=True, epoch=epoch_var)
    callbacks.append(kv.EpochCounter(epoch_var))
    if on_built is not None:
        on_built(vae)
    start = time.perf_counter()
    history = vae.fit(ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    return vae, time.perf_counter() - start, history.history


def _trained(x_train, objective, k, epochs, schedule, save_dir, load_dir, log, train_kwargs):
    """Trains (and saves) a model, or loads one saved by an earlier run with its record."""
    import json

    import keras

    stem = f"quality-{objective}-k{k}"
    if load_dir:
        with open(os.path.join(load_dir, stem + ".json"), encoding="utf-8") as f:
            record = json.load(f)
        log(f"  loading {stem}.keras (trained {record['epochs']} passes, {record['schedule']})")
        return keras.models.load_model(os.path.join(load_dir, stem + ".keras")), record
    passes = PAPER_PASSES if schedule == "paper" else epochs
    log(f"  training {objective} K={k} for {passes} passes ...")
    vae, seconds, history = train_model(x_train, objective, k, epochs, schedule, **train_kwargs)
    record = {"epochs": passes, "schedule": schedule, "train_seconds": seconds,
              "train_loss": float(history["loss"][-1])}
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        vae.save(os.path.join(save_dir, stem + ".keras"))
        with open(os.path.join(save_dir, stem + ".json"), "w", encoding="utf-8") as f:
            json.dump(record, f)
    return vae, record


def quality_benchmark(x_train, x_test, epochs=10, eval_n=1000, eval_k=5000, schedule="short",
                      save_dir=None, load_dir=None, log=print, **train_kwargs):
    """Trains the three models with one budget and evaluates test log p(x).

    Args:
      x_train: `[60000, 28, 28, 1]` grey training images in [0, 1] (binarized per batch).
      x_test: grey test images; the first `eval_n` are binarized once (seed 1).
      epochs: passes over the training set for every model ("short" schedule).
      eval_n, eval_k: test images and importance samples of the log p(x) estimate.
      schedule: "short" or "paper" (see the module docstring).
      save_dir: if given, each model is saved there as `quality-<objective>-k<K>.keras`
        (with a `.json` record of its training).
      load_dir: evaluate the models an earlier run saved there instead of training.

    Returns:
      list of row dicts: `objective`, `k`, `epochs`, `train_seconds`,
      `train_loss` (last epoch), `test_log_px` (mean IWAE-`eval_k`, nats),
      `test_log_px_sem`, `test_elbo`, `bits_per_dim`, `eval_seconds`, and
      `gain_vs_elbo` (mean paired difference of log p(x) to the ELBO model,
      nats) with its standard error `gain_vs_elbo_sem`.
    """
    import keras_vae as kv

    x_eval = kv.data.binarize_static(x_test[:eval_n], seed=1)
    rows = []
    for objective, k in OBJECTIVES:
        vae, record = _trained(x_train, objective, k, epochs, schedule, save_dir, load_dir, log,
                               train_kwargs)
        log(f"  evaluating {objective} K={k}: log p(x) with K={eval_k} on {len(x_eval)} "
            "test images ...")
        start = time.perf_counter()
        ll = kv.log_likelihood(vae, x_eval, num_samples=eval_k, batch_size=100, seed=0)
        eval_seconds = time.perf_counter() - start
        terms = kv.evaluation.elbo_terms(vae, x_eval, seed=0)
        rows.append({
            "objective": objective, "k": k, **record,
            "test_log_px": float(np.mean(ll.log_px)),
            "test_log_px_sem": float(np.std(ll.log_px) / math.sqrt(len(ll.log_px))),
            "test_elbo": float(np.mean(terms["elbo"])),
            "bits_per_dim": float(np.mean(ll.bits_per_dim)),
            "eval_n": len(x_eval), "eval_k": eval_k, "eval_seconds": eval_seconds,
            "_log_px": np.asarray(ll.log_px),
        })
    base = rows[0].pop("_log_px")
    rows[0].update({"gain_vs_elbo": 0.0, "gain_vs_elbo_sem": 0.0})
    for row in rows[1:]:  # paired over the same test images
        diff = row.pop("_log_px") - base
        row.update({"gain_vs_elbo": float(np.mean(diff)),
                    "gain_vs_elbo_sem": float(np.std(diff) / math.sqrt(len(diff)))})
    return rows
