"""Every argument and data check of keras_vae, in one place, at the bottom of the import graph.

One checker per kind of argument, each returning the normalised value or
raising with one message style: what was expected, then `Received: name=value`.

- `TypeError` when the value is of the wrong kind (a string for a number, a
  bool for either);
- `ValueError` when it is of the right kind but out of range or not a choice;
- `ArgumentTypeError`, a subclass of both, where an integer was expected and
  something else came (2.5, "3", True): code catching either keeps working.

`check_data` is the one data check: numpy arrays, tensors, `tf.data`
datasets and generators all go through it, against a model's data shape and
(optionally) its likelihood's support; `DataGuard` repeats the cheap part
(NaN/Inf, the support's range) on every batch inside the compiled steps, and
the model raises its error after the epoch, `evaluate` or `predict`. This
module imports nothing of keras_vae, so every other module may use it.
"""

import dataclasses
import math
import numbers
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "INT32_MAX",
    "ArgumentTypeError",
    "KerasVAEWarning",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "fraction",
    "boolean",
    "choice",
    "seed",
    "seed32",
    "batch_size",
    "event_shape",
    "check_data",
    "ValueSummary",
    "record_values",
    "fully_checked",
    "first_batch",
    "data_array",
    "DataGuard",
    "DataGuardCheck",
    "TRAIN",
    "TEST",
    "PREDICT",
    "select_input",
    "peek_stream",
    "check_first_batch",
    "labels",
    "condition_vectors",
]

# TensorFlow takes many sizes (batch, sample counts, shapes) as int32.
INT32_MAX = 2 ** 31 - 1


class KerasVAEWarning(UserWarning):
    """The category of every warning keras_vae itself issues (the test suite makes them errors)."""


class ArgumentTypeError(TypeError, ValueError):
    """A value of the wrong kind where an integer was expected (a TypeError and a ValueError)."""


def _is_int(value):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def positive_int(name, value, maximum=INT32_MAX):
    """`value` as an int in `[1, maximum]`.

    Raises:
      ArgumentTypeError (a TypeError and a ValueError): for anything but an
        integer (bools and floats included).
      ValueError: for an integer below 1 or above `maximum`.
    """
    if not _is_int(value):
        raise ArgumentTypeError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" no larger than {maximum:,}" if maximum is not None and value > maximum else ""
        raise ValueError(
            f"`{name}` must be a positive integer{bound}. Received: {name}={value!r}")
    return int(value)


def non_negative_int(name, value, maximum=INT32_MAX):
    """`value` as an int in `[0, maximum]` (TypeError for non-integers, ValueError for range)."""
    if not _is_int(value):
        raise ArgumentTypeError(
            f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    if value < 0 or (maximum is not None and value > maximum):
        bound = f" no larger than {maximum:,}" if maximum is not None and value > maximum else ""
        raise ValueError(
            f"`{name}` must be a non-negative integer{bound}. Received: {name}={value!r}")
    return int(value)


def positive_float(name, value, allow_zero=False):
    """`value` as a finite float `> 0` (`>= 0` with `allow_zero`).

    Raises:
      TypeError: for a non-number (strings, None, bools).
      ValueError: for NaN, infinity, or a number out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}. Received: {name}={value!r}")
    return value


def non_negative_float(name, value):
    """`value` as a finite float `>= 0`."""
    return positive_float(name, value, allow_zero=True)


def fraction(name, value):
    """`value` as a float in `[0, 1]`."""
    value = positive_float(name, value, allow_zero=True)
    if value > 1:
        raise ValueError(f"`{name}` must lie in [0, 1]. Received: {name}={value!r}")
    return value


def boolean(name, value):
    """`value` if it is a bool (JSON true/false); TypeError for anything else ("no", 0, None)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be true or false. Received: {name}={value!r}")
    return bool(value)


def choice(name, value, choices):
    """`value` if it is one of `choices` (compared by equality, types kept: 1 is not "1")."""
    choices = tuple(choices)
    for c in choices:
        if type(c) is type(value) and c == value:
            return value
        if c is None and value is None:
            return value
    raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")


def seed(value, name="seed"):
    """A reproducibility seed: an integer in `[0, 2**63)` (not 2.5, not "12", not True)."""
    if not _is_int(value):
        raise ArgumentTypeError(f"`{name}` must be an integer. Received: {name}={value!r}")
    if value < 0 or value >= 2 ** 63:
        raise ValueError(
            f"`{name}` must be a non-negative integer below 2**63. Received: {name}={value!r}")
    return int(value)


def seed32(value, name="seed"):
    """`seed(value)` folded into `[0, 2**31 - 1)`, for TensorFlow's int32 stateless seeds."""
    return seed(value, name) % INT32_MAX


def batch_size(value, name="batch_size"):
    """A batch size: a positive integer that fits TensorFlow's int32 shapes."""
    return positive_int(name, value)


def event_shape(name, shape):
    """A data or event shape: a non-empty tuple of positive ints (an int means `(int,)`)."""
    if _is_int(shape):
        shape = (shape,)
    try:
        given = tuple(shape)
        if any(not _is_int(d) for d in given):
            raise TypeError
        shape = tuple(int(d) for d in given)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a tuple of positive integers such as (28, 28, 1). "
            f"Received: {name}={shape!r}"
        ) from None
    if not shape or any(d < 1 or d > INT32_MAX for d in shape):
        raise ValueError(
            f"`{name}` must be a non-empty tuple of positive integers such as "
            f"(28, 28, 1). Received: {name}={shape!r}"
        )
    return shape


