"""Distribution heads: log_prob against scipy.stats and closed forms, shapes, argument checks."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import integrate, stats

import keras_vae as kv
from keras_vae import distributions as dists

tfd = tfp.distributions

RNG = np.random.default_rng(0)


def test_bernoulli_log_prob_matches_scipy_on_binary_data():
    head = kv.BernoulliLikelihood((3, 2))
    logits = RNG.normal(size=(4, 6)).astype("float32")
    x = (RNG.uniform(size=(4, 3, 2)) < 0.5).astype("float32")
    p = 1 / (1 + np.exp(-logits.reshape(4, 3, 2)))
    expected = stats.bernoulli.logpmf(x, p).sum(axis=(1, 2))
    np.testing.assert_allclose(head(logits).log_prob(x), expected, rtol=1e-5)


def test_bernoulli_log_prob_on_grey_values_is_negative_cross_entropy():
    head = kv.BernoulliLikelihood((5,))
    logits = RNG.normal(size=(3, 5)).astype("float32")
    x = RNG.uniform(size=(3, 5)).astype("float32")
    p = 1 / (1 + np.exp(-logits))
    expected = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(-1)
    np.testing.assert_allclose(head(logits).log_prob(x), expected, rtol=1e-5)


def test_bernoulli_log_prob_gradient_is_x_minus_sigmoid_at_any_logit():
    # d/dl [x l - softplus(l)] = x - sigmoid(l): 0.5 short of x at l = 0, and exact
    # (no NaN, no overflow) where exp(l) is out of float32's range.
    head = kv.BernoulliLikelihood((6,))
    logits = tf.constant([[-200.0, -20.0, 0.0, 0.0, 20.0, 200.0]])
    x = tf.constant([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        lp = head(logits).log_prob(x)
    grad = tape.gradient(lp, logits).numpy()
    expected = x.numpy() - 1 / (1 + np.exp(-logits.numpy().astype("float64")))
    np.testing.assert_allclose(grad, expected, atol=1e-7)
    # x l - softplus(l), summed: -200 + 0 - log 2 - log 2 + 20 - softplus(20) - 200
    np.testing.assert_allclose(lp, [-200 - 2 * np.log(2) + 20 - np.logaddexp(0, 20) - 200
                                    - np.logaddexp(0, -20)], rtol=1e-6)


def test_bernoulli_log_prob_and_gradient_compile_to_one_exp_per_logit():
    # The softplus and its derivative (the sigmoid) share one exp(-|l|) under XLA,
    # as tf.nn.sigmoid_cross_entropy_with_logits does: the cost per logit of a
    # training step's likelihood (issue 17). tf.nn.softplus compiled to two.
    head = kv.BernoulliLikelihood((784,))
    logits = tf.zeros((64, 784))
    x = tf.zeros((64, 784))

    @tf.function(jit_compile=True)
    def value_and_grad(logits, x):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            lp = tf.reduce_sum(head(logits).log_prob(x))
        return lp, tape.gradient(lp, logits)

    hlo = value_and_grad.experimental_get_compiler_ir(logits, x)(stage="optimized_hlo")
    exps = [line for line in hlo.splitlines()
            if " exponential(" in line and "[64,784]" in line]
    assert len(exps) == 1, "\n".join(exps)



def test_bernoulli_log_prob_in_graph_mode_is_one_softplus_kernel():
    # Outside XLA the fused Softplus op (one kernel forward, one backward) is faster
    # than the six-op shared-exp form.
    head = kv.BernoulliLikelihood((784,))
    graph = tf.function(lambda logits, x: head(logits).log_prob(x)).get_concrete_function(
        tf.TensorSpec([64, 784]), tf.TensorSpec([64, 784])).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("Softplus") == 1 and "Log1p" not in ops, ops


def test_gaussian_fixed_scale_matches_scipy():
    head = kv.GaussianLikelihood((4,), scale=0.3)
    loc = RNG.normal(size=(2, 4)).astype("float32")
    x = RNG.normal(size=(2, 4)).astype("float32")
    expected = stats.norm.logpdf(x, loc, 0.3).sum(-1)
    np.testing.assert_allclose(head(loc).log_prob(x), expected, rtol=1e-5)


def test_gaussian_learned_per_pixel_matches_scipy():
    head = kv.LearnedGaussianLikelihood((3,), scale="per_pixel", min_scale=1e-3)
    params = RNG.normal(size=(2, 3, 2)).astype("float32")  # [mu, raw] per element
    dist = head(params.reshape(2, 6))
    loc, raw = params[..., 0], params[..., 1]
    scale = np.log1p(np.exp(raw)) + 1e-3
    x = RNG.normal(size=(2, 3)).astype("float32")
    np.testing.assert_allclose(dist.log_prob(x), stats.norm.logpdf(x, loc, scale).sum(-1),
                               rtol=1e-5)


def test_gaussian_learned_shared_has_one_trainable_scale():
    head = kv.LearnedGaussianLikelihood((3,), scale="shared")
    head.build()
    assert head.params_size() == 3 and len(head.trainable_weights) == 1
    x = np.zeros((1, 3), "float32")
    expected = stats.norm.logpdf(0.0, 0.0, np.log(2.0) + 1e-3) * 3
    np.testing.assert_allclose(head(np.zeros((1, 3), "float32")).log_prob(x), [expected],
                               rtol=1e-5)


def _continuous_bernoulli_logpdf(x, logit):
    p = 1 / (1 + np.exp(-logit))
    log_c = np.log(2 * np.arctanh(1 - 2 * p) / (1 - 2 * p))
    return log_c + x * np.log(p) + (1 - x) * np.log1p(-p)


def test_continuous_bernoulli_matches_closed_form_and_normalises():
    head = kv.ContinuousBernoulliLikelihood((2,))
    logits = np.array([[1.3, -2.0]], "float32")
    x = np.array([[0.25, 0.9]], "float32")
    expected = _continuous_bernoulli_logpdf(x, logits).sum(-1)
    np.testing.assert_allclose(head(logits).log_prob(x), expected, rtol=1e-4)
    # A proper density on [0, 1] (unlike the Bernoulli on grey values).
    one = head(np.array([[0.7]], "float32").repeat(2, 1)).distribution
    total, _ = integrate.quad(lambda v: float(tf.exp(one.log_prob([v, v])[0, 0])), 0, 1)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_likelihood_handles_leading_sample_dims():
    head = kv.BernoulliLikelihood((8, 8, 1))
    dist = head(np.zeros((5, 3, 64), "float32"))
    assert dist.batch_shape == (5, 3) and dist.event_shape == (8, 8, 1)
    assert dist.log_prob(np.zeros((3, 8, 8, 1), "float32")).shape == (5, 3)


def test_diagonal_posterior_scale_is_one_at_zero_params_and_floored():
    head = kv.DiagonalGaussianPosterior(3, min_scale=1e-4)
    q = head(np.zeros((2, 6), "float32"))
    np.testing.assert_allclose(q.stddev(), np.full((2, 3), 1 + 1e-4), rtol=1e-6)
    q = head(np.concatenate([np.zeros((1, 3)), np.full((1, 3), -200.0)], 1).astype("float32"))
    assert np.all(q.stddev().numpy() >= 1e-4)


def test_full_covariance_posterior_matches_scipy_multivariate_normal():
    head = kv.FullCovariancePosterior(3)
    params = RNG.normal(size=(1, head.params_size())).astype("float32")
    q = head(params)
    cov = q.covariance().numpy()[0]
    np.testing.assert_allclose(cov, cov.T, atol=1e-6)
    z = RNG.normal(size=(1, 3)).astype("float32")
    expected = stats.multivariate_normal(q.mean().numpy()[0], cov).logpdf(z[0])
    np.testing.assert_allclose(q.log_prob(z).numpy()[0], expected, rtol=1e-4)


def test_full_covariance_posterior_is_standard_at_zero_params():
    head = kv.FullCovariancePosterior(2, min_scale=0.0)
    q = head(np.zeros((1, head.params_size()), "float32"))
    np.testing.assert_allclose(q.covariance().numpy()[0], np.eye(2), atol=1e-6)


def test_reparameterized_sample_moments():
    q = kv.DiagonalGaussianPosterior(2)(
        np.array([[1.0, -2.0, 0.0, 1.0]], "float32"))  # mu=(1,-2), raw=(0,1)
    z = dists.reparameterized_sample(q, 20000, tf.constant([1, 2]))
    np.testing.assert_allclose(z.numpy().mean(0)[0], [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.numpy().std(0)[0], q.stddev().numpy()[0], rtol=0.03)


@pytest.mark.parametrize("row", [(3, 7), (2, 4)])  # 21 numbers per row (padded), 8 (not)
def test_indexed_noise_rows_do_not_depend_on_how_many_are_drawn(row):
    from keras_vae import heads
    seed = tf.constant([5, 9])
    whole = heads.indexed_normal([6, *row], seed, 0).numpy()
    for first, count in ((0, 1), (2, 3), (5, 1)):
        part = heads.indexed_normal([count, *row], seed, first).numpy()
        np.testing.assert_array_equal(part, whole[first:first + count])
    assert len({float(r.sum()) for r in whole}) == 6  # every row its own numbers
    big = heads.indexed_normal([4000, *row], seed, 0).numpy()
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02
    if np.prod(row) % 4 == 0:  # the same stream as one stateless draw
        np.testing.assert_array_equal(whole, heads.stateless_normal([6, *row], seed).numpy())


def test_chunked_draws_with_first_sample_equal_one_draw_for_every_posterior():
    rng = np.random.default_rng(0)
    seed = tf.constant([1, 2])
    diag = dists.DiagonalGaussianPosterior(3)(rng.normal(size=(4, 6)).astype("float32"))
    mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros([4, 2])),
                                    tfd.MultivariateNormalDiag(tf.zeros([4, 2, 3])))
    for q in (diag, mixture):
        whole = dists.reparameterized_sample(q, 5, seed, first_sample=0).numpy()
        parts = [dists.reparameterized_sample(q, c, seed, first_sample=f).numpy()
                 for f, c in ((0, 2), (2, 3))]
        assert whole.shape == (5, 4, 3)
        np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)


def test_heads_keep_float32_under_float16_params():
    q = kv.DiagonalGaussianPosterior(2)(np.zeros((1, 4), "float16"))
    assert q.dtype == tf.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(latent_dim=0), "latent_dim"),
    (dict(latent_dim=2.5), "latent_dim"),
])
def test_posterior_rejects_bad_latent_dim(kwargs, match):
    with pytest.raises(ValueError, match=f"Received: {match}"):
        kv.DiagonalGaussianPosterior(**kwargs)


def test_unknown_likelihood_names_the_choices():
    with pytest.raises(ValueError, match="Received: likelihood='poisson'"):
        dists.get_likelihood("poisson", (3,))


def test_wrong_params_size_is_reported():
    with pytest.raises(ValueError, match="expects 4 parameters"):
        kv.DiagonalGaussianPosterior(2)(np.zeros((1, 5), "float32"))


def test_support_check_reports_range():
    head = kv.BernoulliLikelihood((2,))
    with pytest.raises(ValueError, match=r"\[0, 1\].*max=255"):
        head.check_support(np.array([[0, 255]]))
    with pytest.raises(ValueError, match="NaN"):
        head.check_support(np.array([[0.0, np.nan]]))
    kv.GaussianLikelihood((2,)).check_support(np.array([[-5.0, 300.0]]))  # the real line
