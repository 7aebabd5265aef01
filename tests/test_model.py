"""The VAE model: fit/evaluate, saving, seeds, warm-up, XLA, mixed precision, bad input."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BAD_DATA_CASES

import keras_vae as kv
from keras_vae.validation import KerasVAEWarning

KEYS = {"loss", "elbo", "reconstruction", "kl", "beta"}


def test_fit_improves_validation_elbo_and_evaluate_returns_the_same_keys(digits, small_vae):
    x, _ = digits
    vae = small_vae()
    before = vae.evaluate(x[1500:], return_dict=True, verbose=0)
    history = vae.fit(x[:1500], epochs=3, batch_size=64, validation_data=(x[1500:],),
                      verbose=0)
    after = vae.evaluate(x[1500:], batch_size=64, return_dict=True, verbose=0)
    assert set(before) == KEYS and set(after) == KEYS
    assert {f"val_{k}" for k in KEYS} <= set(history.history)
    assert after["elbo"] > before["elbo"] + 5  # nats per example
    np.testing.assert_allclose(after["elbo"], history.history["val_elbo"][-1], rtol=1e-5)
    np.testing.assert_allclose(after["loss"], -after["elbo"], rtol=1e-5)  # beta = 1


def test_fit_accepts_tf_data_and_labels(digits, small_vae):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x[:256], y[:256])).batch(64)
    history = small_vae().fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_save_load_round_trip_is_exact_and_fit_continues(digits, small_vae, tmp_path):
    x, _ = digits
    vae = small_vae(prior="mixture", beta=0.5)
    vae.fit(x[:512], epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path / "m.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(vae.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(vae.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(vae.predict(x[:32], verbose=0),
                                  loaded.predict(x[:32], verbose=0))
    assert loaded.get_config()["prior"]["class_name"] == "MixturePrior"
    # Same weights, optimizer and noise counter: one more epoch lands on the same weights.
    vae.fit(x[:512], epochs=1, batch_size=64, shuffle=False, verbose=0)
    loaded.fit(x[:512], epochs=1, batch_size=64, shuffle=False, verbose=0)
    for a, b in zip(vae.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_noise_depends_on_step_not_on_process_history(digits, small_vae):
    """Seeds come from optimizer.iterations: 2 epochs == 1 epoch + reload + 1 epoch."""
    x, _ = digits
    a = small_vae()
    a.fit(x[:256], epochs=2, batch_size=64, shuffle=False, verbose=0)
    b = small_vae()
    b.fit(x[:256], epochs=1, batch_size=64, shuffle=False, verbose=0)
    c = kv.VAE.from_config(b.get_config())
    c.compile(optimizer=keras.optimizers.Adam(1e-3))
    c.optimizer.build(c.trainable_variables)
    c.set_weights(b.get_weights())
    for src, dst in zip(b.optimizer.variables, c.optimizer.variables):
        dst.assign(src)
    c.fit(x[:256], epochs=1, batch_size=64, shuffle=False, verbose=0)
    for wa, wc in zip(a.weights, c.weights):
        np.testing.assert_array_equal(wa.numpy(), wc.numpy())


def test_beta_variable_changes_a_compiled_loss(digits, small_vae):
    """A Python float would be frozen into the traced test function; a variable is not."""
    x, _ = digits
    vae = small_vae()
    one = vae.evaluate(x[:128], return_dict=True, verbose=0)
    vae.beta.assign(0.0)
    zero = vae.evaluate(x[:128], return_dict=True, verbose=0)
    np.testing.assert_allclose(zero["loss"], zero["reconstruction"], rtol=1e-6)
    np.testing.assert_allclose(one["loss"], one["reconstruction"] + one["kl"], rtol=1e-5)


def test_kl_warmup_ramps_beta_and_changes_the_loss(digits, small_vae):
    x, _ = digits
    vae = small_vae()
    warmup = kv.KLWarmup(steps=16)  # 4 batches per epoch -> beta 0 .. 1 over 4 epochs
    # KLWarmup needs every batch: one step per call, with a warning naming it (issue 13).
    with pytest.warns(KerasVAEWarning, match="KLWarmup"):
        history = vae.fit(x[:256], epochs=5, batch_size=64, callbacks=[warmup], verbose=0)
    betas = history.history["beta"]
    np.testing.assert_allclose(betas, [0.09375, 0.34375, 0.59375, 0.84375, 1.0], rtol=1e-5)
    loss, rec, kl = (np.array(history.history[k]) for k in ("loss", "reconstruction", "kl"))
    np.testing.assert_allclose(loss[0], rec[0] + 0.09375 * kl[0], rtol=0.05)
    assert loss[0] < rec[0] + kl[0]


def test_cyclical_warmup_schedule():
    w = kv.KLWarmup(steps=10, schedule="cyclical", ratio=0.5)
    assert [w.value(t) for t in (0, 2, 5, 9, 10, 12)] == [0.0, 0.4, 1.0, 1.0, 0.0, 0.4]


@pytest.mark.parametrize("options", [
    dict(objective="iwae", num_samples=3),
    dict(prior="mixture"),
    dict(num_samples=2, analytic_kl=False),
    dict(free_bits=0.1),
])
def test_objective_variants_train(digits, small_vae, options):
    """Smoke test only: each variant trains. What each option does is tested below."""
    x, _ = digits
    vae = small_vae(**options)
    history = vae.fit(x[:512], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    if options.get("objective") == "iwae":
        assert "iwae" in history.history


def _posterior_kl_per_dim(vae, x):
    """Closed-form KL(q(z|x) || N(0, I)) per example and dimension, numpy [B, d]."""
    q = vae.encoder(x)
    mu, sigma = q.mean().numpy().astype("float64"), q.stddev().numpy().astype("float64")
    return 0.5 * (mu**2 + sigma**2 - 1.0 - np.log(sigma**2))


def test_free_bits_raise_each_dimension_batch_mean_kl_to_lambda(digits, small_vae):
    """loss - mean(rec) == beta * sum_d max(mean_b KL_bd, lambda), with lambda between
    the smallest and largest per-dimension KL so that it binds for some dimensions only."""
    x = digits[0][:64]
    probe = small_vae(compile=False)
    kl_d = _posterior_kl_per_dim(probe, x).mean(axis=0)          # [d]
    lam = float(np.median(kl_d))
    assert kl_d.min() < lam < kl_d.max()
    vae = small_vae(free_bits=lam, beta=0.7)
    terms = vae.compute_terms(x, seed=tf.constant([5, 6]))
    kl_term = (float(terms["loss"]) - float(tf.reduce_mean(terms["reconstruction"]))) / 0.7
    np.testing.assert_allclose(kl_term, np.maximum(kl_d, lam).sum(), rtol=1e-5)
    # ... which is not the plain KL: the clamp added this many nats.
    assert np.maximum(kl_d, lam).sum() - kl_d.sum() > 1e-3
    np.testing.assert_allclose(terms["kl"], _posterior_kl_per_dim(probe, x).sum(-1),
                               rtol=1e-5, atol=1e-6)  # the reported KL stays unclamped


def test_free_bits_through_objectives_use_the_batch_mean_per_dimension():
    """Kingma et al. clamp E_batch KL_d, not each example's KL_d."""
    tfd = kv.objectives.tfd
    mu = np.array([[0.0, 2.0, 0.3], [1.0, 0.0, -0.3]], "float32")
    sigma = np.array([[1.0, 1.0, 0.5], [1.0, 2.0, 0.5]], "float32")
    kl_bd = 0.5 * (mu**2 + sigma**2 - 1 - np.log(sigma**2)).astype("float64")
    q = tfd.Independent(tfd.Normal(mu, sigma), 1)
    prior = kv.StandardNormalPrior(3).distribution()
    lam = 1.0   # dimension 1 has KL 2.0 and 0.81: above lambda in one example only
    terms = kv.objectives.elbo(np.zeros((2, 1), "float32"), q,
                               lambda z: tfd.Independent(tfd.Normal(z[..., :1] * 0, 1.0), 1),
                               prior, seed=tf.constant([1, 2]), free_bits=lam)
    got = float(terms["loss"]) - float(tf.reduce_mean(terms["reconstruction"]))
    np.testing.assert_allclose(got, np.maximum(kl_bd.mean(0), lam).sum(), rtol=1e-5)
    assert abs(np.maximum(kl_bd, lam).sum(1).mean() - got) > 0.05   # per-example clamp differs


