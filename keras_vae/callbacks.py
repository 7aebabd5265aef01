"""Callbacks: KL warm-up, epoch-keyed data, divergence guard, TensorBoard images."""

import math

import keras

from keras_vae import objectives, validation

__all__ = ["KLWarmup", "EpochCounter", "StopOnNaN", "TrainingDivergedError", "ImageSummaries",
           "tensorboard_callbacks"]


@keras.saving.register_keras_serializable(package="keras_vae")
class KLWarmup(keras.callbacks.Callback):
    """Anneals the KL weight `model.beta` from `start` to `target` during training.

    The schedule is a function of `model.optimizer.iterations`, so it continues
    correctly after `keras.callbacks.BackupAndRestore` or a reload. `beta` is a
    non-trainable variable read inside the compiled step: assigning it changes
    the loss of the very next batch (a Python float would be frozen at tracing).

    A callback that acts before every batch makes `fit` run one step per
    compiled call (`steps_per_execution=1`). `VAE(warmup_steps=N,
    warmup_schedule=...)` computes the same schedule (`objectives.warmup_beta`,
    start 0, target the model's `beta`) inside the compiled step instead and
    keeps `steps_per_execution`; use one or the other, not both.

    #### Mathematical details

    ```none
    linear   (Bowman et al., 2016): beta(t) = start + (target - start) * min(1, t / steps)
    cyclical (Fu et al., 2019):     u = (t mod steps) / steps,
                                    beta(t) = start + (target - start) * min(1, u / ratio)
    ```

    Args:
      steps: length of the ramp (linear) or of one cycle (cyclical), in
        optimizer steps (batches).
      schedule: "linear" (default) or "cyclical".
      target: final beta (default 1.0).
      start: initial beta (default 0.0).
      ratio: cyclical only, the share of each cycle spent increasing (0, 1].

    Example:
      >>> vae.fit(x, epochs=20, callbacks=[KLWarmup(steps=1000)])
    """

    SCHEDULES = objectives.WARMUP_SCHEDULES

    def __init__(self, steps, schedule="linear", target=1.0, start=0.0, ratio=0.5):
        super().__init__()
        self.steps = validation.positive_int("steps", steps)
        self.schedule = validation.choice("schedule", schedule, self.SCHEDULES)
        self.target = validation.non_negative_float("target", target)
        self.start = validation.non_negative_float("start", start)
        ratio = validation.positive_float("ratio", ratio)
        if ratio > 1:
            raise ValueError(f"`ratio` must lie in (0, 1]. Received: ratio={ratio!r}")
        self.ratio = ratio

    def value(self, step):
        """beta at optimizer step `step` (a Python float; `objectives.warmup_beta`)."""
        return float(objectives.warmup_beta(step, self.steps, self.schedule, self.start,
                                            self.target, self.ratio))

    def on_train_begin(self, logs=None):
        if getattr(self.model, "warmup_steps", 0):
            raise ValueError(
                "The model warms up the KL weight itself (VAE(warmup_steps=...), in the "
                "compiled step); a KLWarmup callback as well would be overridden every "
                "step. Pass one of them. Received: model.warmup_steps="
                f"{self.model.warmup_steps} and callbacks=[KLWarmup(steps={self.steps})]")

    def on_train_batch_begin(self, batch, logs=None):
        beta = getattr(self.model, "beta", None)
        if beta is None:
            raise ValueError(
                "KLWarmup needs a model with a `beta` variable such as keras_vae.VAE. "
                f"Received: model of type {type(self.model).__name__}"
            )
        beta.assign(self.value(int(self.model.optimizer.iterations.numpy())))

    def get_config(self):
        return {"steps": self.steps, "schedule": self.schedule, "target": self.target,
                "start": self.start, "ratio": self.ratio}


class ImageSummaries(keras.callbacks.Callback):
    """Writes reconstructions (and prior samples, for generative models) to TensorBoard
    as image summaries at the end of every epoch.

    Args:
      log_dir: TensorBoard log folder (the callback writes to `log_dir/images`).
      x: a few examples `[n, H, W, C]` (images only; other shapes are skipped).
      seed: seed of the prior samples, fixed so epochs are comparable.
    """

    def __init__(self, log_dir, x, seed=0):
        super().__init__()
        import tensorflow as tf

        self._tf = tf
        self.x = x[:8]
        self.seed = seed
        self.writer = tf.summary.create_file_writer(f"{log_dir}/images")

    def on_epoch_end(self, epoch, logs=None):
        tf = self._tf
        if self.x.ndim != 4:
            return
        with self.writer.as_default(step=epoch):
            tf.summary.image("reconstructions", self.model.reconstruct(self.x), max_outputs=8)
            if getattr(self.model, "prior", None) is not None:
                tf.summary.image("samples", self.model.sample(8, seed=self.seed), max_outputs=8)
        self.writer.flush()


def tensorboard_callbacks(log_dir, x):
    """`keras.callbacks.TensorBoard` (scalars) plus `ImageSummaries`.

    Raises:
      ImportError: if the `tensorboard` package is missing (`pip install keras-vae[tensorboard]`).
    """
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError("TensorBoard logging needs the tensorboard package: "
                          "pip install 'keras-vae[tensorboard]'") from None
    return [keras.callbacks.TensorBoard(log_dir=log_dir), ImageSummaries(log_dir, x)]


class EpochCounter(keras.callbacks.Callback):
    """Keeps `variable` (int64 scalar) equal to the current epoch for `make_dataset(epoch=...)`.

    Together they make shuffling and dynamic binarization a function of the
    epoch number, so a run resumed by `keras.callbacks.BackupAndRestore` (which
    restarts at the saved epoch) reproduces an uninterrupted run exactly.

    Example:
      >>> epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
      >>> ds = kv.data.make_dataset(x, batch_size=128, epoch=epoch)
      >>> model.fit(ds, epochs=10, callbacks=[EpochCounter(epoch), BackupAndRestore(d)])
    """

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite loss; the message names where and the likely cause."""


class StopOnNaN(keras.callbacks.Callback):
    """Raises `TrainingDivergedError` at the first batch whose loss is NaN or Inf.

    Unlike `keras.callbacks.TerminateOnNaN` it raises rather than stopping
    quietly, so `fit` ends without `on_train_end` and a `BackupAndRestore`
    folder keeps the last good epoch; the message names the epoch and batch.
    With `steps_per_execution=N` Keras reports once per N batches: the
    message then names the range of batches of the call that diverged.
    """

    runs_per_execution = True  # see keras_vae.execution: fine with steps_per_execution > 1

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            lr = getattr(self.model.optimizer, "learning_rate", None)
            lr = f"{float(lr):g}" if lr is not None else "?"
            spe = int(getattr(self.model, "steps_per_execution", 1) or 1)
            where = f"batch {batch + 1}" if spe == 1 else (  # one report per compiled call
                f"batches {max(1, batch + 2 - spe)}-{batch + 1}")
            raise TrainingDivergedError(
                f"Training diverged: loss={loss} at epoch {self._epoch + 1}, {where}. "
                f"Likely causes: a learning rate too high (now {lr}) or "
                "unscaled data (pixels should lie in [0, 1]).")
