"""Tests for keras_vae.data: loaders, IDX/npz/image parsing, binarization, tf.data."""

import gzip
import os
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae import data, sources


def _epoch(ds):
    """One full iteration of a dataset as numpy batches."""
    return [b for b in ds.as_numpy_iterator()]


def _write_idx(path, array, compress):
    codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(body) if compress else body)


def _write_mnist_like(folder, compress=True, n_train=6, n_test=4):
    """Four small IDX files like MNIST's; returns the arrays written."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        _write_idx(os.path.join(folder, stem + (".gz" if compress else "")), array, compress)
    return arrays


@pytest.fixture
def no_local_mnist(tmp_path, monkeypatch):
    """Points the system and Keras data folders at empty temporary folders."""
    monkeypatch.setattr(sources, "_SYSTEM_DATA_DIR", str(tmp_path / "system"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path


def _write_png(path, size=(4, 3), mode="L", value=0):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, value).save(path)


# ---------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_range():
    (x, y), (x_test, y_test) = data.load("digits")
    assert x.shape == (1497, 8, 8, 1) and x_test.shape == (300, 8, 8, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.shape == (1497,)
    assert x.min() == 0.0 and x.max() == 1.0


def test_digits_split_is_identical_for_the_same_seed():
    (x1, y1), (t1, _) = data.load("digits", seed=3)
    (x2, y2), (t2, _) = data.load("digits", seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(t1, t2)


def test_digits_split_changes_with_the_seed():
    (_, y1), _ = data.load("digits", seed=0)
    (_, y2), _ = data.load("digits", seed=1)
    assert not np.array_equal(y1, y2)


def test_digits_labels_match_the_images(digits):
    (x, y), (x_test, y_test) = data.load("digits")
    all_x, all_y = np.concatenate([x, x_test]), np.concatenate([y, y_test])
    flat = {row.tobytes(): label for row, label in zip(digits[0], digits[1])}
    # Duplicated images may carry different labels; the vast majority are unique.
    agree = np.mean([flat[row.tobytes()] == label for row, label in zip(all_x, all_y)])
    assert agree > 0.99
    assert set(np.unique(all_y)) == set(range(10))


def test_digits_validation_split_sets_the_test_size():
    (x, _), (x_test, _) = data.load("digits", validation_split=0.25)
    assert (len(x), len(x_test)) == (1348, 449)


def test_validation_split_out_of_range_raises():
    with pytest.raises(ValueError, match="Received: validation_split=1.5"):
        data.load("digits", validation_split=1.5)


# ------------------------------------------------------ fashion_mnist / mnist


def test_fashion_mnist_loads_from_the_system_folder():
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("dataset-fashion-mnist is not installed")
    (x, y), (x_test, y_test) = data.load("fashion_mnist", download=False)
    assert x.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert y.shape == (60000,) and y_test.shape == (10000,)


def test_missing_mnist_lists_every_place_looked_in(no_local_mnist):
    empty = no_local_mnist / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist", data_dir=str(empty), download=False)
    message = str(info.value)
    for place in (str(empty), os.path.join(str(empty), "mnist"),
                  os.path.join(str(no_local_mnist), "system", "mnist"),
                  os.path.join(str(no_local_mnist), "keras_home", "datasets", "mnist"),
                  os.path.join(str(no_local_mnist), "keras_home", "datasets", "mnist.npz")):
        assert place in message
    assert "data_dir" in message and "Received: name_or_path='mnist'" in message


def test_missing_fashion_mnist_says_how_to_install_it(no_local_mnist):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", download=False)


def test_failed_download_raises_file_not_found(no_local_mnist, monkeypatch):
    def fail():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fail)
    with pytest.raises(FileNotFoundError, match="no network"):
        data.load("mnist", download=True)


def test_download_is_the_last_resort(no_local_mnist, monkeypatch):
    fake = ((np.zeros((3, 2, 2), np.uint8), np.arange(3)),
            (np.full((2, 2, 2), 255, np.uint8), np.arange(2)))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: fake)
    (x, y), (x_test, _) = data.load("mnist", download=True)
    assert x.shape == (3, 2, 2, 1) and x_test.max() == 1.0 and y.dtype == np.int64


def test_gzipped_idx_files_round_trip(no_local_mnist):
    written = _write_mnist_like(no_local_mnist / "idx", compress=True)
    (x, y), (x_test, y_test) = data.load("mnist", data_dir=str(no_local_mnist / "idx"))
    np.testing.assert_allclose(x[..., 0], written["train-images-idx3-ubyte"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, written["t10k-labels-idx1-ubyte"])
    assert x_test.shape == (4, 5, 4, 1)


def test_plain_idx_files_in_a_name_subfolder_round_trip(no_local_mnist):
    written = _write_mnist_like(no_local_mnist / "root" / "mnist", compress=False)
    (x, y), _ = data.load("mnist", data_dir=str(no_local_mnist / "root"))
    np.testing.assert_allclose(x[..., 0], written["train-images-idx3-ubyte"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, written["train-labels-idx1-ubyte"])


def test_truncated_idx_file_raises_value_error_naming_it(no_local_mnist):
    folder = no_local_mnist / "idx"
    _write_mnist_like(folder, compress=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is truncated"):
        data.load("mnist", data_dir=str(folder))


def test_idx_file_with_a_bad_magic_number_raises(no_local_mnist):
    folder = no_local_mnist / "idx"
    _write_mnist_like(folder, compress=False)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="not an IDX file: magic number 12340801"):
        data.load("mnist", data_dir=str(folder))


def test_truncated_gzip_idx_file_raises_value_error(no_local_mnist):
    folder = no_local_mnist / "idx"
    _write_mnist_like(folder, compress=True)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match="Could not read the IDX file .*Received: "
                                         "path=.*train-labels-idx1-ubyte.gz"):
        data.load("mnist", data_dir=str(folder))


def test_mnist_npz_in_the_keras_cache_is_used(no_local_mnist):
    cache = no_local_mnist / "keras_home" / "datasets"
    cache.mkdir(parents=True)
    np.savez(cache / "mnist.npz", x_train=np.zeros((5, 3, 3), np.uint8), y_train=np.arange(5),
             x_test=np.full((2, 3, 3), 51, np.uint8), y_test=np.arange(2))
    (x, _), (x_test, _) = data.load("mnist", download=False)
    assert x.shape == (5, 3, 3, 1)
    np.testing.assert_allclose(x_test, 0.2)


# ------------------------------------------------------------- npz / npy


def test_npz_with_a_split_scales_uint8_to_unit_interval(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.full((4, 2, 2, 1), 255, np.uint8), y_train=np.arange(4),
             x_test=np.zeros((2, 2, 2, 1), np.uint8), y_test=np.arange(2))
    (x, y), (x_test, y_test) = data.load(str(path))
    assert x.dtype == np.float32 and x.max() == 1.0 and x_test.max() == 0.0
    np.testing.assert_array_equal(y_test, [0, 1])


def test_validation_split_with_a_source_that_has_its_own_split_raises(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 3)), x_test=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="own train/test split.*Received: validation_split=0.2"):
        data.load(str(path), validation_split=0.2)


def test_npz_float_data_is_kept_as_is(tmp_path):
    path = tmp_path / "d.npz"
    x_train = np.linspace(-1.0, 2.0, 12).reshape(4, 3)
    np.savez(path, x_train=x_train, x_test=x_train[:2])
    (x, y), _ = data.load(str(path))
    np.testing.assert_allclose(x, x_train, rtol=1e-6)
    assert y is None


def test_npz_single_array_splits_90_10_keeping_labels_paired(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(50, dtype=np.float64).reshape(50, 1), y=np.arange(50))
    (x, y), (x_test, y_test) = data.load(str(path))
    assert (len(x), len(x_test)) == (45, 5)
    np.testing.assert_array_equal(x[:, 0], y)
    np.testing.assert_array_equal(x_test[:, 0], y_test)
    assert sorted(np.concatenate([y, y_test])) == list(range(50))


def test_npy_3d_array_gets_a_channel_axis(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.ones((20, 4, 5), np.uint8) * 3)
    (x, y), (x_test, _) = data.load(str(path))
    assert x.shape == (18, 4, 5, 1) and x_test.shape == (2, 4, 5, 1) and y is None
    np.testing.assert_allclose(x, 3 / 255, rtol=1e-6)


def test_npy_2d_array_stays_flat(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.full((10, 7), 0.25, np.float32))
    (x, _), (x_test, _) = data.load(str(path))
    assert x.shape == (9, 7) and x_test.shape == (1, 7)


def test_npz_of_random_bytes_raises_value_error_naming_it(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="noise.npz"):
        data.load(str(path))


def test_truncated_npz_raises_value_error_naming_it(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, x=np.zeros((50, 4)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.npz"):
        data.load(str(path))


def test_npz_without_known_keys_raises(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, images=np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"found keys \['images'\]"):
        data.load(str(path))


def test_nan_in_data_raises(tmp_path):
    path = tmp_path / "nan.npy"
    x = np.zeros((10, 3))
    x[4, 1] = np.nan
    np.save(path, x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        data.load(str(path))


def test_integer_pixels_above_255_raise(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.full((10, 3), 300, np.int32))
    with pytest.raises(ValueError, match="0..255"):
        data.load(str(path))


def test_missing_path_raises_file_not_found_naming_it(tmp_path):
    path = str(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        data.load(path)


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ValueError, match="fashion_mnist.*Received: name_or_path='cifar10'"):
        data.load("cifar10")


# ---------------------------------------------------------- image folders


def test_image_folder_with_class_subfolders(tmp_path):
    for i, cls in enumerate(["cat", "ant", "bee"]):
        for j in range(4):
            _write_png(str(tmp_path / cls / f"{j}.png"), value=60 * i)
    (x, y), (x_test, y_test) = data.load(str(tmp_path))
    assert x.shape == (11, 3, 4, 1) and x_test.shape == (1, 3, 4, 1)
    all_x, all_y = np.concatenate([x, x_test]), np.concatenate([y, y_test])
    # Sorted subfolders: ant=0 (value 60), bee=1 (120), cat=2 (0).
    expected = {0: 60 / 255, 1: 120 / 255, 2: 0.0}
    for image, label in zip(all_x, all_y):
        np.testing.assert_allclose(image, expected[label], rtol=1e-6)


def test_colour_images_have_three_channels(tmp_path):
    for j in range(5):
        _write_png(str(tmp_path / f"{j}.png"), mode="RGB", value=(255, 0, 0))
    (x, y), _ = data.load(str(tmp_path))
    assert x.shape[1:] == (3, 4, 3) and y is None
    np.testing.assert_allclose(x[..., 0], 1.0)


def test_image_folder_with_mixed_sizes_raises_naming_both(tmp_path):
    _write_png(str(tmp_path / "a.png"), size=(4, 3))
    _write_png(str(tmp_path / "b.png"), size=(5, 3))
    with pytest.raises(ValueError, match=r"a\.png is 4x3 L but .*b\.png is 5x3 L"):
        data.load(str(tmp_path))


def test_empty_image_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="holds no"):
        data.load(str(tmp_path))


# ------------------------------------------------------------ binarization


def test_bad_binarize_value_raises():
    with pytest.raises(ValueError, match="Received: binarize='yes'"):
        data.load("digits", binarize="yes")


def test_static_binarization_is_binary_and_deterministic():
    x = np.random.default_rng(0).random((100, 8))
    a, b = data.binarize_static(x, seed=5), data.binarize_static(x, seed=5)
    assert set(np.unique(a)) == {0.0, 1.0}
    np.testing.assert_array_equal(a, b)


def test_static_binarization_mean_approximates_the_mean_of_x(digits):
    x = digits[0]
    # 115k Bernoulli draws: the standard error of the mean is below 0.0015.
    assert abs(data.binarize_static(x, seed=0).mean() - x.mean()) < 0.005


def test_static_binarization_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match="max=2.0"):
        data.binarize_static(np.array([0.5, 2.0]))


def test_load_static_binarizes_both_splits():
    (x, _), (x_test, _) = data.load("digits", binarize="static")
    assert set(np.unique(x)) == {0.0, 1.0} and set(np.unique(x_test)) == {0.0, 1.0}


def test_load_dynamic_returns_the_continuous_arrays():
    (x, _), _ = data.load("digits", binarize="dynamic")
    (x_plain, _), _ = data.load("digits")
    np.testing.assert_array_equal(x, x_plain)


# ------------------------------------------------------------ make_dataset


def test_make_dataset_batches_in_order_without_shuffle():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    batches = _epoch(data.make_dataset(x, batch_size=4, shuffle=False))
    assert [len(b) for b in batches] == [4, 4, 2] and batches[0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(batches), x)


def test_make_dataset_shuffle_is_reproducible_with_the_same_seed():
    x = np.arange(64, dtype=np.float32).reshape(64, 1)
    first = np.concatenate(_epoch(data.make_dataset(x, batch_size=8, seed=2)))
    second = np.concatenate(_epoch(data.make_dataset(x, batch_size=8, seed=2)))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, x) and sorted(first[:, 0]) == list(range(64))


def test_make_dataset_reshuffles_every_epoch():
    ds = data.make_dataset(np.arange(64, dtype=np.float32), batch_size=8)
    assert not np.array_equal(np.concatenate(_epoch(ds)), np.concatenate(_epoch(ds)))


def test_make_dataset_keeps_labels_paired_with_images():
    x = np.arange(30, dtype=np.float32).reshape(30, 1)
    for xb, yb in data.make_dataset(x, np.arange(30) * 2, batch_size=7).as_numpy_iterator():
        np.testing.assert_array_equal(xb[:, 0] * 2, yb)


def test_make_dataset_drop_remainder_gives_full_static_batches():
    ds = data.make_dataset(np.zeros((10, 3)), batch_size=4, drop_remainder=True)
    assert ds.element_spec.shape.as_list() == [4, 3]
    assert [len(b) for b in _epoch(ds)] == [4, 4]


def test_make_dataset_repeat_is_infinite():
    ds = data.make_dataset(np.zeros((10, 3)), batch_size=5, repeat=True)
    assert ds.cardinality().numpy() == tf.data.INFINITE_CARDINALITY


def test_dynamic_binarization_is_binary():
    x = np.random.default_rng(0).random((64, 4, 4, 1))
    values = np.concatenate(_epoch(data.make_dataset(x, batch_size=16, binarize="dynamic")))
    assert set(np.unique(values)) == {0.0, 1.0}


def test_dynamic_binarization_mean_approximates_the_mean_of_x():
    x = np.full((200, 50), 0.3)
    values = np.concatenate(_epoch(data.make_dataset(x, batch_size=50, binarize="dynamic")))
    # 10k draws of Bernoulli(0.3): standard error 0.0046.
    assert abs(values.mean() - 0.3) < 0.02


def test_dynamic_binarization_differs_across_epochs():
    x = np.full((64, 10), 0.5)
    ds = data.make_dataset(x, batch_size=16, shuffle=False, binarize="dynamic")
    assert not np.array_equal(np.concatenate(_epoch(ds)), np.concatenate(_epoch(ds)))


def test_dynamic_binarization_is_reproducible_across_datasets_with_the_same_seed():
    x = np.full((64, 10), 0.5)
    a = data.make_dataset(x, batch_size=16, seed=7, binarize="dynamic")
    b = data.make_dataset(x, batch_size=16, seed=7, binarize="dynamic")
    for _ in range(2):  # epoch 1 and epoch 2
        np.testing.assert_array_equal(np.concatenate(_epoch(a)), np.concatenate(_epoch(b)))


def test_dynamic_binarization_changes_across_keras_fit_epochs():
    class BatchSum(keras.Model):
        """Logs a position-weighted sum of each batch instead of training."""

        def train_step(self, x):
            weights = tf.reshape(tf.range(1.0, 1.0 + tf.cast(tf.size(x), tf.float32)), tf.shape(x))
            return {"s": tf.reduce_sum(x * weights)}

    def fit():
        model = BatchSum()
        model.compile()
        ds = data.make_dataset(np.full((16, 6), 0.5), batch_size=16, seed=1, binarize="dynamic")
        return model.fit(ds, epochs=3, shuffle=False, verbose=0).history["s"]

    first = fit()
    assert len(set(first)) == 3
    assert fit() == first


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 0}, ValueError, "Received: batch_size=0"),
        ({"batch_size": 2.5}, TypeError, "Received: batch_size=2.5"),
        ({"y": np.arange(3)}, ValueError, r"Received: y.shape=\(3,\)"),
        ({"binarize": "sometimes"}, ValueError, "Received: binarize='sometimes'"),
        ({"seed": -1}, ValueError, "Received: seed=-1"),
        ({"batch_size": 20, "drop_remainder": True}, ValueError, "Received: batch_size=20"),
    ],
)
def test_make_dataset_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.make_dataset(np.zeros((10, 2)), **kwargs)


def test_make_dataset_rejects_empty_x():
    with pytest.raises(ValueError, match=r"Received: x.shape=\(0, 3\)"):
        data.make_dataset(np.zeros((0, 3)))


def test_make_dataset_dynamic_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match="max=3.0"):
        data.make_dataset(np.full((4, 2), 3.0), binarize="dynamic")


def _batches(ds):
    return [b.numpy() for b in ds]


def test_make_dataset_keyed_by_epoch_variable_repeats_an_epoch_exactly():
    x = np.random.default_rng(0).uniform(size=(50, 4)).astype("float32")
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    ds = data.make_dataset(x, batch_size=16, seed=3, binarize="dynamic", epoch=epoch)
    first = _batches(ds)
    epoch.assign(1)
    second = _batches(ds)
    epoch.assign(0)
    again = _batches(data.make_dataset(x, batch_size=16, seed=3, binarize="dynamic", epoch=epoch))
    assert len(first) == 4 and set(np.unique(np.concatenate(first))) <= {0.0, 1.0}
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_make_dataset_keyed_by_epoch_visits_every_example_once():
    x = np.arange(37, dtype="float32")[:, None]
    epoch = tf.Variable(5, dtype=tf.int64, trainable=False)
    seen = np.concatenate(_batches(data.make_dataset(x, batch_size=8, seed=1, epoch=epoch)))
    assert sorted(seen[:, 0].tolist()) == list(range(37))
    assert seen[:, 0].tolist() != list(range(37))  # shuffled


def test_make_dataset_epoch_rejects_repeat():
    epoch = tf.Variable(0, dtype=tf.int64)
    with pytest.raises(ValueError, match="repeat=True"):
        data.make_dataset(np.zeros((4, 2), "float32"), epoch=epoch, repeat=True)


# ------------------------------------------------ hostile files (issue 13)

def _npy_header(shape, dtype="<f8"):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npz_whose_header_claims_a_huge_array_is_refused_before_allocating(tmp_path):
    import zipfile

    path = str(tmp_path / "bomb.npz")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _npy_header((10 ** 6, 10 ** 6)))
    assert os.path.getsize(path) < 400
    with pytest.raises(ValueError, match=r"\(1000000, 1000000\).*needs 7,450.* GiB.*bomb.npz"):
        data.load(path)


def test_npy_whose_header_claims_more_than_the_file_holds_is_refused(tmp_path):
    path = str(tmp_path / "short.npy")
    with open(path, "wb") as f:
        f.write(_npy_header((1000, 8, 8)) + b"\0" * 64)
    with pytest.raises(ValueError, match=r"holds only 64 bytes.*truncated"):
        data.load(path)


def test_png_decompression_bomb_in_an_image_folder_names_the_file(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (8, 8)).save(folder / "a.png")
    Image.new("L", (6000, 6000)).save(folder / "bomb.png")  # 36 M pixels, a few KB
    assert os.path.getsize(folder / "bomb.png") < 100_000
    with pytest.raises(ValueError, match=r"6000x6000.*16,777,216.*bomb.png"):
        sources.read_image_folder(str(folder))
