"""The VampPrior (keras_vae.priors.VampPrior): density against a hand-computed mixture, the
memory-bounded log-density, pseudo-input range, sampling, save/load, exports, arguments, CLI."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import assert_cli_refuses
from scipy.special import logsumexp
from scipy.stats import norm

import keras_vae as kv
from keras_vae import cli, objectives, priors
from keras_vae.priors import VampPrior

D = 3


def _vae(num_components=7, likelihood="bernoulli", posterior="diagonal", **kwargs):
    keras.utils.set_random_seed(0)
    enc = kv.MLPEncoder(D, hidden=(16,), posterior=posterior)
    dec = kv.MLPDecoder((8, 8, 1), hidden=(16,), likelihood=likelihood)
    vae = kv.VAE(enc, dec, prior=VampPrior(num_components, **kwargs))
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    return vae


def _hand_log_density(vae, z):
    """log 1/K sum_k N(z; mu(u_k), sigma(u_k)) in float64 from the encoder's outputs."""
    q = vae.encoder(vae.prior.pseudo_inputs())
    mu = q.distribution.loc.numpy().astype("float64")              # [K, d]
    sigma = q.distribution.scale.numpy().astype("float64")
    comp = norm.logpdf(z[..., None, :], mu, sigma).sum(-1)          # [..., K]
    return logsumexp(comp, axis=-1) - np.log(len(mu))


def test_density_is_the_mixture_of_the_encoder_posteriors_at_the_pseudo_inputs(digits):
    vae = _vae()
    vae.prior.initialize_from(digits[0][:50], seed=1)  # distinct, data-like components
    z = np.random.default_rng(0).normal(size=(4, 5, D))
    got = vae.prior.distribution().log_prob(z.astype("float32")).numpy()
    np.testing.assert_allclose(got, _hand_log_density(vae, z), atol=1e-5)


def test_log_density_is_chunked_for_many_samples_and_500_components(monkeypatch):
    """Full-covariance components take the general, chunked path."""
    from scipy.stats import multivariate_normal
    vae = _vae(num_components=500, posterior="full")
    monkeypatch.setattr(priors, "_ELEMENT_BUDGET", 4 * 500 * D)  # chunks of 4 rows
    z = np.random.default_rng(1).normal(size=(3, 5, D)).astype("float32")  # 4 chunks, padded
    dist = vae.prior.distribution()
    fn = tf.function(dist.log_prob, input_signature=[tf.TensorSpec([None, None, D])])
    got = fn(z).numpy()
    q = vae.encoder(vae.prior.pseudo_inputs())
    mu = q.loc.numpy().astype("float64")
    tril = q.scale.to_dense().numpy().astype("float64")
    comp = np.stack([multivariate_normal(m, t @ t.T).logpdf(z.astype("float64"))
                     for m, t in zip(mu, tril)], -1)                          # [3, 5, K]
    np.testing.assert_allclose(got, logsumexp(comp, -1) - np.log(500), atol=1e-4)
    np.testing.assert_allclose(dist.log_prob(z[:1, :4]), got[:1, :4], atol=1e-6)  # one chunk