# ---------------------------------------------------------------- data

def _is_dataset(x):
    return isinstance(x, tf.data.Dataset)


def _is_stream(x):
    """Generators, iterators and `keras.utils.PyDataset`s: checked batch by batch by Keras."""
    return isinstance(x, keras.utils.PyDataset) or hasattr(x, "__next__")


def _spec_of_x(spec):
    if isinstance(spec, tuple):
        return spec[0] if spec else None
    return spec


def select_input(x, input_key=None, name="x"):
    """The model input of a dict element (the TensorFlow Datasets convention).

    `x` itself if it is not a dict; else `x[input_key]`, or with
    `input_key=None` the entry "image" (the TensorFlow Datasets convention).
    No other entry is guessed, even in a one-entry dict: it could be a label.

    Raises:
      ValueError: for a missing key, or a dict without "image" and no `input_key`.
    """
    if not isinstance(x, dict):
        return x
    keys = sorted(str(k) for k in x)
    if input_key is not None:
        if input_key not in x:
            raise ValueError(f"Expected `{name}` to hold the model input under input_key="
                             f"{input_key!r}. Received: {name} with keys {keys}")
        return x[input_key]
    if "image" in x:
        return x["image"]
    raise ValueError(f"`{name}` is a dict without an 'image' entry; name the "
                     f"model input with the model's `input_key` argument, e.g. "
                     f"VAE(..., input_key={keys[0]!r}). Received: {name} with keys {keys}")


def _check_weights_absent(element, name):
    if isinstance(element, (tuple, list)) and len(element) >= 3:
        raise ValueError(
            f"keras_vae models do not use sample weights (every example counts once in "
            f"the ELBO); give `{name}` elements `x` or `(x, y)`. Received: {name} elements "
            f"with {len(element)} components")


def peek_stream(x):
    """(first batch, a stream yielding every batch of `x` again) for a generator/iterator.

    The first batch is taken with `next` and re-chained in front of the rest,
    so the caller's items are not lost.
    """
    try:
        first = next(x)
    except StopIteration:
        raise ValueError("Expected a generator yielding at least one batch. "
                         "Received: an exhausted generator") from None

    def again():  # a generator (Keras accepts only types.GeneratorType)
        yield first
        yield from x

    return first, again()


def check_first_batch(element, data_shape, likelihood_head=None, name="x", input_key=None,
                      allow_missing=False):
    """Checks one batch as a generator or PyDataset yields it: `x`, `(x, y)`, a dict."""
    _check_weights_absent(element, name)
    first = select_input(_spec_of_x(element), input_key, name)
    data_array(first, data_shape, likelihood_head, f"{name} (first batch)", allow_missing)