def test_monte_carlo_kl_is_unbiased_and_noisy(digits, small_vae):
    """analytic_kl=False: mean over 400 seeds (L=1) within 5 standard errors of the
    closed form for every example, and the estimate does vary across seeds."""
    x = digits[0][:16]
    vae = small_vae(analytic_kl=False)
    step = tf.function(lambda s: vae.compute_terms(x, seed=s)["kl"])
    draws = np.stack([step(tf.constant([s, 11])).numpy() for s in range(400)]).astype("float64")
    exact = _posterior_kl_per_dim(vae, x).sum(-1)
    se = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(draws.std(axis=0) > 1e-3), draws.std(axis=0)
    assert np.all(np.abs(draws.mean(axis=0) - exact) < 5 * se + 1e-6), (draws.mean(0), exact, se)


def test_num_samples_divides_the_loss_variance_by_l(digits, small_vae):
    """Var over seeds of the L-sample loss ~ Var(L=1) / L: for L=8 the ratio of the
    sample variances (300 seeds each) must lie in [8 / 2, 8 * 2]."""
    x = digits[0][:32]

    def variance(L):
        vae = small_vae(num_samples=L)            # same seed -> same weights for both
        step = tf.function(lambda s: vae.compute_terms(x, seed=s)["loss"])
        return np.var([float(step(tf.constant([s, 3]))) for s in range(300)], ddof=1)

    ratio = variance(1) / variance(8)
    assert 4.0 < ratio < 16.0, ratio