def test_diagonal_components_take_two_matmuls_with_the_exact_density(digits):
    """500 diagonal components with small scales (the expanded quadratic form cancels
    terms of size (z / s)^2; float64 keeps it exact), batch [C, B], under XLA too."""
    vae = _vae(num_components=500)
    vae.prior.initialize_from(digits[0][:500], seed=1)
    dist = vae.prior.distribution()
    q = dist.components_distribution.distribution
    rng = np.random.default_rng(2)
    loc, scale = q.loc.numpy(), q.scale.numpy()
    pick = rng.integers(0, 500, size=(6, 7))
    z = (loc[pick] + 0.5 * scale[pick] * rng.normal(size=(6, 7, D))).astype("float32")
    want = _hand_log_density(vae, z.astype("float64"))
    for fn in (dist.log_prob, tf.function(dist.log_prob, jit_compile=True)):
        np.testing.assert_allclose(fn(z).numpy(), want, atol=1e-5)
    # far from the origin, scale 1e-3: (z / s)^2 ~ 2.5e7 cancels to about 1
    mu, s_ = np.array([[5.0, -4.0, 3.0], [0.0, 0.0, 0.0]]), np.array([[1e-3] * 3, [1.0] * 3])
    zz = (mu[0] + s_[0] * np.array([0.3, -1.2, 0.8]))[None]
    got = priors._diagonal_mixture_log_prob(
        tf.constant(zz, tf.float32),
        tfp.distributions.Normal(tf.constant(mu, tf.float32), tf.constant(s_, tf.float32)),
        tf.math.log([0.5, 0.5])).numpy()
    want = logsumexp(norm.logpdf(zz.astype("float32").astype("float64")[:, None, :],
                                 mu, s_).sum(-1) + np.log(0.5), -1)
    np.testing.assert_allclose(got, want, rtol=1e-6)  # float32 is 1.1 nats (7%) off here


def test_kl_is_monte_carlo_also_with_analytic_kl(digits):
    vae = _vae()
    q = vae.encode(digits[0][:4])
    p = vae.prior.distribution()
    z = q.sample(30, seed=tf.constant([1, 2]))
    kl = objectives.kl_divergence(q, p, z=z, analytic=True)
    np.testing.assert_allclose(kl, tf.reduce_mean(q.log_prob(z) - p.log_prob(z), 0), atol=1e-5)


def test_pseudo_inputs_stay_in_the_data_range_and_start_as_in_the_paper():
    vae = _vae(num_components=200)
    prior = vae.prior
    assert prior.mode == "hardtanh"
    raw = prior.raw_pseudo_inputs.numpy()
    assert abs(raw.mean() - 0.05) < 0.002 and abs(raw.std() - 0.01) < 0.002
    prior.raw_pseudo_inputs.assign(raw * 100 - 5)            # far outside [0, 1]
    u = prior.pseudo_inputs().numpy()
    assert u.min() == 0.0 and u.max() == 1.0
    gaussian = _vae(likelihood="gaussian").prior
    assert gaussian.mode == "none"
    gaussian.raw_pseudo_inputs.assign(np.full(gaussian.raw_pseudo_inputs.shape, -3.0))
    assert gaussian.pseudo_inputs().numpy().min() == -3.0


def test_sampling_picks_a_component_then_draws_from_it():
    vae = _vae(num_components=2)
    prior = vae.prior
    u = np.zeros((2, 8, 8, 1), "float32")
    u[1] = 1.0
    prior.raw_pseudo_inputs.assign(u)
    q = vae.encoder(prior.pseudo_inputs())
    mu, var = q.mean().numpy(), q.variance().numpy()
    seed = tf.constant([3, 4])
    z = prior.distribution().sample(20000, seed=seed).numpy()
    np.testing.assert_array_equal(z, prior.distribution().sample(20000, seed=seed))
    mix_mean = mu.mean(0)
    mix_var = (var + mu ** 2).mean(0) - mix_mean ** 2
    np.testing.assert_allclose(z.mean(0), mix_mean, atol=0.05)
    np.testing.assert_allclose(z.var(0), mix_var, rtol=0.06)
    assert vae.sample(5, seed=0).shape == (5, 8, 8, 1)