def first_batch(dataset):
    """The first element of a `tf.data.Dataset`, read eagerly, or None if it is empty.

    Iterates `dataset` itself rather than `dataset.take(1)`: a derived dataset
    is a new graph, and its first iterator copies every tensor the pipeline
    captured (a `make_dataset` of 60,000 Fashion-MNIST images: about 0.2 s
    more per `fit`/`evaluate`/`predict` call, measured in benchmarks/RESULTS.md).
    """
    try:
        return next(iter(dataset))
    except StopIteration:
        return None


def check_data(x, data_shape, likelihood_head=None, name="x", input_key=None,
               allow_missing=False):
    """Validates data for a model whose examples have shape `data_shape`.

    Arrays and tensors: numeric dtype, shape `(batch,) + data_shape`, at least
    one example, finite values inside the likelihood's support (the head's
    `check_support(arr, name=...)` when it has one). `tf.data.Dataset`s: the
    element spec (of `x`, or of the first component of `(x, ...)` elements;
    dict elements through `select_input`) and the values of the first batch,
    read eagerly. `PyDataset`s: their first batch (`x[0]`). Generators must be
    peeked by the caller (`peek_stream`) and their first batch checked. Later
    batches are checked inside the model's steps. With `allow_missing` (a
    model trained with `objective="miwae"`) NaN marks a missing entry and is
    accepted; infinity is not, and the observed values must lie in the support.

    Raises:
      TypeError: wrong kind of input (None, strings, objects).
      ValueError: wrong shape, no examples, NaN/Inf, values outside the support,
        sample weights.
    """

    data_shape = tuple(data_shape)
    if _is_dataset(x):
        full = x.element_spec
        _check_weights_absent(full, name)
        spec = select_input(_spec_of_x(full), input_key, f"{name}.element_spec")
        shape = tuple(getattr(spec, "shape", ()) or ())
        if spec is None or not hasattr(spec, "shape") or len(shape) != len(data_shape) + 1 or any(
            s is not None and s != d for s, d in zip(shape[1:], data_shape)
        ):
            raise ValueError(
                f"Expected dataset batches of shape (batch,) + {data_shape}. "
                f"Received: {name}.element_spec={x.element_spec}"
            )
        element = first_batch(x)
        if element is not None:
            first = select_input(_spec_of_x(element), input_key, name)
            data_array(first, data_shape, likelihood_head, f"{name} (first batch)",
                       allow_missing)
        return
    if isinstance(x, keras.utils.PyDataset):
        if x.num_batches is not None and x.num_batches == 0:
            raise ValueError(f"Expected at least one batch. Received: {name} of length 0")
        check_first_batch(x[0], data_shape, likelihood_head, name, input_key, allow_missing)
        return
    if _is_stream(x):
        return
    x = select_input(x, input_key, name)
    data_array(x, data_shape, likelihood_head, name, allow_missing)


def _observed_view(arr, name):
    """`arr` with each NaN replaced by an observed value of its own column (for the
    support check); ValueError for infinity or when no value is observed."""
    if np.isinf(arr).any():
        raise ValueError(f"`{name}` must be finite where observed (NaN marks a missing "
                         f"entry). Received: {name} with {int(np.isinf(arr).sum())} "
                         "infinite values")
    missing = np.isnan(arr)
    if missing.all():
        raise ValueError(f"Expected at least one observed (non-NaN) value. Received: "
                         f"{name} with every entry missing")
    if not missing.any():
        return arr
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        column = np.nanmin(arr, axis=0)
    column = np.where(np.isnan(column), arr[~missing][0], column)
    return np.where(missing, column[None], arr)


