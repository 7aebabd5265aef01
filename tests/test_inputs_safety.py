"""Every Keras input path gets the data checks; arguments we do not use are refused (issue 13)."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae.validation import KerasVAEWarning


def _batches(x, batch=32):
    return tf.data.Dataset.from_tensor_slices(x).batch(batch)


# ------------------------------------------------ data checks on every path

_INF, _NAN = float("inf"), float("nan")


@pytest.mark.parametrize("support, allow_missing, value, flags", [
    ((0.0, 1.0), False, 0.5, (0, 0)), ((0.0, 1.0), False, _NAN, (1, 0)),
    ((0.0, 1.0), False, _INF, (1, 1)), ((0.0, 1.0), False, 1.5, (0, 1)),
    ((0.0, 1.0), False, -0.1, (0, 1)), ((0.0, 1.0), True, _NAN, (0, 0)),
    ((0.0, 1.0), True, -_INF, (1, 1)), ((0.0, 1.0), True, 2.0, (0, 1)),
    (None, False, 1e30, (0, 0)), (None, False, -_INF, (1, 0)), (None, False, _NAN, (1, 0)),
    (None, True, _NAN, (0, 0)), (None, True, _INF, (1, 0)),
    ((0.0, _INF), False, _INF, (1, 0)), ((0.0, _INF), False, 3.0, (0, 0)),
    ((0.0, _INF), True, _INF, (1, 0)),
])
@pytest.mark.parametrize("jit", [False, True])
def test_the_data_guard_counts_each_kind_of_bad_value(support, allow_missing, value, flags, jit):
    """[non-finite, outside the support] per step kind, in graph mode and under XLA."""
    from keras_vae import validation
    guard = validation.DataGuard(support, allow_missing=allow_missing)
    x = np.full((4, 3), 0.25, "float32")
    x[2, 1] = value
    update = tf.function(guard.update_state, jit_compile=jit)
    update(tf.constant(x), validation.TEST)
    update(tf.constant(np.full((4, 3), 0.25, "float32")), validation.TRAIN)
    counts = guard.result().numpy()
    np.testing.assert_array_equal(counts[validation.TEST], flags)
    np.testing.assert_array_equal(counts[validation.TRAIN], (0, 0))



@pytest.mark.parametrize("jit", [False, True])
def test_the_data_guard_reports_both_problems_of_one_batch_and_passes_an_empty_one(jit):
    """NaN in one entry and 1.5 in another: both flags (each counted over its own
    entries, so the NaN cannot hide the 1.5); a batch of no rows: nothing."""
    from keras_vae import validation
    guard = validation.DataGuard((0.0, 1.0))
    x = np.full((512, 28, 28, 1), 0.25, "float32")
    x[3, 0, 0, 0], x[511, 27, 27, 0] = _NAN, 1.5
    update = tf.function(guard.update_state, jit_compile=jit)
    update(tf.constant(x), validation.TRAIN)
    update(tf.zeros((0, 28, 28, 1)), validation.TEST)
    counts = guard.result().numpy()
    np.testing.assert_array_equal(counts[validation.TRAIN], (1, 1))
    np.testing.assert_array_equal(counts[validation.TEST], (0, 0))


def test_training_steps_check_batches_in_graph_only_for_data_not_read_before(digits, small_vae):
    """Arrays (every value read by check_data) and make_dataset datasets whose values
    suit the likelihood train without the per-batch check (issue 17); a dataset
    derived from one, or one whose array holds a value outside the support in a later
    batch, keeps it, and that value is reported."""
    from keras_vae import data, validation
    x, _ = digits
    x = x[:256]
    vae = small_vae()
    traced = []
    update = vae._data_guard.update_state

    def spy(batch, row):
        traced.append(row)
        return update(batch, row)

    vae._data_guard.update_state = spy

    def trained_with_guard(data_):
        traced.clear()
        vae.fit(data_, epochs=1, batch_size=64, verbose=0)
        return validation.TRAIN in traced

    assert not trained_with_guard(x)
    assert not trained_with_guard(data.make_dataset(x, batch_size=64))
    assert trained_with_guard(data.make_dataset(x, batch_size=64).map(lambda b: b))
    assert not trained_with_guard(data.make_dataset(x, batch_size=64, binarize="dynamic"))
    bad = x.copy()
    bad[-1, 0, 0, 0] = 1.5  # in the last batch only: the first batch passes
    with pytest.raises(ValueError, match=r"1 batch with values outside \[0, 1\]"):
        trained_with_guard(data.make_dataset(bad, batch_size=64, shuffle=False))
    assert vae._guard_training  # the guarded function traced above, reused (no new trace)
    assert not trained_with_guard(x)  # back to arrays: the unguarded function again
    assert not vae._guard_training


def test_alternating_checked_and_unchecked_data_reuses_both_training_functions(digits,
                                                                              small_vae):
    """fit() keeps the training function of each guard setting: alternating between data
    read before training and data that is not does not re-trace (an XLA step would be
    compiled again inside each epoch), and a new compile() drops both."""
    from keras_vae import data
    x, _ = digits
    x = x[:256]
    vae = small_vae()
    read = data.make_dataset(x, batch_size=64)
    unread = data.make_dataset(x, batch_size=64).map(lambda b: b)
    vae.fit(read, epochs=1, verbose=0)
    unguarded = vae.train_function
    vae.fit(unread, epochs=1, verbose=0)
    guarded = vae.train_function
    assert guarded is not unguarded
    vae.fit(read, epochs=1, verbose=0)
    assert vae.train_function is unguarded
    vae.fit(unread, epochs=1, verbose=0)
    assert vae.train_function is guarded
    bad = x.copy()
    bad[-1, 0, 0, 0] = np.nan  # a later batch: only the in-step check can see it
    with pytest.raises(ValueError, match="NaN"):
        vae.fit(data.make_dataset(bad, batch_size=64, shuffle=False).map(lambda b: b),
                epochs=1, verbose=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(read, epochs=1, verbose=0)
    assert vae.train_function not in (unguarded, guarded)
    vae.fit(unread, epochs=1, verbose=0)
    assert vae.train_function not in (unguarded, guarded)


def test_uint8_dataset_is_refused_before_training_with_the_scaling_advice(digits, small_vae):
    x, _ = digits
    pixels = (x[:128] * 255).astype("uint8")
    vae = small_vae()
    with pytest.raises(ValueError, match=r"scale to \[0, 1\] \(divide by 255\)"):
        vae.fit(_batches(pixels), epochs=1, verbose=0)


def test_nan_in_the_first_dataset_batch_is_refused(digits, small_vae):
    x, _ = digits
    bad = x[:128].copy()
    bad[3, 0, 0, 0] = np.nan
    vae = small_vae()
    with pytest.raises(ValueError, match="NaN"):
        vae.fit(_batches(bad), epochs=1, verbose=0)


def test_the_first_batch_check_reads_the_dataset_itself_not_a_derived_one(digits, small_vae,
                                                                          monkeypatch):
    # A derived dataset (x.take(1)) is a new graph whose first iterator copies what the
    # pipeline captured: ~0.2 s per fit call with 60,000 in-memory images (issue 17).
    x, _ = digits
    vae = small_vae()
    conditional = kv.ConditionalVAE(kv.MLPEncoder(2, hidden=(8,)),
                                    kv.MLPDecoder((8, 8, 1), hidden=(8,)), num_classes=10)
    conditional.compile(optimizer="adam")

    def refuse(self, count, name=None):
        raise AssertionError("the first-batch check derived a dataset with take()")

    ds, labelled = _batches(x[:64]), tf.data.Dataset.from_tensor_slices(
        (x[:64], np.arange(64) % 10)).batch(32)
    monkeypatch.setattr(tf.data.Dataset, "take", refuse)
    vae.fit(ds, epochs=1, verbose=0)
    conditional.fit(labelled, epochs=1, verbose=0)
    assert kv.validation.first_batch(ds.filter(lambda b: False)) is None  # empty: no batch


def test_nan_in_a_later_dataset_batch_is_caught_inside_the_steps(digits, small_vae):
    x, _ = digits
    bad = x[:128].copy()
    bad[100, 0, 0, 0] = np.nan  # batch 4 of 4: the eager first-batch check passes
    vae = small_vae()
    with pytest.raises(ValueError, match=r"the training data `x` with 1 batch with NaN"):
        vae.fit(_batches(bad), epochs=1, verbose=0)


def test_evaluate_and_predict_on_out_of_range_later_batches_raise(digits, small_vae):
    x, _ = digits
    bad = x[:128].copy()
    bad[100] = 3.0
    vae = small_vae()
    with pytest.raises(ValueError, match=r"evaluation data .* values outside \[0, 1\]"):
        vae.evaluate(_batches(bad), verbose=0)
    with pytest.raises(ValueError, match=r"prediction data .* values outside \[0, 1\]"):
        vae.predict(_batches(bad), verbose=0)
    # Good data afterwards is fine (the counters were reset).
    assert np.isfinite(vae.evaluate(_batches(x[:128]), verbose=0)[0])


def test_bad_validation_dataset_batches_are_caught_in_fit(digits, small_vae):
    x, _ = digits
    bad = x[:128].copy()
    bad[100] = np.inf
    vae = small_vae()
    with pytest.raises(ValueError, match=r"evaluation data .*NaN or Inf"):
        vae.fit(x[:128], validation_data=_batches(bad), epochs=1, verbose=0)


def test_generator_first_batch_is_checked_and_no_item_is_lost(digits, small_vae):
    x, _ = digits
    vae = small_vae()

    def bad():
        yield ((x[:32] * 255).astype("uint8"),)

    with pytest.raises(ValueError, match=r"divide by 255"):
        vae.fit(bad(), epochs=1, verbose=0)

    seen = []

    def good():
        for i in range(4):
            seen.append(i)
            yield (x[32 * i:32 * (i + 1)],)

    vae.compile(optimizer="adam", steps_per_execution=1)
    history = vae.fit(good(), epochs=1, verbose=0)
    assert seen == [0, 1, 2, 3]  # each item yielded once, none dropped by the peek
    assert np.isfinite(history.history["loss"][0])


def test_pydataset_first_batch_is_checked(digits, small_vae):
    x, _ = digits

    class Pixels(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return (x[32 * i:32 * (i + 1)] * 255).astype("uint8")

    with pytest.raises(ValueError, match=r"divide by 255"):
        small_vae().fit(Pixels(), epochs=1, verbose=0)


def test_integer_numpy_pixels_get_the_scaling_advice(small_vae):
    with pytest.raises(ValueError, match=r"scale to \[0, 1\] \(divide by 255\)"):
        small_vae().fit(np.full((4, 8, 8, 1), 200, "uint8"), verbose=0)


# ------------------------------------------------------------ dict elements

def _dicts(x, y, **extra):
    return tf.data.Dataset.from_tensor_slices({"image": x, "label": y, **extra}).batch(32)


def test_dict_datasets_fit_evaluate_and_predict_on_the_image_key(digits, small_vae):
    x, y = digits
    vae = small_vae()
    vae.fit(_dicts(x[:128], y[:128]), epochs=1, verbose=0)
    by_dict = vae.evaluate(_dicts(x[:128], y[:128]), return_dict=True, verbose=0)
    by_array = vae.evaluate(x[:128], batch_size=32, return_dict=True, verbose=0)
    assert by_dict == pytest.approx(by_array, abs=1e-6)
    np.testing.assert_allclose(vae.predict(_dicts(x[:64], y[:64]), verbose=0),
                               vae.predict(x[:64], verbose=0), atol=1e-6)


def test_dict_dataset_values_are_checked(digits, small_vae):
    x, y = digits
    with pytest.raises(ValueError, match="divide by 255"):
        small_vae().fit(_dicts((x[:64] * 255).astype("uint8"), y[:64]), verbose=0)


def test_ambiguous_dicts_are_refused_listing_the_keys(digits, small_vae):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices({"pixels": x[:64], "label": y[:64]}).batch(32)
    with pytest.raises(ValueError, match=r"input_key.*\['label', 'pixels'\]"):
        small_vae().fit(ds, verbose=0)
    vae = small_vae(input_key="pixels")
    vae.fit(ds, epochs=1, verbose=0)
    assert vae.get_config()["input_key"] == "pixels"
    with pytest.raises(ValueError, match=r"input_key='img'.*\['label', 'pixels'\]"):
        small_vae(input_key="img").fit(ds, verbose=0)


def test_input_key_survives_saving(digits, small_vae, tmp_path):
    x, y = digits
    vae = small_vae(input_key="pixels")
    path = str(tmp_path / "m.keras")
    vae.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.input_key == "pixels"


# --------------------------------------------------- arguments we do not use

@pytest.mark.parametrize("kwargs, name", [
    ({"sample_weight": np.ones(64)}, "sample_weight"),
    ({"class_weight": {0: 1.0}}, "class_weight"),
])
def test_fit_refuses_weights(digits, small_vae, kwargs, name):
    x, _ = digits
    with pytest.raises(ValueError, match=f"Received: {name}="):
        small_vae().fit(x[:64], epochs=1, verbose=0, **kwargs)


def test_evaluate_refuses_sample_weight_and_weighted_datasets(digits, small_vae):
    x, _ = digits
    vae = small_vae()
    with pytest.raises(ValueError, match="Received: sample_weight="):
        vae.evaluate(x[:64], sample_weight=np.ones(64), verbose=0)
    weighted = tf.data.Dataset.from_tensor_slices((x[:64], x[:64], np.ones(64))).batch(32)
    with pytest.raises(ValueError, match="sample weights"):
        vae.fit(weighted, verbose=0)


@pytest.mark.parametrize("kwargs, name", [
    ({"loss": "mse"}, "loss"),
    ({"metrics": ["mae"]}, "metrics"),
    ({"loss_weights": [1.0]}, "loss_weights"),
    ({"weighted_metrics": ["mae"]}, "weighted_metrics"),
])
def test_compile_refuses_loss_and_metrics(small_vae, kwargs, name):
    vae = small_vae(compile=False)
    with pytest.raises(ValueError, match=f"Received: {name}="):
        vae.compile(optimizer="adam", **kwargs)


def test_targets_warn_unless_they_are_x(digits, small_vae):
    x, y = digits
    vae = small_vae()
    arr = x[:64]
    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasVAEWarning)
        vae.fit(arr, arr, epochs=1, verbose=0)  # fit(x, x): silent
    with pytest.warns(KerasVAEWarning, match="targets `y` are ignored"):
        vae.fit(arr, y[:64], epochs=1, verbose=0)


# ------------------------------------------------------------------ saving

@pytest.mark.parametrize("name", ["m.h5", "m.hdf5", "m"])
def test_save_refuses_formats_that_do_not_load_back(small_vae, tmp_path, name):
    vae = small_vae()
    with pytest.raises(ValueError, match=rf"end in '.keras'.*Received: filepath='.*{name}'"):
        vae.save(str(tmp_path / name))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------- per-batch callbacks

def test_per_batch_callback_warns_once_naming_it_and_the_cost(digits, small_vae):
    x, _ = digits
    vae = small_vae()
    cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: None)
    with pytest.warns(KerasVAEWarning, match=r"LambdaCallback .* one step per call instead "
                                             r"of 4: .*% slower") as record:
        vae.fit(x[:256], batch_size=64, epochs=2, callbacks=[cb], verbose=0)
    assert len([w for w in record if issubclass(w.category, KerasVAEWarning)]) == 1
    vae.compile(optimizer="adam", steps_per_execution=1)  # explicit: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasVAEWarning)
        vae.fit(x[:256], batch_size=64, epochs=1, callbacks=[cb], verbose=0)


# --------------------------------------------------------- start-up noise

def _stderr_of(code):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(kv.__file__)))]
        + [p for p in [os.environ.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr.splitlines()


def test_import_keras_vae_prints_nothing_and_adds_nothing_after_keras():
    assert _stderr_of("import keras_vae") == []
    # Keras imported first runs TensorFlow's C++ start-up before us (its lines are
    # out of our reach); importing keras_vae afterwards must add no line of its own.
    assert len(_stderr_of("import keras, keras_vae")) == len(_stderr_of("import keras"))


# ----------------------------------------------- evaluation noise per example

def test_evaluate_is_independent_of_the_batch_size_and_matches_val_loss(digits, small_vae):
    x, _ = digits
    vae = small_vae()
    vae.fit(x[:200], epochs=1, batch_size=50, verbose=0)
    results = [vae.evaluate(x[:200], batch_size=b, return_dict=True, verbose=0)
               for b in (32, 64, 100)]
    for r in results[1:]:
        for k in ("loss", "elbo", "reconstruction", "kl"):
            assert r[k] == pytest.approx(results[0][k], abs=1e-5, rel=1e-6), k
    history = vae.fit(x[:64], epochs=1, batch_size=64, validation_data=(x[:200],),
                      validation_batch_size=64, verbose=0)
    val = history.history["val_loss"][0]
    assert val == pytest.approx(vae.evaluate(x[:200], batch_size=32, verbose=0)[0],
                                abs=1e-5, rel=1e-6)


def test_per_example_seeds_depend_on_the_example_only(digits, small_vae):
    x, _ = digits
    vae = small_vae()
    a = vae.example_seeds(x[:64]).numpy()
    b = vae.example_seeds(x[32:96]).numpy()
    np.testing.assert_array_equal(a[32:], b[:32])
    assert len({tuple(s) for s in a}) > 60 and np.all(a[:, 1] < 0)


# ------------------------------------------------ custom layers without build()

@keras.saving.register_keras_serializable(package="test_inputs_safety")
class NoBuildEncoder(keras.layers.Layer):
    """A user's encoder that creates its sublayers in __init__ and has no build()."""

    def __init__(self, latent_dim=2, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.params = keras.layers.Dense(2 * latent_dim)

    def call(self, x, training=False):
        import tensorflow_probability as tfp

        loc, raw = tf.split(self.params(self.hidden(self.flatten(x))), 2, axis=-1)
        return tfp.distributions.Independent(
            tfp.distributions.Normal(loc, tf.nn.softplus(raw) + 1e-4), 1)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


def test_a_custom_encoder_without_build_saves_and_loads_its_trained_weights(digits, tmp_path):
    x, _ = digits
    keras.utils.set_random_seed(0)
    vae = kv.VAE(NoBuildEncoder(2), kv.MLPDecoder((8, 8, 1), hidden=(16,)))
    assert vae.encoder.params.built and len(vae.encoder.weights) == 4  # built at construction
    vae.compile(optimizer="adam")
    vae.fit(x[:512], epochs=2, batch_size=64, verbose=0)
    before = vae.evaluate(x[512:768], batch_size=64, return_dict=True, verbose=0)
    path = str(tmp_path / "m.keras")
    vae.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded.evaluate(x[512:768], batch_size=64, return_dict=True, verbose=0)
    assert after == before
    for a, b in zip(vae.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed, error", [(1.9, TypeError), ("12", TypeError), (True, TypeError),
                                         (-1, ValueError)])
def test_sample_refuses_seeds_that_are_not_non_negative_integers(seed, error):
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((4,), hidden=(8,)))
    with pytest.raises(error, match=f"Received: seed={seed!r}"):
        vae.sample(4, seed=seed)


def test_sample_refuses_a_count_beyond_the_maximum_before_drawing():
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((4,), hidden=(8,)))
    with pytest.raises(ValueError, match="Received: num_samples=3000000000"):
        vae.sample(3_000_000_000)
