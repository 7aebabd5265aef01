"""Evaluation and applications: log-likelihood against closed forms, chunking, the
latent space against PCA, anomaly detection on a held-out digit class, imputation."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

import keras_vae as kv
from keras_vae import applications, evaluation, latent

tfd = tfp.distributions

# --------------------------------------------------------------------------
# Linear-Gaussian model: p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I)
#   => p(x) = N(b, W W^T + s^2 I), p(z|x) = N(S W^T (x - b) / s^2, S),
#      S = (I + W^T W / s^2)^-1.   (The same setup as tests/test_objectives.py.)
# --------------------------------------------------------------------------

K_LATENT, NOISE, WRONG_SCALE = 2, 0.5, 0.7


class LinearGaussian:
    """A model object with `.encoder`, `.decoder`, `.prior` (not a VAE): exact or wrong posterior.

    Records the static shape of every latent tensor the decoder is traced with.
    """

    def __init__(self, d=5, exact=True, seed=7):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(d, K_LATENT)).astype("float32")
        self.b = rng.normal(size=d).astype("float32")
        self.cov = np.linalg.inv(np.eye(K_LATENT) + self.w.T @ self.w / NOISE**2)
        self.exact = exact
        self.prior = kv.StandardNormalPrior(K_LATENT)
        self.decoded_shapes = []

    def encoder(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        if not self.exact:
            zeros = tf.zeros([tf.shape(x)[0], K_LATENT])
            return tfd.Independent(tfd.Normal(zeros, WRONG_SCALE), 1)
        mean = tf.matmul(x - self.b, self.w @ self.cov.astype("float32")) / NOISE**2
        return tfd.MultivariateNormalTriL(mean, np.linalg.cholesky(self.cov).astype("float32"))

    def decoder(self, z):
        self.decoded_shapes.append(tuple(z.shape))
        return tfd.Independent(tfd.Normal(tf.einsum("dk,...k->...d", self.w, z) + self.b,
                                          NOISE), 1)

    def exact_log_px(self, x):
        cov = self.w @ self.w.T + NOISE**2 * np.eye(len(self.b))
        return stats.multivariate_normal(self.b, cov).logpdf(x)

    def wrong_elbo(self, x):
        """Closed-form ELBO of q(z|x) = N(0, WRONG_SCALE^2 I)."""
        d, var = len(self.b), WRONG_SCALE**2
        expected_log_lik = (-0.5 * d * np.log(2 * np.pi * NOISE**2)
                            - (np.sum((x - self.b) ** 2, axis=-1) + var * np.sum(self.w**2))
                            / (2 * NOISE**2))
        kl = 0.5 * K_LATENT * (var - 1 - np.log(var))
        return expected_log_lik - kl


X = (np.random.default_rng(8).normal(size=(6, 5)) * 2.0).astype("float32")


@pytest.mark.parametrize("k", [1, 10, 500])
def test_exact_posterior_gives_exact_log_px_for_any_k(k):
    ll = kv.log_likelihood(LinearGaussian(), X, num_samples=k, chunk_size=7)
    np.testing.assert_allclose(ll.log_px, LinearGaussian().exact_log_px(X), atol=1e-4)
    np.testing.assert_allclose(ll.bits_per_dim, -ll.log_px / (5 * np.log(2)), rtol=1e-12)


def test_wrong_posterior_estimates_increase_with_k_toward_log_px():
    model = LinearGaussian(exact=False)
    reps = np.tile(X, (400, 1))  # 400 seeded estimates per example, averaged
    means = [kv.log_likelihood(model, reps, num_samples=k, seed=1).log_px
             .reshape(400, len(X)).mean(axis=0) for k in (1, 5, 50)]
    exact = model.exact_log_px(X)
    # Measured gaps: K=1->5 6-23 nats, 5->50 0.5-13, 50->exact 0.05-17, each at least
    # 4 standard errors of the 400-draw means (seeded, so the outcome is fixed).
    assert np.all(means[0] < means[1]) and np.all(means[1] < means[2]), means
    assert np.all(means[2] < exact), (means[2], exact)
    assert np.all(exact - means[2] < exact - means[0])


def test_k1_estimate_is_unbiased_for_the_elbo():
    model = LinearGaussian(exact=False)
    reps = np.tile(X, (4000, 1))
    draws = kv.log_likelihood(model, reps, num_samples=1, batch_size=1000).log_px
    draws = draws.reshape(4000, len(X))
    stderr = draws.std(axis=0) / np.sqrt(4000)
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - model.wrong_elbo(X)), 4 * stderr)
    terms = evaluation.elbo_terms(model, reps, num_samples=1, batch_size=1000)
    np.testing.assert_allclose(terms["kl"], 0.5 * K_LATENT * (0.49 - 1 - np.log(0.49)),
                               rtol=1e-5)


def test_result_does_not_depend_on_chunk_size_and_is_seeded():
    model = LinearGaussian(exact=False)
    runs = [kv.log_likelihood(model, X, num_samples=100, chunk_size=c, seed=3).log_px
            for c in (1, 7, 100, None)]
    for other in runs[1:]:
        np.testing.assert_allclose(other, runs[0], rtol=0, atol=2e-5)
    again = kv.log_likelihood(model, X, num_samples=100, chunk_size=7, seed=3).log_px
    np.testing.assert_array_equal(again, runs[1])
    assert not np.allclose(kv.log_likelihood(model, X, num_samples=100, seed=4).log_px,
                           runs[0], atol=1e-3)


def _bernoulli_mlp(seed=0, condition_dim=None, hidden=(16, 8)):
    keras.utils.set_random_seed(seed)
    return kv.MLPDecoder((4, 3, 1), hidden=hidden, condition_dim=condition_dim)


def _randomize(layer, seed=5):
    """Every weight drawn at random (a fresh Dense has zero biases)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=0.7, size=w.shape) for w in layer.get_weights()])