def test_mixture_prior_is_the_prior_the_model_uses(digits, small_vae):
    """prior='mixture': the model's KL equals log q - log p under its MixturePrior at
    the model's own samples (no other prior can give that), and differs from N(0, I)."""
    x = digits[0][:16]
    vae = small_vae(prior="mixture", num_samples=2000)
    vae.build(x.shape)
    seed = tf.constant([9, 9])
    terms = vae.compute_terms(x, seed=seed)
    q = vae.encoder(x)
    z = kv.distributions.reparameterized_sample(q, 2000, seed)
    expected = tf.reduce_mean(q.log_prob(z) - vae.prior.distribution().log_prob(z), 0)
    np.testing.assert_allclose(terms["kl"], expected, rtol=1e-4, atol=1e-4)
    gaussian = _posterior_kl_per_dim(vae, x).sum(-1)
    assert np.min(np.abs(terms["kl"].numpy() - gaussian)) > 0.05


@pytest.mark.parametrize("likelihood", ["gaussian", "gaussian_learned", "continuous_bernoulli"])
def test_likelihoods_train(digits, small_vae, likelihood):
    x, _ = digits
    history = small_vae(likelihood=likelihood).fit(x[:512], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_full_covariance_conv_vae_on_odd_colour_images():
    x = np.random.default_rng(0).uniform(size=(64, 7, 5, 3)).astype("float32")
    vae = kv.VAE(kv.ConvEncoder(3, posterior="full"),
                 kv.ConvDecoder((7, 5, 3), likelihood="continuous_bernoulli"))
    vae.compile(optimizer="adam")
    vae.fit(x, epochs=1, batch_size=32, verbose=0)
    assert vae.predict(x[:4], verbose=0).shape == (4, 7, 5, 3)
    assert vae.sample(2, seed=1).shape == (2, 7, 5, 3)


def test_flat_vector_data():
    x = np.random.default_rng(0).normal(size=(64, 10)).astype("float32")
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(16,)),
                 kv.MLPDecoder((10,), hidden=(16,), likelihood="gaussian_learned"))
    vae.compile(optimizer="adam")
    assert np.isfinite(vae.fit(x, epochs=1, verbose=0).history["loss"][0])


def test_user_methods_shapes_and_seeded_sampling(digits, small_vae):
    x, _ = digits
    vae = small_vae(latent_dim=3)
    q = vae.encode(x[:5])
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    p = vae.decode(np.zeros((2, 5, 3), "float32"))
    assert p.batch_shape == (2, 5) and p.event_shape == (8, 8, 1)
    np.testing.assert_array_equal(vae.sample(4, seed=3), vae.sample(4, seed=3))
    assert not np.array_equal(vae.sample(4, seed=3), vae.sample(4, seed=4))
    binary = vae.sample(4, seed=3, mean=False).numpy()
    assert set(np.unique(binary)) <= {0.0, 1.0}
    assert vae.reconstruct(x[:5]).shape == (5, 8, 8, 1)


def test_xla_and_graph_agree_in_distribution(digits, small_vae):
    """XLA lowers Philox to a different (still deterministic) stream than the graph,
    so the two agree in distribution: 400-sample ELBO estimates match to MC error."""
    x, _ = digits
    vae = small_vae()
    xb = tf.constant(x[:128])
    step = lambda x: vae.compute_terms(x, num_samples=400)  # noqa: E731
    graph = tf.function(step)(xb)
    xla = tf.function(step, jit_compile=True)(xb)
    np.testing.assert_allclose(xla["kl"], graph["kl"], rtol=1e-5)  # analytic: no noise
    np.testing.assert_allclose(np.mean(xla["elbo"]), np.mean(graph["elbo"]), rtol=2e-3)
    a = small_vae()
    b = small_vae()
    b.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    ha = a.fit(x[:512], epochs=2, batch_size=64, shuffle=False, verbose=0).history
    hb = b.fit(x[:512], epochs=2, batch_size=64, shuffle=False, verbose=0).history
    np.testing.assert_allclose(ha["elbo"], hb["elbo"], rtol=2e-2)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_without_nan(digits, policy):
    x, _ = digits
    keras.mixed_precision.set_global_policy(policy)
    try:
        vae = kv.VAE(kv.MLPEncoder(4, hidden=(32,)), kv.MLPDecoder((8, 8, 1), hidden=(32,)))
        vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        assert vae.encoder.dense_layers[0].compute_dtype == policy.split("_")[1]
        history = vae.fit(x[:512], epochs=3, batch_size=64, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history["loss"]))
    assert history["elbo"][-1] > history["elbo"][0]
    if policy == "mixed_float16":
        assert isinstance(vae.optimizer, keras.optimizers.LossScaleOptimizer)


