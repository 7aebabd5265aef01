"""MIWAE: training on incomplete data, importance-sampled imputation, scores of the
observed part (issue 15, library core).

The bound is checked against a closed form first: a linear-Gaussian model
whose marginal of the observed entries is known exactly; then a seeded short
training on a table with 30% of its entries missing completely at random."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

import keras_vae as kv
from keras_vae import objectives
from keras_vae.applications import roc_auc, select_threshold

tfd = tfp.distributions

D, LATENT = 5, 2


def _linear_gaussian(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, LATENT)).astype("float32")
    b = rng.normal(size=D).astype("float32")
    return w, b, np.float32(0.5)


def _exact_posterior(x, w, b, sigma):
    """q(z|x_o) = p(z|x_o) for z ~ N(0, I), x|z ~ N(Wz + b, sigma^2 I), per row."""
    locs, scales = [], []
    for row in x:
        o = ~np.isnan(row)
        wo = w[o].astype("float64")
        cov = np.linalg.inv(np.eye(LATENT) + wo.T @ wo / sigma**2)
        locs.append(cov @ wo.T @ (row[o] - b[o]) / sigma**2)
        scales.append(np.linalg.cholesky(cov))
    return tfd.MultivariateNormalTriL(np.array(locs, "float32"), np.array(scales, "float32"))


def _exact_log_px_obs(x, w, b, sigma):
    out = []
    for row in x:
        o = ~np.isnan(row)
        cov = w[o] @ w[o].T + sigma**2 * np.eye(o.sum())
        out.append(stats.multivariate_normal(b[o], cov).logpdf(row[o]))
    return np.array(out)


def _holes():
    w, b, sigma = _linear_gaussian()
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(6, LATENT)) @ w.T + b + sigma * rng.normal(size=(6, D)))
    x = x.astype("float32")
    x[0, 1] = x[1, [0, 3]] = x[2, :4] = x[4, 2] = np.nan    # row 3, 5 complete
    return x, w, b, sigma


@pytest.mark.parametrize("k", [1, 7])
def test_miwae_bound_with_the_exact_posterior_is_the_exact_log_px_obs(k):
    x, w, b, sigma = _holes()
    q = _exact_posterior(x, w, b, sigma)
    prior = tfd.MultivariateNormalDiag(tf.zeros(LATENT))

    def likelihood(z):
        return tfd.Independent(tfd.Normal(tf.linalg.matvec(w, z) + b, sigma), 1)

    out = objectives.miwae(x, q, likelihood, prior, seed=tf.constant([1, 2]), num_samples=k)
    expected = _exact_log_px_obs(x, w, b, sigma)
    np.testing.assert_allclose(out["miwae"].numpy(), expected, atol=1e-4)
    # the masked sum is what moves the number: the complete rows agree with IWAE too
    full = objectives.iwae(x[[3, 5]], _exact_posterior(x[[3, 5]], w, b, sigma), likelihood,
                           prior, seed=tf.constant([1, 2]), num_samples=k)
    np.testing.assert_allclose(full["iwae"].numpy(), expected[[3, 5]], atol=1e-4)


def test_miwae_refuses_free_bits():
    x, w, b, sigma = _holes()
    with pytest.raises(ValueError, match="free_bits"):
        objectives.miwae(x, _exact_posterior(x, w, b, sigma), None, None,
                         seed=tf.constant([1, 2]), free_bits=0.5)


def test_a_non_factorising_likelihood_is_refused_with_its_type():
    mvn = tfd.MultivariateNormalDiag(tf.zeros((2, 3)))
    with pytest.raises(ValueError, match="factorises.*MultivariateNormalDiag"):
        objectives.masked_log_prob(mvn, tf.zeros((2, 3)), tf.ones((2, 3), tf.bool))


class _MVNDecoder(kv.MLPDecoder):
    """A decoder whose p(x|z) is one multivariate normal (does not factorise)."""

    def call(self, z, training=False):
        loc = super().call(z, training=training).mean()
        return tfd.MultivariateNormalDiag(loc, tf.ones_like(loc))


def test_miwae_model_refuses_a_non_factorising_decoder_at_construction():
    with pytest.raises(ValueError, match="factorises"):
        kv.VAE(kv.MLPEncoder(2, hidden=(8,)), _MVNDecoder((4,), hidden=(8,),
                                                          likelihood="gaussian"),
               objective="miwae")


def _table(n=400, seed=0):
    """Correlated 6-column table (rank-2 signal plus noise), standardised."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    a = rng.normal(size=(2, 6))
    x = np.tanh(z @ a) + 0.1 * rng.normal(size=(n, 6))
    return ((x - x.mean(0)) / x.std(0)).astype("float32")


def _mcar(x, rate, seed, keep_column=None):
    holes = np.random.default_rng(seed).uniform(size=x.shape) < rate
    if keep_column is not None:
        holes[:, keep_column] = False
    out = x.copy()
    out[holes] = np.nan
    return out