@pytest.mark.parametrize("hidden", [(16, 8), ()])
@pytest.mark.parametrize("grey", [False, True])
def test_mlp_bernoulli_fast_log_prob_equals_the_distribution_s(hidden, grey, monkeypatch):
    """`sum_i x_i l_i` taken over the features (the K=5000 fast path) is the same number."""
    rng = np.random.default_rng(1)
    decoder = _bernoulli_mlp(hidden=hidden)
    z = rng.normal(size=(3, 7, 5)).astype("float32")
    decoder(z)
    _randomize(decoder)
    x = rng.random((7, 4, 3, 1)).astype("float32")
    x = x if grey else (x > 0.5).astype("float32")
    calls, own = [], kv.distributions.BernoulliLikelihood.log_prob_of_linear
    monkeypatch.setattr(kv.distributions.BernoulliLikelihood, "log_prob_of_linear",
                        lambda *a: calls.append(1) or own(*a))
    fast = decoder.event_log_prob(z, x)
    assert calls and fast.shape == (3, 7)
    np.testing.assert_allclose(fast, decoder(z).log_prob(x), rtol=1e-6, atol=2e-5)


def test_conditional_and_non_bernoulli_decoders_keep_their_log_prob():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2, 6, 3)).astype("float32")
    x = (rng.random((6, 4, 3, 1)) > 0.5).astype("float32")
    c = rng.random((6, 4)).astype("float32")
    decoder = _bernoulli_mlp(condition_dim=4)
    decoder(z, condition=c)
    _randomize(decoder)
    np.testing.assert_allclose(decoder.event_log_prob(z, x, c),
                               decoder(z, condition=c).log_prob(x), rtol=1e-6, atol=2e-5)
    gaussian = kv.MLPDecoder((4, 3, 1), hidden=(8,), likelihood="gaussian_learned")
    gaussian(z)
    _randomize(gaussian)
    np.testing.assert_allclose(gaussian.event_log_prob(z, x), gaussian(z).log_prob(x),
                               rtol=1e-6)


