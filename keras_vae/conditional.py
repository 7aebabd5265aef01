"""The conditional VAE: `q(z|x, y)` and `p(x|z, y)` for a class label or a condition vector.

`ConditionalVAE` is a `keras_vae.VAE` whose encoder and decoder also see a
condition `c`: the one-hot code of a class label `y` (`num_classes=C`) or a
real vector (`condition_dim=k`). The networks of `keras_vae.networks` take it
without a user-written layer (`Encoder.set_condition`, `Decoder.set_condition`):

- `MLPEncoder`: `c` is concatenated to the flattened input of the first Dense layer;
- `ConvEncoder`: `c` is concatenated to the flattened convolutional features,
  before the Dense layers. Chosen over C extra constant input channels
  because it costs C numbers per example instead of C x H x W, works the
  same for real-valued conditions, and leaves the convolutions (their
  shapes and weights) those of the unconditional model; the Dense layers
  after it see the condition as directly as in the MLP;
- `MLPDecoder` / `ConvDecoder`: `c` is concatenated to `z` before the first
  Dense layer (broadcast over any leading sample dimensions of `z`).

The prior is `p(z)`, not conditioned (Kingma et al., 2014, model M2; Sohn
et al., 2015 use the same with `p(z|x) = p(z)`). The objectives are those of
`VAE`, with the networks conditioned.
"""

import secrets

import keras
import numpy as np
import tensorflow as tf

from keras_vae import keras_api, objectives, resources, validation
from keras_vae.model import VAE

__all__ = ["ConditionalVAE"]


def _is_batched(x):
    """Datasets, generators, iterators and PyDatasets carry their labels in their elements."""
    return (isinstance(x, (tf.data.Dataset, keras.utils.PyDataset))
            or hasattr(x, "__next__"))


def _check_layer(name, layer):
    if not hasattr(layer, "set_condition") or hasattr(layer, "tie"):
        raise TypeError(
            f"`{name}` must be a keras_vae network that accepts a condition (MLPEncoder, "
            f"ConvEncoder, MLPDecoder, ConvDecoder; tied decoders do not). "
            f"Received: {name}={layer!r}")


