"""How evaluation code talks to a model: prior, encoder, decoder, inputs, compiled functions, seeds.

Everything that measures or draws a trained model (`keras_vae.estimators`,
`keras_vae.latent`, `keras_vae.applications`, `keras_vae.evaluation`,
`keras_vae.visualization`) reaches the model only through these helpers, so
they work for any object exposing

- `.encoder`: `x [B] + data_shape -> q(z|x)`, batch `[B]`, event `[d]`;
- `.decoder`: `z [...] + [d] -> p(x|z)`, batch `[...]`, event `data_shape`;
- `.prior` (optional): a keras_vae prior layer, a `tfd.Distribution` or None
  (deterministic autoencoders have none);
- `.data_shape` (optional): checked against the inputs when present.

This module imports only `keras_vae.validation` of keras_vae, so every
evaluation module may build on it.

Example:

>>> x = check_inputs(vae, x_test)                  # float32 numpy, shape checked
>>> q = encode(vae, x[:10]); p = decode(vae, q.mean())
>>> x_hat = reconstruct(vae, x)                    # batched E[p(x | z = E q(z|x))]
"""

import weakref

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import validation

tfd = tfp.distributions

__all__ = [
    "prior_distribution",
    "require_prior",
    "allows_missing",
    "encode",
    "decode",
    "decode_log_prob",
    "conditions",
    "check_inputs",
    "reconstruct",
    "cached_function",
    "batch_seed",
]


def prior_distribution(model):
    """`p(z)` of `model` as a `tfd.Distribution` (event `[d]`), or None when it has no prior.

    Raises:
      TypeError: if `model.prior` is neither a prior layer, a distribution nor None.
    """
    prior = getattr(model, "prior", None)
    if prior is None:
        return None
    if isinstance(prior, tfd.Distribution):
        return prior
    if hasattr(prior, "distribution"):
        return prior.distribution()
    raise TypeError(
        "`model.prior` must be a keras_vae prior layer, a tfd.Distribution or None. "
        f"Received: model.prior={prior!r}"
    )


def require_prior(model, what):
    """`p(z)` of `model`; raises for a model without one.

    Args:
      model: the model.
      what: name of the caller for the message, e.g. "log_likelihood".

    Returns:
      the prior as a `tfd.Distribution`, event `[d]`.

    Raises:
      ValueError: if the model has no prior (a deterministic autoencoder).
    """
    prior = prior_distribution(model)
    if prior is None:
        raise ValueError(
            f"{what} needs a model with a prior p(z) (a VAE); deterministic "
            "autoencoders have none. Received: model.prior=None"
        )
    return prior


def _call(layer, inputs, condition=None):
    if condition is not None:  # a conditional network (keras_vae.ConditionalVAE)
        return layer(inputs, condition=condition, training=False)
    if isinstance(layer, keras.layers.Layer):
        return layer(inputs, training=False)
    return layer(inputs)


def allows_missing(model):
    """True for a model trained on incomplete data (`VAE(objective="miwae")`): NaN in its
    inputs marks a missing entry."""
    return bool(getattr(model, "allows_missing", False))


def encode(model, x, condition=None):
    """`q(z|x)` (or `q(z|x, c)` given `condition [B, c]`) for a float32 batch
    `x [B] + data_shape` (batch `[B]`, event `[d]`). For a model that allows
    missing entries, NaN in `x` is filled first (`model.fill_missing`)."""
    if allows_missing(model):
        x = model.fill_missing(x)
    return _call(model.encoder, x, condition)


def decode(model, z, condition=None):
    """`p(x|z)` (or `p(x|z, c)`, `condition [B, c]`) for latents `z [...] + [d]` (batch `[...]`,
    event `data_shape`), inference mode."""
    return _call(model.decoder, z, condition)


def decode_log_prob(model, z, x, condition=None):
    """`log p(x|z)` (or `log p(x|z, c)`) summed over the event, `[...]` for latents
    `z [...] + [d]` and data `x [B] + data_shape` broadcasting against them; inference
    mode. A decoder with `event_log_prob(z, x, condition)` (the keras_vae decoders)
    computes it its own way (`MLPDecoder`'s Bernoulli fast path); any other goes
    through `decode(model, z, condition).log_prob(x)`."""
    own = getattr(model.decoder, "event_log_prob", None)
    if own is None:
        return decode(model, z, condition).log_prob(x)
    return own(z, x, condition) if condition is not None else own(z, x)


