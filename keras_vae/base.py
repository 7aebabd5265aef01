"""What every model here shares: `BaseAutoencoder` (its steps, noise seeds and input checks).

`BaseAutoencoder` is a `keras.Model` whose `train_step` and `test_step` both
call one function, `compute_terms`, so `fit` and `evaluate` report the same
numbers; subclasses (`keras_vae.VAE`, `keras_vae.Autoencoder`) say what the
terms are. It holds the steps, input checks, metrics, noise seeds, saving and
the denoising option (`keras_vae.corruption` draws the corrupted inputs the
encoder sees); the data rules themselves are `keras_vae.validation`'s.

Noise is drawn from stateless seeds `(seed, f(optimizer.iterations, replica))`
with the Philox generator: a run restored from a checkpoint (e.g. by
`keras.callbacks.BackupAndRestore`) draws the same noise as an uninterrupted
one, every replica of a `tf.distribute` strategy draws its own noise, and XLA
compiles the draws to fast code on CPU. Input corruption draws from the odd
counters, sampling noise from the even ones; evaluation gives every example
its own seed with a negative counter keyed by a fingerprint of that example
(`example_seeds`), so evaluation numbers do not depend on the batch size.
"""

import types
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_vae import keras_api, objectives, validation
from keras_vae.corruption import CORRUPTIONS, binarize, check_corruption, corrupt
from keras_vae.execution import AutoExecution

__all__ = ["BaseAutoencoder", "corrupt", "CORRUPTIONS", "replica_context"]


def _fingerprint(x):
    """A number in [0, 2^20) that changes with the values and order of a batch (0 for None).

    Each float's bit pattern is scrambled modulo a prime (pixel values such
    as k/16 have all-zero low bits, so a plain sum of bits would not do) and
    weighted by its position; all products stay below 2^63.
    """
    if x is None:
        return tf.constant(0, tf.int64)
    flat = tf.reshape(tf.cast(x, tf.float32), [-1])
    bits = tf.cast(tf.bitcast(flat, tf.uint32), tf.int64)
    mixed = tf.math.floormod(bits * 40503, 65521)
    weights = tf.math.floormod(tf.range(tf.size(flat, out_type=tf.int64)), 65521) + 1
    return tf.math.floormod(tf.reduce_sum(mixed * weights), 2 ** 20)


def _unused(name, what):
    return (f"keras_vae models do not use {what}: every example counts once in the "
            f"ELBO (loss, metrics and weights are fixed by the model). Remove `{name}`. "
            f"Received: {name}=<given>")


