"""Data loading, binarization and `tf.data` pipelines for VAEs.

`load` returns Keras-style `(x_train, y_train), (x_test, y_test)`: images as
float32 in [0, 1] of shape `(N, H, W, C)` (channel-last, `C=1` for grayscale),
vectors as `(N, D)`, labels as int64 `(N,)` or `None`. `make_dataset` turns
arrays into a seeded `tf.data.Dataset`, optionally with dynamic binarization
(a fresh Bernoulli draw per batch and per epoch).

Example:

>>> (x_train, y_train), (x_test, y_test) = load("digits")
>>> x_train.shape, x_test.shape
((1497, 8, 8, 1), (300, 8, 8, 1))
>>> ds = make_dataset(x_train, batch_size=128, binarize="dynamic")
"""

import os

import numpy as np
import tensorflow as tf

from keras_vae import sources, tables, validation

__all__ = ["load", "read_table", "make_dataset", "binarize_static"]

KNOWN_NAMES = ("digits", "fashion_mnist", "mnist")
_BINARIZE_MODES = (None, "static", "dynamic")
_DIGITS_TEST_SIZE = 300
_DEFAULT_SPLIT = 0.1


def read_table(path, *, categorical=(), numeric=()):
    """Reads a CSV table: its columns, their kinds and categories, and its values.

    The one table reader (`load` uses it for `.csv` paths). The file is read
    strictly by `keras_vae.sources.read_csv` (a header row of distinct names,
    then rows with one cell per column, at most 256 MiB); the kinds are
    inferred as `keras_vae.tables` states: a column of numbers is numeric, or
    binary when it takes exactly two values; a column of text is categorical;
    `categorical=` and `numeric=` override the inference. Empty cells and
    `NaN` are missing.

    Args:
      path: a `.csv` file.
      categorical: column names to treat as categorical (codes 0..K-1).
      numeric: two-valued number columns to keep numeric (not binary).

    Returns:
      a `keras_vae.tables.Table`: `.columns`, `.kinds`, `.categories`, and
      `.x` float32 `[N, D]` in the file's units (codes for categorical
      columns), NaN where missing.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a broken table (ragged rows, text in a numeric column, a
        column with no value, no rows, no header, duplicate names, too large);
        the message names the row or column.

    Example:

    >>> t = read_table("patients.csv", categorical=("ward",))
    >>> t.columns, t.kinds, t.x.shape
    """
    key = os.fspath(path)
    if not os.path.isfile(key):
        raise FileNotFoundError(f"No such file: {key}. Received: path={key!r}")
    header, rows = sources.read_csv(key)
    return tables.Table.from_cells(header, rows, categorical=categorical, numeric=numeric,
                                   source=key)