MIRRORED_SCRIPT = textwrap.dedent("""
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras_vae as kv
    from sklearn.datasets import load_digits
    x = (load_digits().images[:64, ..., None] / 16.0).astype("float32")

    def make():
        keras.utils.set_random_seed(0)
        vae = kv.VAE(kv.MLPEncoder(2, hidden=(16,)), kv.MLPDecoder((8, 8, 1), hidden=(16,)))
        # Posterior scale ~ 1e-13: z = mu, so the update does not depend on the noise
        # and one device and two replicas must agree.
        vae.encoder.params_layer.bias.assign([0.0, 0.0, -30.0, -30.0])
        vae.compile(optimizer=keras.optimizers.SGD(0.1))
        return vae

    one = make()
    one.fit(x, batch_size=64, epochs=1, shuffle=False, verbose=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        two = make()
    two.fit(x, batch_size=64, epochs=1, shuffle=False, verbose=0)
    start = make()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(one.get_weights(), start.get_weights()))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(one.get_weights(), two.get_weights()))
    assert strategy.num_replicas_in_sync == 2
    print("moved", moved, "diff", diff)
    assert moved > 1e-3 and diff < 1e-5 * max(1.0, moved), (moved, diff)

    # Each replica draws its own noise.
    with strategy.scope():
        noisy = kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((8, 8, 1)))
    seeds = strategy.run(lambda: noisy.noise_seed(training=False))
    a, b = (s.numpy().tolist() for s in strategy.experimental_local_results(seeds))
    assert a != b, (a, b)
    print("OK")
""")


def test_mirrored_strategy_two_replicas_match_one_device():
    # A strategy per process: logical devices must be set before TF starts.
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr[-3000:]


# ------------------------------------------------------------- bad input

@pytest.mark.parametrize("make, match", [
    (lambda: kv.MLPEncoder(latent_dim=0), "Received: latent_dim=0"),
    (lambda: kv.MLPDecoder((8, 8, 1), likelihood="poisson"), "Received: likelihood='poisson'"),
    (lambda: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), beta=-1.0), "Received: beta=-1.0"),
    (lambda: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), objective="gan"),
     "Received: objective='gan'"),
    (lambda: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), num_samples=0),
     "Received: num_samples=0"),
    (lambda: kv.MLPEncoder(2, activation="nope"), "Received: activation='nope'"),
    (lambda: kv.ConvDecoder((64,)), "Received: output_shape=\\(64,\\)"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_encoder_is_type_checked():
    with pytest.raises(TypeError, match="Received: encoder='mlp'"):
        kv.VAE("mlp", kv.MLPDecoder((4,)))


def test_latent_size_mismatch_is_reported():
    dec = kv.MLPDecoder((4,))
    dec.build((None, 3))
    with pytest.raises(ValueError, match="latent_dim=3"):
        kv.VAE(kv.MLPEncoder(2), dec)


@pytest.mark.parametrize("data, error, match", BAD_DATA_CASES)
def test_bad_data_is_refused_before_training(small_vae, data, error, match):
    vae = small_vae()
    with pytest.raises(error, match=match):
        vae.fit(data, epochs=1, verbose=0)


def test_bad_validation_data_and_latents(small_vae):
    vae = small_vae()
    ok = np.zeros((4, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="validation_data"):
        vae.fit(ok, validation_data=(np.full((4, 8, 8, 1), 2.0),), verbose=0)
    with pytest.raises(ValueError, match=r"Received: z.shape=\(3, 5\)"):
        vae.decode(np.zeros((3, 5)))


def test_evaluation_noise_differs_per_batch_and_repeats_per_call(digits, small_vae):
    x, _ = digits
    vae = small_vae()
    a = vae.noise_seed(False, x[:64]).numpy().tolist()
    b = vae.noise_seed(False, x[64:128]).numpy().tolist()
    assert a != b and a == vae.noise_seed(False, x[:64]).numpy().tolist()
    assert a[1] < 0 and vae.noise_seed(True).numpy()[1] >= 0  # never a training seed
    first = vae.evaluate(x[:256], batch_size=64, return_dict=True, verbose=0)
    again = vae.evaluate(x[:256], batch_size=64, return_dict=True, verbose=0)
    assert first == again
