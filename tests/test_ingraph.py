"""Issue 17, library side: dynamic binarization and KL warm-up inside the compiled step,
per-epoch callbacks that keep steps_per_execution, progress bars on long evaluation."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import corruption, execution, keras_api, objectives
from keras_vae.validation import KerasVAEWarning


def _vae(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return kv.VAE(kv.MLPEncoder(2, hidden=(16,)), kv.MLPDecoder((8, 8, 1), hidden=(16,)),
                  seed=seed, **kwargs)


def _compiled(spe=4, jit=False, **kwargs):
    vae = _vae(**kwargs)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit,
                steps_per_execution=spe)
    return vae


@pytest.fixture()
def x(digits):
    return digits[0][:256]  # grey values k/16 in [0, 1]: 4 batches of 64


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


# ------------------------------------------------------------ binarization


def test_binarize_is_a_bernoulli_draw_of_the_grey_value():
    p = tf.constant(np.linspace(0.0, 1.0, 11, dtype="float32"))
    x = tf.tile(p[None, :], [20000, 1])
    b = corruption.binarize(x, tf.constant([3, 4])).numpy()
    assert set(np.unique(b)) <= {0.0, 1.0}
    mean = b.mean(axis=0)
    # 20,000 draws per column: 4 standard errors of a Bernoulli(p) mean
    tol = 4 * np.sqrt(p.numpy() * (1 - p.numpy()) / 20000) + 1e-12
    assert np.all(np.abs(mean - p.numpy()) <= tol)
    assert mean[0] == 0.0 and mean[-1] == 1.0  # 0 and 1 stay exact
    np.testing.assert_array_equal(b, corruption.binarize(x, tf.constant([3, 4])).numpy())


def test_training_bits_are_keyed_by_the_step(x):
    vae = _compiled(binarize="dynamic")
    vae.optimizer.build(vae.trainable_variables)
    draws = []
    for step in (0, 1, 0):
        vae.optimizer.iterations.assign(step)
        draws.append(vae.training_batch(tf.constant(x)).numpy())
    np.testing.assert_array_equal(draws[0], draws[2])   # a function of the step
    assert np.mean(draws[0] != draws[1]) > 0.05         # new bits every step
    grey = (x > 0) & (x < 1)
    assert np.all(draws[1][x == 0] == 0) and np.all(draws[1][x == 1] == 1)
    # E[b] = x: the mean of the bits over the grey pixels matches their mean
    mean_bits = np.mean([d[grey] for d in draws[:2]])
    assert abs(mean_bits - x[grey].mean()) < 4 * 0.5 / np.sqrt(2 * grey.sum())
    # a conditional model's (x, condition) pair: only x is binarized
    pair = vae.training_batch((tf.constant(x), tf.ones((len(x), 3))))
    np.testing.assert_array_equal(pair[0].numpy(), draws[0])
    np.testing.assert_array_equal(pair[1].numpy(), np.ones((len(x), 3)))


def test_fit_trains_on_the_step_keyed_bits_with_several_steps_per_call(x):
    """fit(grey x) with binarize="dynamic" == fit(the bits of each step) without it."""
    dynamic = _compiled(binarize="dynamic")
    plain = _compiled()
    plain.set_weights(dynamic.get_weights())
    helper = _compiled(binarize="dynamic")
    helper.optimizer.build(helper.trainable_variables)
    bits = []
    for step in range(8):  # 2 epochs of 4 batches, no shuffling
        helper.optimizer.iterations.assign(step)
        rows = slice(64 * (step % 4), 64 * (step % 4 + 1))
        bits.append(helper.training_batch(tf.constant(x[rows])).numpy())
    dynamic.fit(x, epochs=2, batch_size=64, shuffle=False, verbose=0)
    plain.fit(tf.data.Dataset.from_tensor_slices(np.concatenate(bits)).batch(64), epochs=1,
              verbose=0, shuffle=False)
    assert int(dynamic.optimizer.iterations) == 8 and dynamic.steps_per_execution == 4
    for a, b in zip(_weights(dynamic), _weights(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_hierarchical_vae_binarizes_in_its_step_too(tmp_path, x):
    """HierarchicalVAE(binarize="dynamic"): the same step-keyed bits as a VAE's (fit on grey
    data == fit on those bits), the setting saved, and refused for a real-valued likelihood."""
    def model(**kwargs):
        keras.utils.set_random_seed(0)
        m = kv.HierarchicalVAE((8, 8, 1), latent_dims=(4, 2), hidden=(16,), **kwargs)
        m.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=4)
        return m

    dynamic, plain, helper = model(binarize="dynamic"), model(), model(binarize="dynamic")
    plain.set_weights(dynamic.get_weights())
    helper.optimizer.build(helper.trainable_variables)
    bits = []
    for step in range(4):
        helper.optimizer.iterations.assign(step)
        bits.append(helper.training_batch(tf.constant(x[64 * step:64 * (step + 1)])).numpy())
    assert set(np.unique(np.concatenate(bits))) <= {0.0, 1.0}
    dynamic.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0)
    plain.fit(np.concatenate(bits), epochs=1, batch_size=64, shuffle=False, verbose=0)
    for a, b in zip(_weights(dynamic), _weights(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "h.keras")
    dynamic.save(path)
    assert keras.models.load_model(path).binarize == "dynamic"
    assert "binarize" not in plain.get_config()
    with pytest.raises(ValueError, match="needs a likelihood on \\[0, 1\\]"):
        kv.HierarchicalVAE((8, 8, 1), latent_dims=(4, 2), likelihood="gaussian",
                           binarize="dynamic")


def test_resumed_run_is_bit_exact(tmp_path, x):
    """Binarization and warm-up in the step: stop after epoch 1, reload, go on == one run."""
    options = dict(binarize="dynamic", warmup_steps=6, spe=4)
    whole = _compiled(**options)
    start = _weights(whole)
    whole.fit(x, epochs=3, batch_size=64, shuffle=False, verbose=0)

    first = _compiled(**options)
    first.set_weights(start)
    first.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0)
    path = str(tmp_path / "m.keras")
    first.save(path)
    resumed = keras.models.load_model(path)
    assert resumed.binarize == "dynamic" and resumed.warmup_steps == 6
    assert resumed.steps_per_execution == 4 and int(resumed.optimizer.iterations) == 4
    resumed.fit(x, epochs=3, initial_epoch=1, batch_size=64, shuffle=False, verbose=0)
    for a, b in zip(_weights(whole), _weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert float(resumed.beta) == float(whole.beta) == 1.0


def test_evaluation_never_binarizes(x):
    dynamic = _compiled(binarize="dynamic")
    plain = _compiled()
    plain.set_weights(dynamic.get_weights())
    a = dynamic.evaluate(x, batch_size=64, return_dict=True, verbose=0)
    b = plain.evaluate(x, batch_size=64, return_dict=True, verbose=0)
    assert a == b
    again = dynamic.evaluate(x, batch_size=64, return_dict=True, verbose=0)
    assert again == a


def test_binarize_and_warmup_config_round_trip(tmp_path):
    vae = _vae(binarize="dynamic", warmup_steps=100, warmup_schedule="cyclical")
    config = vae.get_config()
    assert (config["binarize"], config["warmup_steps"], config["warmup_schedule"]) == (
        "dynamic", 100, "cyclical")
    assert "binarize" not in _vae().get_config()  # defaults stay out of old configs
    path = str(tmp_path / "m.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    assert (loaded.binarize, loaded.warmup_steps, loaded.warmup_schedule) == (
        "dynamic", 100, "cyclical")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(binarize="static"), ValueError, "Received: binarize='static'"),
    (dict(binarize=True), ValueError, "Received: binarize=True"),
    (dict(warmup_steps=-1), ValueError, "Received: warmup_steps=-1"),
    (dict(warmup_steps=2.5), TypeError, "Received: warmup_steps=2.5"),
    (dict(warmup_schedule="cosine"), ValueError, "Received: warmup_schedule='cosine'"),
])
def test_bad_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        _vae(**kwargs)


def test_binarize_needs_a_likelihood_on_the_unit_interval():
    with pytest.raises(ValueError, match="support the real line"):
        kv.VAE(kv.MLPEncoder(2, hidden=(8,)),
               kv.MLPDecoder((8, 8, 1), hidden=(8,), likelihood="gaussian"),
               binarize="dynamic")


# ------------------------------------------------------------------ warm-up


@pytest.mark.parametrize("schedule, steps, t, expected", [
    ("linear", 1000, 0, 0.0), ("linear", 1000, 250, 0.25), ("linear", 1000, 1000, 1.0),
    ("linear", 1000, 5000, 1.0), ("cyclical", 10, 2, 0.4), ("cyclical", 10, 5, 1.0),
    ("cyclical", 10, 12, 0.4),
])
def test_warmup_beta_closed_form(schedule, steps, t, expected):
    assert float(objectives.warmup_beta(t, steps, schedule)) == expected
    assert float(objectives.warmup_beta(t, steps, schedule, start=1.0, target=3.0)) == (
        1.0 + 2.0 * expected)
    assert kv.KLWarmup(steps, schedule).value(t) == expected  # one schedule, one place


def test_in_graph_warmup_follows_the_schedule_and_keeps_steps_per_execution(x):
    """beta(t) = 2 * min(1, t / 16): not frozen at tracing (DESIGN.md section 5)."""
    vae = _vae(warmup_steps=16, beta=2.0)
    vae.compile(optimizer="adam")  # "auto": nothing needs every batch
    seen = []

    class Record(keras.callbacks.Callback):  # batch hook marked: once per call is fine
        runs_per_execution = True

        def on_train_batch_end(self, batch, logs=None):
            seen.append((int(self.model.optimizer.iterations), float(self.model.beta)))

    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasVAEWarning)  # no "one step per call" warning
        history = vae.fit(x, epochs=5, batch_size=64, verbose=0, callbacks=[Record()])
    assert vae.steps_per_execution == 4
    # One call of 4 steps per epoch; beta is that of the call's last step, t = iterations - 1.
    assert seen == [(i, 2.0 * min(1.0, (i - 1) / 16)) for i in (4, 8, 12, 16, 20)]
    # The per-epoch metric is the mean over the epoch's steps 4e .. 4e + 3.
    expected = [2.0 * np.mean([min(1.0, t / 16) for t in range(4 * e, 4 * e + 4)])
                for e in range(5)]
    np.testing.assert_allclose(history.history["beta"], expected, rtol=1e-6)
    loss, rec, kl = (np.array(history.history[k]) for k in ("loss", "reconstruction", "kl"))
    assert loss[0] < rec[0] + 0.5 * kl[0]  # beta averaged 0.1875 in the first epoch


def test_two_layer_model_warms_up_in_its_step_too(x):
    """HierarchicalVAE(warmup_steps=N): the same in-step schedule as VAE (one rule, in
    BaseAutoencoder), kept by steps_per_execution, saved in its config."""
    keras.utils.set_random_seed(0)
    model = kv.HierarchicalVAE((8, 8, 1), latent_dims=(4, 2), hidden=(16,), warmup_steps=16,
                               beta=2.0, warmup_schedule="linear")
    model.compile(optimizer="adam", steps_per_execution=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasVAEWarning)
        history = model.fit(x, epochs=3, batch_size=64, verbose=0)
    expected = [2.0 * np.mean([min(1.0, t / 16) for t in range(4 * e, 4 * e + 4)])
                for e in range(3)]
    np.testing.assert_allclose(history.history["beta"], expected, rtol=1e-6)
    assert float(model.beta) == pytest.approx(2.0 * 11 / 16)
    config = model.get_config()
    assert (config["warmup_steps"], config["warmup_schedule"], config["beta"]) == (16, "linear",
                                                                                 2.0)
    again = kv.HierarchicalVAE.from_config(config)
    assert (again.warmup_steps, again.warmup_schedule) == (16, "linear")
    with pytest.raises(ValueError, match="Received: warmup_steps=-1"):
        kv.HierarchicalVAE((8, 8, 1), latent_dims=(4, 2), warmup_steps=-1)
    with pytest.raises(ValueError, match="warmup_schedule"):
        kv.HierarchicalVAE((8, 8, 1), latent_dims=(4, 2), warmup_schedule="cosine")


def test_in_graph_options_under_xla(x):
    vae = _compiled(spe=4, jit=True, warmup_steps=10, warmup_schedule="cyclical",
                    binarize="dynamic")
    history = vae.fit(x, epochs=3, batch_size=64, verbose=0)  # 12 steps: the last is t = 11
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(vae.beta) == pytest.approx(float(objectives.warmup_beta(11, 10, "cyclical")),
                                            abs=1e-7)
    assert float(vae.beta) == pytest.approx(0.2)


def test_klwarmup_and_in_graph_warmup_together_are_refused(x):
    vae = _compiled(warmup_steps=10)
    with pytest.raises(ValueError, match="warms up the KL weight itself"):
        vae.fit(x, epochs=1, batch_size=64, verbose=0, callbacks=[kv.KLWarmup(10)])


def test_cli_builds_the_in_graph_options():
    from keras_vae import build, config

    cfg = config.validate({**config.defaults(), "binarize": "dynamic", "warmup_steps": 50})
    model = build.build_model(cfg, (8, 8, 1))
    assert model.binarize == "dynamic" and model.warmup_steps == 50
    gaussian = build.build_model({**cfg, "likelihood": "gaussian"}, (8, 8, 1))
    assert gaussian.binarize is None  # its pipeline binarizes instead (support: real line)
    two = config.validate({"binarize": "dynamic", "latent_dims": [4, 2]})
    assert build.build_model(two, (8, 8, 1)).binarize == "dynamic"  # --latent-dims too
    warm = config.validate({"warmup_steps": 50, "latent_dims": [4, 2]})
    assert build.build_model(warm, (8, 8, 1)).warmup_steps == 50  # in its step, no callback
    assert build.build_model({**two, "likelihood": "gaussian"}, (8, 8, 1)).binarize is None


# ------------------------------------------- callbacks and steps_per_execution


def test_tensorboard_per_epoch_keeps_steps_per_execution(tmp_path, x):
    pytest.importorskip("tensorboard")
    vae = _vae()
    vae.compile(optimizer="adam")

    def spe(callback):
        return execution.plan_execution(vae, 100, 1, 64, [callback])["steps_per_execution"]

    tb = keras.callbacks.TensorBoard
    assert spe(tb(str(tmp_path / "a"), update_freq="epoch")) == 32
    assert spe(kv.callbacks.ImageSummaries(str(tmp_path / "i"), x[:4])) == 32
    assert spe(kv.EpochCounter(tf.Variable(0))) == 32
    for per_batch in (tb(str(tmp_path / "b"), update_freq="batch"),
                      tb(str(tmp_path / "c"), update_freq=5),
                      tb(str(tmp_path / "d"), update_freq="epoch", profile_batch=2),
                      tb(str(tmp_path / "e"), update_freq="epoch",
                         write_steps_per_second=True)):
        assert spe(per_batch) == 1
    log_dir = str(tmp_path / "fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasVAEWarning)
        vae.fit(x, epochs=2, batch_size=64, verbose=0,
                callbacks=[tb(log_dir, update_freq="epoch")])
    assert vae.steps_per_execution == 4
    assert os.listdir(os.path.join(log_dir, "train"))  # the epoch summaries were written


def test_tensorboard_profiles_reads_profile_batch(tmp_path):
    pytest.importorskip("tensorboard")
    tb = keras.callbacks.TensorBoard
    assert keras_api.tensorboard_profiles(tb(str(tmp_path / "a"))) is False
    assert keras_api.tensorboard_profiles(tb(str(tmp_path / "b"), profile_batch=3)) is True


def test_per_batch_callback_warns_once_naming_it_and_the_cost(x):
    vae = _vae()
    vae.compile(optimizer="adam")
    hook = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    with pytest.warns(KerasVAEWarning) as caught:
        vae.fit(x, epochs=1, batch_size=64, verbose=0, callbacks=[hook])
    messages = [str(w.message) for w in caught if issubclass(w.category, KerasVAEWarning)]
    assert len(messages) == 1
    assert "LambdaCallback" in messages[0] and "instead of 4" in messages[0]
    assert execution.PER_BATCH_COST in messages[0] and "slower" in messages[0]
    assert vae.steps_per_execution == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasVAEWarning)  # said once
        vae.fit(x, epochs=1, batch_size=64, verbose=0, callbacks=[hook])


# ------------------------------------------------------------ progress bars


@pytest.fixture()
def trained(x):
    vae = _compiled()
    vae.fit(x, epochs=1, batch_size=64, verbose=0)
    return vae


def test_log_likelihood_progress_bar_only_when_verbose(trained, x, capsys):
    quiet = kv.log_likelihood(trained, x[:40], num_samples=20, batch_size=16)
    assert capsys.readouterr().out == ""
    loud = kv.log_likelihood(trained, x[:40], num_samples=20, batch_size=16, verbose=1)
    out = capsys.readouterr().out
    assert "40/40" in out and "log_px" in out
    np.testing.assert_array_equal(quiet.log_px, loud.log_px)
    with pytest.raises(ValueError, match="Received: verbose=2"):
        kv.log_likelihood(trained, x[:4], num_samples=2, verbose=2)


def test_evaluate_model_progress_only_when_verbose(trained, x, capsys):
    from keras_vae import evaluation

    quiet = evaluation.evaluate_model(trained, x[:40], num_samples=5, batch_size=20)
    assert capsys.readouterr().out == ""
    loud = evaluation.evaluate_model(trained, x[:40], num_samples=5, batch_size=20, verbose=1)
    out = capsys.readouterr().out
    assert "40/40" in out and "evaluate_model: log-likelihood (K=5)" in out
    assert quiet == loud