def load(name_or_path="digits", *, binarize=None, data_dir=None, download=True,
         validation_split=None, seed=0, categorical=(), numeric=()):
    """Loads a data set as `(x_train, y_train), (x_test, y_test)`.

    Integer data is treated as pixels (0..255; digits 0..16) and scaled to
    [0, 1]; float data from files is kept as is (check its range against the
    likelihood). `(N, H, W)` arrays get a channel axis, `(N, D)` stay flat.

    Args:
        name_or_path: `"digits"` (scikit-learn's embedded 1797 8x8x1 images,
            1497 train / 300 test), `"fashion_mnist"` or `"mnist"` (60000 /
            10000 28x28x1 from local IDX files, `keras.datasets` last), a
            `.npz` (`x_train`, `x_test`, optional `y_train`, `y_test`; or `x`,
            optional `y`, split 90/10), a `.npy` (one array, split 90/10), or
            a folder of png/jpg/bmp/gif images of one size and mode (split
            90/10; grayscale `C=1`, colour `C=3`, alpha dropped), optionally
            one subfolder per class (label = index in sorted order).
        binarize: `None`, `"static"` (`binarize_static` once: train with
            `seed`, test with `seed + 1`) or `"dynamic"` (returns the
            continuous arrays unchanged: pass `binarize="dynamic"` to
            `make_dataset`, which draws per batch).
        data_dir: folder searched first for the IDX files (or `mnist.npz`),
            directly or in a `fashion-mnist`/`mnist` subfolder.
        download: if nothing is found locally, call
            `keras.datasets.<name>.load_data()` (needs internet).
        validation_split: fraction in (0, 1) held out as the test part of
            sources without their own split. Default: 300 examples for
            digits, 0.1 otherwise.
        seed: non-negative int; seeds the split permutation
            (`np.random.default_rng(seed)`) and static binarization.
        categorical, numeric: for a `.csv` table, column names whose kind is
            declared rather than inferred (see `read_table`).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 arrays `(N, H, W, C)`
        or `(N, D)` and int64 labels `(N,)` or `None`. A `.csv` table gives
        `(N, D)` in the file's units with NaN where a cell is missing, codes
        for categorical columns, and no labels (`read_table` has the columns).

    Raises:
        ValueError: unknown name, bad argument, corrupt file, mixed image
            sizes, empty folder, NaN/Inf or integer pixels outside 0..255.
        FileNotFoundError: a missing path, or `fashion_mnist`/`mnist` found
            nowhere (the message lists where it looked and how to get it).
        ImportError: scikit-learn or Pillow missing (`keras-vae[data]`).

    Example:

    >>> (x, y), (x_test, y_test) = load("fashion_mnist", binarize="static")
    >>> x.shape, y.dtype
    ((60000, 28, 28, 1), dtype('int64'))
    """
    _check_binarize(binarize)
    validation.seed(seed)
    if validation_split is not None and not (
        isinstance(validation_split, (float, int)) and 0 < validation_split < 1
    ):
        raise ValueError("Expected validation_split to be None or a number in (0, 1). "
                         f"Received: validation_split={validation_split!r}")
    key = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else name_or_path
    if not isinstance(key, str):
        raise TypeError("Expected name_or_path to be a data set name or a path. "
                        f"Received: name_or_path={name_or_path!r}")
    fraction, divisor = validation_split or _DEFAULT_SPLIT, None
    if validation_split is not None and key in ("fashion_mnist", "mnist"):
        raise _own_split_error(key, validation_split)
    if (categorical or numeric) and not key.lower().endswith(".csv"):
        raise ValueError("`categorical` and `numeric` declare columns of a .csv table. "
                         f"Received: name_or_path={key!r}")
    if os.path.isfile(key) and key.lower().endswith(".csv"):
        if binarize is not None:
            raise ValueError("binarize applies to [0, 1] images, not to a table. "
                             f"Received: binarize={binarize!r}, name_or_path={key!r}")
        table = read_table(key, categorical=categorical, numeric=numeric)
        return _split(table.x, None, seed, fraction)
    if key == "digits":
        x, y = sources.load_digits()
        split, divisor = _split(x, y, seed, validation_split or _DIGITS_TEST_SIZE / len(x)), 16
    elif key in ("fashion_mnist", "mnist"):
        split, divisor = sources.load_idx_data_set(key, data_dir, download), 255
    elif os.path.isdir(key):
        split, divisor = _split(*sources.read_image_folder(key), seed, fraction), 255
    elif os.path.isfile(key) and key.lower().endswith((".npz", ".npy")):
        arrays = sources.read_numpy(key)
        if "x_train" in arrays and "x_test" in arrays:
            if validation_split is not None:
                raise _own_split_error(key, validation_split)
            split = ((arrays["x_train"], arrays.get("y_train")),
                     (arrays["x_test"], arrays.get("y_test")))
        elif "x" in arrays:
            split = _split(arrays["x"], arrays.get("y"), seed, fraction)
        else:
            raise ValueError(f"{key} holds no x_train/x_test or x array; found keys "
                             f"{sorted(arrays)}. Received: name_or_path={key!r}")
    elif os.path.isfile(key) or not ("/" in key or os.sep in key
                                     or key.lower().endswith((".npz", ".npy", ".csv"))):
        raise ValueError(f"Expected one of {KNOWN_NAMES}, a .npz/.npy file, a .csv table or "
                         f"an image folder. Received: name_or_path={key!r}")
    else:
        raise FileNotFoundError(f"No such file or folder: {key}. Received: name_or_path={key!r}")
    return _finish(split, key, divisor, binarize, seed)


