"""Deterministic autoencoders built from the VAE's parts: plain, denoising, tied, stacked.

A plain autoencoder is the VAE with a point-mass encoder
(`posterior="point_mass"`) and no KL term: it minimises `-log p(x|z)` with
`z = f(x)`, so the decoder's likelihood head is the reconstruction loss
(Gaussian = squared error, Bernoulli = cross-entropy). It shares
`BaseAutoencoder` with `keras_vae.VAE`: the same `train_step`/`test_step`,
input checks, metrics, stateless seeds and `.keras` saving.

- Denoising: `corruption="gaussian" | "masking" | "salt_and_pepper"` corrupts
  the encoder's input during training (seeded from the step counter, Philox);
  the target stays the clean input. The same option exists on `VAE`.
- Tied weights: `TiedMLPDecoder` (keras_vae/tied.py) uses the transposed
  kernels of an `MLPEncoder` (one variable each, also after loading) and its
  own biases.
- Stacked: `pretrain_layerwise` trains the layers greedily, outer pair first,
  before end-to-end fine-tuning with `fit`.
- `build_autoencoder` assembles these from plain arguments (the CLI's entry).
"""

import keras
import numpy as np
import tensorflow as tf

from keras_vae import distributions as dists
from keras_vae import validation
from keras_vae.base import BaseAutoencoder, corrupt, replica_context
from keras_vae.networks import MLPDecoder, MLPEncoder, hidden_widths
from keras_vae.objectives import reconstruction_objective
from keras_vae.tied import TiedDense, TiedMLPDecoder

__all__ = [
    "Autoencoder",
    "TiedMLPDecoder",
    "pretrain_layerwise",
    "build_autoencoder",
    "KINDS",
]

KINDS = ("ae", "dae")


@keras.saving.register_keras_serializable(package="keras_vae")
class Autoencoder(BaseAutoencoder):
    """Deterministic (optionally denoising) autoencoder trained with `model.fit`.

    #### Mathematical details

    ```none
    z    = f(x~),  x~ = x, or x~ ~ corrupt(x) while training a denoising AE
    loss = -log p(x | z)           (summed over data dimensions, mean over the batch)
         = 1/2 ||x - g(z)||^2 + const           Gaussian likelihood, scale 1
         = -sum_i x_i log g_i + (1 - x_i) log(1 - g_i)   Bernoulli likelihood
    ```
    Logged metrics: `loss` and `reconstruction` (nats per example; they are
    equal unless layers add regularisation losses). There is no `kl`/`elbo`:
    a point mass has no KL to a prior density.

    Args:
      encoder: encoder layer with a point-mass posterior, e.g.
        `MLPEncoder(latent_dim, posterior="point_mass")` or a `ConvEncoder`.
      decoder: decoder layer: `MLPDecoder`, `ConvDecoder` or `TiedMLPDecoder`.
      corruption: None (plain AE), "gaussian", "masking" or "salt_and_pepper"
        (denoising AE): applied to the encoder's input during training only.
      corruption_rate: probability per element for masking / salt-and-pepper.
      corruption_stddev: standard deviation of Gaussian corruption.
      seed: integer base of the stateless corruption seeds.

    Call arguments:
      x: `[B] + data_shape`. Returns the mean of `p(x | f(x))` (`predict`).

    Raises:
      TypeError / ValueError: for arguments of the wrong type or value (e.g.
        an encoder without a point-mass posterior) and bad data.

    Example:
      >>> enc = MLPEncoder(latent_dim=8, hidden=(64,), posterior="point_mass")
      >>> dec = MLPDecoder(output_shape=(8, 8, 1), hidden=(64,), likelihood="bernoulli")
      >>> ae = Autoencoder(enc, dec, corruption="masking", corruption_rate=0.25)
      >>> ae.compile(optimizer="adam")
      >>> ae.fit(x_train, epochs=5, validation_data=(x_test,))
      >>> codes = ae.encode(x_test).mean()            # [B, 8]
    """

    def __init__(self, encoder, decoder, corruption=None, corruption_rate=0.25,
                 corruption_stddev=0.1, seed=0, **kwargs):
        super().__init__(encoder, decoder, corruption=corruption,
                         corruption_rate=corruption_rate,
                         corruption_stddev=corruption_stddev, seed=seed, **kwargs)
        head = getattr(encoder, "head", None)
        if not isinstance(head, dists.PointMassPosterior):
            raise ValueError(
                "An Autoencoder needs a deterministic encoder, e.g. MLPEncoder(latent_dim, "
                "posterior='point_mass'); a stochastic encoder belongs in keras_vae.VAE. "
                f"Received: encoder.head={type(head).__name__}"
            )
        self._finish_init(["loss", "reconstruction"])

    def compute_terms(self, x, training=False, seed=None, num_samples=None):
        """Dict of scalar `loss` and per-example `reconstruction` `[B]`, nats.

        Args:
          x: `[B] + data_shape` float tensor, the target.
          training: with `corruption`, the encoder sees a corrupted copy.
          seed: stateless seed int32 [2]; defaults to `noise_seed(training)`.
          num_samples: ignored (the encoder is deterministic); accepted so
            code written for `VAE.compute_terms` runs unchanged.
        """
        x = tf.cast(x, tf.float32)
        if seed is None:
            seed = self.noise_seed(training, x)
        posterior = self.encoder(self.encoder_input(x, training, seed), training=training)
        return reconstruction_objective(x, posterior,
                                        lambda z: self.decoder(z, training=training))

    def sample(self, num_samples, seed=None, mean=True):
        """Not available: an autoencoder has no prior p(z) to draw from."""
        raise TypeError(
            "A deterministic autoencoder has no prior p(z) to sample from; train a "
            f"keras_vae.VAE to generate data. Received: model={type(self).__name__}"
        )