def replica_context():
    """(replica id, number of replicas in sync) inside a replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


class BaseAutoencoder(AutoExecution, keras.Model):
    """Encoder-decoder model trained with `fit`: the machinery `VAE` and `Autoencoder` share.

    Subclasses define `compute_terms(x, training, seed, num_samples)`, which
    returns a dict with the scalar `loss` and per-example `[B]` terms named
    like the metrics, and call `_finish_init(metric_names)` at the end of
    their constructor. This class provides `train_step`/`test_step` (one
    loss function for both), input checks, metrics, stateless step-derived
    noise seeds, input corruption for denoising, `encode`/`decode`/
    `reconstruct` and the `.keras` config of the encoder and decoder, and
    (from `keras_vae.execution.AutoExecution`) `compile(jit_compile="auto",
    steps_per_execution="auto")`, resolved at the first `fit`.

    Args:
      encoder: layer mapping `x [B] + data_shape` to `q(z|x)` (event `[latent_dim]`).
      decoder: layer mapping `z [..., latent_dim]` to `p(x|z)` (event `data_shape`).
        A decoder with a `tie(encoder)` method (e.g. `TiedMLPDecoder`) is tied
        to the encoder when the model is built.
      corruption: None, or "gaussian", "masking", "salt_and_pepper": the
        encoder sees `corrupt(x)` during training while the likelihood scores
        the clean `x` (denoising). Evaluation and prediction use clean inputs.
      corruption_rate: probability per element for masking and salt-and-pepper.
      corruption_stddev: standard deviation of Gaussian corruption.
      seed: integer base of the stateless noise seeds.
      input_key: for data whose elements are dicts (the TensorFlow Datasets
        convention `{"image": ..., "label": ...}`): the key of the model
        input. None (default) takes "image" and refuses dicts without it,
        listing their keys.

    Every batch is checked inside the steps (NaN/Inf, values outside the
    likelihood's support; a few reductions per batch): `fit` raises a
    ValueError at the end of an epoch that saw a bad batch, `evaluate` and
    `predict` when they return. Arrays are checked whole and the first batch
    of a dataset, generator or PyDataset eagerly, before any step.

    Example:
      >>> class MyAutoencoder(BaseAutoencoder):
      ...     def __init__(self, encoder, decoder, **kwargs):
      ...         super().__init__(encoder, decoder, **kwargs)
      ...         self._finish_init(["loss", "reconstruction"])
      ...     def compute_terms(self, x, training=False, seed=None, num_samples=None):
      ...         z = self.encoder(x).mean()
      ...         rec = -self.decoder(z).log_prob(x)
      ...         return {"loss": tf.reduce_mean(rec), "reconstruction": rec}
    """

    _nested = ("encoder", "decoder")
    # True for models trained on incomplete data (VAE(objective="miwae")): NaN in
    # the data marks a missing entry, the encoder sees it as `encoder.missing_fill`.
    allows_missing = False

    def __init__(self, encoder, decoder, corruption=None, corruption_rate=0.25,
                 corruption_stddev=0.1, seed=0, input_key=None, **kwargs):
        super().__init__(**kwargs)
        for name, layer, attr in (("encoder", encoder, "latent_dim"),
                                  ("decoder", decoder, "event_shape")):
            if not isinstance(layer, keras.layers.Layer) or not hasattr(layer, attr):
                raise TypeError(
                    f"`{name}` must be a keras_vae {name} layer (a keras.layers.Layer "
                    f"with `{attr}`). Received: {name}={layer!r}"
                )
        latent_dim = encoder.latent_dim
        if getattr(decoder, "latent_dim", None) not in (None, latent_dim):
            raise ValueError(
                f"The decoder was built for latent_dim={decoder.latent_dim} but the "
                f"encoder has latent_dim={latent_dim}. Received: decoder.latent_dim="
                f"{decoder.latent_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.data_shape = tuple(decoder.event_shape)
        self.corruption, self.corruption_rate, self.corruption_stddev = check_corruption(
            corruption, corruption_rate, corruption_stddev)
        self.seed = validation.seed32(seed)
        if input_key is not None and not isinstance(input_key, str):
            raise TypeError(f"`input_key` must be None or a string (the dict key of the "
                            f"model input). Received: input_key={input_key!r}")
        self.input_key = input_key

    def _finish_init(self, metric_names):
        self._trackers = {n: keras.metrics.Mean(name=n) for n in metric_names}
        # Not an attribute Keras tracks: it is no model state, never saved.
        object.__setattr__(self, "_data_guard",
                           validation.DataGuard(getattr(self.decoder.head, "support", None),
                                                allow_missing=self.allows_missing))
        self.build((None,) + self.data_shape)

    def build(self, input_shape=None):
        if not self.encoder.built:
            self.encoder.build(input_shape or (None,) + self.data_shape)
        if hasattr(self.decoder, "tie"):
            self.decoder.tie(self.encoder)
        if not self.decoder.built:
            self.decoder.build((None, self.latent_dim))
        self.built = True
        self._create_lazy_weights()

    def _create_lazy_weights(self):
        """Creates the weights of sublayers that only make them on their first call.

        A custom layer without `build()` leaves its sublayers unbuilt; their
        weights would then appear inside the first training step, after
        `load_model` restored the file into a model that had none, and a
        loaded model would silently keep random weights. One eager call on a
        dummy batch creates them here, at construction (and so at loading).
        """
        parts = (self.encoder, self.decoder)
        if all(layer.built for part in parts for layer in keras_api.flatten_layers(part)):
            return
        dummy = tf.zeros((1,) + self.data_shape, tf.float32)
        self.decoder(self.encoder(dummy, training=False).mean(), training=False)

    # ------------------------------------------------------------ the steps

    def noise_seed(self, training, x=None):
        """Stateless seed (int32 [2]) for this step, replica and (in evaluation) batch.

        Training: `(seed, 2 * (iterations * replicas + replica))`, so a run
        restored at step t draws what the uninterrupted run drew at step t;
        input corruption uses the odd counter just above it.
        Evaluation: `(seed, -1 - (fingerprint(x) * replicas + replica))`, where
        the fingerprint hashes the batch's bits: every batch gets its own noise,
        and evaluating the same data again gives the same numbers.
        """
        replica, replicas = replica_context()
        replica = tf.cast(replica, tf.int64)
        if training:
            counter = 2 * (tf.cast(self.optimizer.iterations, tf.int64) * replicas + replica)
        else:
            counter = -1 - (_fingerprint(x) * replicas + replica)
        return tf.cast(tf.stack([tf.constant(self.seed, tf.int64), counter]), tf.int32)

    def example_seeds(self, x):
        """Evaluation seeds, one per example (int32 `[B, 2]`): `(seed, -1 - fingerprint(x[b]))`.

        Each example's noise depends on its own values only, so `evaluate` at
        any batch size (and `fit`'s `val_loss`) gives the same per-example terms,
        and evaluating the same data again gives the same numbers.
        """
        x = tf.cast(x, tf.float32)
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        bits = tf.cast(tf.bitcast(flat, tf.uint32), tf.int64)
        mixed = tf.math.floormod(bits * 40503, 65521)
        weights = tf.math.floormod(tf.range(tf.shape(flat, out_type=tf.int64)[1]), 65521) + 1
        fingerprint = tf.math.floormod(tf.reduce_sum(mixed * weights[None, :], axis=1), 2 ** 30)
        counter = -1 - fingerprint
        base = tf.fill(tf.shape(counter), tf.constant(self.seed, tf.int64))
        return tf.cast(tf.stack([base, counter], axis=1), tf.int32)

    def fill_missing(self, x):
        """`x` with NaN (missing entries) replaced by `encoder.missing_fill` (default 0.0,
        as in MIWAE); `x` itself for a model that does not allow missing entries."""
        if not self.allows_missing:
            return x
        x = tf.cast(x, tf.float32)
        fill = tf.cast(getattr(self.encoder, "missing_fill", 0.0), tf.float32)
        return tf.where(tf.math.is_nan(x), tf.broadcast_to(fill, tf.shape(x)), x)

    def encoder_input(self, x, training, seed):
        """What the encoder sees: `x`, or a corrupted copy while training a denoising model.

        Args:
          x: `[B] + data_shape` float32 tensor.
          training: corruption applies only when True.
          seed: the step's stateless seed; corruption draws from `seed + [0, 1]`.
        """
        if not training or self.corruption is None:
            return x
        seed = tf.cast(seed, tf.int32) + tf.constant([0, 1], tf.int32)
        return corrupt(x, seed, self.corruption, self.corruption_rate,
                       self.corruption_stddev, getattr(self.decoder.head, "support", None))

    def compute_terms(self, x, training=False, seed=None, num_samples=None):
        raise NotImplementedError

    # Binarization of training batches inside the step: None, or "dynamic" (set by
    # subclasses that take a `binarize` argument, e.g. keras_vae.VAE).
    binarize = None
    # Tag folded into the step's noise seed for the binarization draws (a stream of
    # its own, disjoint from the sampling and corruption noise).
    _BINARIZE_TAG = 0x62696E

    def binarization_seed(self):
        """Stateless seed (int32 [2]) of this training step's binarization draws:
        `fold_in(noise_seed(True), tag)`, a function of (seed, optimizer.iterations,
        replica), so a resumed run draws the same bits as an uninterrupted one."""
        return tf.random.experimental.stateless_fold_in(
            self.noise_seed(True), self._BINARIZE_TAG, alg="philox")

    def training_batch(self, x):
        """The batch a training step learns from: `x` itself, or with
        `binarize="dynamic"` a Bernoulli(x) draw keyed by the step
        (`corruption.binarize(x, binarization_seed())`). Evaluation and
        prediction never binarize: they see the data as given.

        Args:
          x: `[B] + data_shape`, or a tuple whose first element is (a conditional
            model's `(x, condition)`); only that element is binarized.
        """
        if self.binarize != "dynamic":
            return x
        if isinstance(x, tuple):
            return (binarize(x[0], self.binarization_seed()),) + x[1:]
        return binarize(x, self.binarization_seed())

    def _init_kl_weight(self, beta, warmup_steps=0, warmup_schedule="linear"):
        """The KL weight `self.beta` (a non-trainable weight, so a warm-up callback or
        the in-step warm-up can change it without retracing) and its warm-up settings,
        checked. `warmup_steps=N > 0`: `before_train_step` sets beta to
        `objectives.warmup_beta(optimizer.iterations, N, warmup_schedule, 0, beta)`."""
        self._initial_beta = validation.non_negative_float("beta", beta)
        self.warmup_steps = validation.non_negative_int("warmup_steps", warmup_steps)
        self.warmup_schedule = validation.choice("warmup_schedule", warmup_schedule,
                                                 objectives.WARMUP_SCHEDULES)
        self.beta = self.add_weight(
            name="beta", shape=(), dtype="float32", trainable=False,
            initializer=keras.initializers.Constant(self._initial_beta))

    def _kl_weight_config(self):
        """`beta` and (when set) `warmup_steps` / `warmup_schedule` for `get_config`."""
        config = {"beta": self._initial_beta}
        if self.warmup_steps:
            config.update({"warmup_steps": self.warmup_steps,
                           "warmup_schedule": self.warmup_schedule})
        return config

    def before_train_step(self):
        """Hook run at the start of every compiled training step: with `warmup_steps`
        (see `_init_kl_weight`), `beta = warmup_beta(optimizer.iterations)`, assigned in
        the step (the loss of this step reads it; evaluation reads the last value)."""
        if getattr(self, "warmup_steps", 0):
            self.beta.assign(tf.cast(objectives.warmup_beta(
                self.optimizer.iterations, self.warmup_steps, self.warmup_schedule,
                0.0, self._initial_beta), tf.float32))

    # Whether training steps check each batch in-graph (set by `fit`; read when the
    # training step is traced).
    _guard_training = True

    def _guard(self, x, row):
        """The data guard's update for a batch of step kind `row` (None: no check), left
        out of training steps when `fit`'s data were all read before training
        (`validation.fully_checked`)."""
        if row is None or (row == validation.TRAIN and not self._guard_training):
            return
        self._data_guard.update_state(x, row)

    def _set_training_guard(self, x):
        """Sets `_guard_training` for `fit`'s data `x`, swapping in the training function
        traced for that setting: each setting's function is kept (in a plain dict, which
        SavedModel and checkpoints do not track) while the execution settings it was
        made under (XLA, steps per call, the XLA loop) hold, so fit calls alternating
        between data read before training and data that is not trace (and compile with
        XLA) once each. `compile` drops both."""
        needed = not validation.fully_checked(x, self.decoder.head, self.allows_missing)
        if needed == self._guard_training:
            return
        settings = (bool(self.jit_compile), int(self.steps_per_execution),
                    bool((getattr(self, "execution_plan", None) or {}).get("loop")))
        kept = {guard: entry for guard, entry in self.__dict__.get("_train_functions", {}).items()
                if entry[1] == settings}
        if self.train_function is not None:
            kept[self._guard_training] = (self.train_function, settings)
        function, _ = kept.pop(needed, (None, None))
        object.__setattr__(self, "_train_functions", kept)
        object.__setattr__(self, "_guard_training", needed)
        self.train_function = function

    def _data(self, data, row=None):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x = validation.select_input(x, self.input_key)
        self._guard(x, row)
        return x

    def train_step(self, data):
        x = self.training_batch(self._data(data, validation.TRAIN))
        self.before_train_step()
        _, replicas = replica_context()
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, training=True)
            loss = terms["loss"]
            if self.losses:  # layer regularisers
                loss = loss + tf.add_n(self.losses)
            # Gradients are summed across replicas: divide so they average.
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_metrics(terms, loss)

    def test_step(self, data):
        terms = self.compute_terms(self._data(data, validation.TEST), training=False)
        return self._update_metrics(terms, terms["loss"])

    def predict_step(self, data):
        return self(tf.cast(self._data(data, validation.PREDICT), tf.float32), training=False)

    def _scalar_metrics(self):
        """Metrics that are model state rather than per-example terms (e.g. beta)."""
        return {}

    def _update_metrics(self, terms, loss):
        # Weighted by batch size, like the per-example terms (and Keras's own loss).
        batch = tf.cast(tf.shape(terms["reconstruction"])[0], tf.float32)
        scalars = self._scalar_metrics()
        for name, tracker in self._trackers.items():
            if name == "loss":
                tracker.update_state(loss, sample_weight=batch)
            elif name in scalars:
                tracker.update_state(scalars[name])
            else:
                tracker.update_state(terms[name])
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, x, training=False):
        return self.decoder(self.encoder(self.fill_missing(x), training=training).mean(),
                            training=training).mean()

    # -------------------------------------------------- Keras entry points

    def _check(self, x, name="x"):
        """Checks `x` (see `validation.check_data`); returns it, a generator re-chained
        after its first batch was taken and checked."""
        if isinstance(x, types.GeneratorType):
            first, x = validation.peek_stream(x)
            validation.check_first_batch(first, self.data_shape, self.decoder.head, name,
                                         self.input_key, self.allows_missing)
            return x
        validation.check_data(x, self.data_shape, self.decoder.head, name=name,
                              input_key=self.input_key, allow_missing=self.allows_missing)
        return x

    def _check_validation(self, validation_data):
        if validation_data is None:
            return None
        if isinstance(validation_data, tuple):
            if not validation_data:
                raise ValueError("`validation_data` is an empty tuple. "
                                 "Received: validation_data=()")
            if len(validation_data) >= 3 and validation_data[2] is not None:
                raise ValueError(_unused("validation_data[2]", "sample weights"))
            self._check(validation_data[0], "validation_data")
            return validation_data
        return self._check(validation_data, "validation_data")

    def _check_unused(self, y, kwargs, x=None):
        for name in ("sample_weight", "class_weight"):
            if kwargs.get(name) is not None:
                raise ValueError(_unused(name, "sample or class weights"))
        if y is not None and y is not x:
            warnings.warn(
                "keras_vae models learn to reconstruct `x`: the targets `y` are ignored "
                "(pass only `x`; fit(x, x) is accepted silently). Received: y of type "
                f"{type(y).__name__}", validation.KerasVAEWarning, stacklevel=3)

    def fit(self, x=None, y=None, **kwargs):
        self._check_unused(y, kwargs, x)
        x = self._check(x)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._check_validation(kwargs["validation_data"])
        kwargs["callbacks"] = list(kwargs.get("callbacks") or ()) + [
            validation.DataGuardCheck(self._data_guard, self.decoder.head)]
        self._set_training_guard(x)
        self._data_guard.reset_state()
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        # fit() validates validation_data once, then calls evaluate every epoch
        # with Keras's private _use_cached_eval_dataset flag: no need to rescan,
        # and the data guard is read at the end of fit's epoch.
        if keras_api.is_cached_eval(kwargs):
            return super().evaluate(x, y, **kwargs)
        self._check_unused(y, kwargs, x)
        x = self._check(x)
        self._data_guard.reset_state()
        result = super().evaluate(x, y, **kwargs)
        self._data_guard.check(validation.TEST, self.decoder.head)
        return result

    def predict(self, x, **kwargs):
        x = self._check(x)
        self._data_guard.reset_state()
        result = super().predict(x, **kwargs)
        self._data_guard.check(validation.PREDICT, self.decoder.head)
        return result

    def save(self, filepath, *args, **kwargs):
        """`keras.Model.save` to a `.keras` file (the only format that loads back).

        Raises:
          ValueError: for any other file name (`.h5` saves but does not load:
            the legacy format does not know subclassed models).
        """
        import os

        if isinstance(filepath, (str, os.PathLike)) and not os.fspath(filepath).endswith(
                ".keras"):
            raise ValueError(
                "keras_vae models save to the native Keras format only: the file name must "
                "end in '.keras' (a legacy '.h5' file would save but not load, with "
                "\"Unknown layer: 'VAE'\"); use save_weights('....weights.h5') for weights "
                f"alone. Received: filepath={os.fspath(filepath)!r}")
        return super().save(filepath, *args, **kwargs)

    # ------------------------------------------------------ user methods

    def encode(self, x):
        """`q(z|x)`: batch shape `[B]`, event shape `[latent_dim]`."""
        x = validation.select_input(self._check(x), self.input_key)
        return self.encoder(self.fill_missing(tf.cast(x, tf.float32)), training=False)

    def decode(self, z):
        """`p(x|z)`: batch shape `z.shape[:-1]`, event shape `data_shape`."""
        if not isinstance(z, tf.Tensor):
            arr = np.asarray(z) if z is not None else np.asarray(None)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"Expected latents as real numbers of shape (..., "
                                f"{self.latent_dim}). Received: z of dtype {arr.dtype}")
            z = arr
        z = tf.convert_to_tensor(z, tf.float32)
        if z.shape.rank is None or z.shape.rank < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"Expected latents of shape (..., {self.latent_dim}). "
                f"Received: z.shape={tuple(z.shape)}"
            )
        if not bool(tf.reduce_all(tf.math.is_finite(z))):
            raise ValueError("Latents must be finite. Received: z with NaN or Inf")
        return self.decoder(z, training=False)

    def reconstruct(self, x):
        """Mean of `p(x | z = E[q(z|x)])`, shape `[B] + data_shape`."""
        x = validation.select_input(self._check(x), self.input_key)
        return self(tf.cast(x, tf.float32), training=False)

    # ------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update({key: keras.saving.serialize_keras_object(getattr(self, key))
                       for key in self._nested})
        config.update({"corruption": self.corruption, "corruption_rate": self.corruption_rate,
                       "corruption_stddev": self.corruption_stddev, "seed": self.seed})
        if self.input_key is not None:
            config["input_key"] = self.input_key
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls._nested:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
