"""Tied weights: a decoder whose Dense kernels are the encoder's, transposed.

`TiedMLPDecoder` mirrors an `MLPEncoder`: decoder layer i uses the transpose
of encoder layer (n - i)'s kernel (the same variable, not a copy) and a bias
of its own, halving the parameters of a mirrored MLP autoencoder. The model
ties it to its encoder when it is built, also after `keras.models.load_model`,
so the tie survives saving and each kernel is stored once.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_vae.networks import Decoder, MLPEncoder, check_activation

__all__ = ["TiedMLPDecoder", "TiedDense"]


class _Untracked:
    """Holds a layer that Keras must neither track nor save twice (the source of a tie)."""

    __slots__ = ("layer",)

    def __init__(self, layer):
        self.layer = layer


class TiedDense(keras.layers.Layer):
    """`y = activation(x @ W[:, :input_dim]^T + b)`: the transpose of a source Dense
    layer's kernel `W` (shape `[units, n]`, shared, not copied) and an own bias `b`.

    Not registered for serialization: `TiedMLPDecoder` rebuilds these layers
    from its encoder, and a `.keras` file holds only their biases.

    Args:
      source: a built Dense-like layer with `kernel` `[units, n]`.
      input_dim: columns of the kernel used, `input_dim <= n`.
      activation: Keras activation, default None (linear).

    Call arguments:
      x: float tensor `[B, input_dim]`.

    Returns:
      `[B, units]`.
    """

    def __init__(self, source, input_dim, activation=None, **kwargs):
        super().__init__(**kwargs)
        self._source = _Untracked(source)
        self.input_dim = int(input_dim)
        self.activation = keras.activations.get(activation)

    @property
    def tied_kernel(self):
        """The source layer's kernel variable, `[units, n]` (this layer uses its transpose)."""
        return self._source.layer.kernel

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.tied_kernel.shape[0],),
                                    initializer="zeros")
        self.built = True

    def call(self, x):
        kernel = tf.cast(self.tied_kernel, self.compute_dtype)[:, :self.input_dim]
        return self.activation(tf.matmul(x, kernel, transpose_b=True) + self.bias)


# A .keras file stores the layers of a list under their class's `__name__` in snake
# case ("decoder/dense_layers/__tied_dense"); files saved while the class was
# `_TiedDense` use that path, so `__name__` keeps it (the class is still found and
# shown as keras_vae.tied.TiedDense through `__qualname__`).
TiedDense.__name__ = "_TiedDense"


@keras.saving.register_keras_serializable(package="keras_vae")
class TiedMLPDecoder(Decoder):
    """MLP decoder whose Dense kernels are the transposed kernels of an `MLPEncoder`.

    The decoder mirrors the encoder: its layer `j` uses the kernel of encoder
    layer `n - 1 - j` transposed (the same variable, so the tie survives
    training and `.keras` saving) with its own bias; only the loc columns of
    the encoder's output layer are used. Tying roughly halves the parameters.
    The tie is made by `tie(encoder)`, which `Autoencoder` and `VAE` call when
    they are built (also after loading), so pass both layers to one model.

    #### Mathematical details

    ```none
    encoder: h_1 = act(W_1 x + c_1), ..., z = W_n h_{n-1} + c_n      (W_n: loc rows)
    decoder: g_{n-1} = act(W_n^T z + b_n), ..., params = W_1^T g_1 + b_1
    ```

    Args:
      output_shape: data shape; must match the encoder's input.
      likelihood: as in `MLPDecoder`, with one parameter per data element
        ("bernoulli", "gaussian", "continuous_bernoulli" or a head).
      activation: hidden activation, default None = the encoder's.

    Call arguments:
      z: float tensor `[...] + [latent_dim]`.

    Returns:
      `p(x|z)`, batch shape `[...]`, event shape `output_shape`.

    Raises:
      ValueError: if the encoder is not an `MLPEncoder` or does not mirror
        this decoder, or the likelihood needs several parameters per element.

    Example:
      >>> enc = MLPEncoder(8, hidden=(64, 32), posterior="point_mass")
      >>> ae = keras_vae.Autoencoder(enc, TiedMLPDecoder((8, 8, 1)))
      >>> ae.decoder.tied_kernels()[0] is enc.params_layer.kernel
      True
    """

    def __init__(self, output_shape, likelihood="bernoulli", activation=None, **kwargs):
        super().__init__(output_shape, likelihood=likelihood, **kwargs)
        self.activation = None if activation is None else check_activation(activation)
        self._encoder = None
        if self.head.num_params != 1:
            raise ValueError(
                "A tied decoder mirrors the encoder's input layer, so its likelihood "
                "needs one parameter per data element. Received: likelihood="
                f"{self.head.likelihood_name!r} with {self.head.num_params} parameters"
            )

    def tie(self, encoder):
        """Ties this decoder to `encoder` (a built `MLPEncoder`); builds the decoder."""
        if self._encoder is not None:
            if self._encoder.layer is not encoder:
                raise ValueError(
                    "This TiedMLPDecoder is already tied to another encoder. "
                    f"Received: encoder={encoder.name!r}"
                )
            return
        if not isinstance(encoder, MLPEncoder):
            raise ValueError(
                "TiedMLPDecoder reuses the Dense kernels of an MLPEncoder. "
                f"Received: encoder of type {type(encoder).__name__}"
            )
        if not encoder.built:
            raise ValueError(f"Build the encoder before tying. Received: encoder={encoder.name!r}")
        if encoder._flat_dim != int(np.prod(self.event_shape)):
            raise ValueError(
                f"The encoder reads inputs of shape {encoder.input_spec_shape}, which do "
                f"not mirror this decoder's output. Received: output_shape={self.event_shape}"
            )
        self._encoder = _Untracked(encoder)
        self.built = False  # Keras may have marked it built while loading; build for real
        self.build((None, encoder.latent_dim))

    def build_from_config(self, config):
        pass  # built by `tie`, once the encoder's kernels exist

    def build(self, input_shape):
        if self._encoder is None:
            raise ValueError(
                "A TiedMLPDecoder has no kernels of its own: pass it with an MLPEncoder "
                "to keras_vae.Autoencoder or VAE, or call decoder.tie(encoder). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)

    def _build_body(self, latent_dim):
        encoder = self._encoder.layer
        if latent_dim != encoder.latent_dim:
            raise ValueError(
                f"Expected latents of size {encoder.latent_dim}, the encoder's "
                f"latent_dim. Received: latent_dim={latent_dim}"
            )
        activation = self.activation or encoder.activation
        sources = list(encoder.dense_layers) + [encoder.params_layer]
        widths = [layer.kernel.shape[0] for layer in sources[1:]] + [latent_dim]
        mirrored = []
        for j, (source, width) in enumerate(zip(reversed(sources), reversed(widths))):
            last = j == len(sources) - 1
            layer = TiedDense(source, width, activation=None if last else activation,
                               name="params" if last else f"dense_{j}",
                               dtype=self.dtype_policy)
            layer.build((None, width))
            mirrored.append(layer)
        self.dense_layers, self.params_layer = mirrored[:-1], mirrored[-1]
        self.hidden = tuple(layer.bias.shape[0] for layer in self.dense_layers)

    def tied_kernels(self):
        """The encoder kernel variables this decoder uses, in decoder order."""
        return [layer.tied_kernel for layer in self.dense_layers + [self.params_layer]]

    def _body(self, z, training):
        h = z
        for layer in self.dense_layers:
            h = layer(h)
        return self.params_layer(h)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}
