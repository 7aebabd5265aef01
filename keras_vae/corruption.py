"""Input corruption for denoising, and dynamic binarization: draws applied to a batch.

`corrupt` draws `x~ ~ q(x~|x)` (Gaussian noise, masking, salt-and-pepper) from
a stateless Philox seed; `check_corruption` checks the three settings a model
takes (`corruption`, `corruption_rate`, `corruption_stddev`). `binarize` draws
`b ~ Bernoulli(x)` from a stateless Philox seed, the in-graph dynamic
binarization of `VAE(binarize="dynamic")`.
"""

import tensorflow as tf

from keras_vae import validation
from keras_vae.heads import stateless_normal

__all__ = ["CORRUPTIONS", "BINARIZATIONS", "check_corruption", "check_binarize", "corrupt",
           "binarize"]

CORRUPTIONS = ("gaussian", "masking", "salt_and_pepper")
BINARIZATIONS = ("dynamic",)


def check_corruption(corruption, rate, stddev):
    """`(corruption, rate, stddev)` checked: a name of `CORRUPTIONS` or None, a rate in
    [0, 1] and a positive standard deviation."""
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
    kind, rate, stddev = check_corruption(kind, rate, stddev)
    x = tf.cast(x, tf.float32)
    seed = tf.cast(seed, tf.int32)
    if kind == "gaussian":
        noisy = x + stddev * stateless_normal(tf.shape(x), seed)
        return noisy if support is None else tf.clip_by_value(noisy, *support)
    u = tf.random.stateless_uniform(tf.shape(x), seed=seed, alg="philox")
    if kind == "masking":
        return tf.where(u < rate, tf.zeros_like(x), x)
    low, high = support if support is not None else (tf.reduce_min(x), tf.reduce_max(x))
    salted = tf.where(u < rate / 2, high * tf.ones_like(x), low * tf.ones_like(x))
    return tf.where(u < rate, salted, x)


def check_binarize(binarize, support):
    """`binarize` checked: None or "dynamic", the latter for a likelihood on [0, 1] only
    (`support` is the decoder head's `(low, high)` or None for the real line)."""
    if binarize is None:
        return None
    if not (isinstance(binarize, str) and binarize in BINARIZATIONS):
        raise ValueError(f"`binarize` must be None or one of {BINARIZATIONS}. "
                         f"Received: binarize={binarize!r}")
    if support is None or support[0] < 0.0 or support[1] > 1.0:
        raise ValueError(
            "binarize='dynamic' draws {0, 1} data from grey values in [0, 1]: it needs a "
            "likelihood on [0, 1] (e.g. 'bernoulli'). Received: a decoder whose likelihood "
            f"has support {support if support is not None else 'the real line'}")
    return binarize


def binarize(x, seed):
    """Dynamic binarization of a batch: `b_i = 1 if u_i < x_i else 0`, `u ~ U[0, 1)` (Philox).

    Each `b_i` is a Bernoulli(`x_i`) draw (E[b] = x), a function of `seed` only,
    so a step-keyed seed draws the same bits in a resumed run. Values of `x`
    outside [0, 1] act as clipped to it.

    Args:
      x: float tensor `[B] + data_shape` of probabilities (grey pixels in [0, 1]).
      seed: stateless seed, int32 tensor of shape [2].

    Returns:
      float32 tensor shaped like `x`, of 0.0 and 1.0.

    Example:
      >>> b = binarize(tf.fill([2, 3], 0.5), tf.constant([0, 1]))
    """
    x = tf.cast(x, tf.float32)
    u = tf.random.stateless_uniform(tf.shape(x), seed=tf.cast(seed, tf.int32), alg="philox")
    return tf.cast(u < x, tf.float32)