def test_log_likelihood_is_the_same_with_and_without_the_fast_path(monkeypatch):
    x = (np.random.default_rng(3).random((5, 4, 3, 1)) > 0.5).astype("float32")

    def model():
        keras.utils.set_random_seed(4)
        vae = kv.VAE(kv.MLPEncoder(3, hidden=(8,)), kv.MLPDecoder((4, 3, 1), hidden=(8, 8)))
        vae(x[:1])
        _randomize(vae)
        return vae

    fast = kv.log_likelihood(model(), x, num_samples=40, chunk_size=7).log_px
    calls = []

    def general(self, z, x, condition=None):
        calls.append(1)
        return kv.networks.Decoder.event_log_prob(self, z, x, condition)

    monkeypatch.setattr(kv.networks.MLPDecoder, "event_log_prob", general)
    slow = kv.log_likelihood(model(), x, num_samples=40, chunk_size=7).log_px
    assert calls, "the estimator did not go through the decoder's event_log_prob"
    np.testing.assert_allclose(fast, slow, rtol=0, atol=5e-5)


def test_chunking_bounds_the_decoded_tensor_whatever_k():
    """K=5000 on 28x28-sized data: the decoder only ever sees [chunk, batch, d] latents."""
    model = LinearGaussian(d=784)
    x = np.random.default_rng(0).normal(size=(100, 784)).astype("float32")
    ll = kv.log_likelihood(model, x[:3], num_samples=5000, chunk_size=64)
    assert {s[0] for s in model.decoded_shapes} == {64}
    np.testing.assert_allclose(ll.log_px, model.exact_log_px(x[:3]), atol=2e-3)
    model.decoded_shapes.clear()
    kv.log_likelihood(model, x, num_samples=1000, batch_size=100)  # default chunk
    chunk = max(s[0] for s in model.decoded_shapes)
    assert chunk * 100 * 784 <= 2**22 < 1000 * 100 * 784


def test_compiled_functions_are_reused_and_released_with_the_model():
    import gc
    import weakref

    model = LinearGaussian(exact=False)
    first = kv.log_likelihood(model, X, num_samples=20, seed=5).log_px
    traces = len(model.decoded_shapes)
    second = kv.log_likelihood(model, X, num_samples=20, seed=5).log_px
    assert len(model.decoded_shapes) == traces  # no retracing on the second call
    np.testing.assert_array_equal(first, second)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # the cache does not keep models alive


def test_result_behaves_like_the_array_of_log_px():
    ll = kv.log_likelihood(LinearGaussian(), X, num_samples=3)
    np.testing.assert_array_equal(np.asarray(ll), ll.log_px)
    assert len(ll) == len(X) and ll[0] == ll.log_px[0]
    assert ll.mean() == pytest.approx(np.mean(ll.log_px))
    np.testing.assert_array_equal(ll["bits_per_dim"], ll.bits_per_dim)


# --------------------------------------------------------------------------
# Closed-form checks of the latent-space helpers
# --------------------------------------------------------------------------

def test_active_units_counts_dimensions_whose_mean_varies():
    class Scaled:  # posterior mean = x * (1, 0.05, 0): variances 1, 0.0025, 0
        prior = None

        def encoder(self, x):
            return tfd.Independent(tfd.Normal(x * [1.0, 0.05, 0.0], 1.0), 1)

    x = np.random.default_rng(0).normal(size=(5000, 3)).astype("float32")
    assert latent.active_units(Scaled(), x) == 1
    assert latent.active_units(Scaled(), x, threshold=0.001) == 2
    np.testing.assert_allclose(kv.embed(Scaled(), x[:4]), x[:4] * [1.0, 0.05, 0.0], rtol=1e-6)


def test_knn_accuracy_leaves_each_point_out():
    points = np.array([[0.0], [0.1], [10.0], [10.1]])
    assert latent.knn_accuracy(points, [0, 0, 1, 1], k=1) == 1.0
    assert latent.knn_accuracy(points, [0, 1, 0, 1], k=1) == 0.0  # self excluded
    with pytest.raises(ValueError, match="Received: k=4"):
        latent.knn_accuracy(points, [0, 0, 1, 1], k=4)


