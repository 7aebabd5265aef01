"""The private Keras attributes keras_vae relies on: one test per attribute.

Each test checks an assumption of `keras_vae/keras_api.py` directly against the
installed Keras (the module was written for Keras 3.15). A failure here means a
Keras upgrade changed an internal: update keras_api.py, not the callers.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import keras_api


def _msg(attribute, assumption):
    return (f"Keras {keras.__version__}: {attribute} no longer {assumption}; "
            "update keras_vae/keras_api.py")


def _vae(**compile_kwargs):
    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((4,), hidden=(8,)))
    vae.compile(optimizer="adam", **compile_kwargs)
    return vae


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(size=(32, 4)).astype("float32")


def test_flatten_layers_lists_nested_layers():
    vae = _vae()
    attr = "Layer._flatten_layers"
    assert callable(getattr(vae, "_flatten_layers", None)), _msg(attr, "exists")
    layers = vae._flatten_layers(include_self=False)
    assert vae not in layers, _msg(attr, "leaves the model out with include_self=False")
    assert vae.encoder in layers and vae.decoder in layers, _msg(attr, "lists sublayers")
    nested = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
    assert nested, _msg(attr, "recurses into the layers of sublayers")
    assert vae._flatten_layers()[0] is vae, _msg(attr, "puts the model first by default")
    assert len({id(layer) for layer in layers}) == len(layers), _msg(attr, "lists each layer once")
    assert keras_api.flatten_layers(vae, include_self=False) == layers
    assert keras_api.flatten_layers(vae)[0] is vae


def test_distribute_strategy_is_none_without_a_strategy():
    vae = _vae()
    attr = "Trainer._distribute_strategy"
    assert hasattr(vae, "_distribute_strategy"), _msg(attr, "exists")
    assert vae._distribute_strategy is None, _msg(
        attr, "is None for a model created outside a tf.distribute scope")
    # Why the private attribute: the public property cannot tell "no strategy" apart.
    assert vae.distribute_strategy is not None
    assert keras_api.distribute_strategy(vae) is None


def test_distribute_strategy_is_the_scope_a_model_was_created_under():
    # OneDeviceStrategy: no collective ops, so it does not collide with the
    # MirroredStrategy other tests create in the same process.
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        vae = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((4,), hidden=(8,)))
    assert getattr(vae, "_distribute_strategy", None) is strategy, _msg(
        "Trainer._distribute_strategy", "holds the strategy whose scope created the model")
    assert keras_api.distribute_strategy(vae) is strategy


def test_resolve_auto_jit_compile_is_keras_rule():
    vae = _vae()
    attr = "Trainer._resolve_auto_jit_compile"
    assert callable(getattr(vae, "_resolve_auto_jit_compile", None)), _msg(attr, "exists")
    resolved = vae._resolve_auto_jit_compile()
    assert isinstance(resolved, bool), _msg(attr, f"returns a bool (got {resolved!r})")
    if not any(d.device_type != "CPU" for d in tf.config.list_physical_devices()):
        assert resolved is False, _msg(attr, "returns False on a CPU-only machine")
    assert keras_api.resolve_auto_jit_compile(vae) is resolved


def test_compile_config_is_what_get_compile_config_returns():
    keras.utils.set_random_seed(0)
    plain = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((4,), hidden=(8,)))
    keras.Model.compile(plain, optimizer="adam", jit_compile=False, steps_per_execution=2)
    attr = "Trainer._compile_config.config"
    config = getattr(getattr(plain, "_compile_config", None), "config", None)
    assert isinstance(config, dict), _msg(attr, "is a dict")
    assert config["jit_compile"] is False and config["steps_per_execution"] == 2, _msg(
        attr, "holds the compile() arguments")
    keras_api.set_compile_config(plain, jit_compile="auto", steps_per_execution="auto")
    got = plain.get_compile_config()
    assert got["jit_compile"] == "auto" and got["steps_per_execution"] == "auto", _msg(
        attr, "is what get_compile_config() serializes")


def test_jit_compile_attribute_decides_what_make_test_function_compiles(monkeypatch):
    vae = _vae(jit_compile=True, steps_per_execution=1)
    attr = "Trainer._jit_compile"
    assert getattr(vae, "_jit_compile", None) is True, _msg(
        attr, "holds the jit_compile given to compile()")
    calls = []
    real = tf.function

    def spy(*args, **kwargs):
        calls.append(kwargs.get("jit_compile"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tf, "function", spy)
    vae.make_test_function(force=True)
    assert True in calls, _msg(attr, "makes make_test_function compile with XLA when True")
    calls.clear()
    with keras_api.graph_mode(vae):
        assert vae._jit_compile is False and vae.jit_compile is False, _msg(
            attr, "is what the public jit_compile property reads")
        vae.make_test_function(force=True)
        vae.make_predict_function(force=True)
    assert calls and True not in calls, _msg(
        attr, "keeps make_test_function/make_predict_function off XLA when False")
    assert vae._jit_compile is True  # restored


def test_is_default_marks_only_unoverridden_callback_hooks():
    class Overrides(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    attr = "_is_default (keras.src.utils.default)"
    base, overridden = keras.callbacks.Callback(), Overrides()
    for hook in ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end"):
        assert getattr(getattr(base, hook), "_is_default", None) is True, _msg(
            attr, f"is True on Callback.{hook}")
        assert keras_api.is_default_hook(getattr(base, hook))
    assert not getattr(overridden.on_train_batch_end, "_is_default", False), _msg(
        attr, "is absent or False on an overridden hook")
    assert not keras_api.is_default_hook(overridden.on_train_batch_end)
    assert keras_api.is_default_hook(overridden.on_train_batch_begin)


def test_fit_passes_use_cached_eval_dataset_to_evaluate(x):
    vae = _vae()
    seen = []
    evaluate = vae.evaluate

    def spy(*args, **kwargs):
        seen.append(dict(kwargs))
        return evaluate(*args, **kwargs)

    vae.evaluate = spy
    vae.fit(x, epochs=2, batch_size=16, validation_data=(x,), verbose=0)
    attr = keras_api.CACHED_EVAL_DATASET_KWARG
    assert len(seen) == 2, _msg("Model.fit", "calls evaluate once per epoch for validation_data")
    assert all(kwargs.get(attr) is True for kwargs in seen), _msg(
        attr, f"is passed as True by fit to evaluate (got {seen[0]})")
    assert all(keras_api.is_cached_eval(kwargs) for kwargs in seen)
    assert not keras_api.is_cached_eval({})


def test_missing_internals_fail_with_the_attribute_and_version():
    class NotAModel:
        pass

    for call, attr in ((keras_api.flatten_layers, "_flatten_layers"),
                       (keras_api.distribute_strategy, "_distribute_strategy"),
                       (keras_api.set_compile_config, "_compile_config")):
        with pytest.raises(keras_api.KerasInternalsChanged, match=attr) as info:
            call(NotAModel())
        assert keras.__version__ in str(info.value)
    with pytest.warns(RuntimeWarning, match="_resolve_auto_jit_compile"):
        assert keras_api.resolve_auto_jit_compile(NotAModel()) is False


def test_in_xla_context_is_true_only_while_tracing_an_xla_function():
    import tensorflow as tf

    seen = {}

    def probe(tag):
        def f(x):
            seen[tag] = keras_api.in_xla_context()
            return x
        return f

    tf.function(probe("xla"), jit_compile=True)(tf.constant(1.0))
    tf.function(probe("graph"))(tf.constant(1.0))
    probe("eager")(tf.constant(1.0))
    assert seen == {"xla": True, "graph": False, "eager": False}
