"""The Keras internals keras_vae relies on, in one place (written for Keras 3.15).

keras_vae reads or sets a few private attributes of Keras models and
callbacks. Every such use goes through a function of this module, so a Keras
upgrade that renames one breaks here, with a message naming the attribute,
rather than deep inside `fit`. `tests/test_keras_api.py` checks each
assumption against the installed Keras, one test per attribute.

```none
function                   private Keras attribute                     if it is gone
flatten_layers             Layer._flatten_layers(include_self, ...)    KerasInternalsChanged
distribute_strategy        Trainer._distribute_strategy (TF backend)   KerasInternalsChanged
resolve_auto_jit_compile   Trainer._resolve_auto_jit_compile()         warns, returns False
set_compile_config         Trainer._compile_config.config (a dict)     KerasInternalsChanged
graph_mode                 Trainer._jit_compile                        uses `model.jit_compile`
is_default_hook            `_is_default` set by keras.src.utils.default warns, returns False
is_cached_eval             fit's `_use_cached_eval_dataset=True` kwarg  (nothing to fall back on)
tensorboard_profiles       TensorBoard._should_trace (profile_batch)   warns, returns True
in_xla_context             TF's control_flow_util.GraphOrParentsIn-     warns, returns False
                           XlaContext (a TensorFlow internal)
```

Fallbacks are chosen only where they are safe: the result is slower (no XLA,
one step per compiled call), never different. The tests fail in either case.

This module imports nothing from keras_vae.
"""

import contextlib
import warnings

import keras

__all__ = [
    "CACHED_EVAL_DATASET_KWARG",
    "KERAS_VERSION_WRITTEN_FOR",
    "KerasInternalsChanged",
    "distribute_strategy",
    "flatten_layers",
    "graph_mode",
    "in_xla_context",
    "is_cached_eval",
    "is_default_hook",
    "resolve_auto_jit_compile",
    "set_compile_config",
    "tensorboard_profiles",
]

KERAS_VERSION_WRITTEN_FOR = "3.15"

# The keyword `Model.fit` passes to `evaluate` for its per-epoch validation
# (keras/src/backend/tensorflow/trainer.py, Keras 3.15).
CACHED_EVAL_DATASET_KWARG = "_use_cached_eval_dataset"

_MISSING = object()


class KerasInternalsChanged(RuntimeError):
    """A private Keras attribute keras_vae relies on is gone or behaves differently."""

    def __init__(self, attribute, assumption):
        self.attribute = attribute
        super().__init__(
            f"keras_vae relies on the private Keras attribute `{attribute}` ({assumption}), "
            f"written for Keras {KERAS_VERSION_WRITTEN_FOR}; the installed Keras "
            f"{keras.__version__} does not provide it. Update keras_vae/keras_api.py.")


def _warn_fallback(attribute, fallback):
    warnings.warn(
        f"Keras {keras.__version__}: the private attribute `{attribute}` (keras_vae was "
        f"written for Keras {KERAS_VERSION_WRITTEN_FOR}) is gone; {fallback}. "
        f"Update keras_vae/keras_api.py.", RuntimeWarning, stacklevel=3)


def flatten_layers(model, include_self=True):
    """Every layer of `model`, nested ones included, each once (Keras's traversal order).

    Wraps `Layer._flatten_layers(include_self=..., recursive=True)`.

    Args:
      model: a `keras.layers.Layer` (a model included).
      include_self: whether `model` itself is the first element.

    Returns:
      list of `keras.layers.Layer`.

    Raises:
      KerasInternalsChanged: `_flatten_layers` is gone.
    """
    method = getattr(model, "_flatten_layers", None)
    if method is None:
        raise KerasInternalsChanged("Layer._flatten_layers", "lists nested layers recursively")
    return list(method(include_self=include_self, recursive=True))


def distribute_strategy(model):
    """The `tf.distribute` strategy `model` was created under, or None.

    Wraps `Trainer._distribute_strategy` (TensorFlow backend): the public
    `model.distribute_strategy` returns the default strategy instead of None,
    so it cannot tell "no strategy" apart.

    Raises:
      KerasInternalsChanged: `_distribute_strategy` is gone.
    """
    strategy = getattr(model, "_distribute_strategy", _MISSING)
    if strategy is _MISSING:
        raise KerasInternalsChanged("Trainer._distribute_strategy",
                                    "the strategy a model was created under, or None")
    return strategy