def _miwae_model(d=6, seed=0):
    return kv.VAE(kv.MLPEncoder(4, hidden=(64, 64)),
                  kv.MLPDecoder((d,), hidden=(64, 64), likelihood="gaussian_learned"),
                  objective="miwae", num_samples=10, seed=seed)


@pytest.fixture(scope="module")
def trained():
    """A MIWAE model trained 15 epochs on 300 rows with 30% MCAR holes (column 0 complete);
    about 20 s on a loaded 2-core machine, shared by the tests below."""
    import keras

    keras.utils.set_random_seed(0)
    x = _table()
    x_holes = _mcar(x, 0.3, seed=1, keep_column=0)
    model = _miwae_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x_holes[:300], epochs=15, batch_size=32, verbose=0)
    return model, x, x_holes, history


def test_fit_on_nan_data_logs_a_finite_improving_bound(trained):
    _, _, _, history = trained
    bound = history.history["miwae"]
    assert np.all(np.isfinite(bound))
    assert bound[-1] > bound[0] + 1.0


def test_held_out_imputation_beats_mean_imputation(trained):
    model, x, x_holes, _ = trained
    test, truth = x_holes[300:], x[300:]
    missing = np.isnan(test)
    filled = kv.impute(model, test, num_samples=500, method="importance")
    column_means = np.nanmean(x_holes[:300], axis=0)
    mse_model = np.mean((filled - truth)[missing] ** 2)
    mse_mean = np.mean((np.broadcast_to(column_means, test.shape) - truth)[missing] ** 2)
    # measured: 0.13 against 1.00 for the mean (seed 0); threshold 0.5 x mean
    assert mse_model < 0.5 * mse_mean, (mse_model, mse_mean)


def test_impute_fills_every_nan_and_keeps_observed_entries_bit_for_bit(trained):
    model, _, x_holes, _ = trained
    test = x_holes[300:].astype("float64") + 1e-9  # float64 bits that float32 would lose
    filled = kv.impute(model, test, num_samples=200, method="importance")
    observed = ~np.isnan(test)
    assert filled.dtype == np.float64 and not np.isnan(filled).any()
    assert np.array_equal(filled[observed].view(np.int64), test[observed].view(np.int64))
    np.testing.assert_array_equal(filled[:, 0], test[:, 0])  # the complete column


def test_importance_imputation_does_not_depend_on_the_chunk_size(trained):
    model, _, x_holes, _ = trained
    a = kv.impute(model, x_holes[300:340], num_samples=300, chunk_size=300)
    b = kv.impute(model, x_holes[300:340], num_samples=300, chunk_size=7)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_multiple_imputation_returns_copies_that_differ_only_where_missing(trained):
    model, x, x_holes, _ = trained
    test = x_holes[300:]
    copies = kv.impute(model, test, num_samples=500, method="multiple", num_imputations=8,
                       seed=3)
    missing = np.isnan(test)
    assert copies.shape == (8,) + test.shape and not np.isnan(copies).any()
    assert all(np.array_equal(c[~missing], test[~missing]) for c in copies)
    spread = copies.std(axis=0)[missing]
    assert spread.mean() > 0.05  # draws, not one value copied
    mse_pooled = np.mean((copies.mean(0) - x[300:])[missing] ** 2)
    assert mse_pooled < 0.8 * np.mean(x[300:][missing] ** 2)


def test_a_mask_and_nan_agree_and_a_nan_marked_observed_is_refused(trained):
    model, _, x_holes, _ = trained
    test = x_holes[300:320]
    mask = ~np.isnan(test)
    np.testing.assert_array_equal(kv.impute(model, test, num_samples=100),
                                  kv.impute(model, np.nan_to_num(test), mask,
                                            num_samples=100, method="importance"))
    with pytest.raises(ValueError, match="NaN at entries `mask` marks as observed"):
        kv.impute(model, test, np.ones_like(mask), method="importance")


def test_the_pseudo_gibbs_methods_still_work_on_nan_input(trained):
    model, _, x_holes, _ = trained
    filled = kv.impute(model, x_holes[300:320], method="pseudo_gibbs", steps=4)
    assert not np.isnan(filled).any()


def test_anomaly_scores_of_rows_with_nan_are_minus_log_p_x_obs(trained):
    model, x, x_holes, _ = trained
    scores = kv.anomaly_scores(model, x_holes[300:340], num_samples=200)
    assert scores.shape == (40,) and np.isfinite(scores).all()
    complete = kv.anomaly_scores(model, x[300:340], num_samples=200)
    whole_rows = ~np.isnan(x_holes[300:340]).any(axis=1)
    assert whole_rows.any()
    np.testing.assert_allclose(scores[whole_rows], complete[whole_rows], rtol=1e-6)
    t = select_threshold(scores, 0.1)
    assert np.mean(scores > t) <= 0.1
    # outliers (rows off the data manifold) with holes still score higher
    outliers = _mcar(np.random.default_rng(5).normal(0, 3, size=(40, 6)).astype("float32"),
                     0.3, seed=6)
    high = kv.anomaly_scores(model, outliers, num_samples=200)
    assert roc_auc(np.r_[scores, high], np.r_[np.zeros(40), np.ones(40)]) > 0.9
    for method in ("reconstruction_probability", "reconstruction_error"):
        assert np.isfinite(kv.anomaly_scores(model, x_holes[300:340], method=method)).all()


