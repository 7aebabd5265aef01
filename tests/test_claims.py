"""README claims that no other test checked (issue 19), one behaviour per test.

- "`evaluate`/`predict` stay in graph mode and give the same numbers either way"
  (XLA chosen by "auto" vs the graph): evaluate and predict agree to 1e-6; and
  `predict` (deterministic: the likelihood's mean at z = E[q]) agrees to 1e-6
  between an explicit jit_compile=True and False.
- "`train_step` scales the loss through `optimizer.scale_loss`": under
  mixed_float16 the loss reaches `scale_loss` and the applied update is the
  unscaled gradient step (a loss that skipped `scale_loss` would be divided by
  the loss scale, 1024 here, when the optimizer unscales).
- "`steps_per_execution` ... unless a callback needs every batch (..., `TensorBoard`,
  ...): then 1", and the reason names the callback.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import execution


def _mlp_vae(seed=0):
    keras.utils.set_random_seed(seed)
    return kv.VAE(kv.MLPEncoder(2, hidden=(16,)), kv.MLPDecoder((8, 8, 1), hidden=(16,)))


def _pair(jit):
    vae = _mlp_vae()
    vae.compile(optimizer="adam", jit_compile=jit)
    return vae


def test_predict_is_the_same_with_and_without_xla(digits):
    x = digits[0][:200]
    xla, graph = _pair(True), _pair(False)
    graph.set_weights(xla.get_weights())
    a = xla.predict(x, batch_size=64, verbose=0)
    b = graph.predict(x, batch_size=64, verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_evaluate_and_predict_stay_in_graph_mode_when_auto_chose_xla(digits):
    """When "auto" chose XLA (a planned 4,690-step dense run), evaluate and predict give
    the graph's numbers to 1e-6; an explicit compile(jit_compile=True) evaluates under XLA
    (another Philox stream), and its evaluate differs, so this check can fail."""
    x = digits[0][:200]
    auto = _mlp_vae()
    auto.compile(optimizer="adam")
    assert auto.plan_execution(steps_per_epoch=469, epochs=10, batch_size=128)["jit_compile"]
    assert auto.jit_compile is True
    graph, forced = _pair(False), _pair(True)
    graph.set_weights(auto.get_weights())
    forced.set_weights(auto.get_weights())
    a = auto.evaluate(x, batch_size=50, return_dict=True, verbose=0)
    b = graph.evaluate(x, batch_size=50, return_dict=True, verbose=0)
    for key in ("loss", "elbo", "reconstruction", "kl"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(auto.predict(x, verbose=0), graph.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    c = forced.evaluate(x, batch_size=50, return_dict=True, verbose=0)
    assert abs(c["loss"] - b["loss"]) > 1e-4 * abs(b["loss"]), (c["loss"], b["loss"])


def test_mixed_float16_step_goes_through_scale_loss_and_applies_the_unscaled_gradient(digits):
    x = tf.constant(digits[0][:64])
    lr, scale = 0.05, 1024.0
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        vae = _mlp_vae()
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(lr), initial_scale=scale)
        vae.compile(optimizer=opt, run_eagerly=True, jit_compile=False, steps_per_execution=1)
        assert vae.optimizer is opt
        seed = vae.noise_seed(True, x)                 # the seed of step 0
        with tf.GradientTape() as tape:
            loss = vae.compute_terms(x, training=True, seed=seed)["loss"]
        variables = vae.trainable_variables
        grads = tape.gradient(loss, variables)
        before = [v.numpy().copy() for v in variables]
        seen = []
        original = opt.scale_loss

        def spy(value):
            seen.append(float(value))
            return original(value)

        opt.scale_loss = spy
        vae.fit(x, batch_size=64, epochs=1, shuffle=False, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert len(seen) == 1, seen
    np.testing.assert_allclose(seen[0], float(loss), rtol=1e-5)
    assert float(opt.scale_loss(tf.constant(2.0))) == 2.0 * scale   # the scale was in force
    for b, v, g in zip(before, variables, grads):
        np.testing.assert_allclose(b - v.numpy(), lr * g.numpy(), rtol=2e-2, atol=2e-5)
    moved = max(float(np.abs(b - v.numpy()).max()) for b, v in zip(before, variables))
    assert moved > 1e-3, moved


@pytest.mark.parametrize("update_freq", ["batch", 5])
def test_tensorboard_with_batch_updates_plans_one_step_per_execution(tmp_path, update_freq):
    vae = _mlp_vae()
    vae.compile(optimizer="adam")
    board = keras.callbacks.TensorBoard(str(tmp_path / "tb"), update_freq=update_freq)
    plan = execution.plan_execution(vae, 100, 1, 64, [board])
    assert plan["steps_per_execution"] == 1
    assert "TensorBoard" in plan["reasons"]["steps_per_execution"]
    alone = execution.plan_execution(vae, 100, 1, 64, [])
    assert alone["steps_per_execution"] == 32  # the callback, nothing else, forced the 1


def test_sample_with_the_same_seed_gives_the_same_images_and_another_seed_others():
    """Quickstart: `vae.sample(16, seed=0)`: (16, 8, 8, 1), same seed -> same images."""
    vae = _mlp_vae()
    a, b, c = vae.sample(16, seed=0), vae.sample(16, seed=0), vae.sample(16, seed=1)
    assert a.shape == (16, 8, 8, 1)
    np.testing.assert_array_equal(a, b)
    assert float(np.abs(a - c).max()) > 1e-3


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_distribution_parameters_stay_float32_under_mixed_precision(digits, policy):
    """Design notes: "Distribution parameters stay float32 under mixed precision"."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        vae = _mlp_vae()
        x = digits[0][:8]
        q = vae.encoder(x)
        p = vae.decoder(q.sample(seed=tf.constant([1, 2])))
        hidden = vae.encoder.dense_layers[0].compute_dtype
        terms = vae.compute_terms(x, seed=tf.constant([1, 2]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert hidden == policy.split("_")[1]            # the layers do compute in low precision
    assert q.dtype == tf.float32 and q.mean().dtype == tf.float32
    assert q.stddev().dtype == tf.float32 and p.mean().dtype == tf.float32
    assert all(terms[k].dtype == tf.float32 for k in ("loss", "elbo", "reconstruction", "kl"))
