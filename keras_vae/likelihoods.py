"""Likelihood heads p(x|z): Keras layers mapping decoder outputs to TFP distributions.

They follow the head contract of `keras_vae.distributions`: `params_size()`
numbers per example in, a distribution with the data's event shape out
(`num_params` numbers per data element). The likelihood is the model's
reconstruction loss: Bernoulli gives binary cross-entropy, a fixed-scale
Gaussian a scaled squared error, and every one reports nats through
`.log_prob(x)`. `check_support` refuses data outside a likelihood's support
before training starts.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import keras_api, validation
from keras_vae.heads import Head

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = [
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "LearnedGaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "TableLikelihood",
    "TableColumns",
    "LIKELIHOODS",
    "register_likelihood",
    "get_likelihood",
]

_PACKAGE = "keras_vae"


def softplus(logits):
    """`log(1 + exp(l))` whose gradient (the sigmoid) reuses the forward's `exp(-|l|)`.

    ```none
    softplus(l) = max(l, 0) + log1p(exp(-|l|)),   d/dl = [l >= 0] - sign(l) e / (1 + e)
    ```

    The form of `tf.nn.sigmoid_cross_entropy_with_logits`, taken inside an XLA
    function (`keras_api.in_xla_context`): there a likelihood and its gradient
    cost one exp per logit, where `tf.nn.softplus` (whose registered gradient is
    `sigmoid(l)`) costs two; 3.9 against 4.9 ms for a [512, 784] log_prob and
    gradient on an AVX2 CPU. In graph mode and eagerly it is `tf.nn.softplus`,
    one fused kernel each way (6.8 ms there against 9.6 for the six-op form).
    Exact for every finite logit; at `l = 0` the gradient is 1/2.
    """
    logits = tf.convert_to_tensor(logits)
    if not keras_api.in_xla_context():
        return tf.nn.softplus(logits)
    positive = logits >= 0
    zeros = tf.zeros_like(logits)
    relu = tf.where(positive, logits, zeros)
    neg_abs = tf.where(positive, -logits, logits)
    return relu + tf.math.log1p(tf.exp(neg_abs))


class _LikelihoodHead(Head):
    """Per-element likelihood with `num_params` numbers per data element.

    Subclasses implement `_distribution(*params)` on tensors of shape
    `batch_shape + event_shape` and may declare a support `(low, high)`.
    """

    num_params = 1
    support = None  # (low, high) inclusive, or None for the real line
    support_name = "the real line"

    def __init__(self, event_shape, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = validation.event_shape("event_shape", event_shape)

    def params_size(self):
        return int(np.prod(self.event_shape)) * self.num_params

    def call(self, params):
        params = self._params(params)
        batch_shape = tf.shape(params)[:-1]
        shape = tf.concat([batch_shape, self.event_shape, [self.num_params]], 0)
        parts = tf.unstack(tf.reshape(params, shape), num=self.num_params, axis=-1)
        return tfd.Independent(
            self._distribution(*parts),
            reinterpreted_batch_ndims=len(self.event_shape),
        )

    def check_support(self, x, name="x"):
        """Raises ValueError if the numpy array `x` lies outside the support."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(
                f"`{name}` must be a real-valued array. Received: {name}.dtype={x.dtype}"
            )
        if x.size and not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise ValueError(
                f"`{name}` must be finite; it holds {bad} NaN/Inf values. "
                f"Received: {name} with NaN or Inf"
            )
        if self.support is not None and x.size:
            lo, hi = float(x.min()), float(x.max())
            if lo < self.support[0] or hi > self.support[1]:
                raise ValueError(
                    f"The {self.likelihood_name!r} likelihood needs data in "
                    f"{self.support_name}; scale the data (e.g. divide pixels by "
                    f"255) or choose a Gaussian likelihood. Received: {name} with "
                    f"min={lo:g}, max={hi:g}"
                )

    def get_config(self):
        return {**super().get_config(), "event_shape": list(self.event_shape)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BernoulliLikelihood(_LikelihoodHead):
    """`p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i))`; -log p is binary cross-entropy.

    #### Mathematical details

    ```none
    log p(x|z) = sum_i x_i log s(l_i) + (1 - x_i) log(1 - s(l_i)),   s = sigmoid
    ```

    Defined for x in [0, 1] (grey values give the cross-entropy used for
    non-binarized images). Event shape `event_shape`; the mean is `sigmoid(l)`.
    """

    likelihood_name = "bernoulli"
    support = (0.0, 1.0)
    support_name = "[0, 1]"

    def _distribution(self, logits):
        return _LogitBernoulli(logits=logits, dtype=tf.float32)

    def log_prob_of_linear(self, h, kernel, bias, x):
        """`log p(x|z)` summed over the event when the logits are `l = h @ kernel + bias`.

        The same number as `self(h @ kernel + bias).log_prob(x)`, with the
        `sum_i x_i l_i` part computed as `h . (x @ kernel^T) + x . bias`: a
        product over the H features instead of the D logits, so what is left
        per logit is one softplus and its sum. For inference over many samples
        of few examples (the K=5000 log-likelihood, where it saves about a
        quarter of the time); not for training (its gradient costs one more
        `[H, D]` matmul).

        Args:
          h: float `[..., H]` features (e.g. `[C, B, H]` for C samples of B examples).
          kernel: `[H, D]`, D the event size; bias: `[D]`.
          x: `[B] + event_shape`, its batch broadcasting against `h`'s `[...]`.

        Returns:
          float32 tensor, the broadcast batch shape of `h[..., 0]` and `x`'s batch.
        """
        h, kernel, bias = (tf.cast(t, tf.float32) for t in (h, kernel, bias))
        size = self.params_size()
        x = tf.cast(x, tf.float32)
        x_batch = tf.shape(x)[:tf.rank(x) - len(self.event_shape)]
        x_flat = tf.reshape(x, [-1, size])
        xw = tf.reshape(tf.matmul(x_flat, kernel, transpose_b=True),
                        tf.concat([x_batch, tf.shape(kernel)[:1]], 0))   # [B, H]
        xb = tf.reshape(tf.linalg.matvec(x_flat, bias), x_batch)        # [B]
        features = tf.shape(h)[:-1]
        logits = tf.matmul(tf.reshape(h, [-1, tf.shape(h)[-1]]), kernel) + bias
        log_norm = tf.reshape(tf.reduce_sum(tf.nn.softplus(logits), -1), features)
        return tf.reduce_sum(h * xw, -1) + xb - log_norm


class _LogitBernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli(logits=l)` whose `log_prob(x)` is `x * l - softplus(l)`.

    The same function as TFP's `x log p + (1 - x) log(1 - p)` (also for grey
    x in [0, 1]) with one softplus instead of two softplus and two
    `multiply_no_nan`: about 2x faster log_prob + gradient on CPU in graph
    mode, where it is a large share of a decoder's cost (IWAE, K=5000
    log-likelihood). The softplus is `likelihoods.softplus`, one exp per logit
    for the value and the gradient together. Needs finite logits, which
    decoders produce.
    """

    def _log_prob(self, event):
        logits = tf.convert_to_tensor(self._logits)
        return tf.cast(event, logits.dtype) * logits - softplus(logits)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ContinuousBernoulliLikelihood(_LikelihoodHead):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019), a proper density on [0, 1].

    #### Mathematical details

    ```none
    p(x|l) = C(s) s^x (1 - s)^(1 - x),   s = sigmoid(l),
    C(s)   = 2 atanh(1 - 2 s) / (1 - 2 s)   (C(1/2) = 2)
    ```
    """

    likelihood_name = "continuous_bernoulli"
    support = (0.0, 1.0)
    support_name = "[0, 1]"

    def _distribution(self, logits):
        return tfd.ContinuousBernoulli(logits=logits)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianLikelihood(_LikelihoodHead):
    """Gaussian with a fixed scale: -log p is a scaled squared error plus a constant.

    #### Mathematical details

    ```none
    log p(x|z) = sum_i -(x_i - mu_i)^2 / (2 scale^2) - log(scale) - log(2 pi) / 2
    ```

    Args:
      event_shape: data shape.
      scale: the fixed standard deviation (default 1.0; 0.1 suits [0, 1] images).
    """

    likelihood_name = "gaussian"

    def __init__(self, event_shape, scale=1.0, **kwargs):
        super().__init__(event_shape, **kwargs)
        self.scale = validation.positive_float("scale", scale)

    def _distribution(self, loc):
        return tfd.Normal(loc, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LearnedGaussianLikelihood(_LikelihoodHead):
    """Gaussian whose scale is learned: per pixel (from z) or one shared scalar.

    #### Mathematical details

    ```none
    per_pixel: params = [mu, raw] per element, sigma = softplus(raw) + min_scale
    shared:    params = [mu],  sigma = softplus(w) + min_scale, w one trainable scalar
    ```

    Args:
      event_shape: data shape.
      scale: "per_pixel" (default) or "shared".
      min_scale: floor on sigma (default 1e-3), prevents unbounded density on
        constant pixels.
    """

    likelihood_name = "gaussian_learned"

    def __init__(self, event_shape, scale="per_pixel", min_scale=1e-3, **kwargs):
        super().__init__(event_shape, **kwargs)
        if scale not in ("per_pixel", "shared"):
            raise ValueError(
                "`scale` must be 'per_pixel' or 'shared'. "
                f"Received: scale={scale!r}"
            )
        self.scale = scale
        self.min_scale = validation.non_negative_float("min_scale", min_scale)
        self.num_params = 2 if scale == "per_pixel" else 1

    def build(self, input_shape=None):
        if self.scale == "shared":
            self.raw_scale = self.add_weight(
                name="raw_scale", shape=(), initializer="zeros", dtype="float32"
            )
        self.built = True

    def _distribution(self, loc, raw=None):
        if raw is None:
            raw = self.raw_scale
        return tfd.Normal(loc, tf.nn.softplus(raw) + self.min_scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_scale": self.min_scale}


class TableColumns(tfd.Distribution):
    """The per-entry distribution of a table row: one factor per column, batch `[..., D]`.

    `TableLikelihood` returns `tfd.Independent(TableColumns(...), 1)`, so
    `p.log_prob(x)` is `[...]` (the sum over the row) and
    `p.distribution.log_prob(x)` is `[..., D]` (one number per entry, what an
    objective over observed entries masks). Values are in the user's units,
    categorical columns as codes `0..K-1`.

    #### Mathematical details

    ```none
    numeric j:      x_j = shift_j + scale_j u,  u ~ N(loc_j, sd_j)       (TransformedDistribution)
                    log p(x_j) = log N((x_j - shift_j) / scale_j; loc_j, sd_j) - log scale_j
    binary j:       b = (x_j - low_j) / (high_j - low_j),  log p = b l_j - softplus(l_j)
    categorical j:  log p(x_j = k) = log softmax(logits_j)_k
    missing (NaN):  log p = 0 (a factorised likelihood marginalises an entry by dropping it)
    ```

    `mean()`: `shift + scale loc`, `low + (high - low) sigmoid(l)`, and the
    code of the most probable category; `sample()` draws every column.
    """

    def __init__(self, num_loc, num_scale, bin_logits, cat_logits, layout, shift, scale,
                 validate_args=False, allow_nan_stats=True, name="TableColumns"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._num_loc = tf.convert_to_tensor(num_loc, tf.float32)
            self._num_scale = tf.convert_to_tensor(num_scale, tf.float32)
            self._bin_logits = tf.convert_to_tensor(bin_logits, tf.float32)
            self._cat_logits = tf.convert_to_tensor(cat_logits, tf.float32)
            self._layout = layout
            self._shift = tf.convert_to_tensor(shift, tf.float32)
            self._scale = tf.convert_to_tensor(scale, tf.float32)
            super().__init__(dtype=tf.float32, reparameterization_type=tfd.NOT_REPARAMETERIZED,
                             validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                             parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _batch_shape_tensor(self):
        return tf.concat([tf.shape(self._num_loc)[:-1], [self._layout["num_columns"]]], 0)

    def _batch_shape(self):
        return self._num_loc.shape[:-1].concatenate([self._layout["num_columns"]])

    def _event_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _event_shape(self):
        return tf.TensorShape([])

    def _group(self, values, group):
        return tf.gather(values, self._layout[group], axis=-1)

    def _present(self, group):
        # Column groups with no column are left out of the graph: their tensors
        # are empty ([..., 0]) and TFLite's kernels crash on empty dynamic
        # tensors (a float32 decoder of an all-numeric table segfaulted at batch > 1).
        return len(self._layout[group]) > 0

    def _in_column_order(self, numeric, binary, categorical):
        parts = [p for p, g in ((numeric, "numeric"), (binary, "binary"),
                                (categorical, "categorical")) if self._present(g)]
        if len(parts) == 1:  # one kind of column: already in the table's order
            return parts[0]
        shape = tf.shape(parts[0])[:-1]
        for p in parts[1:]:
            shape = tf.broadcast_dynamic_shape(shape, tf.shape(p)[:-1])
        parts = [tf.broadcast_to(p, tf.concat([shape, tf.shape(p)[-1:]], 0)) for p in parts]
        return tf.gather(tf.concat(parts, -1), self._layout["order"], axis=-1)

    def numeric_distribution(self):
        """The numeric columns in user units: `TransformedDistribution` of `N(loc, sd)` by
        `Shift(shift) o Scale(scale)`, batch `[..., D_numeric]`."""
        bijector = tfb.Shift(self._group(self._shift, "numeric"))(
            tfb.Scale(self._group(self._scale, "numeric")))
        return tfd.TransformedDistribution(tfd.Normal(self._num_loc, self._num_scale), bijector)

    def _log_prob(self, x):
        x = tf.cast(x, tf.float32)
        missing = tf.math.is_nan(x)
        x = tf.where(missing, tf.broadcast_to(self._shift, tf.shape(x)), x)  # finite, any value
        numeric = binary = categorical = None
        if self._present("numeric"):
            numeric = self.numeric_distribution().log_prob(self._group(x, "numeric"))
        if self._present("binary"):
            low, width = self._group(self._shift, "binary"), self._group(self._scale, "binary")
            b = (self._group(x, "binary") - low) / width
            binary = b * self._bin_logits - softplus(self._bin_logits)
        if self._present("categorical"):
            codes = tf.cast(tf.round(self._group(x, "categorical")), tf.int32)
            codes = tf.clip_by_value(codes, 0, self._layout["max_categories"] - 1)
            categorical = tfd.Categorical(logits=self._cat_logits).log_prob(codes)
        lp = self._in_column_order(numeric, binary, categorical)
        return tf.where(tf.broadcast_to(missing, tf.shape(lp)), tf.zeros_like(lp), lp)

    def log_prob_parts(self, x):
        """Per-entry log-probabilities `[..., D]` (the same as `log_prob`)."""
        return self.log_prob(x)

    def _mean(self):
        numeric = binary = categorical = None
        if self._present("numeric"):
            numeric = self._group(self._shift, "numeric") + self._group(
                self._scale, "numeric") * self._num_loc
        if self._present("binary"):
            binary = self._group(self._shift, "binary") + self._group(
                self._scale, "binary") * tf.sigmoid(self._bin_logits)
        if self._present("categorical"):
            categorical = tf.cast(tf.argmax(self._cat_logits, axis=-1), tf.float32)
        return self._in_column_order(numeric, binary, categorical)

    def _sample_n(self, n, seed=None):
        seeds = tfp.random.split_seed(seed, n=3, salt="TableColumns")
        numeric = binary = categorical = None
        if self._present("numeric"):
            numeric = self.numeric_distribution().sample(n, seed=seeds[0])
        if self._present("binary"):
            bits = tfd.Bernoulli(logits=self._bin_logits, dtype=tf.float32).sample(
                n, seed=seeds[1])
            binary = self._group(self._shift, "binary") + self._group(
                self._scale, "binary") * bits
        if self._present("categorical"):
            categorical = tf.cast(
                tfd.Categorical(logits=self._cat_logits).sample(n, seed=seeds[2]), tf.float32)
        return self._in_column_order(numeric, binary, categorical)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TableLikelihood(_LikelihoodHead):
    """Mixed-type likelihood of a table row: Gaussian, Bernoulli and categorical columns.

    One head per column group, still one distribution: `p.log_prob(x)` is
    `[batch]` over the whole row (user units), `p.distribution.log_prob(x)`
    the `[batch, D]` entries (see `TableColumns`). The decoder's outputs are
    read per column: 2 numbers (standard-space mean and softplus scale) for
    a numeric column, 1 logit for a binary one, K logits for a categorical
    one with K categories. The per-column `shift` and `scale` mapping the
    standard space to user units (numeric: mean and deviation; binary: low
    and high - low; categorical: 0 and 1) are non-trainable weights, saved
    with the model.

    Args:
      event_shape: `(D,)`.
      kinds: D kinds, "numeric", "binary" or "categorical" (default all numeric).
      num_categories: D ints, K for categorical columns (others ignored).
      shift, scale: float arrays `[D]` (scale > 0); default 0 and 1.
      table: optional JSON-able table description
        (`keras_vae.tables.Table.description()`: column names, category texts),
        kept with the model so its outputs can be written back as the table.
      min_scale: floor on the standard-space deviation (default 1e-3).

    Example:
      >>> head = TableLikelihood((3,), kinds=("numeric", "binary", "categorical"),
      ...                        num_categories=(0, 0, 4), shift=[170., 0., 0.],
      ...                        scale=[10., 1., 1.])
      >>> head.params_size()
      7
    """

    likelihood_name = "table"

    def __init__(self, event_shape, kinds=None, num_categories=None, shift=None, scale=None,
                 table=None, min_scale=1e-3, **kwargs):
        super().__init__(event_shape, **kwargs)
        if len(self.event_shape) != 1:
            raise ValueError("A table likelihood models rows of D columns: event_shape (D,). "
                             f"Received: event_shape={self.event_shape}")
        d = self.event_shape[0]
        kinds = ("numeric",) * d if kinds is None else tuple(kinds)
        if len(kinds) != d or any(k not in ("numeric", "binary", "categorical") for k in kinds):
            raise ValueError(f"`kinds` must give {d} kinds, each 'numeric', 'binary' or "
                             f"'categorical'. Received: kinds={list(kinds)}")
        counts = (0,) * d if num_categories is None else tuple(num_categories)
        if len(counts) != d:
            raise ValueError(f"`num_categories` must give {d} counts. "
                             f"Received: num_categories={list(counts)}")
        counts = tuple(validation.positive_int(f"num_categories[{j}]", c) if k == "categorical"
                       else 0 for j, (k, c) in enumerate(zip(kinds, counts)))
        self.kinds, self.num_categories = kinds, counts
        self.min_scale = validation.non_negative_float("min_scale", min_scale)
        self.table = table
        self._initial = [None if v is None else np.asarray(v, np.float32) for v in (shift, scale)]
        for name, v in zip(("shift", "scale"), self._initial):
            if v is not None and (v.shape != (d,) or not np.isfinite(v).all()):
                raise ValueError(f"`{name}` must hold {d} finite numbers. "
                                 f"Received: {name} of shape {v.shape}")
        if self._initial[1] is not None and not (self._initial[1] > 0).all():
            raise ValueError(f"`scale` must be positive. Received: scale={scale!r}")
        self._layout_params()

    def _layout_params(self):
        """Index arrays from the flat parameters to each group (and back to column order)."""
        groups = {k: [j for j, kind in enumerate(self.kinds) if kind == k]
                  for k in ("numeric", "binary", "categorical")}
        max_k = max([1] + [self.num_categories[j] for j in groups["categorical"]])
        start, offsets = 0, []
        for j, kind in enumerate(self.kinds):
            offsets.append(start)
            start += {"numeric": 2, "binary": 1}.get(kind, self.num_categories[j])
        self._size = start
        pad = start  # index of the -inf column appended to the parameters
        cat_index = [[offsets[j] + k if k < self.num_categories[j] else pad
                      for k in range(max_k)] for j in groups["categorical"]]
        grouped = groups["numeric"] + groups["binary"] + groups["categorical"]
        self._index = {
            "loc": np.array([offsets[j] for j in groups["numeric"]], np.int32),
            "raw": np.array([offsets[j] + 1 for j in groups["numeric"]], np.int32),
            "logit": np.array([offsets[j] for j in groups["binary"]], np.int32),
            "cat": np.array(cat_index, np.int32).reshape(len(cat_index), max_k),
        }
        self._layout = {"num_columns": len(self.kinds), "max_categories": max_k,
                        "numeric": np.array(groups["numeric"], np.int32),
                        "binary": np.array(groups["binary"], np.int32),
                        "categorical": np.array(groups["categorical"], np.int32),
                        "order": np.argsort(np.array(grouped, np.int64)).astype(np.int32)}

    def params_size(self):
        return self._size

    def build(self, input_shape=None):
        if self.built:  # deserialized with its build config, then built by its owner
            return
        shift, scale = self._initial
        d = self.event_shape[0]
        self.shift = self.add_weight(
            name="shift", shape=(d,), trainable=False, dtype="float32",
            initializer="zeros" if shift is None else keras.initializers.Constant(shift))
        self.scale = self.add_weight(
            name="scale", shape=(d,), trainable=False, dtype="float32",
            initializer="ones" if scale is None else keras.initializers.Constant(scale))
        self.built = True

    def call(self, params):
        params = self._params(params)
        padded = tf.concat([params, tf.fill(tf.concat([tf.shape(params)[:-1], [1]], 0),
                                            tf.constant(-1e9, tf.float32))], -1)
        loc = tf.gather(params, self._index["loc"], axis=-1)
        sd = tf.nn.softplus(tf.gather(params, self._index["raw"], axis=-1)) + self.min_scale
        logits = tf.gather(params, self._index["logit"], axis=-1)
        cat = tf.gather(padded, self._index["cat"], axis=-1)  # [..., Dc, K_max]
        columns = TableColumns(loc, sd, logits, cat, self._layout,
                               tf.convert_to_tensor(self.shift), tf.convert_to_tensor(self.scale))
        return tfd.Independent(columns, reinterpreted_batch_ndims=1)

    def check_support(self, x, name="x", allow_missing=False):
        """Raises for entries outside a column's support: binary values outside
        [low, high], categorical values that do not round to a code 0..K-1
        (`log_prob` rounds, so averaged codes such as a mean fill pass),
        non-finite numbers; NaN (missing) only with `allow_missing`."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(
                f"`{name}` must be a real-valued array. Received: {name}.dtype={x.dtype}")
        x = x.astype(np.float64).reshape(-1, self.event_shape[0])
        nan = np.isnan(x)
        if nan.any() and not allow_missing:
            raise ValueError(f"`{name}` holds {int(nan.sum())} missing (NaN) entries; this "
                             f"use needs complete rows. Received: {name} with NaN")
        if np.isinf(x).any():
            raise ValueError(f"`{name}` must be finite. Received: {name} with Inf")
        if not self.built:
            self.build()
        shift, scale = (keras.ops.convert_to_numpy(w) for w in (self.shift, self.scale))
        names = (self.table or {}).get("columns") or [f"column {j}" for j in range(len(shift))]
        for j, kind in enumerate(self.kinds):
            col = x[:, j][~nan[:, j]]
            if not col.size or kind == "numeric":
                continue
            if kind == "binary":
                low, high = shift[j], shift[j] + scale[j]
                bad = col[(col < low - 1e-6 * abs(low)) | (col > high + 1e-6 * abs(high))]
                what = f"values in [{low:g}, {high:g}]"
            else:
                k = self.num_categories[j]
                bad = col[(col < -0.5) | (col > k - 0.5)]  # log_prob rounds to a code
                what = f"category codes 0..{k - 1}"
            if bad.size:
                raise ValueError(f"The table likelihood needs {what} in {names[j]!r} ({kind}). "
                                 f"Received: {name} with {bad[0]:g} there")

    def get_config(self):
        config = {**super().get_config(), "kinds": list(self.kinds),
                  "num_categories": list(self.num_categories), "min_scale": self.min_scale}
        if self.table is not None:
            config["table"] = self.table
        return config


# The registry of named likelihoods: name -> head class built as
# `cls(event_shape, **kwargs)`. `register_likelihood` adds one; a registered name
# is a valid `likelihood=` argument, `--likelihood` flag value and config value.
LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "gaussian_learned": LearnedGaussianLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
}


def register_likelihood(name, cls):
    """Registers the likelihood head class `cls` under `name` (see `LIKELIHOODS`); returns `cls`.

    Raises:
      ValueError: `name` is taken by another class, or not a non-empty string.
      TypeError: `cls` is not a subclass of `keras_vae.heads.Head`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A likelihood name must be a non-empty string. Received: name={name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise TypeError(f"`cls` must be a keras_vae.heads.Head subclass. Received: cls={cls!r}")
    if LIKELIHOODS.get(name, cls) is not cls:
        raise ValueError(f"The likelihood name is taken by {LIKELIHOODS[name].__name__}. "
                         f"Received: name={name!r}")
    LIKELIHOODS[name] = cls
    return cls


def get_likelihood(identifier, event_shape, **kwargs):
    """Returns a likelihood head from a name in `LIKELIHOODS` or a head instance."""
    if isinstance(identifier, (_LikelihoodHead,) + tuple(LIKELIHOODS.values())):
        return identifier
    if identifier not in LIKELIHOODS:
        raise ValueError(
            f"Unknown likelihood: expected one of {sorted(LIKELIHOODS)}. "
            f"Received: likelihood={identifier!r}"
        )
    return LIKELIHOODS[identifier](event_shape, **kwargs)
