"""Encoder and decoder networks: Keras subclassed layers that return TFP distributions.

- `MLPEncoder` / `ConvEncoder`: `x [B] + data_shape -> q(z|x)` (batch `[B]`,
  event `[latent_dim]`).
- `MLPDecoder` / `ConvDecoder`: `z [...] + [latent_dim] -> p(x|z)` (batch `[...]`,
  event `output_shape`). Any number of leading sample dimensions is accepted,
  so `z` of shape `[L, B, d]` gives a likelihood with batch shape `[L, B]`.

The body produces `head.params_size()` numbers and a distribution head from
`keras_vae.distributions` turns them into the distribution. These layers
cannot be used with `keras.Input` (the Functional API cannot carry
distributions); use them inside subclassed models such as `keras_vae.VAE`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_vae import distributions as dists
from keras_vae import resources, validation

__all__ = [
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "Encoder",
    "Decoder",
    "Standardization",
    "hidden_widths",
    "check_activation",
]

_PACKAGE = "keras_vae"


def hidden_widths(name, hidden):
    """Layer widths as a tuple of positive ints (an int `n` means `(n,)`).

    Raises:
      TypeError: if `hidden` is not an int or an iterable of them.
      ValueError / ArgumentTypeError: for a width that is not a positive int.

    Example:
      >>> hidden_widths("hidden", 200), hidden_widths("hidden", [200, 100])
      ((200,), (200, 100))
    """
    if isinstance(hidden, (int, np.integer)):
        hidden = (hidden,)
    try:
        hidden = tuple(hidden)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a tuple of positive integers. Received: {name}={hidden!r}"
        ) from None
    for h in hidden:
        validation.positive_int(name, h)
    return tuple(int(h) for h in hidden)


def check_activation(activation):
    """`activation` unchanged if Keras knows it (a name such as "tanh" or a callable).

    Raises:
      ValueError: for anything `keras.activations.get` refuses.
    """
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError):
        raise ValueError(
            "`activation` must name a Keras activation such as 'tanh' or 'relu'. "
            f"Received: activation={activation!r}"
        ) from None
    return activation


def _serialize_head(head, name):
    return name if isinstance(name, str) else keras.saving.serialize_keras_object(head)


def _deserialize_head(value):
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value)
    return value


def _check_parameters(owner, count, **received):
    """Refuses `count` parameters of `owner` that alone would not fit in memory."""
    resources.check_parameters(type(owner).__name__, count, "lower the layer widths",
                               **received)


def _check_hidden(owner, out_width):
    """At construction: the Dense layers between hidden widths and to `out_width` must fit."""
    if owner.hidden:
        count = resources.mlp_parameter_count(owner.hidden[0], owner.hidden[1:], out_width)
        _check_parameters(owner, count, hidden=list(owner.hidden))


def _conv_parameter_count(kernel_size, channels):
    """Weights and biases of convolutions through `channels` (input first)."""
    return sum((kernel_size * kernel_size * a + 1) * b for a, b in zip(channels[:-1], channels[1:]))


def _dense_stack(owner, width):
    """Builds `owner.hidden` Dense layers and the params layer on inputs of `width`.

    Returns `(dense_layers, params_layer)`; the params layer is linear with
    `owner.head.params_size()` units.

    Raises:
      keras_vae.resources.ResourceLimitError: when the parameters would not
        fit in memory (checked before any weight is created).
    """
    _check_parameters(owner, resources.mlp_parameter_count(
        width, owner.hidden, owner.head.params_size()), input_width=width,
        hidden=list(owner.hidden), outputs=owner.head.params_size())
    layers = []
    for i, units in enumerate(owner.hidden):
        layer = keras.layers.Dense(units, activation=owner.activation, name=f"dense_{i}",
                                   dtype=owner.dtype_policy)
        layer.build((None, width))
        layers.append(layer)
        width = units
    params = keras.layers.Dense(owner.head.params_size(), name="params",
                                dtype=owner.dtype_policy)
    params.build((None, width))
    return layers, params


def _apply(layers, h):
    for layer in layers:
        h = layer(h)
    return h


def _condition_dim(value):
    return None if value is None else validation.positive_int("condition_dim", value)


def _set_condition(layer, condition_dim):
    condition_dim = _condition_dim(condition_dim)
    if layer.built and layer.condition_dim != condition_dim:
        raise ValueError(
            f"{type(layer).__name__} was built with condition_dim={layer.condition_dim}; "
            f"give the conditional model a new, unbuilt layer. "
            f"Received: condition_dim={condition_dim}")
    layer.condition_dim = condition_dim


def _condition_input(layer, condition):
    """The condition `[B, c]` as float32, checked against the layer's `condition_dim`."""
    if not layer.condition_dim:
        if condition is not None:
            raise ValueError(
                f"This {type(layer).__name__} is unconditional (condition_dim=None); use it "
                "in keras_vae.ConditionalVAE to condition it. Received: condition=<given>")
        return None
    if condition is None:
        raise ValueError(
            f"This {type(layer).__name__} is conditional (condition_dim="
            f"{layer.condition_dim}): pass `condition` of shape [B, {layer.condition_dim}]. "
            "Received: condition=None")
    condition = tf.cast(condition, tf.float32)
    if condition.shape.rank is not None and (
            condition.shape.rank != 2 or condition.shape[-1] not in (None, layer.condition_dim)):
        raise ValueError(f"Expected `condition` of shape [B, {layer.condition_dim}]. "
                         f"Received: condition.shape={tuple(condition.shape)}")
    return condition


