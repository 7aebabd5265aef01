"""compile(jit_compile="auto", steps_per_execution="auto"): the plan, and what it changes."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import cli, execution
from keras_vae.callbacks import KLWarmup, StopOnNaN, TrainingDivergedError


def _mlp_vae(seed=0):
    keras.utils.set_random_seed(seed)
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(16,)), kv.MLPDecoder((8, 8, 1), hidden=(16,)))
    return vae


@pytest.fixture()
def x(digits):
    return digits[0][:512]


def test_plan_chooses_xla_for_long_dense_runs_only():
    vae = _mlp_vae()
    vae.compile(optimizer="adam")
    long = vae.plan_execution(steps_per_epoch=469, epochs=10, batch_size=128)
    assert long["jit_compile"] is True and long["steps_per_execution"] == 32
    assert "4690 training steps" in long["reasons"]["jit_compile"]

    short = execution.plan_execution(vae, steps_per_epoch=469, epochs=8, batch_size=128)
    assert short["jit_compile"] is False
    assert "3752 training steps" in short["reasons"]["jit_compile"]
    unknown = execution.plan_execution(vae, steps_per_epoch=469, epochs=100, batch_size=None)
    assert unknown["jit_compile"] is False and "static batch" in unknown["reasons"]["jit_compile"]

    conv = kv.VAE(kv.ConvEncoder(2), kv.ConvDecoder((8, 8, 1)))
    conv.compile(optimizer="adam")
    plan = conv.plan_execution(steps_per_epoch=469, epochs=100, batch_size=128)
    assert plan["jit_compile"] is False and "convolution" in plan["reasons"]["jit_compile"]


def test_plan_steps_per_execution_follows_the_callbacks(tmp_path):
    vae = _mlp_vae()
    vae.compile(optimizer="adam")

    def spe(callbacks, steps=100):
        return execution.plan_execution(vae, steps, 1, 64, callbacks)["steps_per_execution"]

    assert spe([]) == 32 and spe([], steps=7) == 7 and spe([], steps=None) == 1
    per_execution = [StopOnNaN(), keras.callbacks.TerminateOnNaN(),
                     keras.callbacks.BackupAndRestore(str(tmp_path / "b")),
                     keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras")),
                     keras.callbacks.EarlyStopping(), kv.callbacks.EpochCounter(tf.Variable(0))]
    assert spe(per_execution) == 32
    for needs_every_batch in (KLWarmup(10), keras.callbacks.LambdaCallback(on_batch_end=print),
                              keras.callbacks.BackupAndRestore(str(tmp_path / "c"), save_freq=5)):
        plan = execution.plan_execution(vae, 100, 1, 64, per_execution + [needs_every_batch])
        assert plan["steps_per_execution"] == 1
        assert type(needs_every_batch).__name__ in plan["reasons"]["steps_per_execution"]


@pytest.mark.parametrize("steps, spe", [(20, 20), (60, 30), (469, 7), (64, 32), (37, 1)])
def test_given_steps_per_epoch_are_trained_exactly(x, steps, spe):
    vae = _mlp_vae()
    vae.compile(optimizer="adam")
    plan = execution.plan_execution(vae, steps, 1, 64, steps_given=True)
    assert plan["steps_per_execution"] == spe
    if steps <= 60:  # Keras 3.15 would run whole calls of 32 steps: 64 for 60
        ds = kv.data.make_dataset(x, batch_size=64, repeat=True, drop_remainder=True)
        vae.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
        assert vae.steps_per_execution == spe
        assert int(vae.optimizer.iterations) == steps


def test_describe_fit_data():
    x = np.zeros((100, 8, 8, 1), "float32")
    assert execution.describe_fit_data(x, 20) == (5, 20)
    assert execution.describe_fit_data(x, 30) == (4, None)  # the last batch is smaller
    assert execution.describe_fit_data(x, None) == (4, None)  # Keras's default batch of 32
    assert execution.describe_fit_data(x, 30, steps_per_epoch=3) == (3, 30)
    assert execution.describe_fit_data(x, 18, validation_split=0.1) == (5, 18)  # 90 trained
    static = kv.data.make_dataset(x, batch_size=30, drop_remainder=True)
    assert execution.describe_fit_data(static) == (3, 30)
    ragged = kv.data.make_dataset(x, batch_size=30)
    assert execution.describe_fit_data(ragged) == (4, None)
    assert execution.describe_fit_data(static.repeat(), steps_per_epoch=9) == (9, 30)
    assert execution.describe_fit_data(iter([x])) == (None, None)


def test_auto_fit_trains_exactly_like_one_step_per_call(x):
    plain = _mlp_vae()
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=1)
    auto = _mlp_vae()
    auto.compile(optimizer=keras.optimizers.Adam(1e-3))
    h_plain = plain.fit(x, epochs=2, batch_size=64, verbose=0)
    h_auto = auto.fit(x, epochs=2, batch_size=64, verbose=0)
    assert auto.steps_per_execution == 8 and auto.jit_compile is False
    assert plain.execution_plan["reasons"]["steps_per_execution"] == "set by compile()"
    np.testing.assert_allclose(h_auto.history["loss"], h_plain.history["loss"], rtol=1e-6)
    for a, b in zip(auto.weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_automatic_xla_trains_and_evaluate_stays_in_graph(x):
    vae = _mlp_vae()
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.plan_execution(steps_per_epoch=8, epochs=1000, batch_size=64)  # a long run: XLA
    history = vae.fit(x, epochs=2, batch_size=64, verbose=0)  # re-planned: XLA is kept
    assert vae.jit_compile is True and vae.execution_plan["jit_compile"] is True
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    graph = _mlp_vae(seed=1)
    graph.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    graph.set_weights(vae.get_weights())
    # evaluate draws the graph's Philox stream, so it equals a graph-only model's
    np.testing.assert_allclose(vae.evaluate(x, verbose=0), graph.evaluate(x, verbose=0),
                               rtol=1e-5)


def test_plan_runs_the_calls_of_small_batch_xla_runs_as_one_loop():
    vae = _mlp_vae()
    vae.compile(optimizer="adam")
    small = vae.plan_execution(steps_per_epoch=469, epochs=10, batch_size=64)
    assert small["jit_compile"] is True and small["loop"] is True
    assert "one XLA loop" in small["reasons"]["loop"]
    assert execution.plan_execution(vae, 469, 10, 128)["loop"] is False
    assert execution.plan_execution(vae, 469, 10, None)["loop"] is False
    assert execution.plan_execution(vae, 469, 10, 64, [KLWarmup(10)])["loop"] is False
    explicit = _mlp_vae()
    explicit.compile(optimizer="adam", jit_compile=True)
    plan = explicit.plan_execution(steps_per_epoch=469, epochs=10, batch_size=64)
    assert plan["loop"] is False and "compile()" in plan["reasons"]["loop"]


def test_the_xla_loop_trains_bit_exactly_like_keras_xla_steps(x):
    # 37 batches of 8: calls of 32 steps in the loop, then the 5 left one by one
    def data():
        return kv.data.make_dataset(x[:296], batch_size=8, drop_remainder=True, seed=0)

    looped = _mlp_vae()
    looped.compile(optimizer=keras.optimizers.Adam(1e-3))
    looped.plan_execution(steps_per_epoch=37, epochs=1000, batch_size=8)
    per_step = _mlp_vae()
    per_step.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True,
                     steps_per_execution=32)
    h_looped = looped.fit(data(), epochs=2, verbose=0)
    h_per_step = per_step.fit(data(), epochs=2, verbose=0)
    assert looped.execution_plan["loop"] and not per_step.execution_plan["loop"]
    assert looped.steps_per_execution == per_step.steps_per_execution == 32
    assert int(looped.optimizer.iterations) == int(per_step.optimizer.iterations) == 74
    np.testing.assert_array_equal(h_looped.history["loss"], h_per_step.history["loss"])
    for a, b in zip(looped.weights, per_step.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # Data of unknown length that ends before steps_per_epoch: calls of 32, 5 and no batch
    for model in (looped, per_step):
        model.fit(data().filter(lambda batch: True), steps_per_epoch=96, epochs=1, verbose=0)
    assert looped.execution_plan["loop"]
    assert int(looped.optimizer.iterations) == int(per_step.optimizer.iterations) == 111
    for a, b in zip(looped.weights, per_step.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_explicit_settings_are_kept_and_auto_survives_saving(x, tmp_path):
    vae = _mlp_vae()
    vae.compile(optimizer="adam", jit_compile=False, steps_per_execution=3)
    vae.fit(x, epochs=1, batch_size=64, verbose=0)
    assert vae.steps_per_execution == 3 and vae.jit_compile is False

    auto = _mlp_vae()
    auto.compile(optimizer="adam")
    auto.fit(x, epochs=1, batch_size=64, verbose=0)
    assert auto.get_compile_config()["jit_compile"] == "auto"
    path = str(tmp_path / "m.keras")
    auto.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_compile_config()["steps_per_execution"] == "auto"
    loaded.fit(x, epochs=1, batch_size=64, verbose=0)
    assert loaded.steps_per_execution == 8


@pytest.mark.parametrize("kwargs, name", [({"jit_compile": "yes"}, "jit_compile"),
                                          ({"steps_per_execution": "fast"}, "steps_per_execution")])
def test_bad_auto_values_are_refused(kwargs, name):
    vae = _mlp_vae()
    with pytest.raises(ValueError, match=f"Received: {name}="):
        vae.compile(optimizer="adam", **kwargs)


def test_stop_on_nan_names_the_batches_of_the_call(x):
    vae = _mlp_vae()
    vae.compile(optimizer="adam")
    vae.decoder.params_layer.bias.assign(np.full((64,), np.nan, "float32"))
    with pytest.raises(TrainingDivergedError, match="epoch 1, batches 1-8"):
        vae.fit(x, epochs=1, batch_size=64, callbacks=[StopOnNaN()], verbose=0)


def test_cli_records_the_plan_and_takes_jit_flags(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["--quiet", "train", run, "--epochs", "2", "--no-plots", "--no-export",
                     "--no-web",
                     "--eval-samples", "5", "--no-jit-compile"]) == 0
    with open(os.path.join(run, "status.json")) as f:
        status = json.load(f)
    assert status["execution"]["jit_compile"] is False
    assert status["execution"]["reasons"]["jit_compile"] == "set by compile()"
    assert status["execution"]["steps_per_execution"] == 24  # 1497 digits / 64 per batch
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["jit_compile"] is False
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"jit_compile": "yes"}))
    assert cli.main(["--quiet", "train", str(tmp_path / "r2"), "--config", str(config)]) == 2
    assert "jit_compile" in capsys.readouterr().err


MIRRORED_AUTO_SCRIPT = """
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras_vae as kv
x = np.random.default_rng(0).uniform(size=(256, 8, 8, 1)).astype("float32")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((8, 8, 1), hidden=(8,)))
    vae.compile(optimizer="adam")  # steps_per_execution="auto"
history = vae.fit(x, batch_size=64, epochs=2, verbose=0)
plan = vae.execution_plan
assert plan["steps_per_execution"] == 1, plan
assert "replicas" in plan["reasons"]["steps_per_execution"], plan
assert np.all(np.isfinite(history.history["loss"]))
print("OK")
"""


def test_mirrored_strategy_with_compile_defaults_runs_one_step_per_call():
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", MIRRORED_AUTO_SCRIPT], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr[-3000:]