def binarize_static(x, seed=0):
    """Thresholds probabilities once with a seeded Bernoulli draw.

    Computes `x_bin = (u < x)` with `u ~ Uniform[0, 1)` from
    `np.random.default_rng(seed)`, so `E[x_bin] = x` and the result is the
    same for the same `x` and `seed`.

    Args:
        x: array-like of probabilities in [0, 1], any shape.
        seed: non-negative int.

    Returns:
        float32 array of 0s and 1s with the shape of `x`.

    Raises:
        ValueError: values outside [0, 1] or NaN, or a bad seed.

    Example:

    >>> binarize_static(np.full((2, 3), 0.5), seed=0).shape
    (2, 3)
    """
    validation.seed(seed)
    x = np.asarray(x, dtype=np.float32)
    _check_probabilities(x)
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def make_dataset(x, y=None, *, batch_size=128, shuffle=True, seed=0, binarize=None,
                 drop_remainder=False, repeat=False, prefetch=True, epoch=None):
    """Builds a seeded `tf.data.Dataset` of float32 batches.

    Shuffling and dynamic binarization change every time the dataset is
    iterated (`model.fit` calls `iter()` once per epoch) yet are reproducible:
    iteration `e` of two datasets built with the same arguments is identical.
    With `binarize="dynamic"` batch `b` of iteration `e` is
    `x_bin = (u < x)`, `u = tf.random.stateless_uniform(..., alg="philox")`
    seeded by key `b` of `tf.data.Dataset.random(seed,
    rerandomize_each_iteration=True)`, a function of `(seed, e, b)`. The
    iteration count lives in the dataset object: a new dataset (or a run
    resumed by `BackupAndRestore`) starts again at epoch 1, and
    `tf.random.set_seed` changes the stream. With `repeat=True` the one
    infinite iteration keeps drawing new keys (pass `steps_per_epoch`).

    Args:
        x: array-like `(N, ...)`, e.g. `(N, H, W, C)` images, `(N, D)` vectors.
        y: optional array-like `(N, ...)` (e.g. labels); batches are then
            `(x, y)` tuples.
        batch_size: positive int.
        shuffle: reshuffle (seeded) on every iteration.
        seed: non-negative int for shuffling and binarization.
        binarize: `None`, `"static"` (`binarize_static(x, seed)` once up
            front) or `"dynamic"` (see above); `x` must be in [0, 1].
        drop_remainder: drop the last partial batch (static shape for XLA).
        repeat: repeat forever (one infinite iteration).
        prefetch: append `prefetch(tf.data.AUTOTUNE)`.
        epoch: optional int64 `tf.Variable` holding the current epoch (set by
            `keras_vae.callbacks.EpochCounter`). When given, the shuffle order
            and the binarization of an epoch are functions of `(seed, epoch,
            batch)` read when the epoch starts, not of how often this dataset
            object was iterated: a run resumed by `BackupAndRestore` sees
            exactly the batches of an uninterrupted run. Not with `repeat`.

    Returns:
        `tf.data.Dataset` of `x` batches `(batch, ...)` float32, or `(x, y)`.
        Every value of `x` is read here (`validation.record_values`): `fit` on
        this dataset object, when the values suit the model's likelihood, skips
        the per-batch data check in its training steps (a dataset derived from
        it, by `map`, `take` and the like, is checked batch by batch).

    Raises:
        TypeError: non-numeric `x` or a non-int `batch_size`.
        ValueError: empty `x`, `len(y) != len(x)`, `batch_size < 1`, no full
            batch to keep, `x` outside [0, 1] with `binarize`, bad `binarize`.

    Example:

    >>> ds = make_dataset(np.random.rand(1000, 8, 8, 1), batch_size=100,
    ...                   binarize="dynamic", drop_remainder=True)
    >>> next(iter(ds)).shape
    TensorShape([100, 8, 8, 1])
    """
    _check_binarize(binarize)
    validation.seed(seed)
    batch_size = validation.batch_size(batch_size)
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"Expected x to be a numeric array. Received: x.dtype={x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"Expected x to be a non-empty array (N, ...). "
                         f"Received: x.shape={x.shape}")
    x = x.astype(np.float32)
    n = len(x)
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != n:
            raise ValueError(f"Expected y to have len(x)={n} entries. "
                             f"Received: y.shape={y.shape}")
    if drop_remainder and n < batch_size:
        raise ValueError(f"drop_remainder=True with len(x)={n} < batch_size gives no batches. "
                         f"Received: batch_size={batch_size}")
    if binarize == "static":
        x = binarize_static(x, seed)
    elif binarize == "dynamic":
        _check_probabilities(x)
    x_t = tf.constant(x)
    y_t = None if y is None else tf.constant(y)
    values = np.array([0.0, 1.0], np.float32) if binarize == "dynamic" else x  # what batches hold

    def gather(index, key=None):
        xb = tf.gather(x_t, index)
        if key is not None:
            u = tf.random.stateless_uniform(
                tf.shape(xb), seed=tf.stack([key, tf.constant(seed, tf.int64)]), alg="philox")
            xb = tf.cast(u < xb, tf.float32)
        return xb if y_t is None else (xb, tf.gather(y_t, index))

    if epoch is not None:
        if repeat:
            raise ValueError("`epoch` keys one pass per epoch; it does not combine with "
                             "repeat=True. Received: repeat=True")
        ds = tf.data.Dataset.range(1).flat_map(
            lambda _: _epoch_pass(n, epoch, seed, shuffle, batch_size, drop_remainder,
                                  binarize == "dynamic"))
        batches = n // batch_size if drop_remainder else -(-n // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))  # Keras sees the length
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        return validation.record_values(ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds, values)
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if binarize == "dynamic":
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, keys))
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return validation.record_values(ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds, values)


