"""HierarchicalVAE (issue 16): closed forms on a linear-Gaussian hierarchy, IWAE in K,
save/load, bad arguments, a short training run, estimators, export and the CLI flag."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import keras_vae as kv
from keras_vae import cli, config, estimators, latent
from keras_vae.hierarchical import HierarchicalVAE

# ---------------------------------------------------------------- a linear-Gaussian hierarchy
#   z2 ~ N(0, I_2),  z1 | z2 ~ N(A z2 + a, s1^2 I_3),  x | z1 ~ N(B z1 + b, s2^2 I_4)
# A has one non-zero per column and row, B orthogonal columns: the exact posteriors
# p(z1|x) and p(z2|z1) are then diagonal Gaussians, which the model's heads can hold.
D, D1, D2 = 4, 3, 2
S1, S2 = 0.7, 0.5
A = np.array([[1.5, 0.0], [0.0, -0.8], [0.0, 0.0]])
a = np.array([0.3, -0.2, 0.5])
BETA_B = np.array([1.2, 0.6, 2.0])
Q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(D, D1)))
B = Q * BETA_B  # D x D1, B^T B = diag(BETA_B^2)
b = np.array([0.1, -0.4, 0.2, 0.0])
X = np.array([[0.5, -1.0, 2.0, 0.3], [-1.5, 0.2, 0.0, 1.1], [3.0, 1.0, -2.0, -0.5]])


def _softplus_inv(y):
    return np.log(np.expm1(y))


def _set_gaussian(layer, kernel, bias, scale):
    """Sets an MLPEncoder without hidden layers to N(kernel^T h + bias, diag(scale^2))."""
    d = layer.latent_dim
    k = np.zeros((kernel.shape[0], 2 * d))
    k[:, :d] = kernel
    raw = _softplus_inv(np.broadcast_to(scale, (d,))) - _softplus_inv(1.0)  # min_scale = 0
    layer.params_layer.set_weights([k.astype("float32"),
                                    np.concatenate([bias, raw]).astype("float32")])


def _linear_model(q1=None, q2=None, **kwargs):
    """The hierarchy above as a HierarchicalVAE; q1/q2 = (kernel, bias, scale) of
    q(z1|x) and q(z2|z1), default: the exact posteriors."""
    model = HierarchicalVAE((D,), latent_dims=(D1, D2), hidden=((), ()), min_scale=0.0,
                            likelihood=kv.GaussianLikelihood((D,), scale=S2), **kwargs)
    c = np.array([A[0, 0] ** 2, A[1, 1] ** 2, 0.0]) + S1 ** 2     # diag Cov(z1)
    var1 = 1.0 / (1.0 / c + BETA_B ** 2 / S2 ** 2)                # exact Var(z1|x)
    w1 = (var1[:, None] * B.T / S2 ** 2)                          # mean = w1 x + c1
    c1 = var1 * (a / c - B.T @ b / S2 ** 2)
    alpha2 = np.array([A[0, 0] ** 2, A[1, 1] ** 2])
    var2 = 1.0 / (1.0 + alpha2 / S1 ** 2)                         # exact Var(z2|z1)
    w2 = var2[:, None] * A.T / S1 ** 2
    c2 = -w2 @ a
    q1 = q1 or (w1.T, c1, np.sqrt(var1))
    q2 = q2 or (w2.T, c2, np.sqrt(var2))
    _set_gaussian(model.encoder, *q1)
    _set_gaussian(model.inference_layers[0], *q2)
    _set_gaussian(model.generative_layers[0], A.T, a, S1)
    model.decoder.params_layer.set_weights([B.T.astype("float32"), b.astype("float32")])
    return model


def _log_px():
    cov = B @ (A @ A.T + S1 ** 2 * np.eye(D1)) @ B.T + S2 ** 2 * np.eye(D)
    return stats.multivariate_normal(B @ a + b, cov).logpdf(X)


def test_exact_posteriors_make_every_log_weight_log_px():
    model = _linear_model()
    log_w, _ = model.log_importance_weights(tf.constant(X, tf.float32),
                                            tf.random.split(tf.constant([1, 2]), 50))
    np.testing.assert_allclose(log_w.numpy(), np.broadcast_to(_log_px(), (50, len(X))),
                               atol=1e-4)


def test_elbo_with_exact_posteriors_equals_closed_form_log_px():
    model = _linear_model(analytic_kl=False)
    terms = model.compute_terms(tf.constant(X, tf.float32), num_samples=3)
    np.testing.assert_allclose(terms["elbo"].numpy(), _log_px(), atol=1e-4)
    # kl_z1 + kl_z2 = kl and the ELBO splits into reconstruction and KL
    np.testing.assert_allclose((terms["kl_z1"] + terms["kl_z2"]).numpy(), terms["kl"].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(estimators.log_likelihood(model, X, num_samples=7).log_px,
                               _log_px(), atol=1e-4)
    iwae = _linear_model(objective="iwae", num_samples=4).compute_terms(
        tf.constant(X, tf.float32))["iwae"]
    np.testing.assert_allclose(iwae.numpy(), _log_px(), atol=1e-4)


def _elbo_closed_form(x, q1, q2):
    """E_q[log w] for q(z1|x) = N(K1^T x + c1, diag s1^2), q(z2|z1) = N(K2^T z1 + c2, diag s2^2)."""
    (k1, c1, sd1), (k2, c2, sd2) = q1, q2
    m1, var1 = k1.T @ x + c1, sd1 ** 2
    f, var2 = k2.T, sd2 ** 2
    m2 = f @ m1 + c2
    log_px = (-D / 2 * math.log(2 * math.pi * S2 ** 2)
              - (np.sum((x - B @ m1 - b) ** 2) + np.sum(np.diag(B.T @ B) * var1)) / (2 * S2 ** 2))
    neg_h1 = -D1 / 2 * math.log(2 * math.pi * math.e) - 0.5 * np.sum(np.log(var1))
    neg_h2 = -D2 / 2 * math.log(2 * math.pi * math.e) - 0.5 * np.sum(np.log(var2))
    log_p2 = -D2 / 2 * math.log(2 * math.pi) - 0.5 * (
        m2 @ m2 + np.trace(f @ np.diag(var1) @ f.T) + np.sum(var2))
    g = np.eye(D1) - A @ f
    r = g @ m1 - A @ c2 - a
    log_p1 = -D1 / 2 * math.log(2 * math.pi * S1 ** 2) - (
        r @ r + np.trace(g @ np.diag(var1) @ g.T) + np.trace(A @ np.diag(var2) @ A.T)
    ) / (2 * S1 ** 2)
    return log_px + log_p1 + log_p2 - neg_h1 - neg_h2


@pytest.mark.parametrize("analytic_kl", [False, True])
def test_elbo_with_other_posteriors_matches_gaussian_expectations(analytic_kl):
    rng = np.random.default_rng(0)
    q1 = (rng.normal(size=(D, D1)) * 0.3, rng.normal(size=D1) * 0.2, np.array([0.4, 0.9, 0.6]))
    q2 = (rng.normal(size=(D1, D2)) * 0.5, rng.normal(size=D2) * 0.2, np.array([0.5, 1.1]))
    model = _linear_model(q1, q2, analytic_kl=analytic_kl)
    x = X[:1]
    # Monte Carlo (1e-4 is out of reach: the spread of log w is about 7 nats here):
    # 20 batches of 20000 samples, their mean and its standard error, 4 SE allowed.
    estimates = [model.compute_terms(tf.constant(x, tf.float32), num_samples=20000,
                                     seed=tf.constant([i, 11]))["elbo"].numpy()[0]
                 for i in range(20)]
    se = np.std(estimates, ddof=1) / math.sqrt(len(estimates))
    closed = _elbo_closed_form(x[0], q1, q2)
    assert closed < _log_px()[0] - 0.5  # a loose bound: the test can tell them apart
    assert se < 0.02  # measured: about 0.011
    assert abs(np.mean(estimates) - closed) < 4 * se + 1e-4, (np.mean(estimates), closed, se)


def _exact_kl_per_dimension():
    """Batch mean over X of each latent dimension's KL term under the exact posteriors:
    z1_d's Monte Carlo term E[log q(z1_d|x) - log p(z1_d|z2)] and z2_d's closed-form
    E_z1[KL(q(z2_d|z1) || N(0, 1))], in closed form (A and the exact w2 are diagonal)."""
    c = np.array([A[0, 0] ** 2, A[1, 1] ** 2, 0.0]) + S1 ** 2
    var1 = 1.0 / (1.0 / c + BETA_B ** 2 / S2 ** 2)
    m1 = (var1[:, None] * B.T / S2 ** 2 @ X.T).T + var1 * (a / c - B.T @ b / S2 ** 2)  # [3, D1]
    alpha2 = np.array([A[0, 0] ** 2, A[1, 1] ** 2])
    var2 = 1.0 / (1.0 + alpha2 / S1 ** 2)
    w = np.array([var2[0] * A[0, 0] / S1 ** 2, var2[1] * A[1, 1] / S1 ** 2, 0.0])  # z2_d from z1_d
    c2 = -w[:2] * a[:2]
    g = np.array([A[0, 0], A[1, 1], 0.0])  # z1_d's mean given z2_d is g_d z2_d + a_d
    shift = np.append(c2, 0.0)
    var2d = np.append(var2, 0.0)
    resid_mean = m1 * (1 - g * w) - g * shift - a
    resid_sq = resid_mean ** 2 + (1 - g * w) ** 2 * var1 + g ** 2 * var2d
    kl1 = (-0.5 * np.log(2 * math.pi * math.e * var1) + 0.5 * np.log(2 * math.pi * S1 ** 2)
           + resid_sq / (2 * S1 ** 2))
    m2 = m1[:, :2] * w[:2] + c2
    kl2 = 0.5 * (var2 + m2 ** 2 + w[:2] ** 2 * var1[:2] - 1.0 - np.log(var2))
    return kl1.mean(axis=0), kl2.mean(axis=0)


def test_free_bits_floor_each_dimensions_batch_mean_kl():
    kl1, kl2 = _exact_kl_per_dimension()
    x = tf.constant(X, tf.float32)
    plain = _linear_model().compute_terms(x, num_samples=20000, seed=tf.constant([3, 4]))
    # the closed form above is the model's KL, dimension by dimension
    assert float(tf.reduce_mean(plain["kl"])) == pytest.approx(kl1.sum() + kl2.sum(), abs=0.03)
    for lam in ((0.9, 0.9), (0.2, 1.2)):
        model = _linear_model(free_bits=lam if lam[0] != lam[1] else lam[0])
        terms = model.compute_terms(x, num_samples=20000, seed=tf.constant([3, 4]))
        floored = np.maximum(kl1, lam[0]).sum() + np.maximum(kl2, lam[1]).sum()
        assert floored > kl1.sum() + kl2.sum() + 0.3  # the floor matters here
        expected = float(tf.reduce_mean(terms["reconstruction"])) + floored
        assert float(terms["loss"]) == pytest.approx(expected, abs=0.03)
        # the reported ELBO and KL are the model's, not the floored loss
        np.testing.assert_allclose(terms["elbo"].numpy(), plain["elbo"].numpy(), atol=1e-4)
    # a floor above every dimension's KL: the KL term is the floor times the dimensions,
    # exactly, with the mixture prior's KL (no per-dimension form) floored as a whole
    for prior in (None, "mixture"):
        terms = _linear_model(free_bits=50.0, prior=prior).compute_terms(x, num_samples=5)
        assert float(terms["loss"]) == pytest.approx(
            float(tf.reduce_mean(terms["reconstruction"])) + 50.0 * (D1 + D2), abs=1e-3)


def test_free_bits_arguments_and_config():
    model = HierarchicalVAE((8,), latent_dims=(4, 2), hidden=(8,), free_bits=(0.1, 0.25))
    assert model.free_bits == (0.1, 0.25)
    assert model.get_config()["free_bits"] == [0.1, 0.25]
    assert HierarchicalVAE.from_config(model.get_config()).free_bits == (0.1, 0.25)
    assert HierarchicalVAE((8,), latent_dims=(4, 2), free_bits=0.5).free_bits == (0.5, 0.5)
    assert "free_bits" not in HierarchicalVAE((8,), latent_dims=(4, 2)).get_config()
    for bad, match in [(-0.1, "free_bits"), ((0.1,), "one value per stochastic layer"),
                       ("0.1", "free_bits"), ((0.1, float("nan")), r"free_bits\[1\]")]:
        with pytest.raises((ValueError, TypeError), match=match):
            HierarchicalVAE((8,), latent_dims=(4, 2), free_bits=bad)
    with pytest.raises(ValueError, match="'elbo' objective only"):
        HierarchicalVAE((8,), latent_dims=(4, 2), objective="iwae", free_bits=0.1)


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    (x, _), (xt, _) = kv.data.load("digits", binarize="static", seed=0)
    return x[:600], xt[:100]


@pytest.fixture(scope="module")
def trained(digits):
    x, _ = digits
    keras.utils.set_random_seed(0)
    model = HierarchicalVAE(x.shape[1:], latent_dims=(8, 4), hidden=(32,), objective="iwae",
                            num_samples=3, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, epochs=6, batch_size=64, verbose=0)
    return model, history


def test_short_seeded_training_improves_the_loss_and_reports_per_layer_kl(trained, digits):
    model, history = trained
    loss = history.history["loss"]
    assert loss[-1] < loss[0] - 3.0, loss
    result = model.evaluate(digits[1], return_dict=True, verbose=0)
    assert {"loss", "elbo", "iwae", "reconstruction", "kl", "kl_z1", "kl_z2", "beta"} <= set(result)
    assert result["kl"] == pytest.approx(result["kl_z1"] + result["kl_z2"], abs=1e-3)
    assert result["iwae"] >= result["elbo"]


def test_iwae_estimate_increases_with_k(trained, digits):
    model, _ = trained
    means = [kv.log_likelihood(model, digits[1], num_samples=k, seed=4).mean()
             for k in (1, 5, 50, 500)]
    assert all(lo < hi for lo, hi in zip(means, means[1:])), means
    elbo = estimators.elbo_terms(model, digits[1], num_samples=50, seed=4)["elbo"].mean()
    assert elbo == pytest.approx(means[0], abs=1.0)  # both estimate the ELBO


def test_log_likelihood_does_not_depend_on_the_chunk_size(trained, digits):
    model, _ = trained
    full = kv.log_likelihood(model, digits[1][:20], num_samples=40, seed=2).log_px
    chunked = kv.log_likelihood(model, digits[1][:20], num_samples=40, seed=2,
                                chunk_size=7).log_px
    np.testing.assert_allclose(full, chunked, rtol=1e-6)


def test_save_load_round_trip_is_exact(trained, digits, tmp_path):
    model, _ = trained
    path = str(tmp_path / "h.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, HierarchicalVAE)
    assert loaded.latent_dims == model.latent_dims and loaded.hidden == model.hidden
    for w, v in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy())
    x = digits[1]
    np.testing.assert_array_equal(model.sample(5, seed=3), loaded.sample(5, seed=3))
    np.testing.assert_array_equal(kv.log_likelihood(model, x, num_samples=20).log_px,
                                  kv.log_likelihood(loaded, x, num_samples=20).log_px)
    assert model.evaluate(x, return_dict=True, verbose=0) == \
        loaded.evaluate(x, return_dict=True, verbose=0)


def test_sample_encode_decode_reconstruct_shapes(trained, digits):
    model, _ = trained
    x = digits[1][:5]
    assert model.sample(6, seed=0).shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(model.sample(6, seed=0), model.sample(6, seed=0))
    assert model.encode(x).event_shape == (8,) and model.encode(x, layer=2).event_shape == (4,)
    assert model.decode(np.zeros((3, 8), "float32")).batch_shape == (3,)
    top = model.decode(np.zeros((2, 3, 4), "float32"), layer=2)
    assert top.batch_shape == (2, 3) and top.event_shape == (8, 8, 1)
    assert model.reconstruct(x).shape == x.shape
    assert latent.active_units_per_layer(model, digits[1])[0] == latent.active_units(
        model, digits[1])
    assert len(latent.active_units_per_layer(model, digits[1])) == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"latent_dims": (5,)}, "two or more"),
    ({"latent_dims": 5}, "two or more"),
    ({"latent_dims": (5, 0)}, r"latent_dims\[1\]"),
    ({"hidden": ((8,), (8,), (8,))}, "one tuple of widths per stochastic layer"),
    ({"hidden": ()}, "Received: hidden=()"),
    ({"objective": "miwae"}, "Received: objective='miwae'"),
    ({"num_samples": 0}, "num_samples"),
    ({"beta": -1.0}, "beta"),
    ({"activation": "nope"}, "Received: activation='nope'"),
    ({"prior": "bogus"}, "Received: prior='bogus'"),
    ({"prior": "vamp"}, "Received: prior='vamp'"),
])
def test_bad_arguments_are_clear(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        HierarchicalVAE((8,), **{"latent_dims": (4, 2), **kwargs})


def test_bad_layer_and_latents_are_clear():
    model = HierarchicalVAE((8,), latent_dims=(4, 2), hidden=(8,))
    with pytest.raises(ValueError, match="Received: layer=3"):
        model.encode(np.zeros((1, 8), "float32"), layer=3)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        model.decode(np.zeros((1, 4), "float32"), layer=2)
    with pytest.raises(TypeError, match="analytic_kl"):
        HierarchicalVAE((8,), latent_dims=(4, 2), analytic_kl="yes")


def test_export_decodes_the_top_latent(trained, tmp_path):
    model, _ = trained
    path = kv.export.saved_model(model, str(tmp_path / "sm"), warmup=False)
    loaded = tf.saved_model.load(path)
    z2 = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    out = loaded.signatures["decode"](z=tf.constant(z2))
    np.testing.assert_allclose(out["x_mean"].numpy(), model.decode(z2, layer=2).mean().numpy(),
                               atol=1e-6)
    sample = loaded.signatures["sample"](n=tf.constant(4), seed=tf.constant([5, 7]))
    np.testing.assert_allclose(sample["x_mean"].numpy(),
                               model.export_view().sample(4, seed=5).numpy(), atol=1e-6)
    assert sample["z"].shape == (4, 4)
    files = kv.export.tflite(model, str(tmp_path / "lite"), variants=("float32",))
    assert set(files) == {"float32", "sampler"} and all(os.path.getsize(p) for p in files.values())


# ---------------------------------------------------------------- run config / CLI


def test_config_latent_dims():
    out = config.validate({"latent_dims": [100, 50]})
    assert out["latent_dims"] == [100, 50] and out["latent_dim"] == 100
    assert config.validate(out) == out  # a saved config validates again (resume)
    with pytest.raises(ValueError, match="Give either `latent_dim`"):
        config.validate({"latent_dims": [100, 50], "latent_dim": 8})
    with pytest.raises(ValueError, match="architecture='mlp'"):
        config.validate({"latent_dims": [4, 2], "architecture": "conv"})
    with pytest.raises(ValueError, match="two or more"):
        config.validate({"latent_dims": [4]})


def _run_cli(argv):
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("flags, match", [
    (["--latent-dims", "100,x"], "comma-separated integers"),
    (["--latent-dims", "100"], "two or more"),
    (["--latent-dims", "100,0"], "latent_dims[1]"),
    (["--latent-dims", "100,50", "--latent-dim", "8"], "Give either"),
    (["--latent-dims", "100,50", "--posterior", "full"], "posterior='diagonal'"),
    (["--latent-dims", "100,50", "--prior", "vamp"], "prior='vamp'"),
])
def test_cli_latent_dims_bad_values_exit_2(flags, match, capsys, tmp_path):
    assert _run_cli(["train", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not os.path.exists(tmp_path / "r")


def test_build_makes_a_hierarchical_vae():
    from keras_vae import build
    model = build.build_model(config.validate({"latent_dims": [6, 3], "hidden": [16],
                                               "objective": "iwae", "num_samples": 2}), (8,))
    assert isinstance(model, HierarchicalVAE)
    assert model.latent_dims == (6, 3) and model.hidden == ((16,), (16,))
    assert model.objective == "iwae" and model.num_samples == 2
    model = build.build_model(config.validate({"latent_dims": [6, 3], "hidden": [16],
                                               "free_bits": 0.125}), (8,))
    assert model.free_bits == (0.125, 0.125)
    default = build.build_model(config.validate({"latent_dims": [6, 3]}), (8,))
    assert default.hidden == ((100, 100), (50, 50))
