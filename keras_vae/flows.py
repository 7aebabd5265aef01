"""Flow parts of the IAF posterior (`keras_vae.distributions.IAFPosterior`, Kingma et al., 2016).

- `MADE`: a masked autoregressive Keras 3 layer (Germain et al., 2015). TFP's
  `tfb.AutoregressiveNetwork` is a `tf_keras` (Keras 2) layer: its weights are
  not tracked, trained or saved by a Keras 3 model, so we write our own.
- `IAFStep`: one gated autoregressive update as a TFP bijector.
- `FlowDistribution`: the `tfd.TransformedDistribution` it returns, with a
  defined `mean()` (the base mean pushed through the flow).

#### Mathematical details

```none
params = [mu, raw, h]                      # 2 d + context_dim numbers
z_0 = mu + sigma * eps,  eps ~ N(0, I)     # sigma from DiagonalGaussianPosterior(raw)
for t = 1..T:
  [m_t, s_t] = MADE_t(z_{t-1}, h)          # output i depends on z_{<i} (in step t's order) and h
  g_t = sigmoid(s_t + forget_bias)
  z_t = g_t * z_{t-1} + (1 - g_t) * m_t    # gated update, dz_t/dz_{t-1} lower triangular
log q(z_T|x) = log N(z_0; mu, sigma) - sum_t sum_i log g_t,i
```
Step t uses the order 1..d for odd t and d..1 for even t (order reversal
between steps), so every coordinate can depend on every other one.

Log-densities are exact. For the samples the distribution draws itself (the
ones the ELBO and IWAE objectives score) `log_prob` takes the base sample and
the log-determinants from TFP's bijector cache: one MADE pass per step, no
inversion. For any other `z` (e.g. stacked by `tf.map_fn` in
`keras_vae.log_likelihood`) `log_prob` runs the exact inverse, which is
sequential: `d` MADE passes per step, `x_i = (y_i - (1 - g_i) m_i) / g_i` one
coordinate order position at a time.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import validation

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["MADE", "IAFStep", "FlowDistribution", "made_masks", "split_flow"]

_PACKAGE = "keras_vae"


def made_masks(event_size, hidden, reverse=False):
    """The connectivity masks of a MADE with outputs `[m, s]` (2 per input).

    Degrees: input i has degree `order(i)` in 1..d (reversed if `reverse`);
    hidden unit j of each layer degree `1 + j mod max(d - 1, 1)`; a hidden unit
    sees inputs of degree <= its own, an output of degree k sees hidden units of
    degree < k. So output i depends on inputs of lower order only.

    Returns:
      list of float32 numpy masks `[fan_in, fan_out]`, one per layer (input
      to first hidden, ..., last hidden to the `2 * event_size` outputs).
    """
    d = event_size
    degrees_in = np.arange(1, d + 1)
    if reverse:
        degrees_in = degrees_in[::-1]
    degrees = [degrees_in]
    for width in hidden:
        degrees.append(np.arange(width) % max(d - 1, 1) + 1)
    masks = [(b[None, :] >= a[:, None]).astype("float32")
             for a, b in zip(degrees[:-1], degrees[1:])]
    out = np.concatenate([degrees_in, degrees_in])
    masks.append((out[None, :] > degrees[-1][:, None]).astype("float32"))
    return masks


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MADE(keras.layers.Layer):
    """Masked autoregressive network `z [..., d], h [..., c] -> m, s [..., d]`.

    Output i (of `m` and of `s`) depends on the inputs `z_j` of lower order
    only (order 1..d, or d..1 with `reverse=True`) and on the context `h`,
    which enters the first hidden layer unmasked.

    Args:
      event_size: d.
      hidden: widths of the masked hidden layers (at least one).
      context_dim: width c of the context (0: none).
      reverse: reverse the autoregressive order.
      activation: Keras activation of the hidden layers, default "elu".

    Call arguments:
      z: float32 `[..., d]`.
      context: float32 `[..., c]` broadcastable against `z`'s leading axes, or
        None when `context_dim` is 0.

    Returns:
      `(m, s)`, float32 `[..., d]` each.
    """

    def __init__(self, event_size, hidden=(64,), context_dim=0, reverse=False,
                 activation="elu", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.event_size = validation.positive_int("event_size", event_size)
        hidden = tuple(hidden) if not isinstance(hidden, (int, np.integer)) else (hidden,)
        if not hidden:
            raise ValueError(f"`hidden` must name at least one layer width. Received: "
                             f"hidden={hidden!r}")
        self.hidden = tuple(validation.positive_int("hidden", h) for h in hidden)
        self.context_dim = validation.non_negative_int("context_dim", context_dim)
        self.reverse = validation.boolean("reverse", reverse)
        self.activation = activation
        self._activation = keras.activations.get(activation)

    def build(self, input_shape=None):
        masks = made_masks(self.event_size, self.hidden, self.reverse)
        self._masks = [tf.constant(m) for m in masks]
        widths = (self.event_size,) + self.hidden + (2 * self.event_size,)
        self.kernels, self.biases = [], []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            init = (keras.initializers.RandomNormal(stddev=0.01) if last
                    else keras.initializers.GlorotUniform())
            self.kernels.append(self.add_weight(name=f"kernel_{i}", shape=(a, b),
                                                initializer=init))
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(b,),
                                               initializer="zeros"))
        self.context_kernel = None
        if self.context_dim:
            self.context_kernel = self.add_weight(
                name="context_kernel", shape=(self.context_dim, self.hidden[0]),
                initializer=keras.initializers.GlorotUniform())
        self.built = True

    def call(self, z, context=None):
        h = z
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            h = tf.linalg.matvec(kernel * self._masks[i], h, transpose_a=True) + bias
            if i == 0 and self.context_kernel is not None:
                h = h + tf.linalg.matvec(self.context_kernel, context, transpose_a=True)
            if i < len(self.kernels) - 1:
                h = self._activation(h)
        m, s = tf.split(h, 2, axis=-1)
        return m, s

    def get_config(self):
        return {**super().get_config(), "event_size": self.event_size,
                "hidden": list(self.hidden), "context_dim": self.context_dim,
                "reverse": self.reverse, "activation": self.activation}


class IAFStep(tfb.Bijector):
    """One gated IAF update `y = g * x + (1 - g) * m`, `[m, s] = made(x, h)`,
    `g = sigmoid(s + forget_bias)`; the exact inverse is sequential."""

    def __init__(self, made, context, forget_bias, name="iaf_step"):
        parameters = dict(locals())
        self._made = made
        self._context = context
        self._forget_bias = forget_bias
        super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                         validate_args=False, parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    def _gate(self, x):
        m, s = self._made(x, self._context)
        return m, s + self._forget_bias

    def _forward(self, x):
        m, s = self._gate(x)
        g = tf.sigmoid(s)
        return g * x + (1.0 - g) * m

    def _inverse(self, y):
        # Exact and sequential: after pass k the first k coordinates (in this
        # step's order) are exact, so d passes invert the step.
        d = self._made.event_size

        def body(k, x):
            m, s = self._gate(x)
            g = tf.sigmoid(s)
            return k + 1, (y - (1.0 - g) * m) / g

        _, x = tf.while_loop(lambda k, _: k < d, body, (tf.constant(0), tf.zeros_like(y)))
        return x

    def _forward_log_det_jacobian(self, x):
        _, s = self._gate(x)
        return tf.reduce_sum(tf.math.log_sigmoid(s), axis=-1)


class FlowDistribution(tfd.TransformedDistribution):
    """`tfd.TransformedDistribution` of a flow posterior, with `mean()` defined as
    the base distribution's mean pushed through the flow (`f(mu)`).

    The true mean `E[f(z_0)]` of a flow has no closed form; `f(mu)` is the
    flow's image of the base's mode, the deterministic code used by `encode`,
    `reconstruct` and the exported `encode` signature (`z_mean`). `stddev()`
    is the base's standard deviation `sigma` (the spread before the flow),
    so exported signatures that read `z_stddev` keep working; it is not the
    standard deviation of `q(z|x)`.
    """

    def __init__(self, distribution, bijector, validate_args=False, name="FlowDistribution"):
        parameters = dict(locals())
        super().__init__(distribution=distribution, bijector=bijector,
                         validate_args=validate_args, parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        # Same parameters as the parent (`distribution`, `bijector`).
        return tfd.TransformedDistribution._parameter_properties(dtype, num_classes=num_classes)

    def _mean(self, **kwargs):
        return self.bijector.forward(self.distribution.mean())

    def _stddev(self, **kwargs):
        return self.distribution.stddev()


def split_flow(distribution):
    """`(base, bijector)` of a `FlowDistribution`, `(distribution, None)` for any other.

    Callers that draw samples in pieces (e.g. `tf.map_fn` over importance
    samples) draw from `base` and apply `bijector.forward` to the stacked draws
    once, so `log_prob` of the result takes the cached base sample and
    log-determinants instead of the sequential inverse.
    """
    if isinstance(distribution, FlowDistribution):
        return distribution.distribution, distribution.bijector
    return distribution, None