def test_evaluate_and_log_likelihood_accept_nan_for_miwae(trained):
    model, _, x_holes, _ = trained
    logs = model.evaluate(x_holes[300:], return_dict=True, verbose=0)
    assert np.isfinite(logs["miwae"])
    ll = kv.log_likelihood(model, x_holes[300:310], num_samples=50)
    assert np.isfinite(ll.log_px).all()


def test_miwae_fits_a_tf_data_pipeline_with_nan():
    x_holes = _mcar(_table(64), 0.3, seed=2)
    model = _miwae_model()
    model.compile(optimizer="adam")
    ds = tf.data.Dataset.from_tensor_slices(x_holes).batch(16)
    history = model.fit(ds, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_encoder_missing_fill_is_what_the_encoder_sees():
    model = _miwae_model()
    x = np.array([[np.nan, 1.0, 2.0, np.nan, 0.5, 0.0]], "float32")
    default = model.encode(x).mean().numpy()
    np.testing.assert_allclose(default, model.encode(np.nan_to_num(x)).mean().numpy())
    model.encoder.missing_fill = 3.0
    filled = np.where(np.isnan(x), 3.0, x)
    np.testing.assert_allclose(model.encode(x).mean().numpy(),
                               model.encode(filled).mean().numpy())


def test_nan_data_is_refused_by_a_complete_data_model_with_the_old_message():
    model = kv.VAE(kv.MLPEncoder(2, hidden=(8,)),
                   kv.MLPDecoder((6,), hidden=(8,), likelihood="gaussian"))
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="must be finite"):
        model.fit(_mcar(_table(32), 0.3, seed=0), epochs=1, verbose=0)


def test_infinity_is_refused_by_a_miwae_model():
    model = _miwae_model()
    model.compile(optimizer="adam")
    x = _mcar(_table(32), 0.3, seed=0)
    x[3, 2] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="every entry missing"):
        model.fit(np.full((4, 6), np.nan, "float32"), epochs=1, verbose=0)


def test_the_in_graph_guard_allows_nan_and_catches_inf_in_later_batches():
    def batches(bad):
        x = _mcar(_table(64), 0.3, seed=0)
        yield (x[:32],)
        y = x[32:].copy()
        if bad:
            y[0, 0] = np.inf
        yield (y,)

    model = _miwae_model()
    model.compile(optimizer="adam")
    model.fit(batches(False), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="with Inf"):
        model.fit(batches(True), epochs=1, verbose=0)


def test_impute_without_mask_or_nan_is_refused_for_the_iterative_methods():
    model = _miwae_model()
    with pytest.raises(ValueError, match="mask=None and x without NaN"):
        kv.impute(model, _table(8), method="mean")


def test_miwae_model_saves_and_loads_with_its_objective(tmp_path):
    import keras

    model = _miwae_model()
    model.compile(optimizer="adam")
    x_holes = _mcar(_table(64), 0.3, seed=0)
    model.fit(x_holes, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.objective == "miwae" and loaded.allows_missing
    np.testing.assert_allclose(kv.impute(loaded, x_holes[:10], num_samples=50),
                               kv.impute(model, x_holes[:10], num_samples=50), atol=1e-6)


def test_exported_impute_signature_equals_python_impute(trained, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    from keras_vae.export import signatures

    model, _, x_holes, _ = trained
    path = kv.export.saved_model(model, str(tmp_path / "vae"), version=1)
    sigs = kv.export.read_signatures(path)
    assert sigs["impute"]["inputs"] == {"x": ("float32", (-1, 6)), "mask": ("bool", (-1, 6))}
    test = x_holes[300:340]
    mask = ~np.isnan(test)
    served = tf.saved_model.load(path).signatures["impute"](
        x=tf.constant(np.nan_to_num(test, nan=-7.0)), mask=tf.constant(mask))["x"].numpy()
    expected = kv.impute(model, test, mask, method="importance",
                         num_samples=signatures.IMPUTE_SAMPLES, seed=signatures.IMPUTE_SEED)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_array_equal(served[mask], test[mask])
    names = {prediction_log_pb2.PredictionLog.FromString(r.numpy())
             .predict_log.request.model_spec.signature_name
             for r in tf.data.TFRecordDataset(f"{path}/{kv.export.WARMUP_FILE}")}
    assert "impute" in names


def test_a_complete_data_model_exports_no_impute_signature():
    from keras_vae.export import signatures

    model = kv.VAE(kv.MLPEncoder(2, hidden=(8,)),
                   kv.MLPDecoder((6,), hidden=(8,), likelihood="gaussian"))
    assert "impute" not in signatures.signature_specs(model)
    assert "impute" in signatures.signature_specs(_miwae_model())
