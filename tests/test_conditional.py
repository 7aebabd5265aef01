"""The conditional VAE: shapes, save/load, bad inputs, closed forms on a linear-Gaussian
model where the condition enters linearly, class-conditional samples on digits."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import keras_vae as kv
from keras_vae import validation

X8 = (np.random.default_rng(0).random((40, 8, 8, 1)) > 0.5).astype("float32")
Y8 = np.random.default_rng(1).integers(0, 10, 40)


def _cvae(num_classes=10, condition_dim=None, latent_dim=4, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = kv.ConditionalVAE(kv.MLPEncoder(latent_dim, hidden=(32,)),
                              kv.MLPDecoder((8, 8, 1), hidden=(32,)),
                              num_classes=num_classes, condition_dim=condition_dim, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


# ------------------------------------------------------------------ shapes


def test_fit_evaluate_and_shapes():
    model = _cvae()
    history = model.fit(X8, Y8, epochs=2, batch_size=16, verbose=0, validation_data=(X8, Y8))
    assert {"loss", "elbo", "kl", "val_loss"} <= set(history.history)
    result = model.evaluate(X8, Y8, return_dict=True, verbose=0)
    assert np.isfinite(result["elbo"])
    assert model.sample(16, y=3, seed=0).shape == (16, 8, 8, 1)
    assert model.sample(3, y=[0, 1, 2], seed=0).shape == (3, 8, 8, 1)
    assert model.encode(X8, Y8).mean().shape == (40, 4)
    assert model.decode(np.zeros((5, 4)), [1, 2, 3, 4, 5]).mean().shape == (5, 8, 8, 1)
    assert model.reconstruct(X8, Y8).shape == (40, 8, 8, 1)
    assert model.predict(X8, Y8, verbose=0).shape == (40, 8, 8, 1)


def test_one_hot_labels_equal_integer_labels():
    model = _cvae()
    one_hot = np.eye(10, dtype="float32")[Y8]
    np.testing.assert_array_equal(model.reconstruct(X8, Y8), model.reconstruct(X8, one_hot))


def test_samples_depend_on_the_label_and_the_seed_only():
    model = _cvae()
    a, b = model.sample(8, y=2, seed=5), model.sample(8, y=2, seed=5)
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(model.sample(8, y=7, seed=5))).max() > 0


def test_dataset_of_pairs_and_conv_networks_with_condition_vectors():
    keras.utils.set_random_seed(0)
    model = kv.ConditionalVAE(kv.ConvEncoder(3), kv.ConvDecoder((8, 8, 1)), condition_dim=2)
    model.compile(optimizer="adam")
    c = np.random.default_rng(2).normal(size=(40, 2)).astype("float32")
    model.fit(tf.data.Dataset.from_tensor_slices((X8, c)).batch(16), epochs=1, verbose=0)
    assert model.sample(4, y=[0.5, -1.0], seed=0).shape == (4, 8, 8, 1)
    assert np.isfinite(kv.log_likelihood(model, X8[:4], y=c[:4], num_samples=8).log_px).all()


def test_unconditional_network_configs_are_unchanged():
    enc, dec = kv.MLPEncoder(4, hidden=(8,)), kv.ConvDecoder((8, 8, 1))
    assert "condition_dim" not in enc.get_config()
    assert "condition_dim" not in dec.get_config()


# ---------------------------------------------------------------- save/load


def test_keras_round_trip_is_exact(tmp_path):
    model = _cvae()
    model.fit(X8, Y8, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "cvae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kv.ConditionalVAE) and loaded.num_classes == 10
    np.testing.assert_array_equal(loaded.sample(6, y=4, seed=1), model.sample(6, y=4, seed=1))
    np.testing.assert_array_equal(loaded.reconstruct(X8, Y8), model.reconstruct(X8, Y8))
    assert loaded.evaluate(X8, Y8, return_dict=True, verbose=0) == \
        model.evaluate(X8, Y8, return_dict=True, verbose=0)


# --------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.fit(X8, np.full(40, 10), verbose=0), ValueError, "in \\[0, 10\\)"),
    (lambda m: m.fit(X8, np.full(40, -1), verbose=0), ValueError, "in \\[0, 10\\)"),
    (lambda m: m.fit(X8, Y8.astype("float32") + 0.5, verbose=0), TypeError, "integer"),
    (lambda m: m.fit(X8, verbose=0), ValueError, "needs class labels"),
    (lambda m: m.fit(X8, Y8[:10], verbose=0), ValueError, "one entry per example"),
    (lambda m: m.evaluate(X8, verbose=0), ValueError, "needs class labels"),
    (lambda m: m.fit(X8, Y8, validation_data=(X8,), verbose=0), ValueError, "needs class"),
    (lambda m: m.sample(4, y=10), ValueError, "in \\[0, 10\\)"),
    (lambda m: m.sample(4), ValueError, "needs class labels"),
    (lambda m: m.sample(4, y=[1, 2]), ValueError, "one entry per example"),
    (lambda m: m.sample(4, y="3"), TypeError, "integer"),
    (lambda m: m.encode(X8), ValueError, "needs class labels"),
    (lambda m: kv.log_likelihood(m, X8, num_samples=2), ValueError, "needs class labels"),
    (lambda m: kv.log_likelihood(m, X8, y=Y8 + 10, num_samples=2), ValueError, "\\[0, 10\\)"),
    (lambda m: m.fit(tf.data.Dataset.from_tensor_slices((X8, Y8 + 10)).batch(8), verbose=0),
     ValueError, "\\[0, 10\\)"),
])
def test_bad_labels_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match) as info:
        call(_cvae())
    assert "Received:" in str(info.value)


def test_wrong_condition_width_and_arguments():
    model = _cvae(num_classes=None, condition_dim=3)
    with pytest.raises(ValueError, match="Received: y.shape=\\(40, 2\\)"):
        model.fit(X8, np.zeros((40, 2)), verbose=0)
    with pytest.raises(ValueError, match="exactly one"):
        kv.ConditionalVAE(kv.MLPEncoder(2), kv.MLPDecoder((8, 8, 1)))
    with pytest.raises(ValueError, match="exactly one"):
        kv.ConditionalVAE(kv.MLPEncoder(2), kv.MLPDecoder((8, 8, 1)), num_classes=2,
                          condition_dim=2)
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        kv.ConditionalVAE(kv.MLPEncoder(2), kv.MLPDecoder((8, 8, 1)), num_classes=0)


def test_labels_checker_refuses_bad_one_hot_rows():
    with pytest.raises(ValueError, match="one-hot"):
        validation.labels("y", np.full((2, 3), 0.5), 2, 3)
    np.testing.assert_array_equal(validation.labels("y", np.eye(3)[[2, 0]], 2, 3), [2, 0])


def test_unconditional_models_keep_their_behaviour_with_y(small_vae):
    vae = small_vae()
    with pytest.warns(validation.KerasVAEWarning, match="targets `y` are ignored"):
        vae.fit(X8, Y8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="unconditional"):
        kv.log_likelihood(vae, X8, y=Y8, num_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kv.log_likelihood(vae, X8, num_samples=2)


# ------------------------------------------------ linear-Gaussian closed forms
# p(z) = N(0, I), p(x|z, c) = N(W z + V c + b, s^2 I), c = one_hot(y)
#   => p(x|y) = N(b + V c, W W^T + s^2 I); with W^T W diagonal the exact posterior
#      q(z|x, c) = N(S W^T (x - b - V c) / s^2, S), S = (I + W^T W / s^2)^-1, is diagonal
#      and linear in (x, c): an MLPEncoder without hidden layers represents it exactly.

D, LATENT, CLASSES, NOISE = 5, 2, 3, 0.5
SOFTPLUS_SHIFT = math.log(math.expm1(1.0))


def _linear_model():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(D, LATENT)))
    w = q * np.array([1.5, 0.8])                       # orthogonal columns
    v = rng.normal(size=(D, CLASSES))
    b = rng.normal(size=D)
    model = kv.ConditionalVAE(
        kv.MLPEncoder(LATENT, hidden=(), min_scale=0.0),
        kv.MLPDecoder((D,), hidden=(), likelihood=kv.GaussianLikelihood((D,), scale=NOISE)),
        num_classes=CLASSES)
    dec = model.decoder.params_layer
    dec.kernel.assign(np.concatenate([w.T, v.T]).astype("float32"))
    dec.bias.assign(b.astype("float32"))
    return model, w, v, b


def _set_encoder(model, loc_kernel, loc_bias, scale):
    raw = np.log(np.expm1(scale)) - SOFTPLUS_SHIFT
    kernel = np.concatenate([loc_kernel, np.zeros_like(loc_kernel)], axis=1)
    model.encoder.params_layer.kernel.assign(kernel.astype("float32"))
    model.encoder.params_layer.bias.assign(np.concatenate([loc_bias, raw]).astype("float32"))


XL = np.random.default_rng(4).normal(size=(6, D)).astype("float32") * 2
YL = np.array([0, 1, 2, 2, 1, 0])


def test_log_likelihood_given_y_is_exact_with_the_exact_posterior():
    model, w, v, b = _linear_model()
    s = np.linalg.inv(np.eye(LATENT) + w.T @ w / NOISE**2)
    a = s @ w.T / NOISE**2                             # [d, D]: loc = a (x - b - V c)
    _set_encoder(model, np.concatenate([a.T, -(a @ v).T]), -a @ b, np.sqrt(np.diag(s)))
    ll = kv.log_likelihood(model, XL, y=YL, num_samples=50)
    cov = w @ w.T + NOISE**2 * np.eye(D)
    exact = [stats.multivariate_normal(b + v[:, y], cov).logpdf(x) for x, y in zip(XL, YL)]
    np.testing.assert_allclose(ll.log_px, exact, atol=1e-4)


def test_conditional_elbo_equals_the_closed_form():
    model, w, v, b = _linear_model()
    rng = np.random.default_rng(5)
    loc_kernel, loc_bias = rng.normal(size=(D + CLASSES, LATENT)) * 0.3, rng.normal(size=LATENT)
    scale = np.array([0.6, 1.3])
    _set_encoder(model, loc_kernel, loc_bias, scale)
    c = np.eye(CLASSES)[YL]
    m = np.concatenate([XL, c], axis=1) @ loc_kernel + loc_bias        # [N, d]
    mean_x = m @ w.T + c @ v.T + b
    expected_log_lik = (-0.5 * D * np.log(2 * np.pi * NOISE**2)
                        - (np.sum((XL - mean_x) ** 2, axis=1)
                           + np.sum(w**2 * scale**2)) / (2 * NOISE**2))
    kl = 0.5 * np.sum(scale**2 + m**2 - 1 - np.log(scale**2), axis=1)
    num_draws = 20000
    terms = kv.evaluation.elbo_terms(model, XL, y=YL, num_samples=num_draws)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5, atol=1e-5)
    # Monte Carlo reconstruction: log p(x|z,c) = const - |r - W sigma eps|^2 / (2 s^2) with
    # r = x - E[mean_x], so its variance is sum_j (g_j sigma_j)^2 + 2 sum_j (l_j sigma_j^2)^2
    # / (4 s^4), g = W^T r / s^2, l_j = |w_j|^2 (orthogonal columns). Tolerance: 5 errors.
    g = (XL - mean_x) @ w / NOISE**2
    lam = np.sum(w**2, axis=0)
    se = np.sqrt(np.sum((g * scale) ** 2, axis=1)
                 + 2 * np.sum((lam * scale**2) ** 2) / (4 * NOISE**4)) / np.sqrt(num_draws)
    assert np.all(np.abs(terms["elbo"] - (expected_log_lik - kl)) <= 5 * se + 1e-3), (
        terms["elbo"] - (expected_log_lik - kl), se)


# ------------------------------------------------------------- digits, seeded


def test_class_conditional_samples_are_the_asked_digit(digits):
    from sklearn.linear_model import LogisticRegression

    x, y = digits
    classifier = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
    keras.utils.set_random_seed(0)
    model = kv.ConditionalVAE(kv.MLPEncoder(8, hidden=(128,)),
                              kv.MLPDecoder((8, 8, 1), hidden=(128,)), num_classes=10)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    asked = np.repeat(np.arange(10), 50)
    samples = np.asarray(model.sample(len(asked), y=asked, seed=0)).reshape(len(asked), -1)
    accuracy = float(np.mean(classifier.predict(samples) == asked))
    # Chance is 10%; measured 1.00 (500 samples, every class 1.00; 30 epochs, seed 0).
    # Threshold: 60%.
    assert accuracy >= 0.6, accuracy


# ---------------------------------------------------------------- CLI, export

TINY = ["--epochs", "2", "--hidden", "16", "--eval-samples", "20", "--batch-size", "128"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    from keras_vae import cli

    path = str(tmp_path_factory.mktemp("cvae") / "run")
    assert cli.main(["--quiet", "train", path, *TINY, "--conditional"]) == 0
    return path


def _last_error(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_trains_a_conditional_run_and_samples_a_label(conditional_run, tmp_path, capsys):
    import json
    import os

    from keras_vae import cli, runs

    model, config = runs.load_run(conditional_run)
    assert isinstance(model, kv.ConditionalVAE) and model.num_classes == 10
    assert config["conditional"] is True
    assert os.path.isfile(os.path.join(conditional_run, "plots", "class_samples.png"))
    with open(os.path.join(conditional_run, "metrics.json")) as f:
        assert np.isfinite(json.load(f)["log_likelihood"])
    out = str(tmp_path / "s.npy")
    assert cli.main(["sample", conditional_run, "--label", "3", "-n", "16", "--seed", "2",
                     "--out", out]) == 0
    np.testing.assert_array_equal(np.load(out), model.sample(16, y=3, seed=2))
    capsys.readouterr()
    assert cli.main(["sample", conditional_run, "--label", "10", "-n", "4"]) == 2
    assert "Received:" in _last_error(capsys)
    assert cli.main(["sample", conditional_run, "-n", "4"]) == 2
    assert "--label" in _last_error(capsys)


def test_cli_refuses_label_for_an_unconditional_run(tmp_path, capsys):
    from keras_vae import cli

    path = str(tmp_path / "run")
    assert cli.main(["--quiet", "train", path, *TINY, "--epochs", "1", "--no-export", "--no-web",
                     "--no-plots"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", path, "--label", "3", "-n", "4"]) == 2
    assert "unconditional" in _last_error(capsys)


def test_exported_conditional_signatures_equal_keras(conditional_run, tmp_path):
    import os

    from keras_vae.export import parity, signatures

    model, _ = runs_load(conditional_run)
    version = os.path.join(conditional_run, "export", "saved_model", "1")
    names = signatures.read_signatures(version)
    assert names["decode"]["inputs"] == {"z": ("float32", (-1, model.latent_dim)),
                                         "y": ("int32", (-1,))}
    assert set(names["sample"]["inputs"]) == {"n", "y", "seed"}
    assert os.path.isfile(os.path.join(version, "assets.extra", "tf_serving_warmup_requests"))
    z = np.random.default_rng(0).normal(size=(5, model.latent_dim)).astype("float32")
    y = np.array([0, 3, 9, 3, 1], "int32")
    out = parity.run_saved_model_cli(version, "decode", {"z": z, "y": y})
    np.testing.assert_allclose(out["x_mean"], model.decode(z, y).mean(), atol=1e-5)
    out = parity.run_saved_model_cli(version, "encode", {"x": X8[:5], "y": y})
    np.testing.assert_allclose(out["z_mean"], model.encode(X8[:5], y).mean(), atol=1e-5)
    out = parity.run_session_loader(version, "sample", {
        "n": np.array(6, "int32"), "y": np.array([4], "int32"), "seed": np.array([3, 7],
                                                                               "int32")})
    np.testing.assert_allclose(out["x_mean"], model.sample(6, y=4, seed=3), atol=1e-5)
    with open(os.path.join(conditional_run, "export", "parity.json")) as f:
        import json
        report = json.load(f)
    assert all(row["within_tolerance"] for row in report["artifacts"].values())
    assert report["artifacts"]["tflite/sampler"]["sample_ok"]


def test_tflite_conditional_decoder_and_sampler_use_builtin_ops(conditional_run):
    import os

    from keras_vae.export import lite

    model, _ = runs_load(conditional_run)
    folder = os.path.join(conditional_run, "export", "tflite")
    # The CLI passes 500 training images, so "int8_full" is added (calibrated on prior
    # draws with labels b mod C: a CVAE has no classifier to label the images).
    assert sorted(os.listdir(folder)) == ["decoder_float16.tflite", "decoder_float32.tflite",
                                          "decoder_int8.tflite", "decoder_int8_full.tflite",
                                          "sampler.tflite"]
    z = np.random.default_rng(1).normal(size=(4, model.latent_dim)).astype("float32")
    y = np.array([2, 2, 7, 0], "int32")
    out = lite.run(os.path.join(folder, "decoder_float32.tflite"), "decode", z=z, y=y)
    np.testing.assert_allclose(out["x_mean"], model.decode(z, y).mean(), atol=1e-5)
    full = os.path.join(folder, "decoder_int8_full.tflite")
    out = lite.run(full, "decode", z=z, y=y)
    assert np.max(np.abs(out["x_mean"] - model.decode(z, y).mean())) < lite.INT8_FULL_TOLERANCE
    assert not any(op.startswith("CUSTOM") for op in lite.op_names(full))
    sampler = os.path.join(folder, "sampler.tflite")
    drawn = lite.run(sampler, "sample", n=np.array(5, "int32"), y=np.array([3], "int32"))
    assert drawn["x_mean"].shape == (5, 8, 8, 1) and np.all(np.isfinite(drawn["x_mean"]))
    assert {"EQUAL", "CAST"} <= lite.op_names(sampler)  # one-hot of y (not ONE_HOT: see
    # signatures.condition_of)


def runs_load(run_dir):
    from keras_vae import runs
    return runs.load_run(run_dir)