# --------------------------------------------------------------------------
# Stacked autoencoders: greedy layer-wise pretraining
# --------------------------------------------------------------------------


class _Stage(keras.Model):
    """One greedy stage: encoder layer k and its mirror decoder layer reconstruct h_k."""

    def __init__(self, encoder_layer, decoder_layer, head, corruption, seed, **kwargs):
        super().__init__(**kwargs)
        self.encoder_layer = encoder_layer
        self.decoder_layer = decoder_layer
        self.head = head
        self._corruption = corruption  # (kind, rate, stddev, support) or None
        self._seed = seed
        self._trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", "reconstruction")}
        self.built = True

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _terms(self, h, training):
        h = tf.cast(h, tf.float32)
        inputs = tf.reshape(h, [tf.shape(h)[0], -1])
        if training and self._corruption is not None:
            counter = 2 * tf.cast(self.optimizer.iterations, tf.int32) + 1
            seed = tf.stack([tf.constant(self._seed, tf.int32), counter])
            inputs = corrupt(inputs, seed, *self._corruption)
        params = self.decoder_layer(self.encoder_layer(inputs))
        reconstruction = -self.head(params).log_prob(h)
        return tf.reduce_mean(reconstruction), reconstruction

    def _update(self, loss, reconstruction):
        self._trackers["loss"].update_state(
            loss, sample_weight=tf.cast(tf.shape(reconstruction)[0], tf.float32))
        self._trackers["reconstruction"].update_state(reconstruction)
        return {name: t.result() for name, t in self._trackers.items()}

    def train_step(self, data):
        h, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        _, replicas = replica_context()
        with tf.GradientTape() as tape:
            loss, reconstruction = self._terms(h, training=True)
            scaled = self.optimizer.scale_loss(loss / replicas)  # replicas sum gradients
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update(loss, reconstruction)

    def test_step(self, data):
        h, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update(*self._terms(h, training=False))