def _with_condition(h, condition):
    """`[h, c]` along the features (the condition enters the first dense layer)."""
    if condition is None:
        return h
    return tf.concat([h, tf.cast(condition, h.dtype)], axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Standardization(keras.layers.Layer):
    """Per-column standardisation `(x - shift) / scale`, a missing (NaN) entry becoming 0.

    The statistics are non-trainable weights, so they are saved in the
    `.keras` file and exported with the model; a model whose encoder holds
    this layer takes data in the user's units. Learn them with `adapt(x)`
    (mean and standard deviation of the observed values of each column) or
    pass them in.

    #### Mathematical details

    ```none
    out_j = (x_j - shift_j) / scale_j   where x_j is observed,   0 where x_j is NaN
    ```

    Args:
      num_columns: D.
      shift, scale: optional float arrays `[D]` (scale > 0); default 0 and 1.

    Call arguments:
      x: float tensor `[B, D]` (NaN = missing).

    Returns:
      float32 `[B, D]`, finite.
    """

    def __init__(self, num_columns, shift=None, scale=None, **kwargs):
        super().__init__(**kwargs)
        self.num_columns = validation.positive_int("num_columns", num_columns)
        self._initial = [None if v is None else self._column_values(n, v)
                         for n, v in (("shift", shift), ("scale", scale))]
        if self._initial[1] is not None and not (self._initial[1] > 0).all():
            raise ValueError(f"`scale` must be positive. Received: scale={scale!r}")

    def _column_values(self, name, value):
        value = np.asarray(value, np.float32)
        if value.shape != (self.num_columns,) or not np.isfinite(value).all():
            raise ValueError(f"`{name}` must hold {self.num_columns} finite numbers. "
                             f"Received: {name} of shape {value.shape}")
        return value

    def build(self, input_shape=None):
        if self.built:  # deserialized with its build config, then built by its owner
            return
        shift, scale = self._initial
        self.shift = self.add_weight(
            name="shift", shape=(self.num_columns,), trainable=False, dtype="float32",
            initializer="zeros" if shift is None else keras.initializers.Constant(shift))
        self.scale = self.add_weight(
            name="scale", shape=(self.num_columns,), trainable=False, dtype="float32",
            initializer="ones" if scale is None else keras.initializers.Constant(scale))
        self.built = True

    def adapt(self, x):
        """Sets shift and scale to each column's observed mean and standard deviation (a
        deviation of 0 becomes 1)."""
        x = np.asarray(x, np.float64).reshape(-1, self.num_columns)
        observed = np.isfinite(x)
        if not observed.any(axis=0).all():
            raise ValueError("Every column needs an observed value to adapt to. Received: "
                             f"columns {np.flatnonzero(~observed.any(axis=0)).tolist()} all NaN")
        count = observed.sum(0)
        mean = np.where(observed, x, 0).sum(0) / count
        std = np.sqrt(np.where(observed, (x - mean) ** 2, 0).sum(0) / count)
        if not self.built:
            self.build()
        self.shift.assign(mean.astype(np.float32))
        self.scale.assign(np.where(std > 0, std, 1.0).astype(np.float32))

    def call(self, x):
        x = tf.cast(x, tf.float32)
        missing = tf.math.is_nan(x)
        out = (tf.where(missing, tf.zeros_like(x), x) - self.shift) / self.scale
        return tf.where(missing, tf.zeros_like(out), out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_columns": self.num_columns}


class Encoder(keras.layers.Layer):
    """Base of the encoders: posterior head, input checks, config.

    Subclasses define `_build_body(data_shape)` and `_body(x, training)`, the
    latter returning `head.params_size()` numbers per example. With
    `standardize` (a `Standardization` layer, for vector data `[B, D]`) the
    input is standardised first, so the encoder takes data in the user's
    units; `missing_fill` is then the per-column shift (a missing entry filled
    with it becomes 0 after standardising), else 0.0.
    """

    def __init__(self, latent_dim, posterior="diagonal", min_scale=1e-4, condition_dim=None,
                 standardize=None, scale=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(standardize, dict):
            standardize = keras.saving.deserialize_keras_object(standardize)
        if standardize is not None and not isinstance(standardize, Standardization):
            raise TypeError("`standardize` must be a keras_vae.networks.Standardization layer "
                            f"or None. Received: standardize={standardize!r}")
        self.standardize = standardize
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)
        self._posterior_id = _deserialize_head(posterior)
        self.head = dists.get_posterior(self._posterior_id, self.latent_dim,
                                        min_scale=min_scale, scale=scale)
        self.min_scale = min_scale
        self.scale = scale
        self.input_spec_shape = None
        self.condition_dim = _condition_dim(condition_dim)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2 or any(d is None for d in input_shape[1:]):
            raise ValueError(
                f"{type(self).__name__} needs a fully known data shape after the batch "
                f"axis. Received: input_shape={input_shape}"
            )
        self.input_spec_shape = tuple(int(d) for d in input_shape[1:])
        if self.standardize is not None:
            if self.input_spec_shape != (self.standardize.num_columns,):
                raise ValueError(
                    f"The encoder standardises {self.standardize.num_columns} columns; it "
                    f"needs data of shape (N, {self.standardize.num_columns}). Received: "
                    f"input_shape={input_shape}")
            if not self.standardize.built:
                self.standardize.build((None, self.standardize.num_columns))
        self._build_body(self.input_spec_shape)
        self.head.build((None, self.head.params_size()))
        self.built = True

    def set_condition(self, condition_dim):
        """Makes this an encoder of `q(z|x, c)` for conditions `c [B, condition_dim]`.

        Called by `keras_vae.ConditionalVAE` before the layer is built; a
        built layer only accepts its own `condition_dim` again.

        Raises:
          ValueError: for a built layer with another (or no) condition width.
        """
        _set_condition(self, condition_dim)

    @property
    def missing_fill(self):
        """What a missing input entry is filled with before the encoder sees it: the
        standardisation's shift `[D]` (0 after standardising), or 0.0. Assigning a
        number or a `[D]` array overrides it for this layer object (not saved with the
        model; `None` restores the default)."""
        override = getattr(self, "_missing_fill_override", None)
        if override is not None:
            return override
        if self.standardize is None:
            return 0.0
        if not self.standardize.built:
            self.standardize.build((None, self.standardize.num_columns))
        return keras.ops.convert_to_tensor(self.standardize.shift)  # also inside tf.function

    @missing_fill.setter
    def missing_fill(self, value):
        if value is not None:
            value = np.asarray(value, np.float32)
            if not np.all(np.isfinite(value)):
                raise ValueError("`missing_fill` must be finite. "
                                 f"Received: missing_fill={value!r}")
        self._missing_fill_override = value

    def call(self, x, condition=None, training=None):
        if self.standardize is not None:
            x = self.standardize(x)
        return self.head(self._body(x, training, _condition_input(self, condition)))

    def get_config(self):
        config = {**super().get_config(), "latent_dim": self.latent_dim,
                  "posterior": _serialize_head(self.head, self._posterior_id),
                  "min_scale": self.min_scale}
        if self.standardize is not None:  # configs without it stay as they were
            config["standardize"] = keras.saving.serialize_keras_object(self.standardize)
        if self.condition_dim:  # unconditional configs stay as they were
            config["condition_dim"] = self.condition_dim
        if self.scale is not None:
            config["scale"] = self.scale
        return config


class Decoder(keras.layers.Layer):
    """Base of the decoders: likelihood head, leading sample dims, config.

    Subclasses define `_build_body(latent_dim)` and `_body(z [M, latent_dim],
    training)`, the latter returning `[M, head.params_size()]`; `call` flattens
    and restores any leading sample dimensions of `z`.
    """

    def __init__(self, output_shape, likelihood="bernoulli", condition_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = validation.event_shape("output_shape", output_shape)
        self._likelihood_id = _deserialize_head(likelihood)
        self.head = dists.get_likelihood(self._likelihood_id, self.event_shape)
        if tuple(self.head.event_shape) != self.event_shape:
            raise ValueError(
                "The likelihood's event_shape must equal the decoder's output_shape "
                f"{self.event_shape}. Received: likelihood.event_shape="
                f"{tuple(self.head.event_shape)}"
            )
        self.latent_dim = None
        self.condition_dim = _condition_dim(condition_dim)

    def build(self, input_shape):
        latent_dim = tuple(input_shape)[-1]
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)
        self._build_body(self.latent_dim + (self.condition_dim or 0))
        self.head.build((None, self.head.params_size()))
        self.built = True

    def set_condition(self, condition_dim):
        """Makes this a decoder of `p(x|z, c)`: `c [B, condition_dim]` is concatenated
        to `z` before the first layer (see `Encoder.set_condition`)."""
        _set_condition(self, condition_dim)

    def _flat_input(self, z, condition):
        """`(leading, inputs)`: z's sample dims `[...]` and the first layer's `[M, d (+ c)]`."""
        z = tf.convert_to_tensor(z)
        leading = tf.shape(z)[:-1]
        flat = tf.reshape(z, [-1, self.latent_dim])
        condition = _condition_input(self, condition)
        if condition is not None:  # [B, c] broadcast over the sample dims of z [..., B, d]
            condition = tf.broadcast_to(tf.cast(condition, flat.dtype),
                                        tf.concat([leading, [self.condition_dim]], 0))
            flat = tf.concat([flat, tf.reshape(condition, [-1, self.condition_dim])], -1)
        return leading, flat

    def call(self, z, condition=None, training=None):
        leading, flat = self._flat_input(z, condition)
        params = self._body(flat, training)
        params = tf.reshape(params, tf.concat([leading, [self.head.params_size()]], 0))
        return self.head(params)

    def event_log_prob(self, z, x, condition=None):
        """`log p(x|z)` (or `log p(x|z, c)`) summed over the event, in inference mode.

        The same number as `self(z, condition).log_prob(x)` (the default); a
        decoder may compute it without building `p(x|z)` (`MLPDecoder` with a
        Bernoulli likelihood does). Used by `keras_vae.log_likelihood`.

        Args:
          z: `[...] + [latent_dim]`; x: `[B] + output_shape`, broadcasting
            against z's `[...]`; condition: as in `call`.

        Returns:
          float32 tensor of shape `[...]`.
        """
        return self(z, condition=condition, training=False).log_prob(x)

    def get_config(self):
        config = {**super().get_config(), "output_shape": list(self.event_shape),
                  "likelihood": _serialize_head(self.head, self._likelihood_id)}
        if self.condition_dim:
            config["condition_dim"] = self.condition_dim
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MLPEncoder(Encoder):
    """Fully connected encoder `x -> q(z|x)`; flattens any data shape.

    Args:
      latent_dim: size of z.
      hidden: widths of the hidden Dense layers, default (200, 200).
      activation: Keras activation of the hidden layers, default "tanh".
      posterior: "diagonal" (default) or "full" covariance, or a head layer.
      min_scale: floor on the posterior's standard deviations.
      scale: the diagonal posterior's map from raw outputs to standard
        deviations: None (the head's default, "softplus") or "exp"
        (`sigma = exp(raw) + min_scale`, the IWAE paper's recipe); see
        `DiagonalGaussianPosterior`.

    Call arguments:
      x: float tensor `[B] + data_shape`.

    Returns:
      `q(z|x)`, batch shape `[B]`, event shape `[latent_dim]`.

    Example:
      >>> enc = MLPEncoder(latent_dim=2, hidden=(64,))
      >>> q = enc(np.zeros((5, 8, 8, 1), "float32"))
      >>> q.batch_shape, q.event_shape
      (TensorShape([5]), TensorShape([2]))
    """

    def __init__(self, latent_dim, hidden=(200, 200), activation="tanh", **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.hidden = hidden_widths("hidden", hidden)
        self.activation = check_activation(activation)
        _check_hidden(self, self.head.params_size())

    def _build_body(self, data_shape):
        self._flat_dim = int(np.prod(data_shape))
        self.dense_layers, self.params_layer = _dense_stack(
            self, self._flat_dim + (self.condition_dim or 0))

    def _body(self, x, training, condition=None):
        h = _with_condition(tf.reshape(x, [-1, self._flat_dim]), condition)
        return self.params_layer(_apply(self.dense_layers, h))

    def get_config(self):
        return {**super().get_config(), "hidden": list(self.hidden),
                "activation": self.activation}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MLPDecoder(Decoder):
    """Fully connected decoder `z -> p(x|z)`.

    Args:
      output_shape: data shape, e.g. (28, 28, 1) or (64,).
      hidden: widths of the hidden Dense layers, default (200, 200).
      activation: Keras activation, default "tanh".
      likelihood: "bernoulli" (default), "gaussian" (fixed scale 1),
        "gaussian_learned", "continuous_bernoulli", or a likelihood head
        from `keras_vae.distributions` for other options
        (e.g. `GaussianLikelihood(shape, scale=0.1)`).

    Call arguments:
      z: float tensor `[...] + [latent_dim]`.

    Returns:
      `p(x|z)`, batch shape `[...]`, event shape `output_shape`.
    """

    def __init__(self, output_shape, hidden=(200, 200), activation="tanh",
                 likelihood="bernoulli", **kwargs):
        super().__init__(output_shape, likelihood=likelihood, **kwargs)
        self.hidden = hidden_widths("hidden", hidden)
        self.activation = check_activation(activation)
        _check_hidden(self, self.head.params_size())

    def _build_body(self, latent_dim):
        self.dense_layers, self.params_layer = _dense_stack(self, latent_dim)

    def _body(self, z, training):
        return self.params_layer(_apply(self.dense_layers, z))

    def event_log_prob(self, z, x, condition=None):
        """See `Decoder.event_log_prob`. With a likelihood whose logits enter
        linearly (`BernoulliLikelihood.log_prob_of_linear`) and a float32 linear
        params layer, `sum_i x_i l_i` is taken over the last hidden layer's
        features instead of the logits (the K=5000 log-likelihood's fast path)."""
        fast = getattr(self.head, "log_prob_of_linear", None)
        layer = getattr(self, "params_layer", None)
        if (fast is None or not self.built or self.compute_dtype != "float32"
                or layer.activation is not keras.activations.linear or not layer.use_bias
                or getattr(layer, "quantization_mode", None) is not None):
            return super().event_log_prob(z, x, condition)
        leading, flat = self._flat_input(z, condition)
        h = _apply(self.dense_layers, flat)
        h = tf.reshape(h, tf.concat([leading, tf.shape(h)[-1:]], 0))
        return fast(h, layer.kernel, layer.bias, x)

    def get_config(self):
        return {**super().get_config(), "hidden": list(self.hidden),
                "activation": self.activation}


def _conv_args(filters, kernel_size, activation):
    return hidden_widths("filters", filters), validation.positive_int("kernel_size", kernel_size), \
        check_activation(activation)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvEncoder(Encoder):
    """Convolutional encoder: stride-2 Conv2D layers, then Dense layers, then the head.

    The architecture of Keras's VAE example with the defaults
    `filters=(32, 64), hidden=(16,)`.

    Args:
      latent_dim: size of z.
      filters: channels of each stride-2 3x3 convolution, default (32, 64).
      kernel_size: default 3.
      hidden: Dense widths after flattening, default (16,).
      activation: default "relu".
      posterior, min_scale, scale: as in `MLPEncoder`.

    Call arguments:
      x: float tensor `[B, H, W, C]`.

    Returns:
      `q(z|x)`, batch shape `[B]`, event shape `[latent_dim]`.
    """

    def __init__(self, latent_dim, filters=(32, 64), kernel_size=3, hidden=(16,),
                 activation="relu", **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.filters, self.kernel_size, self.activation = _conv_args(
            filters, kernel_size, activation)
        self.hidden = hidden_widths("hidden", hidden) if hidden else ()
        _check_parameters(self, _conv_parameter_count(self.kernel_size, self.filters)
                          + (resources.mlp_parameter_count(self.hidden[0], self.hidden[1:], 1)
                             if self.hidden else 0),
                          filters=list(self.filters), hidden=list(self.hidden))

    def _build_body(self, data_shape):
        if len(data_shape) != 3:
            raise ValueError(
                "ConvEncoder needs images of shape (H, W, C); use MLPEncoder for "
                f"vectors. Received: data shape {data_shape}"
            )
        convs = _conv_parameter_count(self.kernel_size, (data_shape[-1],) + self.filters)
        flat = math.prod(math.ceil(d / 2 ** len(self.filters)) for d in data_shape[:2])
        dense = resources.mlp_parameter_count(flat * self.filters[-1], self.hidden,
                                              self.head.params_size())
        _check_parameters(self, convs + dense, data_shape=tuple(data_shape),
                          filters=list(self.filters), hidden=list(self.hidden))
        shape = (None,) + tuple(data_shape)
        self.conv_layers = []
        for i, f in enumerate(self.filters):
            layer = keras.layers.Conv2D(f, self.kernel_size, strides=2, padding="same",
                                        activation=self.activation, name=f"conv_{i}",
                                        dtype=self.dtype_policy)
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            self.conv_layers.append(layer)
        self._flat_dim = int(np.prod(shape[1:]))
        self.dense_layers, self.params_layer = _dense_stack(
            self, self._flat_dim + (self.condition_dim or 0))

    def _body(self, x, training, condition=None):
        h = tf.reshape(_apply(self.conv_layers, x), [-1, self._flat_dim])
        return self.params_layer(_apply(self.dense_layers, _with_condition(h, condition)))

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters),
                "kernel_size": self.kernel_size, "hidden": list(self.hidden),
                "activation": self.activation}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvDecoder(Decoder):
    """Convolutional decoder: Dense to a small feature map, stride-2 Conv2DTranspose
    layers, a crop to (H, W) and a 3x3 stride-1 Conv2DTranspose producing the
    likelihood's parameters (as in Keras's VAE example).

    Works for any image size: the base map is `ceil(H / 2^n) x ceil(W / 2^n)`
    for `n = len(filters)` and the upsampled map is cropped to `H x W`. The last
    layer is a stride-1 transposed convolution, the same function class as a
    "same" Conv2D (a convolution with the kernel flipped), because on CPU its
    gradient is about 4x faster for the few output channels it has (measured
    in `benchmarks/`: a 3x3 Conv2D to 1 channel took 60 ms forward+backward on
    128x28x28x32 inputs, the Conv2DTranspose 16 ms).

    Args:
      output_shape: (H, W, C).
      filters: channels of each stride-2 transposed convolution, default (64, 32).
      kernel_size: default 3.
      hidden: Dense widths before the feature map, default () (none).
      activation: default "relu".
      likelihood: as in `MLPDecoder`.

    Call arguments:
      z: float tensor `[...] + [latent_dim]`.

    Returns:
      `p(x|z)`, batch shape `[...]`, event shape `(H, W, C)`.
    """

    def __init__(self, output_shape, filters=(64, 32), kernel_size=3, hidden=(),
                 activation="relu", likelihood="bernoulli", **kwargs):
        super().__init__(output_shape, likelihood=likelihood, **kwargs)
        if len(self.event_shape) != 3:
            raise ValueError(
                "ConvDecoder needs an image output_shape (H, W, C); use MLPDecoder "
                f"for vectors. Received: output_shape={self.event_shape}"
            )
        self.filters, self.kernel_size, self.activation = _conv_args(
            filters, kernel_size, activation)
        self.hidden = hidden_widths("hidden", hidden) if hidden else ()
        _check_parameters(self, _conv_parameter_count(self.kernel_size, self.filters)
                          + (resources.mlp_parameter_count(self.hidden[0], self.hidden[1:], 1)
                             if self.hidden else 0),
                          filters=list(self.filters), hidden=list(self.hidden))

    def _build_body(self, latent_dim):
        height, width, channels = self.event_shape
        n = len(self.filters)
        self._base = (math.ceil(height / 2 ** n), math.ceil(width / 2 ** n), self.filters[0])
        dense = resources.mlp_parameter_count(latent_dim, self.hidden, int(np.prod(self._base)))
        convs = _conv_parameter_count(self.kernel_size, self.filters[:1] + self.filters
                                      + (channels * self.head.num_params,))
        _check_parameters(self, dense + convs, latent_dim=latent_dim,
                          filters=list(self.filters), hidden=list(self.hidden))
        self.dense_layers = []
        size = latent_dim
        for i, units in enumerate(self.hidden + (int(np.prod(self._base)),)):
            layer = keras.layers.Dense(units, activation=self.activation,
                                       name=f"dense_{i}", dtype=self.dtype_policy)
            layer.build((None, size))
            self.dense_layers.append(layer)
            size = units
        shape = (None,) + self._base
        self.deconv_layers = []
        for i, f in enumerate(self.filters):
            layer = keras.layers.Conv2DTranspose(
                f, self.kernel_size, strides=2, padding="same",
                activation=self.activation, name=f"deconv_{i}", dtype=self.dtype_policy)
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            self.deconv_layers.append(layer)
        self.params_layer = keras.layers.Conv2DTranspose(
            channels * self.head.num_params, self.kernel_size, strides=1, padding="same",
            name="params", dtype=self.dtype_policy)
        self.params_layer.build((None, height, width, shape[-1]))

    def _body(self, z, training):
        h = z
        for layer in self.dense_layers:
            h = layer(h)
        h = tf.reshape(h, (-1,) + self._base)
        for layer in self.deconv_layers:
            h = layer(h)
        height, width, _ = self.event_shape
        h = self.params_layer(h[:, :height, :width, :])
        return tf.reshape(h, [-1, self.head.params_size()])

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters),
                "kernel_size": self.kernel_size, "hidden": list(self.hidden),
                "activation": self.activation}