def data_array(x, data_shape=None, likelihood_head=None, name="x", allow_missing=False):
    """Checks an array-like batch (see `check_data`) and returns it as float32 numpy.

    With `data_shape=None` only a finite real array with a batch axis and at
    least one example is required. With `allow_missing`, NaN entries (missing
    values) are accepted and kept; the observed values are checked.
    """

    if x is None or isinstance(x, dict) or _is_dataset(x) or _is_stream(x):
        expected = ("(batch,) + data_shape" if data_shape is None
                    else f"(batch,) + {tuple(data_shape)}")
        raise TypeError(f"Expected `{name}` as an array of shape {expected}. "
                        f"Received: {name} of type {type(x).__name__}")
    arr = x.numpy() if isinstance(x, tf.Tensor) else np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"Expected `{name}` to hold real numbers. "
                        f"Received: {name}.dtype={arr.dtype}")
    if data_shape is None:
        if arr.ndim < 2:
            raise ValueError(f"Expected `{name}` of shape (batch,) + data_shape. "
                             f"Received: {name}.shape={arr.shape}")
    elif arr.ndim != len(data_shape) + 1 or tuple(arr.shape[1:]) != tuple(data_shape):
        raise ValueError(f"Expected `{name}` of shape (batch,) + {tuple(data_shape)}. "
                         f"Received: {name}.shape={arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"Expected at least one example. Received: {name}.shape={arr.shape}")
    support = getattr(likelihood_head, "support", None)
    if (support is not None and tuple(support) == (0.0, 1.0) and arr.size
            and np.issubdtype(arr.dtype, np.integer) and arr.max() > 1):
        raise ValueError(
            f"The {getattr(likelihood_head, 'likelihood_name', 'model')!r} likelihood needs "
            f"data in [0, 1], but `{name}` holds integers up to {arr.max()} (8-bit pixels?): "
            f"scale to [0, 1] (divide by 255), or choose a Gaussian likelihood. "
            f"Received: {name}.dtype={arr.dtype}, min={arr.min()}, max={arr.max()}")
    checked = arr
    if allow_missing and np.issubdtype(arr.dtype, np.floating):
        checked = _observed_view(arr, name)
    if likelihood_head is not None and hasattr(likelihood_head, "check_support"):
        likelihood_head.check_support(checked, name=name)
    elif np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(checked)):
        raise ValueError(f"`{name}` must be finite. Received: {name} with NaN or Inf")
    return arr.astype("float32", copy=False)



# Datasets built by keras_vae.data.make_dataset from an array whose every value was read:
# dataset -> ValueSummary. Weak keys: an entry lives as long as its dataset; a dataset
# derived from one (map, take, repeat, ...) is a new object without an entry.
_SUMMARIES = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class ValueSummary:
    """What every value of an array held: any NaN, any infinity, and the range of the
    finite values (`low > high` when there is none)."""

    nan: bool
    inf: bool
    low: float
    high: float

    @classmethod
    def of(cls, arr):
        arr = np.asarray(arr, dtype=np.float32)
        finite = np.isfinite(arr)
        if finite.all():
            return cls(False, False, float(arr.min(initial=np.inf)),
                       float(arr.max(initial=-np.inf)))
        values = arr[finite]
        return cls(bool(np.isnan(arr).any()), bool(np.isinf(arr).any()),
                   float(values.min(initial=np.inf)), float(values.max(initial=-np.inf)))

    def passes(self, support, allow_missing):
        """True when no batch of the array can raise a `DataGuard` flag."""
        if self.inf or (self.nan and not allow_missing):
            return False
        if support is None or self.low > self.high:
            return True
        return support[0] <= self.low and self.high <= support[1]


def record_values(dataset, arr):
    """Records that `dataset`'s batches are values of `arr`, all read here (see
    `fully_checked`). Returns `dataset`."""
    _SUMMARIES[dataset] = ValueSummary.of(arr)
    return dataset


def fully_checked(x, likelihood_head=None, allow_missing=False):
    """Whether every value `fit` will train on is known to pass the in-graph data guard,
    so the training steps need not check each batch (issue 17: the check was 2% of an
    XLA step at batch 512).

    True for arrays and tensors (`check_data` read every value before training) and for
    a `keras_vae.data.make_dataset` dataset whose array's values pass the support of
    `likelihood_head`. False for every other dataset, generator and `PyDataset`: only
    their first batch is read before training, and the steps check the rest.
    """
    if _is_stream(x):
        return False
    if _is_dataset(x):
        summary = _SUMMARIES.get(x)
        return summary is not None and summary.passes(
            getattr(likelihood_head, "support", None), allow_missing)
    return x is not None