def resolve_auto_jit_compile(model):
    """What Keras would choose for `compile(jit_compile="auto")` on this machine (a bool).

    Wraps `Trainer._resolve_auto_jit_compile()`. Falls back to False (no XLA:
    slower on an accelerator, never wrong) with a `RuntimeWarning` if it is gone.
    """
    method = getattr(model, "_resolve_auto_jit_compile", None)
    if method is None:
        _warn_fallback("Trainer._resolve_auto_jit_compile", "XLA stays off")
        return False
    return bool(method())


def set_compile_config(model, **updates):
    """Updates what `model.get_compile_config()` returns (and so what a saved model
    recompiles with), e.g. to keep `jit_compile="auto"` rather than its resolved value.

    Wraps `Trainer._compile_config.config`, the dict that Keras's
    `get_compile_config` serializes. Call it after `compile`.

    Raises:
      KerasInternalsChanged: `_compile_config.config` is gone or not a dict.
    """
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if not isinstance(config, dict):
        raise KerasInternalsChanged("Trainer._compile_config.config",
                                    "the dict of compile() arguments get_compile_config returns")
    config.update(updates)


@contextlib.contextmanager
def graph_mode(model):
    """Within the block, functions `model` builds (`make_test_function`, ...) are plain
    `tf.function` graphs, not XLA; the previous setting is restored on exit.

    Wraps `Trainer._jit_compile`, read and set directly so that the exact value
    (None included: "not resolved yet") comes back and the `jit_compile`
    setter's checks do not run twice. Falls back to the public `jit_compile`
    property if it is gone.
    """
    saved = getattr(model, "_jit_compile", _MISSING)
    if saved is _MISSING:
        saved = model.jit_compile
        model.jit_compile = False
        try:
            yield model
        finally:
            model.jit_compile = saved
        return
    model._jit_compile = False
    try:
        yield model
    finally:
        model._jit_compile = saved


def in_xla_context():
    """True while tracing inside a `tf.function(jit_compile=True)` (e.g. a training step
    Keras compiles with XLA), where one formula can be cheaper than in graph mode.

    Wraps TensorFlow's `control_flow_util.GraphOrParentsInXlaContext` on the default
    graph. Falls back to False (the graph-mode formula: slower under XLA, never
    different) if it is gone.
    """
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
        check = control_flow_util.GraphOrParentsInXlaContext
    except (ImportError, AttributeError):
        _warn_fallback("tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext",
                       "XLA steps use the graph-mode formulas")
        return False
    return bool(check(ops.get_default_graph()))


def _hooks_are_marked():
    return getattr(keras.callbacks.Callback.on_train_batch_end, "_is_default", False) is True


def is_default_hook(method):
    """True if the callback hook `method` (e.g. `callback.on_train_batch_end`) is
    `keras.callbacks.Callback`'s own no-op, not an override.

    Wraps the `_is_default` attribute that Keras's `utils.default` decorator
    sets on `Callback`'s hooks (Keras's `CallbackList` reads it the same way).
    If Keras stops marking its hooks, every hook counts as overridden (so
    `steps_per_execution` stays 1: slower, never wrong) and a `RuntimeWarning`
    says so.

    Args:
      method: a bound hook of a callback (None gives False).
    """
    if not _hooks_are_marked():
        _warn_fallback("_is_default on keras.callbacks.Callback hooks",
                       "every batch hook counts as overridden")
        return False
    return getattr(method, "_is_default", False) is True


def is_cached_eval(kwargs):
    """True if `evaluate(**kwargs)` is `fit`'s per-epoch validation on data it has
    already prepared (Keras passes `_use_cached_eval_dataset=True`).

    Wraps the private `_use_cached_eval_dataset` keyword (`CACHED_EVAL_DATASET_KWARG`).
    If Keras stops passing it, this returns False: validation data is checked
    again each epoch (slower, never wrong).
    """
    return bool(kwargs.get(CACHED_EVAL_DATASET_KWARG, False))


def tensorboard_profiles(callback):
    """True if the `keras.callbacks.TensorBoard` `callback` profiles batches
    (`profile_batch` other than 0, Keras's default).

    Wraps `TensorBoard._should_trace`, which Keras derives from `profile_batch`
    (the argument itself is not kept). If it is gone this returns True (the
    callback then counts as needing every batch: slower, never wrong) with a
    `RuntimeWarning`.
    """
    value = getattr(callback, "_should_trace", _MISSING)
    if value is _MISSING:
        _warn_fallback("TensorBoard._should_trace", "TensorBoard counts as profiling batches")
        return True
    return bool(value)