def _layer_stacks(model):
    """(encoder layers, mirrored decoder layers), validated for stacking."""
    if not isinstance(model, Autoencoder):
        raise TypeError(
            "Layer-wise pretraining needs a keras_vae.Autoencoder. "
            f"Received: model of type {type(model).__name__}"
        )
    encoder, decoder = model.encoder, model.decoder
    if not isinstance(encoder, MLPEncoder) or not isinstance(decoder, (MLPDecoder, TiedMLPDecoder)):
        raise ValueError(
            "Layer-wise pretraining needs an MLPEncoder and an MLPDecoder or "
            f"TiedMLPDecoder. Received: encoder={type(encoder).__name__}, "
            f"decoder={type(decoder).__name__}"
        )
    enc = list(encoder.dense_layers) + [encoder.params_layer]
    dec = list(decoder.dense_layers) + [decoder.params_layer]
    widths = [encoder._flat_dim] + [layer.kernel.shape[1] for layer in enc]
    in_widths = [layer.input_dim if isinstance(layer, TiedDense) else layer.kernel.shape[0]
                 for layer in dec]
    if len(dec) != len(enc) or in_widths != widths[1:][::-1]:
        raise ValueError(
            "Layer-wise pretraining needs a decoder that mirrors the encoder: hidden "
            f"widths {tuple(reversed(encoder.hidden))}. Received: decoder.hidden="
            f"{tuple(decoder.hidden)}"
        )
    return enc, dec[::-1]


def pretrain_layerwise(model, x, epochs=1, batch_size=128, verbose=0, optimizer=None):
    """Greedy layer-wise pretraining of a stacked autoencoder (Bengio et al., 2007).

    Stage k trains encoder layer k together with its mirror decoder layer to
    reconstruct the stage's input, with all other layers left as they are:
    stage 0 reconstructs `x` under the model's likelihood (`-log p(x|.)`, and
    the model's corruption, if any, on its input); stage k > 0 reconstructs
    the codes `h_k` of the already trained layers below it under a unit
    Gaussian (`||h - h^||^2 / 2 + const`, nats). Afterwards fine-tune the
    whole model with `model.fit`. The layers are the model's own (shared),
    so the pretrained encoder is also ready as a feature extractor:
    `model.encode(x).mean()`.

    Args:
      model: an `Autoencoder` with an `MLPEncoder` and a mirrored `MLPDecoder`
        or `TiedMLPDecoder` (`build_autoencoder(..., stacked=True)`).
      x: training data, array `[N] + data_shape`.
      epochs: epochs per stage.
      batch_size: batch size of every stage.
      verbose: passed to `fit`.
      optimizer: a Keras optimizer identifier, cloned fresh for each stage;
        default: a clone of the model's compiled optimizer, else Adam(1e-3).

    Returns:
      list of `keras.callbacks.History`, one per stage (outermost first), each
      with per-epoch `loss` and `reconstruction` (nats per example).

    Raises:
      TypeError / ValueError: for a model that cannot be stacked, bad data or
        bad `epochs`/`batch_size`.

    Example:
      >>> ae = build_autoencoder("ae", (8, 8, 1), 8, (64, 32), "tanh", "bernoulli",
      ...                        stacked=True)
      >>> ae.compile(optimizer="adam")
      >>> histories = pretrain_layerwise(ae, x_train, epochs=5, batch_size=64)
      >>> ae.fit(x_train, epochs=5)
    """
    encoder_layers, decoder_layers = _layer_stacks(model)
    epochs = validation.positive_int("epochs", epochs)
    batch_size = validation.batch_size(batch_size)
    if isinstance(x, tf.data.Dataset) or hasattr(x, "__next__"):
        raise TypeError(
            "pretrain_layerwise needs the training data as an array (the codes of "
            f"each stage are computed in memory). Received: x of type {type(x).__name__}"
        )
    model._check(x)
    if optimizer is None:
        optimizer = model.optimizer if getattr(model, "optimizer", None) else "adam"
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer  # compile re-wraps it under mixed_float16
    optimizer = keras.optimizers.serialize(optimizer)
    h = np.asarray(x, dtype="float32")
    histories = []
    for k, (enc_layer, dec_layer) in enumerate(zip(encoder_layers, decoder_layers)):
        if k == 0:
            head = model.decoder.head
            corruption = None if model.corruption is None else (
                model.corruption, model.corruption_rate, model.corruption_stddev,
                getattr(head, "support", None))
        else:
            head = dists.GaussianLikelihood((h.shape[-1],), scale=1.0)
            corruption = None
        stage = _Stage(enc_layer, dec_layer, head, corruption,
                       seed=(model.seed + 7919 * (k + 1)) % (2 ** 31 - 1),
                       name=f"stage_{k}")
        stage.compile(optimizer=keras.optimizers.deserialize(optimizer))
        histories.append(stage.fit(h, epochs=epochs, batch_size=batch_size, verbose=verbose))
        if k + 1 < len(encoder_layers):
            flat = h.reshape(len(h), -1)
            h = np.concatenate([np.asarray(enc_layer(flat[i:i + 4096]), dtype="float32")
                                for i in range(0, len(flat), 4096)])
    return histories