def _length_check(name, arr, n):
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"Expected `{name}` with one entry per example. "
                         f"Received: {name}.shape={arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"Expected `{name}` with one entry per example ({n}). "
                         f"Received: {name}.shape={arr.shape}")


def labels(name, y, n, num_classes, allow_unlabelled=False):
    """Class labels as int32 numpy `[n]`: integers in [0, num_classes), or one-hot rows.

    Args:
      name: argument name for the messages.
      y: int array `[n]` (floats holding whole numbers are refused: pass
        integers), or a one-hot array `[n, num_classes]` of 0/1.
      n: expected number of examples, or None for any.
      num_classes: number of classes C.
      allow_unlabelled: also accept -1, "no label" (semi-supervised training).

    Raises:
      TypeError: for None, strings, objects, non-integer labels.
      ValueError: for a wrong length or shape, labels outside [0, C), rows
        that are not one-hot.

    Example:
      >>> labels("y", [3, 1], 2, 10)
      array([3, 1], dtype=int32)
    """

    if y is None or isinstance(y, (str, bytes, dict)) or _is_dataset(y) or _is_stream(y):
        raise TypeError(f"Expected `{name}` as integer class labels in [0, {num_classes}). "
                        f"Received: {name} of type {type(y).__name__}")
    arr = y.numpy() if isinstance(y, tf.Tensor) else np.asarray(y)
    if arr.ndim == 2 and arr.shape[-1] == num_classes and arr.dtype.kind in "biuf":
        _length_check(name, arr, n)
        if not (np.all((arr == 0) | (arr == 1)) and np.all(arr.sum(axis=1) == 1)):
            raise ValueError(f"Expected one-hot rows in `{name}` (one 1 per row, zeros "
                             f"elsewhere). Received: {name} with other values")
        return arr.argmax(axis=1).astype("int32")
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"Expected `{name}` as integer class labels in [0, {num_classes}) "
                        f"(or one-hot rows). Received: {name}.dtype={arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"Expected `{name}` of shape (n,) or (n, {num_classes}) "
                         f"(one-hot). Received: {name}.shape={arr.shape}")
    _length_check(name, arr, n)
    low = -1 if allow_unlabelled else 0
    bad = arr[(arr < low) | (arr >= num_classes)]
    if bad.size and not allow_unlabelled and np.all(bad == -1):
        raise ValueError(f"Expected labels in [0, {num_classes}); -1 (unlabelled) needs a "
                         f"classifier head q(y|x): use keras_vae.SemiSupervisedVAE. "
                         f"Received: {name} holding -1")
    if bad.size:
        raise ValueError(f"Expected labels in [{low}, {num_classes}). Received: {name} "
                         f"holding {bad[0]} (min={arr.min()}, max={arr.max()})")
    return arr.astype("int32")


def condition_vectors(name, c, n, condition_dim):
    """Real-valued conditions as float32 numpy `[n, condition_dim]`, finite.

    Raises:
      TypeError: for non-numeric values.
      ValueError: for a wrong length or width, NaN or Inf.
    """

    if c is None or isinstance(c, (str, bytes, dict)) or _is_dataset(c) or _is_stream(c):
        raise TypeError(f"Expected `{name}` as real condition vectors of shape (n, "
                        f"{condition_dim}). Received: {name} of type {type(c).__name__}")
    arr = c.numpy() if isinstance(c, tf.Tensor) else np.asarray(c)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"Expected `{name}` to hold real numbers. "
                        f"Received: {name}.dtype={arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != condition_dim:
        raise ValueError(f"Expected `{name}` of shape (n, {condition_dim}). "
                         f"Received: {name}.shape={arr.shape}")
    _length_check(name, arr, n)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite. Received: {name} with NaN or Inf")
    return arr.astype("float32")


# ------------------------------------------------- in-graph checks (every batch)

# Rows of the data guard: which step saw the batch.
TRAIN, TEST, PREDICT = 0, 1, 2
_STEP_DATA = ("the training data `x`", "the evaluation data (`x` of evaluate, or "
              "`validation_data`)", "the prediction data `x`")