def test_fit_evaluate_log_likelihood_and_exact_round_trip(digits, tmp_path):
    x = digits[0][:512]
    vae = _vae(num_components=20)
    loss = vae.fit(x, epochs=3, batch_size=128, verbose=0).history["loss"]
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0] - 1.0
    assert np.isfinite(vae.evaluate(x[:64], return_dict=True, verbose=0)["kl"])
    path = str(tmp_path / "vamp.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    z = np.random.default_rng(0).normal(size=(6, D)).astype("float32")
    np.testing.assert_array_equal(vae.prior.distribution().log_prob(z),
                                  loaded.prior.distribution().log_prob(z))
    np.testing.assert_array_equal(vae.sample(4, seed=2), loaded.sample(4, seed=2))
    paths = [w.path for w in loaded.weights]
    assert sum("raw_pseudo_inputs" in p for p in paths) == 1
    assert len(paths) == len(set(paths)) and not any("vamp_prior/" in p and "dense" in p
                                                     for p in paths)
    ll = kv.log_likelihood(loaded, x[:4], num_samples=5000, batch_size=4).log_px
    assert np.all(np.isfinite(ll))


def test_savedmodel_sample_signature_and_builtin_tflite_sampler(digits, tmp_path):
    from keras_vae.export import lite as tl
    from keras_vae.export import signatures

    vae = _vae(num_components=5)
    vae.fit(digits[0][:128], epochs=1, batch_size=64, verbose=0)
    out = signatures.sample_outputs(vae, 6, tf.constant([3, 7]))
    np.testing.assert_allclose(out["x_mean"], vae.sample(6, seed=3), atol=1e-6)
    content = tl.convert(vae, variants=(), sampler=True)["sampler"]
    z = tl.run(content, "sample", n=np.array(4000, np.int32))["z"]
    ref = vae.prior.distribution().sample(4000, seed=0).numpy()
    np.testing.assert_allclose(z.mean(0), ref.mean(0), atol=0.1)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"num_components": 0}, ValueError, "num_components"),
    ({"num_components": -5}, ValueError, "num_components"),
    ({"num_components": 2.5}, TypeError, "num_components"),
    ({"pseudo_inputs": "sigmoid"}, ValueError, "pseudo_inputs"),
    ({"latent_dim": 0}, ValueError, "latent_dim"),
])
def test_bad_arguments_are_refused_clearly(kwargs, error, match):
    with pytest.raises(error, match=f"{match}.*Received: {match}="):
        VampPrior(**kwargs)


def test_encoders_it_cannot_use_are_refused():
    enc = kv.MLPEncoder(D, hidden=(8,))
    with pytest.raises(ValueError, match="fixed input shape"):
        VampPrior(3).attach(enc, (None, 4))
    with pytest.raises(ValueError, match="IAF.*Received: encoder.head=IAFPosterior"):
        _vae(posterior="iaf")
    with pytest.raises(ValueError, match="latent_dim must match"):
        kv.VAE(enc, kv.MLPDecoder((8, 8, 1), hidden=(8,)), prior=VampPrior(3, latent_dim=5))
    with pytest.raises(ValueError, match="bounded support"):
        _vae(likelihood="gaussian", pseudo_inputs="hardtanh")
    with pytest.raises(ValueError, match="has no encoder"):
        VampPrior(3).distribution()


def test_cli_accepts_prior_vamp_and_refuses_bad_values(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["--quiet", "train", run, "--prior", "vamp", "--prior-components", "7",
                     "--epochs", "1", "--hidden", "16", "--eval-samples", "5", "--no-export",
                     "--no-web", "--no-plots"]) == 0
    loaded = keras.models.load_model(os.path.join(run, "model.keras"))
    assert isinstance(loaded.prior, VampPrior) and loaded.prior.num_components == 7
    capsys.readouterr()
    for flags, needle in ((["--prior-components", "5"], "applies to --prior mixture or vamp"),
                          (["--prior", "mixture", "--prior-components", "0"], "prior_components"),
                          (["--prior", "vamp", "--prior-components", "x"], "prior-components")):
        assert_cli_refuses(capsys, ["train", str(tmp_path / "bad"), *flags], needle,
                           tmp_path / "bad")
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage line + one error line
        cli.main(["train", str(tmp_path / "bad"), "--prior", "vampprior"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not os.path.exists(tmp_path / "bad")
    assert "invalid choice: 'vampprior'" in err[-1] and "'vamp'" in err[-1]
