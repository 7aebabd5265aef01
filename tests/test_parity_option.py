"""The posterior scale parameterisation option (`scale="exp"`) and the plain reference it matches.

Issue 16 (parity): the IWAE paper's recipe writes `sigma = exp(raw)`;
keras_vae's default is `sigma = softplus(raw + softplus^-1(1)) + min_scale`.
Both are computed here by hand; the option saves and loads exactly, and the
plain-TF reference of `benchmarks/reference.py` computes the same posterior
as a keras_vae encoder whose weights it copied.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import keras_vae as kv

RNG = np.random.default_rng(16)


def _params(d=3, batch=4):
    return RNG.normal(scale=2.0, size=(batch, 2 * d)).astype("float32")


def test_exp_scale_is_exp_of_raw_plus_min_scale_by_hand():
    params = _params()
    head = kv.DiagonalGaussianPosterior(3, scale="exp", min_scale=1e-3)
    q = head(params)
    loc, raw = params[:, :3], params[:, 3:]
    sigma = np.exp(raw.astype(np.float64)) + 1e-3
    np.testing.assert_allclose(q.distribution.scale, sigma, rtol=1e-6)
    z = RNG.normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(q.log_prob(z), stats.norm.logpdf(z, loc, sigma).sum(-1),
                               rtol=1e-5)


def test_exp_scale_without_floor_is_exactly_exp():
    params = _params()
    q = kv.DiagonalGaussianPosterior(3, scale="exp", min_scale=0.0)(params)
    np.testing.assert_allclose(q.distribution.scale, np.exp(params[:, 3:]), rtol=1e-6)


def test_default_scale_is_still_the_offset_softplus():
    params = _params()
    q = kv.DiagonalGaussianPosterior(3)(params)
    raw = params[:, 3:].astype(np.float64)
    sigma = np.log1p(np.exp(raw + math.log(math.expm1(1.0)))) + 1e-4
    np.testing.assert_allclose(q.distribution.scale, sigma, rtol=1e-6)
    assert kv.DiagonalGaussianPosterior(3).get_config()["scale"] == "softplus"


@pytest.mark.parametrize("scale", ["softplus", "exp"])
def test_both_scales_give_sigma_one_at_raw_zero(scale):
    q = kv.DiagonalGaussianPosterior(2, scale=scale, min_scale=0.0)(np.zeros((1, 4), "float32"))
    np.testing.assert_allclose(q.distribution.scale, np.ones((1, 2)), rtol=1e-6)


def test_encoder_passes_scale_to_its_diagonal_head():
    enc = kv.MLPEncoder(2, hidden=(8,), scale="exp", min_scale=0.0)
    assert enc.head.scale == "exp" and enc.head.min_scale == 0.0
    assert enc.get_config()["scale"] == "exp"
    assert "scale" not in kv.MLPEncoder(2, hidden=(8,)).get_config()  # old configs unchanged
    assert kv.ConvEncoder(2, scale="exp").head.scale == "exp"


def test_vae_with_exp_scale_round_trips_through_keras_file(tmp_path):
    (x, _), _ = kv.data.load("digits")
    x = x[:16]
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(16,), scale="exp", min_scale=0.0),
                 kv.MLPDecoder((8, 8, 1), hidden=(16,)), seed=0)
    for w in vae.encoder.weights:  # a non-trivial posterior (nonzero biases too)
        w.assign(RNG.normal(scale=0.3, size=w.shape))
    path = str(tmp_path / "exp.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.encoder.head.scale == "exp" and loaded.encoder.head.min_scale == 0.0
    for a, b in zip(vae.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(vae.encode(x).stddev(), loaded.encode(x).stddev())
    raw = vae.encoder.params_layer(vae.encoder.dense_layers[0](np.reshape(x, (16, -1))))[:, 2:]
    np.testing.assert_allclose(loaded.encode(x).stddev(), np.exp(raw), rtol=1e-5)


@pytest.mark.parametrize("bad", ["log", "EXP", 1, None])
def test_bad_scale_is_refused_with_the_choices(bad):
    with pytest.raises(ValueError, match=r"`scale` must be one of .*softplus.*exp.*Received: "
                                         r"scale="):
        kv.DiagonalGaussianPosterior(2, scale=bad)


def test_scale_on_an_encoder_rejects_a_bad_value():
    with pytest.raises(ValueError, match="Received: scale='sigmoid'"):
        kv.MLPEncoder(2, hidden=(4,), scale="sigmoid")


def test_scale_with_a_posterior_that_has_no_such_option_is_refused():
    with pytest.raises(ValueError, match=r"`scale`.*posterior='diagonal'.*Received: "
                                         r"posterior='full', scale='exp'"):
        kv.MLPEncoder(2, hidden=(4,), posterior="full", scale="exp")


def test_scale_with_a_head_instance_is_refused():
    head = kv.DiagonalGaussianPosterior(2)
    with pytest.raises(ValueError, match="give `scale` to the head"):
        kv.MLPEncoder(2, hidden=(4,), posterior=head, scale="exp")


@pytest.mark.parametrize("scale,min_scale", [("softplus", 1e-4), ("exp", 0.0)])
def test_plain_reference_computes_the_same_posterior_as_a_copied_encoder(scale, min_scale):
    from benchmarks import reference

    vae = kv.VAE(kv.MLPEncoder(3, hidden=(8, 8), activation="tanh", scale=scale,
                               min_scale=min_scale),
                 kv.MLPDecoder((4, 4, 1), hidden=(8, 8), activation="tanh"), seed=0)
    # a non-trivial posterior: random kernels and biases (not the zero biases)
    for part in (vae.encoder, vae.decoder):
        for layer in list(part.dense_layers) + [part.params_layer]:
            layer.kernel.assign(RNG.normal(scale=0.5, size=layer.kernel.shape))
            layer.bias.assign(RNG.normal(scale=0.5, size=layer.bias.shape))
    plain = reference.PlainMLPVAE(16, hidden=(8, 8), latent_dim=3, scale=scale,
                                  min_scale=min_scale, seed=1).copy_from_keras(vae)
    x = (RNG.uniform(size=(5, 4, 4, 1)) < 0.5).astype("float32")
    mu, raw = plain._encode(tf.constant(x))
    q = vae.encode(x)
    np.testing.assert_allclose(q.mean(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.stddev(), plain.sigma(raw), rtol=1e-5)
    logits = plain._decode(mu)
    np.testing.assert_allclose(np.reshape(vae.decoder(mu).distribution.logits, (5, -1)), logits,
                               rtol=1e-5, atol=1e-5)
    # and back: copy_to_keras gives a fresh kv.VAE the same functions
    other = kv.VAE(kv.MLPEncoder(3, hidden=(8, 8), activation="tanh", scale=scale,
                                 min_scale=min_scale),
                   kv.MLPDecoder((4, 4, 1), hidden=(8, 8), activation="tanh"), seed=5)
    plain.copy_to_keras(other)
    np.testing.assert_array_equal(other.encode(x).stddev(), q.stddev())