@keras.saving.register_keras_serializable(package="keras_vae")
class ConditionalVAE(VAE):
    """Conditional variational autoencoder: `q(z|x, y)`, `p(x|z, y)`, prior `p(z)`.

    #### Mathematical details

    ```none
    c = one_hot(y, C)                      (num_classes=C; or c = y, condition_dim=k)
    loss = E_q(z|x,c)[-log p(x|z,c)] + beta * KL(q(z|x,c) || p(z))         "elbo"
    loss = -log 1/K sum_k p(x|z_k,c) p(z_k) / q(z_k|x,c)                   "iwae"
    sample(n, y): z ~ p(z), x = mean of p(x|z, c)
    ```
    Summed over data and latent dimensions, averaged over the batch, in nats;
    the same metrics as `VAE` (`loss`, `elbo`, `reconstruction`, `kl`, `beta`).

    Args:
      encoder: an unbuilt `MLPEncoder` or `ConvEncoder`; the model gives it
        the condition width (see the module docstring for where `c` enters).
      decoder: an unbuilt `MLPDecoder` or `ConvDecoder` (not tied).
      num_classes: C, for class labels `y` (ints in [0, C) or one-hot `[n, C]`).
      condition_dim: k, for real condition vectors `y [n, k]`. Give exactly
        one of `num_classes` and `condition_dim`.
      prior, beta, num_samples, analytic_kl, objective, free_bits, seed,
        corruption...: as in `VAE`.

    Call arguments:
      inputs: a pair `(x [B] + data_shape, c [B, C or k])` with `c` the
        one-hot code or condition vector. Returns the mean of
        `p(x | z = E[q(z|x, c)], c)`.

    Raises:
      ValueError: for both or neither of `num_classes`/`condition_dim`, and
        (from `fit`, `evaluate`, `sample`...) labels out of range, of the
        wrong length or width, or missing.
      TypeError: for networks that take no condition, non-integer labels.

    Example:
      >>> m = ConditionalVAE(MLPEncoder(8, hidden=(64,)), MLPDecoder((8, 8, 1), hidden=(64,)),
      ...                    num_classes=10)
      >>> m.compile(optimizer="adam")
      >>> history = m.fit(x_train, y_train, epochs=5, batch_size=64)
      >>> m.sample(16, y=3, seed=0).shape
      TensorShape([16, 8, 8, 1])
    """

    conditional = True
    unlabelled_allowed = False  # -1 labels in fit/evaluate (SemiSupervisedVAE)

    def __init__(self, encoder, decoder, num_classes=None, condition_dim=None, **kwargs):
        if (num_classes is None) == (condition_dim is None):
            raise ValueError(
                "Give exactly one of `num_classes` (class labels) and `condition_dim` (real "
                f"condition vectors). Received: num_classes={num_classes!r}, "
                f"condition_dim={condition_dim!r}")
        if num_classes is not None:
            num_classes = validation.positive_int("num_classes", num_classes, maximum=65536)
            width = num_classes
        else:
            condition_dim = validation.positive_int("condition_dim", condition_dim,
                                                    maximum=65536)
            width = condition_dim
        _check_layer("encoder", encoder)
        _check_layer("decoder", decoder)
        encoder.set_condition(width)
        decoder.set_condition(width)
        super().__init__(encoder, decoder, **kwargs)
        self.num_classes = num_classes
        self.condition_dim = condition_dim
        self.condition_width = width

    def _create_lazy_weights(self):
        return  # the keras_vae networks build every weight in build()

    # ------------------------------------------------------- conditions

    def check_condition(self, y, n=None, name="y", allow_unlabelled=False):
        """Checks `y` for `n` examples; int32 labels `[n]` or float32 vectors `[n, k]` (numpy).

        Raises:
          ValueError: missing (None), wrong length or width, labels outside [0, C).
          TypeError: non-integer labels, non-numeric values.
        """
        if y is None:
            what = (f"class labels `y` in [0, {self.num_classes})" if self.num_classes
                    else f"condition vectors `y` of shape (n, {self.condition_dim})")
            raise ValueError(f"A ConditionalVAE needs {what} with the data. Received: {name}=None")
        if self.num_classes:
            return validation.labels(name, y, n, self.num_classes,
                                     allow_unlabelled=allow_unlabelled)
        return validation.condition_vectors(name, y, n, self.condition_dim)

    def conditions(self, y, n=None, name="y"):
        """The network input `c` for `y`: float32 numpy `[n, C]` (one-hot) or `[n, k]`."""
        y = self.check_condition(y, n, name)
        if self.num_classes:
            return np.eye(self.num_classes, dtype="float32")[y]
        return y

    def condition_tensor(self, y):
        """`c` inside a step: one-hot of int labels `[B]` (or one-hot `[B, C]` as given),
        or the condition vectors `[B, k]`; float32."""
        y = tf.convert_to_tensor(y)
        if self.num_classes and y.shape.rank == 1:
            return tf.one_hot(tf.cast(y, tf.int32), self.num_classes)
        return tf.cast(y, tf.float32)

    def _labels_in_range(self, y):
        if not self.num_classes or y.shape.rank != 1:
            return y
        y = tf.cast(y, tf.int32)
        tf.debugging.assert_non_negative(y, message="labels must be in [0, num_classes)")
        tf.debugging.assert_less(y, self.num_classes,
                                 message="labels must be in [0, num_classes)")
        return y

    # -------------------------------------------------------- the steps

    def _data(self, data, row=None):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict):
            y = x.get("label", y) if y is None else y
        x = validation.select_input(x, self.input_key)
        if y is None:
            raise ValueError("A ConditionalVAE trains on pairs (x, y): pass fit(x, y) or a "
                             "dataset of (x, y). Received: batches without y")
        self._guard(x, row)
        return x, self.condition_tensor(self._labels_in_range(y))

    def compute_terms(self, x, training=False, seed=None, num_samples=None, condition=None):
        """The objective on a batch, as `VAE.compute_terms`, with the condition.

        Args:
          x: `[B] + data_shape`, or a pair `(x, c)`.
          condition: `c [B, C or k]` float32 (one-hot or vectors) when `x` is not a pair.
        """
        if isinstance(x, (tuple, list)):
            x, condition = x
        if condition is None:
            raise ValueError("A ConditionalVAE needs the condition. Received: condition=None")
        x = tf.cast(x, tf.float32)
        condition = tf.cast(condition, tf.float32)
        if seed is None and training:
            seed = self.noise_seed(True)
        elif seed is None:  # evaluation: noise per example, whatever the batch size
            seed = self.example_seeds(x)
        objective = objectives.elbo if self.objective == "elbo" else objectives.iwae
        posterior = self.encoder(self.encoder_input(x, training, seed), condition=condition,
                                 training=training)
        return objective(
            x, posterior,
            lambda z: self.decoder(z, condition=condition, training=training),
            self.prior.distribution(), seed=seed,
            num_samples=num_samples or self.num_samples, analytic_kl=self.analytic_kl,
            beta=self.beta, free_bits=self.free_bits,
        )

    def predict_step(self, data):
        inner, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(inner, (tuple, list)) and len(inner) == 2:  # predict((x, y))
            data = tuple(inner)
        x, c = self._data(data, 2)
        return self((tf.cast(x, tf.float32), c), training=False)

    def call(self, inputs, training=False):
        x, c = inputs
        c = self.condition_tensor(c)
        q = self.encoder(x, condition=c, training=training)
        return self.decoder(q.mean(), condition=c, training=training).mean()

    # ------------------------------------------------ Keras entry points

    def _check_unused(self, y, kwargs, x=None):
        for name in ("sample_weight", "class_weight"):
            if kwargs.get(name) is not None:
                raise ValueError(f"keras_vae models do not use sample or class weights. "
                                 f"Remove `{name}`. Received: {name}=<given>")

    def _arrays(self, x, y, name="x"):
        """Checks array data and its labels (datasets carry their own y)."""
        if not _is_batched(x):
            n = len(validation.data_array(validation.select_input(x, self.input_key, name),
                                          self.data_shape, self.decoder.head, name))
            return self.check_condition(y, n, f"{name}[1]" if name != "x" else "y",
                                        allow_unlabelled=self.unlabelled_allowed)
        if isinstance(x, tf.data.Dataset) and y is None:  # its first batch's labels, eagerly
            element = validation.first_batch(x)
            if element is not None:
                first, labels, _ = keras.utils.unpack_x_y_sample_weight(element)
                if isinstance(first, dict) and labels is None:
                    labels = first.get("label")
                self.check_condition(labels, None, f"{name} labels (first batch)",
                                     allow_unlabelled=self.unlabelled_allowed)
        if y is not None:
            raise ValueError(f"Give the labels inside the dataset or generator `{name}` "
                             "(elements (x, y)), not as `y`. Received: y=<given>")
        return None

    def _check_validation(self, validation_data):
        if isinstance(validation_data, tuple) and len(validation_data) >= 2:
            if len(validation_data) >= 3 and validation_data[2] is not None:
                raise ValueError("keras_vae models do not use sample weights. "
                                 "Received: validation_data[2]=<given>")
            y = self._arrays(validation_data[0], validation_data[1], "validation_data")
            return (validation_data[0], y)
        if isinstance(validation_data, tuple):
            self.check_condition(None, name="validation_data[1]")
        return super()._check_validation(validation_data)

    def fit(self, x=None, y=None, **kwargs):
        y = self._arrays(x, y)
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        if not keras_api.is_cached_eval(kwargs):
            y = self._arrays(x, y)
        return super().evaluate(x, y, **kwargs)

    def predict(self, x, y=None, **kwargs):
        """Mean reconstructions of `(x, y)`, `[N] + data_shape` (as `reconstruct`, batched)."""
        y = self._arrays(x, y)
        if y is not None:
            x = (x, y)
        return keras.Model.predict(self, x, **kwargs)

    # ------------------------------------------------------ user methods

    def encode(self, x, y=None):
        """`q(z|x, y)`: batch shape `[B]`, event shape `[latent_dim]`."""
        x = validation.data_array(validation.select_input(x, self.input_key), self.data_shape,
                                  self.decoder.head)
        c = self.conditions(y, len(x))
        return self.encoder(tf.constant(x), condition=tf.constant(c), training=False)

    def decode(self, z, y=None):
        """`p(x|z, y)` for `z [B, latent_dim]`: batch shape `[B]`, event shape `data_shape`."""
        if not isinstance(z, tf.Tensor):
            arr = np.asarray(z)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"Expected latents as real numbers of shape (B, "
                                f"{self.latent_dim}). Received: z of dtype {arr.dtype}")
            z = arr
        z = tf.convert_to_tensor(z, tf.float32)
        if z.shape.rank != 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"Expected latents of shape (B, {self.latent_dim}). "
                             f"Received: z.shape={tuple(z.shape)}")
        if not bool(tf.reduce_all(tf.math.is_finite(z))):
            raise ValueError("Latents must be finite. Received: z with NaN or Inf")
        c = self.conditions(y, int(z.shape[0]))
        return self.decoder(z, condition=tf.constant(c), training=False)

    def reconstruct(self, x, y=None):
        """Mean of `p(x | z = E[q(z|x, y)], y)`, shape `[B] + data_shape`."""
        x = validation.data_array(validation.select_input(x, self.input_key), self.data_shape,
                                  self.decoder.head)
        c = self.conditions(y, len(x))
        return self((tf.constant(x), tf.constant(c)), training=False)

    def sample(self, num_samples, y=None, seed=None, mean=True):
        """Generates `num_samples` examples of condition `y`: z ~ p(z), x = mean of p(x|z, y).

        Args:
          num_samples: positive int n.
          y: one label (an int, repeated n times) or n labels; with
            `condition_dim`, one vector `[k]` or n vectors `[n, k]`.
          seed: int for reproducible samples.
          mean: the likelihood's mean (default) or a draw from it.

        Returns:
          float32 tensor `[n] + data_shape`.

        Raises:
          ValueError / TypeError: for a missing, out-of-range or mis-sized `y`.
        """
        n = resources.check_sample(num_samples, self.data_shape, latent_dim=self.latent_dim,
                                   widths=getattr(self.decoder, "hidden", ()),
                                   likelihood_params=self.decoder.head.params_size())
        if y is not None and np.ndim(y) == (0 if self.num_classes else 1) and not isinstance(
                y, (str, bytes)):
            y = np.repeat(np.asarray(y)[None], n, axis=0)
        c = self.conditions(y, n)
        seed = secrets.randbelow(2 ** 31 - 1) if seed is None else validation.seed32(seed)
        seeds = tf.random.split(tf.constant([seed, 7], tf.int32), 2)
        z = self.prior.distribution().sample(n, seed=seeds[0])
        likelihood = self.decoder(z, condition=tf.constant(c), training=False)
        return likelihood.mean() if mean else likelihood.sample(seed=seeds[1])

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "condition_dim": self.condition_dim})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls._nested:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