def _epoch_pass(n, epoch, seed, shuffle, batch_size, drop_remainder, keyed):
    """One epoch of index batches (and binarization keys), keyed by the epoch variable."""
    e = tf.cast(epoch.read_value(), tf.int64)
    seed = tf.constant(seed, tf.int64)
    index = tf.range(n, dtype=tf.int64)
    if shuffle:
        u = tf.random.stateless_uniform([n], seed=tf.stack([seed, e]), alg="philox")
        index = tf.gather(index, tf.argsort(u))
    ds = tf.data.Dataset.from_tensor_slices(index).batch(batch_size, drop_remainder)
    if keyed:  # key of batch b in epoch e: distinct across epochs and batches
        keys = tf.data.Dataset.range(2 ** 31).map(lambda b: (e + 1) * 1_000_003 + b)
        ds = tf.data.Dataset.zip((ds, keys))
    return ds


def _check_binarize(binarize):
    if not (binarize is None or isinstance(binarize, str) and binarize in _BINARIZE_MODES):
        raise ValueError(f"Expected binarize to be one of {_BINARIZE_MODES}. "
                         f"Received: binarize={binarize!r}")


def _own_split_error(source, validation_split):
    return ValueError(f"{source} has its own train/test split; validation_split applies only "
                      f"to sources without one. Received: validation_split={validation_split}")


def _check_probabilities(x):
    if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError("Binarization expects values in [0, 1] (no NaN). Received: x with "
                         f"min={x.min()}, max={x.max()}")


def _split(x, y, seed, fraction):
    """Seeded permutation split: the first `round(fraction * N)` go to test."""
    x = np.asarray(x)
    if x.ndim == 0 or len(x) < 2:
        raise ValueError(f"Need at least 2 examples to split into train and test. "
                         f"Received: x.shape={x.shape}")
    n = len(x)
    n_test = min(max(int(round(fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    if y is not None and (np.ndim(y) == 0 or len(y) != n):
        raise ValueError(f"Expected {n} labels, one per example. "
                         f"Received: y.shape={np.shape(y)}")
    pick = (lambda i: None) if y is None else (lambda i: np.asarray(y)[i])
    return (x[train], pick(train)), (x[test], pick(test))


def _finish(split, source, divisor, binarize, seed):
    """Scales, reshapes and validates both splits; applies static binarization."""
    (x_train, y_train), (x_test, y_test) = split
    raw = [np.asarray(x_train), np.asarray(x_test)]
    for name, x in zip(("x_train", "x_test"), raw):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"{source}: expected a numeric {name}. "
                             f"Received: {name}.dtype={x.dtype}")
        if x.ndim not in (2, 3, 4) or len(x) == 0:
            raise ValueError(f"{source}: expected a non-empty {name} of shape (N, D), (N, H, W) "
                             f"or (N, H, W, C). Received: {name}.shape={x.shape}")
    integer = [x.dtype == bool or np.issubdtype(x.dtype, np.integer) for x in raw]
    if divisor is None:
        divisor = 255 if any(i and x.max() > 1 for i, x in zip(integer, raw)) else 1
    out = []
    for name, x, is_int in zip(("x_train", "x_test"), raw, integer):
        if is_int and (x.min() < 0 or x.max() > divisor):
            raise ValueError(f"{source}: integer pixels must lie in 0..{divisor}. "
                             f"Received: {name} with min={x.min()}, max={x.max()}")
        x = x.astype(np.float32) / np.float32(divisor) if is_int else x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{source}: {name} contains NaN or Inf. "
                             f"Received: {int((~np.isfinite(x)).sum())} non-finite values")
        out.append(x[..., None] if x.ndim == 3 else x)
    if out[0].shape[1:] != out[1].shape[1:]:
        raise ValueError(f"{source}: train and test examples differ in shape. Received: "
                         f"x_train.shape={out[0].shape}, x_test.shape={out[1].shape}")
    labels = [_as_labels(y, len(x), source, name)
              for y, x, name in ((y_train, out[0], "y_train"), (y_test, out[1], "y_test"))]
    if binarize == "static":
        out = [binarize_static(out[0], seed), binarize_static(out[1], seed + 1)]
    return (out[0], labels[0]), (out[1], labels[1])


def _as_labels(y, n, source, name):
    if y is None:
        return None
    y = np.asarray(y)
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all())
    if y.ndim != 1 or len(y) != n or not integral:
        raise ValueError(f"{source}: expected {name} to be {n} integer labels of shape ({n},). "
                         f"Received: {name}.shape={y.shape}, {name}.dtype={y.dtype}")
    return y.astype(np.int64)