def test_pca_reconstructs_rank_two_data_exactly():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(50, 2)) @ rng.normal(size=(2, 6)) + 3.0).astype("float32")
    codes, recon = latent.pca_embedding(x, 2)
    assert codes.shape == (50, 2)
    np.testing.assert_allclose(recon, x, atol=1e-4)


# --------------------------------------------------------------------------
# A small VAE trained on digits 0-8 (digit 9 held out as the anomaly)
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits
    idx = np.random.default_rng(0).permutation(len(x))
    x, y = x[idx], y[idx]
    normal = x[y != 9]
    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.MLPEncoder(4, hidden=(64,)), kv.MLPDecoder((8, 8, 1), hidden=(64,)))
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    vae.fit(normal[:1200], epochs=30, batch_size=64, verbose=0)
    return {"vae": vae, "heldout": normal[1200:], "anomalies": x[y == 9],
            "x": x[1500:], "y": y[1500:]}


def test_evaluate_model_reports_json_serialisable_consistent_numbers(trained):
    vae, x, y = trained["vae"], trained["x"], trained["y"]
    metrics = evaluation.evaluate_model(vae, x, y, num_samples=200, seed=0)
    json.dumps(metrics)  # plain floats and ints
    for key in ("log_likelihood", "log_likelihood_bits_per_dim", "elbo", "reconstruction",
                "kl", "active_units", "num_samples", "num_examples", "knn_accuracy_latent",
                "knn_accuracy_pca", "pca_reconstruction_error", "model_reconstruction_error",
                "imputation_mse", "imputation_mse_mean_fill"):
        assert np.isfinite(metrics[key]), key
    assert metrics["num_examples"] == len(x) and metrics["num_samples"] == 200
    # IWAE-200 lies above the ELBO (measured gap 0.19 nats per example).
    assert metrics["elbo"] < metrics["log_likelihood"] < metrics["elbo"] + 2.0
    np.testing.assert_allclose(metrics["elbo"], -metrics["reconstruction"] - metrics["kl"],
                               rtol=1e-6)
    np.testing.assert_allclose(metrics["log_likelihood_bits_per_dim"],
                               -metrics["log_likelihood"] / (64 * np.log(2)), rtol=1e-9)
    assert 1 <= metrics["active_units"] <= 4
    # The PCA comparison reports its numbers; both embeddings carry the labels (chance 0.1).
    assert metrics["knn_accuracy_latent"] > 0.6 and metrics["knn_accuracy_pca"] > 0.6
    assert 0 < metrics["model_reconstruction_error"] < 10
    assert 0 < metrics["pca_reconstruction_error"] < 10
    assert metrics == evaluation.evaluate_model(vae, x, y, num_samples=200, seed=0)


def test_elbo_terms_match_the_model_s_own_kl(trained):
    vae, x = trained["vae"], trained["x"]
    terms = evaluation.elbo_terms(vae, x)
    own = vae.compute_terms(x)  # analytic KL: no noise in this term
    np.testing.assert_allclose(terms["kl"], own["kl"], rtol=1e-5)


def test_anomaly_auc_on_a_held_out_digit_class(trained):
    vae = trained["vae"]
    normal = applications.anomaly_scores(vae, trained["heldout"], num_samples=50)
    anomalous = applications.anomaly_scores(vae, trained["anomalies"], num_samples=50)
    auc = applications.roc_auc(np.r_[normal, anomalous],
                               np.r_[np.zeros(len(normal)), np.ones(len(anomalous))])
    assert auc > 0.65, auc  # measured 0.74-0.78 over 4 training seeds; random scores give 0.5
    t = applications.select_threshold(normal, false_positive_rate=0.05)
    assert np.mean(normal > t) <= 0.05
    assert np.mean(anomalous > t) > 0.1  # measured 0.16: well above the 5 % false alarms


