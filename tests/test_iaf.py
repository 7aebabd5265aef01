"""The IAF posterior (keras_vae.distributions.IAFPosterior, keras_vae.flows): exact density,
autoregressive structure, caching, save/load, training, arguments and the CLI flag."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import assert_cli_refuses

import keras_vae as kv
from keras_vae import cli, flows, objectives
from keras_vae.distributions import IAFPosterior

tfd = tfp.distributions
D = 3


def _head(latent_dim=D, spread=0.7, seed=0, **kwargs):
    """A built IAF head whose MADE weights are far from the identity (a non-trivial flow)."""
    head = IAFPosterior(latent_dim, **kwargs)
    head.build()
    rng = np.random.default_rng(seed)
    for made in head.steps:
        for w in made.weights:
            w.assign(rng.normal(0, spread, w.shape).astype("float32"))
    return head


def _params(head, batch=4, seed=1):
    return tf.constant(np.random.default_rng(seed).normal(0, 0.5, (batch, head.params_size())),
                       tf.float32)


def test_log_density_of_a_sample_is_base_minus_autodiff_log_determinant():
    head = _head()
    q = head(_params(head))
    base = q.distribution
    z0 = base.sample(seed=tf.constant([3, 4]))                        # [B, d]
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z = q.bijector.forward(z0)
    jac = tape.batch_jacobian(z, z0).numpy()                         # [B, d, d]
    log_det = np.linalg.slogdet(jac.astype("float64"))[1]
    expected = base.log_prob(z0).numpy() - log_det
    np.testing.assert_allclose(q.log_prob(z).numpy(), expected, atol=1e-5)
    assert np.abs(log_det).min() > 0.1  # the flow is not (close to) volume-preserving


def test_each_step_is_autoregressive_and_order_reverses_between_steps():
    head = _head(latent_dim=4, flow_steps=2)
    params = _params(head, batch=1)
    context = tf.split(params, [8, head.context_dim], axis=-1)[1]
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 4)), tf.float32)
    jacobians = []
    for made in head.steps:
        step = flows.IAFStep(made, context, head.forget_bias)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = step.forward(x)
        jacobians.append(tape.batch_jacobian(y, x).numpy()[0])
    first, second = jacobians
    lower, upper = np.tril_indices(4, -1), np.triu_indices(4, 1)
    assert np.all(first[upper] == 0) and np.abs(first[lower]).min() > 1e-6
    assert np.all(second[lower] == 0) and np.abs(second[upper]).min() > 1e-6
    # log |det| of a triangular step is the sum of log g on its diagonal
    _, s = head.steps[0](x, context)
    np.testing.assert_allclose(np.diag(first), tf.sigmoid(s + head.forget_bias)[0], atol=1e-6)


def test_made_outputs_depend_on_lower_orders_only():
    made = flows.MADE(5, hidden=(7, 6), reverse=True)
    made.build()
    x = tf.constant(np.random.default_rng(0).normal(size=(1, 5)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        m, s = made(x)
    order = np.arange(5)[::-1]  # reversed: x_4 comes first
    for out in (m, s):
        jac = tape.batch_jacobian(out, x).numpy()[0]
        allowed = order[None, :] < order[:, None]
        assert np.all(jac[~allowed] == 0)
        assert np.all(np.abs(jac[allowed]) > 0)


def test_log_prob_of_own_samples_uses_the_cache_not_the_sequential_inverse(monkeypatch):
    head = _head()
    q = head(_params(head))
    z = q.sample(6, seed=tf.constant([1, 2]))
    arbitrary = tf.constant(z.numpy())           # same values, not the sampled tensor
    exact = q.log_prob(arbitrary).numpy()        # sequential inverse

    def refuse(self, y):
        raise AssertionError("the sequential inverse ran on a cached sample")

    monkeypatch.setattr(flows.IAFStep, "_inverse", refuse)
    cached = q.log_prob(z).numpy()
    np.testing.assert_allclose(cached, exact, atol=1e-4)
    with pytest.raises(AssertionError, match="sequential inverse"):
        q.log_prob(tf.constant(z.numpy()))


def test_the_sequential_inverse_recovers_the_base_sample():
    head = _head(latent_dim=6, flow_steps=3)
    q = head(_params(head))
    z0 = q.distribution.sample(seed=tf.constant([5, 6]))
    z = tf.constant(q.bijector.forward(z0).numpy())
    np.testing.assert_allclose(q.bijector.inverse(z).numpy(), z0.numpy(), atol=1e-4)


def test_mean_is_the_base_mean_through_the_flow_and_stddev_the_base_one():
    head = _head()
    q = head(_params(head))
    np.testing.assert_allclose(q.mean(), q.bijector.forward(q.distribution.mean()), atol=1e-6)
    np.testing.assert_allclose(q.stddev(), q.distribution.stddev(), atol=1e-6)


def test_analytic_kl_falls_back_to_monte_carlo():
    head = _head()
    q = head(_params(head))
    prior = kv.priors.StandardNormalPrior(D).distribution()
    z = q.sample(50, seed=tf.constant([0, 9]))
    kl = objectives.kl_divergence(q, prior, z=z, analytic=True)
    np.testing.assert_allclose(kl, tf.reduce_mean(q.log_prob(z) - prior.log_prob(z), 0),
                               atol=1e-5)


def _vae(posterior="iaf", **kwargs):
    keras.utils.set_random_seed(0)
    enc = kv.MLPEncoder(D, hidden=(32,), posterior=posterior)
    vae = kv.VAE(enc, kv.MLPDecoder((8, 8, 1), hidden=(32,)), **kwargs)
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    return vae


def test_seeded_training_decreases_the_loss(digits):
    x = digits[0][:512]
    vae = _vae()
    loss = vae.fit(x, epochs=3, batch_size=128, verbose=0).history["loss"]
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0] - 1.0


def test_iwae_objective_scores_the_flow_exactly(digits):
    vae = _vae(objective="iwae", num_samples=50)
    terms = vae.compute_terms(tf.constant(digits[0][:16]), seed=tf.constant([1, 2]))
    assert np.all(np.isfinite(terms["iwae"])) and np.isfinite(terms["loss"])
    assert terms["iwae"].numpy().mean() > terms["elbo"].numpy().mean()


def test_keras_round_trip_is_exact_and_log_likelihood_works(digits, tmp_path):
    x = digits[0][:128]
    vae = _vae(posterior=IAFPosterior(D, flow_steps=3, flow_hidden=(12, 12), context_dim=2))
    vae.fit(x, epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path / "iaf.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    head = loaded.encoder.head
    assert (head.flow_steps, head.flow_hidden, head.context_dim) == (3, (12, 12), 2)
    z = tf.constant(np.random.default_rng(0).normal(size=(5, D)), tf.float32)
    np.testing.assert_array_equal(vae.encode(x[:5]).log_prob(z), loaded.encode(x[:5]).log_prob(z))
    np.testing.assert_array_equal(vae.encode(x[:5]).mean(), loaded.encode(x[:5]).mean())
    a = kv.log_likelihood(vae, x[:8], num_samples=20, seed=1).log_px
    b = kv.log_likelihood(loaded, x[:8], num_samples=20, seed=1).log_px
    np.testing.assert_array_equal(a, b)
    elbo = kv.evaluation.elbo_terms(vae, x[:8], num_samples=20)["elbo"]
    assert np.all(np.isfinite(a)) and a.mean() > elbo.mean() - 0.5


def test_conv_encoder_takes_the_iaf_posterior(digits):
    enc = kv.ConvEncoder(D, filters=(4,), hidden=(8,), posterior="iaf")
    q = enc(digits[0][:3])
    assert isinstance(q, flows.FlowDistribution) and q.batch_shape == (3,)
    assert q.log_prob(q.sample(2, seed=tf.constant([0, 1]))).shape == (2, 3)


def test_savedmodel_encode_returns_the_flow_mean(digits, tmp_path):
    x = digits[0][:64]
    vae = _vae()
    vae.fit(x, epochs=1, batch_size=64, verbose=0)
    path = kv.export.saved_model(vae, str(tmp_path / "sm"), version=1)
    out = tf.saved_model.load(str(path)).signatures["encode"](x=tf.constant(x[:4]))
    np.testing.assert_allclose(out["z_mean"], vae.encode(x[:4]).mean(), atol=1e-5)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"flow_steps": 0}, ValueError, "flow_steps"),
    ({"flow_steps": -2}, ValueError, "flow_steps"),
    ({"flow_steps": "2"}, TypeError, "flow_steps"),
    ({"flow_hidden": ()}, ValueError, "flow_hidden"),
    ({"flow_hidden": (8, 0)}, ValueError, "flow_hidden"),
    ({"context_dim": -1}, ValueError, "context_dim"),
    ({"forget_bias": float("nan")}, ValueError, "forget_bias"),
])
def test_bad_arguments_are_refused_clearly(kwargs, error, match):
    with pytest.raises(error, match=f"{match}.*Received: {match}="):
        IAFPosterior(4, **kwargs)


def test_cli_accepts_posterior_iaf_and_refuses_bad_values(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["--quiet", "train", run, "--posterior", "iaf", "--flow-steps", "3",
                     "--epochs", "1", "--hidden", "16", "--eval-samples", "5", "--no-export",
                     "--no-web", "--no-plots"]) == 0
    loaded = keras.models.load_model(str(tmp_path / "run" / "model.keras"))
    assert isinstance(loaded.encoder.head, IAFPosterior) and loaded.encoder.head.flow_steps == 3
    capsys.readouterr()
    for flags, needle in ((["--flow-steps", "3"], "applies to --posterior iaf"),
                          (["--posterior", "iaf", "--flow-steps", "0"], "flow_steps")):
        assert_cli_refuses(capsys, ["train", str(tmp_path / "bad"), *flags], needle,
                           tmp_path / "bad")
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage line + one error line
        cli.main(["train", str(tmp_path / "bad"), "--posterior", "flow"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not os.path.exists(tmp_path / "bad")
    assert "invalid choice: 'flow'" in err[-1] and "'iaf'" in err[-1]
