"""What every model here shares: `BaseAutoencoder`, data checks and input corruption.

`BaseAutoencoder` is a `keras.Model` whose `train_step` and `test_step` both
call one function, `compute_terms`, so `fit` and `evaluate` report the same
numbers; subclasses (`keras_vae.VAE`, `keras_vae.Autoencoder`) say what the
terms are. It holds the steps, input checks, metrics, noise seeds, saving and
the denoising option: `corrupt` draws the corrupted inputs the encoder sees.

Noise is drawn from stateless seeds `(seed, f(optimizer.iterations, replica))`
with the Philox generator: a run restored from a checkpoint (e.g. by
`keras.callbacks.BackupAndRestore`) draws the same noise as an uninterrupted
one, every replica of a `tf.distribute` strategy draws its own noise, and XLA
compiles the draws to fast code on CPU. Input corruption draws from the odd
counters, sampling noise from the even ones; evaluation uses negative
counters keyed by a fingerprint of each batch.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_vae import distributions as dists
from keras_vae import keras_api
from keras_vae import validation
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


def replica_context():
    """(replica id, number of replicas in sync) inside a replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


CORRUPTIONS = ("gaussian", "masking", "salt_and_pepper")


def _corruption_args(corruption, rate, stddev):
    if corruption is not None and corruption not in CORRUPTIONS:
        raise ValueError(
            f"`corruption` must be None or one of {CORRUPTIONS}. "
            f"Received: corruption={corruption!r}"
        )
    return (corruption, validation.fraction("corruption_rate", rate),
            validation.positive_float("corruption_stddev", stddev))


def corrupt(x, seed, kind, rate=0.25, stddev=0.1, support=None):
    """Draws a corrupted copy `x~ ~ q(x~|x)` of a batch, as a denoising autoencoder sees it.

    #### Mathematical details

    ```none
    gaussian:        x~ = clip(x + stddev * eps, low, high),   eps ~ N(0, I)
    masking:         x~_i = 0 with probability rate, else x_i
    salt_and_pepper: x~_i = high or low with probability rate / 2 each, else x_i
    ```
    `(low, high)` is `support` (e.g. [0, 1] for a Bernoulli likelihood); with
    `support=None` the Gaussian noise is not clipped and salt-and-pepper uses
    the batch's minimum and maximum (Vincent et al., 2010). Each element is
    corrupted independently; the noise is Philox stateless, a function of `seed`.

    Args:
      x: float tensor `[B] + data_shape`.
      seed: stateless seed, int32 tensor of shape [2].
      kind: "gaussian", "masking" or "salt_and_pepper".
      rate: probability that an element is masked or salted, in [0, 1].
      stddev: standard deviation of the Gaussian noise (> 0).
      support: `(low, high)` of the data, or None for the real line.

    Returns:
      float32 tensor shaped like `x`.

    Raises:
      ValueError: for an unknown `kind` or a rate outside [0, 1].

    Example:
      >>> x_noisy = corrupt(x, tf.constant([0, 1]), "masking", rate=0.25)
    """
    if kind is None:
        raise ValueError(f"`kind` must be one of {CORRUPTIONS}. Received: kind=None")
    kind, rate, stddev = _corruption_args(kind, rate, stddev)
    x = tf.cast(x, tf.float32)
    seed = tf.cast(seed, tf.int32)
    if kind == "gaussian":
        noisy = x + stddev * dists.stateless_normal(tf.shape(x), seed)
        return noisy if support is None else tf.clip_by_value(noisy, *support)
    u = tf.random.stateless_uniform(tf.shape(x), seed=seed, alg="philox")
    if kind == "masking":
        return tf.where(u < rate, tf.zeros_like(x), x)
    low, high = support if support is not None else (tf.reduce_min(x), tf.reduce_max(x))
    salted = tf.where(u < rate / 2, high * tf.ones_like(x), low * tf.ones_like(x))
    return tf.where(u < rate, salted, x)


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

    def __init__(self, encoder, decoder, corruption=None, corruption_rate=0.25,
                 corruption_stddev=0.1, seed=0, **kwargs):
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
        self.corruption, self.corruption_rate, self.corruption_stddev = _corruption_args(
            corruption, corruption_rate, corruption_stddev)
        self.seed = validation.seed32(seed)

    def _finish_init(self, metric_names):
        self._trackers = {n: keras.metrics.Mean(name=n) for n in metric_names}
        self.build((None,) + self.data_shape)

    def build(self, input_shape=None):
        if not self.encoder.built:
            self.encoder.build(input_shape or (None,) + self.data_shape)
        if hasattr(self.decoder, "tie"):
            self.decoder.tie(self.encoder)
        if not self.decoder.built:
            self.decoder.build((None, self.latent_dim))
        self.built = True

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

    def _data(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return x

    def train_step(self, data):
        x = self._data(data)
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
        terms = self.compute_terms(self._data(data), training=False)
        return self._update_metrics(terms, terms["loss"])

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
        return self.decoder(self.encoder(x, training=training).mean(),
                            training=training).mean()

    # -------------------------------------------------- Keras entry points

    def _check(self, x, name="x"):
        validation.check_data(x, self.data_shape, self.decoder.head, name=name)

    def _check_validation(self, validation_data):
        if validation_data is None:
            return
        if isinstance(validation_data, tuple):
            if not validation_data:
                raise ValueError("`validation_data` is an empty tuple. Received: validation_data=()")
            validation_data = validation_data[0]
        self._check(validation_data, "validation_data")

    def fit(self, x=None, y=None, **kwargs):
        self._check(x)
        self._check_validation(kwargs.get("validation_data"))
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        # fit() validates validation_data once, then calls evaluate every epoch
        # with Keras's private _use_cached_eval_dataset flag: no need to rescan.
        if not keras_api.is_cached_eval(kwargs):
            self._check(x)
        return super().evaluate(x, y, **kwargs)

    def predict(self, x, **kwargs):
        self._check(x)
        return super().predict(x, **kwargs)

    # ------------------------------------------------------ user methods

    def encode(self, x):
        """`q(z|x)`: batch shape `[B]`, event shape `[latent_dim]`."""
        self._check(x)
        return self.encoder(tf.cast(x, tf.float32), training=False)

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
        self._check(x)
        return self(tf.cast(x, tf.float32), training=False)

    # ------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update({key: keras.saving.serialize_keras_object(getattr(self, key))
                       for key in self._nested})
        config.update({"corruption": self.corruption, "corruption_rate": self.corruption_rate,
                       "corruption_stddev": self.corruption_stddev, "seed": self.seed})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls._nested:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
