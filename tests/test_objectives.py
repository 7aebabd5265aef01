"""Objectives against closed forms: Gaussian KL, and a linear-Gaussian model whose
exact log p(x) is known, so the ELBO and IWAE bounds can be checked to the digit."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

import keras_vae as kv
from keras_vae import objectives

tfd = tfp.distributions
SEED = tf.constant([3, 4], tf.int32)


def _diag(mu, sigma):
    return tfd.Independent(tfd.Normal(np.float32(mu), np.float32(sigma)), 1)


def _std_normal(d):
    return kv.StandardNormalPrior(d).distribution()


def test_analytic_kl_matches_the_gaussian_formula():
    mu = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], "float32")
    sigma = np.array([[0.3, 1.5, 1.0], [1.0, 1.0, 1.0]], "float32")
    expected = 0.5 * np.sum(mu**2 + sigma**2 - 1 - np.log(sigma**2), axis=-1)
    kl = objectives.kl_divergence(_diag(mu, sigma), _std_normal(3))
    np.testing.assert_allclose(kl, expected, rtol=1e-6)
    assert expected[1] == 0.0


def test_monte_carlo_kl_agrees_with_analytic_kl():
    mu = np.array([[0.5, -1.0, 2.0]], "float32")
    sigma = np.array([[0.3, 1.5, 1.0]], "float32")
    q, p = _diag(mu, sigma), _std_normal(3)
    z = kv.distributions.reparameterized_sample(q, 200_000, SEED)
    mc = objectives.kl_divergence(q, p, z=z, analytic=False)
    np.testing.assert_allclose(mc, objectives.kl_divergence(q, p), rtol=1e-2)


def test_full_covariance_kl_matches_formula():
    head = kv.FullCovariancePosterior(3)
    q = head(np.random.default_rng(1).normal(size=(1, head.params_size())).astype("float32"))
    mu, cov = q.mean().numpy()[0], q.covariance().numpy()[0]
    expected = 0.5 * (np.trace(cov) + mu @ mu - 3 - np.log(np.linalg.det(cov)))
    np.testing.assert_allclose(objectives.kl_divergence(q, _std_normal(3)), [expected],
                               rtol=1e-4)


def test_mixture_prior_falls_back_to_monte_carlo_and_needs_samples():
    prior = kv.MixturePrior(2, num_components=3)
    prior.build()
    q = _diag([[0.0, 0.0]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="Received: z=None"):
        objectives.kl_divergence(q, prior.distribution())


def test_mixture_prior_monte_carlo_kl_matches_an_independent_numpy_estimate():
    """KL(q || MoG) from kv (TFP samples) vs E_q[log q - log p] by numpy/scipy with its
    own draws: agree within 5 combined standard errors, and differ from KL(q || N(0, I))."""
    from scipy.special import logsumexp

    prior = kv.MixturePrior(2, num_components=3, seed=1)
    prior.build()
    prior.locs.assign([[2.0, -1.0], [-1.5, 0.5], [0.0, 2.5]])
    prior.raw_scales.assign(np.log(np.expm1([[0.5, 0.8], [1.2, 0.4], [0.7, 0.7]])))
    prior.logits.assign([0.5, -0.3, 0.0])
    mu = np.array([[0.5, -0.2], [-1.0, 1.0]], "float32")
    sigma = np.array([[0.6, 1.1], [0.3, 0.5]], "float32")
    q = _diag(mu, sigma)
    n = 100_000
    z = kv.distributions.reparameterized_sample(q, n, SEED)
    kl = objectives.kl_divergence(q, prior.distribution(), z=z).numpy()
    per = (q.log_prob(z) - prior.distribution().log_prob(z)).numpy()
    se_kv = per.std(axis=0) / np.sqrt(n)

    rng = np.random.default_rng(0)
    locs, logits = prior.locs.numpy(), prior.logits.numpy()
    scales = np.log1p(np.exp(prior.raw_scales.numpy())) + 1e-4
    zz = mu + sigma * rng.standard_normal((n,) + mu.shape)                  # [n, B, d]
    log_q = stats.norm.logpdf(zz, mu, sigma).sum(-1)
    log_w = logits - logsumexp(logits)
    log_comp = stats.norm.logpdf(zz[..., None, :], locs, scales).sum(-1)    # [n, B, K]
    log_p = logsumexp(log_comp + log_w, axis=-1)
    ref = (log_q - log_p).mean(0)
    se_ref = (log_q - log_p).std(0) / np.sqrt(n)
    assert np.all(np.abs(kl - ref) < 5 * np.hypot(se_kv, se_ref)), (kl, ref, se_kv, se_ref)
    gaussian = objectives.kl_divergence(q, _std_normal(2)).numpy()
    assert np.all(np.abs(kl - gaussian) > 20 * se_kv), (kl, gaussian)


def test_free_bits_keeps_each_dimension_at_least_lambda():
    q = _diag([[0.1, 3.0]], [[1.0, 1.0]])  # KL per dim: 0.005, 4.5
    terms = objectives.elbo(np.zeros((1, 1), "float32"), q,
                            lambda z: _diag(tf.zeros_like(z[..., :1]), 1.0),
                            _std_normal(2), seed=SEED, free_bits=0.5)
    rec = float(tf.reduce_mean(terms["reconstruction"]))
    np.testing.assert_allclose(float(terms["loss"]) - rec, 0.5 + 4.5, rtol=1e-5)


# --------------------------------------------------------------------------
# Linear-Gaussian model: p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I)
#   => p(x) = N(b, W W^T + s^2 I), p(z|x) = N(S W^T (x - b) / s^2, S),
#      S = (I + W^T W / s^2)^-1.
# --------------------------------------------------------------------------

D, K_LATENT, NOISE = 5, 2, 0.5
_rng = np.random.default_rng(7)
W = _rng.normal(size=(D, K_LATENT)).astype("float32")
B = _rng.normal(size=D).astype("float32")
X = _rng.normal(size=(6, D)).astype("float32") * 2.0


def _likelihood(z):
    return tfd.Independent(tfd.Normal(tf.einsum("dk,...k->...d", W, z) + B, NOISE), 1)


def _exact_log_px():
    return stats.multivariate_normal(B, W @ W.T + NOISE**2 * np.eye(D)).logpdf(X)


def _exact_posterior():
    cov = np.linalg.inv(np.eye(K_LATENT) + W.T @ W / NOISE**2)
    mean = (X - B) @ W @ cov.T / NOISE**2
    return tfd.MultivariateNormalTriL(mean.astype("float32"),
                                      np.linalg.cholesky(cov).astype("float32"))


def _wrong_posterior():
    return _diag(np.zeros((len(X), K_LATENT)), np.full((len(X), K_LATENT), 0.7))


def test_elbo_with_exact_posterior_equals_log_px():
    terms = objectives.elbo(X, _exact_posterior(), _likelihood, _std_normal(K_LATENT),
                            seed=SEED, num_samples=1, analytic_kl=False)
    np.testing.assert_allclose(terms["elbo"], _exact_log_px(), atol=1e-4)


def test_elbo_with_wrong_posterior_lies_below_log_px():
    terms = objectives.elbo(X, _wrong_posterior(), _likelihood, _std_normal(K_LATENT),
                            seed=SEED, num_samples=2000)
    gap = _exact_log_px() - terms["elbo"].numpy()
    assert np.all(gap > 0.1), gap


def test_iwae_with_exact_posterior_equals_log_px_for_any_k():
    for k in (1, 7, 100):
        terms = objectives.iwae(X, _exact_posterior(), _likelihood, _std_normal(K_LATENT),
                                seed=SEED, num_samples=k)
        np.testing.assert_allclose(terms["iwae"], _exact_log_px(), atol=1e-4)


def test_iwae_increases_with_k_toward_log_px():
    bounds = []
    for k in (1, 5, 50, 5000):
        # Average several seeds so the ordering is about expectations, not one draw.
        vals = [objectives.iwae(X, _wrong_posterior(), _likelihood, _std_normal(K_LATENT),
                                seed=tf.constant([s, 0]), num_samples=k)["iwae"].numpy()
                for s in range(20)]
        bounds.append(np.mean(vals, axis=0))
    exact = _exact_log_px()
    for lower, higher in zip(bounds, bounds[1:]):
        assert np.all(lower <= higher + 1e-3)
    assert np.all(bounds[-1] <= exact + 1e-2)
    assert np.all(exact - bounds[-1] < exact - bounds[0])


def test_reconstruction_term_alone_gives_encoder_gradients():
    """The reparameterization trick: d/dphi E_q[log p(x|z)] flows through the sample."""
    enc = kv.MLPEncoder(latent_dim=2, hidden=(8,))
    enc.build((None, D))
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        terms = objectives.elbo(x, enc(x), _likelihood, _std_normal(2), seed=SEED)
        rec = tf.reduce_mean(terms["reconstruction"])
    grads = tape.gradient(rec, enc.trainable_variables)
    assert all(g is not None for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_bits_per_dim():
    assert objectives.bits_per_dim(784 * np.log(2.0), 784) == pytest.approx(1.0)


def test_image_likelihoods_are_scored_on_flat_views_with_the_same_number():
    """masked_log_prob scores [..., 28, 28, 1]-shaped likelihoods on [..., 784] views of
    their parameters and of x (issue 17: XLA on CPU is slower on an innermost axis of
    size 1); the number is TFP's Independent.log_prob, masked or not, also under XLA."""
    tfd = tfp.distributions
    rng = np.random.default_rng(0)
    params = tf.constant(rng.normal(size=(3, 5, 24)), tf.float32)           # [L, B, D]
    grey = tf.constant(rng.uniform(size=(5, 4, 3, 2)), tf.float32)           # [B] + event
    bits = tf.cast(grey < 0.4, tf.float32)
    heads = [(kv.likelihoods.BernoulliLikelihood((4, 3, 2)), bits),
             (kv.likelihoods.ContinuousBernoulliLikelihood((4, 3, 2)), grey),
             (kv.likelihoods.GaussianLikelihood((4, 3, 2), scale=0.5), grey)]
    learned = kv.likelihoods.LearnedGaussianLikelihood((4, 3, 2), scale="per_pixel")
    learned.build()
    learned.set_weights([w + rng.normal(size=w.shape).astype("float32")
                         for w in learned.get_weights()])
    heads.append((learned, grey))
    mask = tf.constant(rng.uniform(size=(5, 4, 3, 2)) < 0.7)
    for head, x in heads:
        params_of = tf.concat([params] * head.num_params, -1)
        lik = head(params_of)
        base, rank = objectives.flat_entries(lik)
        assert rank == 3 and base.batch_shape == (3, 5, 24), type(head).__name__
        want = lik.log_prob(x).numpy()
        by_hand = np.where(mask.numpy(), lik.distribution.log_prob(x).numpy(), 0.0).sum((2, 3, 4))
        for fn in (objectives.masked_log_prob,
                   tf.function(objectives.masked_log_prob, jit_compile=True)):
            got = fn(lik, x).numpy()
            assert got.shape == (3, 5)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(fn(lik, x, mask).numpy(), by_hand, rtol=1e-5, atol=1e-4)
    # a likelihood that does not factorise over entries, or a flat event, is left alone
    mvn = tfd.Independent(tfd.MultivariateNormalDiag(tf.zeros([5, 4, 3]), tf.ones([5, 4, 3])), 1)
    assert objectives.flat_entries(mvn) is None
    y = tf.constant(rng.normal(size=(5, 4, 3)), tf.float32)
    np.testing.assert_allclose(objectives.masked_log_prob(mvn, y).numpy(),
                               mvn.log_prob(y).numpy(), rtol=1e-6)
    assert objectives.flat_entries(kv.likelihoods.BernoulliLikelihood((24,))(params)) is None