class DataGuard(keras.metrics.Metric):
    """Counts batches with NaN/Inf or values outside the likelihood's support, per step kind.

    Updated inside `train_step`/`test_step`/`predict_step` (two compares and
    one matrix-vector product per batch); read from Python after an epoch,
    `evaluate` or `predict`, which then raise one clear ValueError.

    With `allow_missing` (a MIWAE model) NaN is a missing entry, not a bad
    value: only infinity counts as non-finite, and the support check reads
    the observed entries.
    """

    def __init__(self, support=None, name="data_guard", allow_missing=False):
        super().__init__(name=name)
        self.support = None if support is None else tuple(float(v) for v in support)
        self.allow_missing = bool(allow_missing)
        self.counts = self.add_variable(shape=(3, 2), initializer="zeros", name="counts")

    def update_state(self, x, row):
        x = tf.cast(x, tf.float32)
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        # Both flags from one matrix-vector product: the 0/1 indicators of the two
        # problems, [2B, D] stacked, times ones([D]), then summed per problem. Under XLA
        # on CPU a reduction is a scalar loop of its own (the three full reductions
        # first used took ~5 ms of a 20 ms MLP step at batch 512, a pred reduction of
        # rows with a tf.cond for the details 0.44 ms), while the product is a
        # vectorized library call: 0.25 ms at [512, 784] (issue 17). A sum of 0/1 terms
        # is > 0 exactly when one term is 1, at any batch size.
        indicators = [self._nonfinite(flat)]
        if self.support is not None:
            indicators.append(self._outside(flat))
        per_row = tf.linalg.matvec(tf.concat(indicators, 0), tf.ones(tf.shape(flat)[1:]))
        counts = tf.reduce_sum(tf.reshape(per_row, [len(indicators), -1]), axis=1)
        flags = tf.cast(counts > 0, tf.float32)
        if self.support is None:
            flags = tf.concat([flags, [0.0]], 0)
        self.counts.assign_add(tf.one_hot(row, 3)[:, None] * flags[None, :])

    def _nonfinite(self, x):
        """float32 0/1 per value: a bad non-finite (with `allow_missing`, NaN marks a
        missing entry and only infinity counts)."""
        bad = tf.math.is_inf(x) if self.allow_missing else tf.logical_not(tf.math.is_finite(x))
        return tf.cast(bad, tf.float32)

    def _outside(self, x):
        """float32 0/1 per value: outside the support (NaN is not: it is non-finite, or
        missing)."""
        return tf.cast(tf.logical_or(x < self.support[0], x > self.support[1]), tf.float32)

    def result(self):
        return self.counts

    def check(self, row, head):
        """Raises ValueError if any batch of step kind `row` was bad since the last reset."""
        counts = np.asarray(keras.ops.convert_to_numpy(self.counts))[row]
        nonfinite, outside = int(counts[0]), int(counts[1])
        if not (nonfinite or outside):
            return
        problems = []
        if nonfinite:
            what = "Inf" if self.allow_missing else "NaN or Inf"
            problems.append(f"{nonfinite} batch{'es' if nonfinite > 1 else ''} with {what}")
        if outside:
            problems.append(
                f"{outside} batch{'es' if outside > 1 else ''} with values outside "
                f"{getattr(head, 'support_name', self.support)}")
        advice = ("" if not outside else
                  f"; the {getattr(head, 'likelihood_name', 'model')!r} likelihood needs data in "
                  f"{getattr(head, 'support_name', self.support)}: scale to [0, 1] (divide "
                  f"8-bit pixels by 255) or choose a Gaussian likelihood")
        raise ValueError(f"Expected finite data inside the likelihood's support in every "
                         f"batch{advice}. Received: {_STEP_DATA[row]} with "
                         f"{' and '.join(problems)}")


class DataGuardCheck(keras.callbacks.Callback):
    """Raises the data guard's error at the end of each epoch of `fit` (no batch hooks,
    so `steps_per_execution` is unaffected)."""

    runs_per_execution = True

    def __init__(self, guard, head):
        super().__init__()
        self.guard, self.head = guard, head

    def on_epoch_end(self, epoch, logs=None):
        self.guard.check(TRAIN, self.head)
        self.guard.check(TEST, self.head)