def test_reconstruction_probability_score_also_separates(trained):
    vae = trained["vae"]
    scores = [applications.anomaly_scores(vae, trained[k], method="reconstruction_probability",
                                          num_samples=10) for k in ("heldout", "anomalies")]
    auc = applications.roc_auc(np.r_[scores[0], scores[1]],
                               np.r_[np.zeros(len(scores[0])), np.ones(len(scores[1]))])
    assert auc > 0.65, auc  # measured 0.75 (0.75-0.78 over 4 training seeds)


def test_imputation_beats_mean_filling_on_hidden_pixels(trained):
    vae, x = trained["vae"], trained["heldout"]
    observed = np.ones(x.shape, bool)
    observed[:, 4:] = False  # hide the bottom half of every digit
    filled = kv.impute(vae, np.where(observed, x, 0.0), observed, steps=30)
    np.testing.assert_array_equal(filled[observed], x[observed])
    vae_mse = applications.imputation_error(x, filled, observed)
    mean_mse = applications.imputation_error(x, applications.mean_fill(x, observed), observed)
    assert vae_mse < 0.7 * mean_mse, (vae_mse, mean_mse)  # measured ratio 0.41-0.44


def test_pseudo_gibbs_imputation_is_seeded(trained):
    vae, x = trained["vae"], trained["heldout"][:50]
    observed = np.random.default_rng(0).uniform(size=x.shape) > 0.5
    a, b, c = (kv.impute(vae, x, observed, steps=10, method="pseudo_gibbs", seed=s)
               for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[observed], x[observed])


# --------------------------------------------------------------------------
# Closed forms of the application helpers, and bad input
# --------------------------------------------------------------------------

def test_select_threshold_flags_the_requested_fraction():
    scores = np.arange(100.0)
    t = applications.select_threshold(scores, false_positive_rate=0.05)
    assert t == 94.0 and np.mean(scores > t) == 0.05
    assert applications.select_threshold(scores, false_positive_rate=0.0) == 99.0


def test_roc_auc_closed_form():
    # sklearn's documented example: 3 of the 4 (normal, anomaly) pairs are ordered.
    assert applications.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75


def test_mean_fill_uses_the_observed_mean_of_each_dimension():
    x = np.array([[1.0, 5.0], [3.0, 7.0], [9.0, 9.0]], "float32")
    observed = np.array([[True, True], [True, False], [False, False]])
    np.testing.assert_array_equal(applications.mean_fill(x, observed),
                                  [[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])


@pytest.mark.parametrize("call, error, match", [
    (lambda m: kv.log_likelihood(m, X, num_samples=0), ValueError, "Received: num_samples=0"),
    (lambda m: kv.log_likelihood(m, X, chunk_size=-1), ValueError, "Received: chunk_size=-1"),
    (lambda m: kv.log_likelihood(m, X, seed=1.5), TypeError, "Received: seed=1.5"),
    (lambda m: kv.anomaly_scores(m, X, method="psnr"), ValueError, "Received: method='psnr'"),
    (lambda m: kv.impute(m, X, np.ones((3, 5), bool)), ValueError, r"mask.shape=\(3, 5\)"),
    (lambda m: kv.impute(m, X, np.ones(5, bool), method="gan"), ValueError, "method='gan'"),
    (lambda m: applications.select_threshold([1.0, 2.0], 1.0), ValueError,
     "Received: false_positive_rate=1.0"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(LinearGaussian())


def test_models_without_prior_are_refused_by_log_likelihood():
    class NoPrior(LinearGaussian):
        prior = None

        def __init__(self):
            super().__init__()
            self.prior = None

    with pytest.raises(ValueError, match="Received: model.prior=None"):
        kv.log_likelihood(NoPrior(), X)


def test_data_of_the_wrong_shape_is_refused(trained):
    with pytest.raises(ValueError, match=r"Received: x.shape=\(3, 64\)"):
        kv.log_likelihood(trained["vae"], np.zeros((3, 64), "float32"))