def build_autoencoder(kind, data_shape, latent_dim, hidden=(200, 200), activation="tanh",
                      likelihood="bernoulli", tied=False, stacked=False, corruption=None,
                      corruption_rate=0.25, seed=0, corruption_stddev=0.1):
    """Builds an MLP `Autoencoder` from plain arguments (the CLI's entry point).

    Args:
      kind: "ae" (plain) or "dae" (denoising; default corruption "masking").
      data_shape: shape of one example, e.g. (28, 28, 1).
      latent_dim: size of the code z.
      hidden: encoder widths; the decoder mirrors them.
      activation: hidden activation, e.g. "tanh" or "relu".
      likelihood: the decoder's likelihood, i.e. the reconstruction loss:
        "bernoulli" (cross-entropy), "gaussian" (squared error), ...
      tied: decoder uses the encoder's transposed kernels (`TiedMLPDecoder`).
      stacked: the model will be pretrained with `pretrain_layerwise` (needs at
        least one hidden layer); the model itself is the same MLP autoencoder.
      corruption: for "dae": "masking" (default), "gaussian" or "salt_and_pepper".
      corruption_rate: masking / salt-and-pepper probability (default 0.25).
      seed: base of the stateless corruption seeds.
      corruption_stddev: Gaussian corruption scale (default 0.1).

    Returns:
      an uncompiled, built `Autoencoder`.

    Raises:
      ValueError: for an unknown `kind`, corruption with kind "ae", or
        `stacked=True` without hidden layers (and the checks of the parts).

    Example:
      >>> ae = build_autoencoder("dae", (8, 8, 1), latent_dim=8, hidden=(64,),
      ...                        activation="tanh", likelihood="bernoulli", tied=True)
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    if kind == "ae" and corruption is not None:
        raise ValueError(
            "A plain autoencoder ('ae') trains on clean inputs; use kind='dae' for "
            f"corruption. Received: kind='ae', corruption={corruption!r}"
        )
    if kind == "dae" and corruption is None:
        corruption = "masking"
    hidden = hidden_widths("hidden", hidden) if hidden else ()
    if stacked and not hidden:
        raise ValueError(
            "A stacked autoencoder needs at least one hidden layer to pretrain layer by "
            f"layer. Received: hidden={hidden!r}"
        )
    encoder = MLPEncoder(latent_dim, hidden=hidden, activation=activation,
                         posterior="point_mass")
    if tied:
        decoder = TiedMLPDecoder(data_shape, likelihood=likelihood)
    else:
        decoder = MLPDecoder(data_shape, hidden=hidden[::-1], activation=activation,
                             likelihood=likelihood)
    return Autoencoder(encoder, decoder, corruption=corruption,
                       corruption_rate=corruption_rate,
                       corruption_stddev=corruption_stddev, seed=seed)