def conditions(model, y, n):
    """The network condition for labels `y` of `n` examples, or None for an unconditional model.

    Args:
      model: the model; a conditional one (`model.conditional`, e.g.
        `keras_vae.ConditionalVAE`) turns `y` into float32 `[n, c]` with
        `model.conditions(y, n)`.
      y: labels or condition vectors, or None.
      n: number of examples.

    Returns:
      float32 numpy `[n, c]`, or None.

    Raises:
      ValueError: labels missing for a conditional model, or given to an
        unconditional one; bad labels (see `validation.labels`).
    """
    if getattr(model, "conditional", False):
        return model.conditions(y, n)
    if y is not None:
        raise ValueError(
            f"`y` conditions a keras_vae.ConditionalVAE; this {type(model).__name__} is "
            "unconditional: leave y out. Received: y=<given>")
    return None


def check_inputs(model, x, name="x"):
    """Validates `x` against the model and returns it as a float32 numpy array.

    Uses `keras_vae.validation.data_array`: shape `(N,) + model.data_shape`
    when the model declares `data_shape` (otherwise any batch of real
    numbers), at least one example, values in the support of the decoder's
    likelihood head when it has one. NaN (a missing entry) is accepted for a
    model that allows missing entries (`allows_missing(model)`).

    Args:
      model: the model.
      x: `[N] + data_shape` array or tensor.
      name: argument name for the messages.

    Returns:
      float32 numpy array `[N] + data_shape`.

    Raises:
      TypeError: for datasets, dicts, None or non-numeric data.
      ValueError: for a wrong shape, no examples, NaN/Inf or values outside
        the likelihood's support.
    """
    data_shape = getattr(model, "data_shape", None)
    head = getattr(getattr(model, "decoder", None), "head", None)
    return validation.data_array(x, None if data_shape is None else tuple(data_shape),
                                 head, name=name, allow_missing=allows_missing(model))


def reconstruct(model, x, batch_size=1000):
    """Mean reconstructions `E[p(x | z = E[q(z|x)])]` of `x`, `batch_size` examples at a time.

    The batched counterpart of the model method `reconstruct(x)`, for any
    model with `.encoder` and `.decoder` (deterministic, no noise).

    Args:
      model: the model.
      x: `[N] + data_shape` array.
      batch_size: examples per encoder/decoder call.

    Returns:
      float32 numpy array `[N] + data_shape`.

    Raises:
      ValueError / TypeError: for bad data or batch size.

    Example:
      >>> x_hat = reconstruct(vae, x_test)
      >>> x_hat.shape == x_test.shape
      True
    """
    x = check_inputs(model, x)
    batch_size = validation.batch_size(batch_size)
    out = []
    for s in range(0, len(x), batch_size):
        q = encode(model, tf.constant(x[s:s + batch_size]))
        out.append(np.asarray(decode(model, q.mean()).mean()))
    return np.concatenate(out).astype("float32")


_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> {key: tf.function}


def cached_function(model, key, build):
    """The `tf.function` `build(model_ref)` for `(model, key)`, traced once and reused.

    `build` receives a zero-argument callable returning the model and must
    only call it inside the function it builds; the cache holds the model
    weakly, so functions are dropped with their model. Objects that cannot
    be weakly referenced get a fresh function on every call.

    Args:
      model: the model the function belongs to.
      key: hashable description of the function (shapes, settings).
      build: `model_ref -> tf.function`.

    Returns:
      the cached (or new) `tf.function`.
    """
    try:
        per_model = _FUNCTIONS.setdefault(model, {})
    except TypeError:
        return build(lambda: model)
    if key not in per_model:
        per_model[key] = build(weakref.ref(model))
    return per_model[key]


def batch_seed(seed, index):
    """Stateless seed, int32 `[2]`, for batch `index` of a run with integer `seed`.

    Raises:
      TypeError / ValueError: for a seed that is not an integer in [0, 2**63).
    """
    base = tf.constant([validation.seed32(seed), 0], tf.int32)
    return tf.random.experimental.stateless_fold_in(base, int(index))
