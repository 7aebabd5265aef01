"""How a model's `fit` runs: XLA or graph, and how many steps per compiled call.

keras_vae models accept `compile(jit_compile="auto", steps_per_execution="auto")`
(the defaults). Keras resolves `jit_compile="auto"` to False on every CPU-only
machine; keras_vae resolves both settings at the first `fit` after `compile`,
from what that `fit` is asked to do, with `plan_execution`:

```none
jit_compile          GPU/TPU present          -> Keras's rule (XLA if every layer supports it)
                     tf.distribute strategy   -> False (as Keras)
                     a convolution layer      -> False (XLA's CPU convolutions are slower
                                                 than TensorFlow's oneDNN kernels)
                     no static batch size     -> False (each batch shape compiles again)
                     planned steps            -> True from XLA_MIN_STEPS (4000), else False
steps_per_execution  a multi-replica tf.distribute strategy -> 1 (Keras 3.15 bug)
                     a callback with batch-level hooks, other than ones known to
                     work once per execution (ours marked `runs_per_execution`,
                     TerminateOnNaN, Backup/ModelCheckpoint per epoch,
                     TensorBoard(update_freq="epoch") without profiling) -> 1
                                                 (fit warns once per model and
                                                 callbacks, with the measured cost)
                     steps per epoch unknown  -> 1
                     fit(steps_per_epoch=S)   -> the largest divisor of S up to SPE_MAX
                                                 (Keras runs whole calls: it would overshoot)
                     otherwise                -> min(SPE_MAX, steps per epoch)   (SPE_MAX 32)
loop (the steps of   XLA chosen by "auto" on a CPU-only machine, more than one step per
one call in one XLA  call and a static batch of at most LOOP_MAX_BATCH (64) -> True
program)             otherwise                -> False (one XLA program per step, Keras's)
```

Planned steps = epochs x steps per epoch of the `fit` call. The decision uses
the planned run, not a timing, so it is the same on every machine and for a
run resumed by `BackupAndRestore` (whose `fit` is asked for the same epochs).
This matters because XLA lowers the Philox generator to a different (equally
deterministic) stream: the choice changes which noise is drawn, never the
model. When XLA is chosen automatically, `evaluate` and `predict` stay in
graph mode (they are short, and their numbers then do not depend on it).

Why these rules (measured on a 2-core CPU, see benchmarks/RESULTS.md): for
the IWAE paper's 784-200-200-50 MLP VAE with a static batch, XLA costs
1.5-3 s of compiling in the first epochs and saves about 0.5 ms per step at
batch 32 and 1 ms at batch 128 (little at 512), so it repays itself after
roughly 2,000-3,000 steps; the conv VAE of Keras's example runs at 0.71x
under XLA on CPU. `steps_per_execution` removes Keras's per-batch Python
work (10-30% of a small model's step) at no compile cost, but batch-level
callbacks then run once per execution, so it is only chosen when no
callback needs every batch. With XLA, Keras still launches one compiled
program per step from a graph-mode loop; for small batches that launch is a
large part of the step, so "auto" then runs the call's steps as one XLA
`while` loop over the call's batches, stacked (`looped_train_function`): at
batch 32 epochs ran 1.12-1.29x faster, at 64 1.08x, at 128 no faster and at
512 0.87x (XLA hoists the binarization draw's counters out of the loop, which
makes that draw several times slower), hence LOOP_MAX_BATCH. The loop draws
the same noise as the per-step programs: same seeds, same XLA Philox.
"""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_vae import keras_api
from keras_vae.validation import KerasVAEWarning

__all__ = ["AutoExecution", "plan_execution", "describe_fit_data", "looped_train_function",
           "XLA_MIN_STEPS", "SPE_MAX", "LOOP_MAX_BATCH", "PER_BATCH_COST"]

XLA_MIN_STEPS = 4000
SPE_MAX = 32
LOOP_MAX_BATCH = 64
# What one step per call cost in `python -m benchmarks.throughput callbacks` (RESULTS.md).
PER_BATCH_COST = ("measured on a 2-core CPU (784-200-200-50 MLP VAE, B=128; "
                  "benchmarks/RESULTS.md, issue 17), epochs ran 36-100% slower with an empty "
                  "on_train_batch_end callback (1.36x-2.0x), 61% with KLWarmup")

_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")


def _has_conv(model):
    # Conv1D/2D/3D, Conv2DTranspose, Separable/DepthwiseConv2D, ConvEncoder, ...
    return any("Conv" in type(layer).__name__
               for layer in keras_api.flatten_layers(model, include_self=False))


def _callback_runs_per_execution(callback):
    """True if `callback` is correct when its batch hooks run once per compiled call."""
    if all(keras_api.is_default_hook(getattr(callback, hook, None)) for hook in _BATCH_HOOKS):
        return True  # no batch-level hooks at all
    if getattr(callback, "runs_per_execution", False):
        return True  # e.g. keras_vae.callbacks.StopOnNaN
    if isinstance(callback, keras.callbacks.TerminateOnNaN):
        return True
    if isinstance(callback, (keras.callbacks.BackupAndRestore, keras.callbacks.ModelCheckpoint)):
        return getattr(callback, "save_freq", None) == "epoch"
    if isinstance(callback, keras.callbacks.TensorBoard):
        # With update_freq="epoch" its batch hooks only count calls and write the graph
        # once; batch summaries, steps per second and profiling need every batch.
        return (getattr(callback, "update_freq", None) == "epoch"
                and not getattr(callback, "write_steps_per_second", True)
                and not keras_api.tensorboard_profiles(callback))
    return False


def _device_has_accelerator():
    return any(d.device_type != "CPU" for d in tf.config.list_physical_devices())


def plan_execution(model, steps_per_epoch=None, epochs=1, batch_size=None, callbacks=(),
                   steps_given=False):
    """Resolves `jit_compile` and `steps_per_execution` for a planned training run.

    Args:
      model: a built keras_vae model (`VAE`, `Autoencoder`).
      steps_per_epoch: batches per epoch, or None if unknown.
      epochs: planned number of epochs.
      batch_size: the (static) batch size, or None if unknown or variable.
      callbacks: the callbacks `fit` will run.
      steps_given: `steps_per_epoch` will be passed to `fit`. Keras 3.15 then
        runs whole executions (with 60 steps and 32 per call it trains 64), so
        steps_per_execution is chosen among the divisors of steps_per_epoch.

    Returns:
      dict with `jit_compile` (bool), `steps_per_execution` (int >= 1), `loop`
      (bool: one call's steps run as one XLA loop) and `reasons` (a dict: why,
      for each of the three).

    Example:
      >>> plan_execution(vae, steps_per_epoch=469, epochs=100, batch_size=128)
      {'jit_compile': True, 'steps_per_execution': 32, 'loop': False, 'reasons': {...}}
    """
    jit, why_jit = _plan_jit(model, steps_per_epoch, epochs, batch_size)
    spe, why_spe = _plan_spe(model, steps_per_epoch, callbacks, steps_given)
    loop, why_loop = _plan_loop(model, jit, spe, batch_size)
    return {"jit_compile": jit, "steps_per_execution": spe, "loop": loop,
            "reasons": {"jit_compile": why_jit, "steps_per_execution": why_spe,
                        "loop": why_loop}}


def _plan_jit(model, steps_per_epoch, epochs, batch_size):
    if _device_has_accelerator():
        return keras_api.resolve_auto_jit_compile(model), "Keras's rule on an accelerator"
    if keras_api.distribute_strategy(model) is not None:
        return False, "XLA stays off under a tf.distribute strategy (as in Keras)"
    if _has_conv(model):
        return False, "convolutions run faster without XLA on CPU"
    if steps_per_epoch is None or batch_size is None:
        return False, ("the epoch length or a static batch size is not known (every new "
                       "batch shape compiles again: a dataset with drop_remainder=True, or "
                       "arrays whose length the batch size divides, let XLA be chosen)")
    planned = int(steps_per_epoch) * int(epochs)
    if planned < XLA_MIN_STEPS:
        return False, (f"{planned} training steps are too few to repay compiling "
                       f"(XLA from {XLA_MIN_STEPS} steps)")
    return True, f"{planned} training steps repay compiling"


def _replicas(model):
    strategy = keras_api.distribute_strategy(model)
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def _plan_spe(model, steps_per_epoch, callbacks, steps_given=False):
    if getattr(model, "run_eagerly", False):
        return 1, "eager execution"
    if _replicas(model) > 1:
        # Keras 3.15's multi-step train function fails under MirroredStrategy with
        # "You must feed a value for placeholder tensor".
        return 1, (f"{_replicas(model)} replicas in sync (steps_per_execution > 1 fails "
                   f"there in Keras 3.15)")
    blocking = [type(c).__name__ for c in callbacks or () if not _callback_runs_per_execution(c)]
    if blocking:
        return 1, f"{', '.join(blocking)} needs every batch"
    if not steps_per_epoch:
        return 1, "the number of steps per epoch is not known"
    steps = int(steps_per_epoch)
    if not steps_given:  # the data ends the epoch, whatever the last call's length
        return min(SPE_MAX, steps), f"{steps} steps per epoch"
    spe = max(d for d in range(1, min(SPE_MAX, steps) + 1) if steps % d == 0)
    return spe, f"the largest divisor up to {SPE_MAX} of steps_per_epoch={steps}"


def _plan_loop(model, jit, spe, batch_size):
    if not jit or spe <= 1:
        return False, "XLA with more than one step per call only"
    if _device_has_accelerator() or keras_api.distribute_strategy(model) is not None:
        return False, "measured on a CPU-only machine without a tf.distribute strategy only"
    if batch_size is None or int(batch_size) > LOOP_MAX_BATCH:
        return False, (f"batch {batch_size}: one XLA program per step (the loop is faster "
                       f"up to batch {LOOP_MAX_BATCH})")
    return True, (f"batch {batch_size}: the {spe} steps of a call run as one XLA loop "
                  f"(launching a program per step costs more than batches up to "
                  f"{LOOP_MAX_BATCH} compute)")


def describe_fit_data(x, batch_size=None, steps_per_epoch=None, validation_split=0.0):
    """(steps per epoch, batch size) that `fit(x, ...)` will train with; None where unknown.

    Arrays and tensors: `ceil(len(x) / batch_size)` steps of `batch_size`
    (Keras's default 32); the batch size is None when the last batch is
    smaller (its shape differs). A `tf.data.Dataset`: its finite cardinality, and the
    static first dimension of its element spec (known with
    `drop_remainder=True`). An explicit `steps_per_epoch` wins; a
    `validation_split` shortens arrays as Keras does.
    """
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        shape = getattr(spec, "shape", None)
        batch = shape[0] if shape is not None and shape.rank else None
        if steps_per_epoch is None:
            cardinality = int(x.cardinality())
            steps_per_epoch = cardinality if cardinality > 0 else None
        return steps_per_epoch, batch
    if isinstance(x, (np.ndarray, tf.Tensor)):
        batch, n = batch_size or 32, int(x.shape[0])
        if validation_split:  # Keras trains on the first floor(n * (1 - split)) examples
            n = int(math.floor(n * (1.0 - validation_split)))
        if steps_per_epoch is None:
            steps_per_epoch = max(1, math.ceil(n / batch))
            if n % batch:
                return steps_per_epoch, None  # the last batch is smaller
        return steps_per_epoch, batch
    return steps_per_epoch, None


class AutoExecution:
    """Mixin for keras.Model subclasses: `compile` defaults to "auto" for `jit_compile`
    and `steps_per_execution`, resolved by `plan_execution` at the first `fit`.

    The resolved plan is kept in `model.execution_plan` (with its reasons) until
    the next `compile`; a later `fit` re-plans `steps_per_execution` (its
    callbacks may differ) but keeps the XLA choice, whose compile is paid.
    When XLA was chosen automatically, `evaluate` and `predict` stay in graph
    mode: they are short, would compile once per batch shape, and keep the
    graph's random stream, so their numbers do not depend on the choice.
    """

    def compile(self, optimizer="rmsprop", *args, jit_compile="auto",
                steps_per_execution="auto", **kwargs):
        for name, value in (("jit_compile", jit_compile),
                            ("steps_per_execution", steps_per_execution)):
            if isinstance(value, str) and value != "auto":
                raise ValueError(f"`{name}` must be 'auto' or a "
                                 f"{'bool' if name == 'jit_compile' else 'positive int'}. "
                                 f"Received: {name}={value!r}")
        for name in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"keras_vae models define their own loss (the negative ELBO or the "
                    f"reconstruction error, from `compute_terms`) and metrics (elbo, "
                    f"reconstruction, kl, ...): `{name}` would be ignored. Remove it; "
                    f"compile takes the optimizer and execution settings. "
                    f"Received: {name}={kwargs[name]!r}")
        self._auto_jit = jit_compile == "auto"
        self._auto_spe = steps_per_execution == "auto"
        self.execution_plan = None
        self.__dict__.pop("_train_functions", None)  # those kept by fit (base._set_training_guard)
        initial_jit = jit_compile
        if self._auto_jit and not _device_has_accelerator():
            initial_jit = False  # decided by the first fit
        super().compile(optimizer, *args, jit_compile=initial_jit,
                        steps_per_execution=1 if self._auto_spe else steps_per_execution,
                        **kwargs)
        # A saved model reloads with "auto" and plans again.
        keras_api.set_compile_config(self, jit_compile=jit_compile,
                                     steps_per_execution=steps_per_execution)

    def compile_from_config(self, config):
        # Keras skips models with their own compile(); ours takes the same arguments.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def plan_execution(self, steps_per_epoch=None, epochs=1, batch_size=None, callbacks=(),
                       steps_given=False):
        """Resolves the "auto" settings of `compile` for a planned run (see `plan_execution`).

        Settings given explicitly to `compile` are kept; XLA, once chosen, is
        kept too (its compile is paid). Returns the plan, also kept in
        `self.execution_plan`.
        """
        plan = plan_execution(self, steps_per_epoch, epochs, batch_size, callbacks, steps_given)
        reasons = plan["reasons"]
        if not getattr(self, "_auto_jit", False):
            plan["jit_compile"], reasons["jit_compile"] = bool(self.jit_compile), "set by compile()"
        elif self._auto_xla_chosen and not plan["jit_compile"]:
            plan["jit_compile"] = True
            reasons["jit_compile"] = "chosen earlier for this compile() (its compile is paid)"
        if not getattr(self, "_auto_spe", False):
            plan["steps_per_execution"] = int(self.steps_per_execution)
            reasons["steps_per_execution"] = "set by compile()"
        if not getattr(self, "_auto_jit", False):
            plan["loop"], reasons["loop"] = False, "XLA set by compile(): Keras's steps"
        else:
            plan["loop"], reasons["loop"] = _plan_loop(self, plan["jit_compile"],
                                                       plan["steps_per_execution"], batch_size)
        was = self.execution_plan or {}
        if (plan["jit_compile"] != bool(self.jit_compile)
                or plan["steps_per_execution"] != self.steps_per_execution
                or plan["loop"] != bool(was.get("loop"))):
            self.jit_compile = plan["jit_compile"]
            self.steps_per_execution = plan["steps_per_execution"]
            self.train_function = self.test_function = self.predict_function = None
        self.execution_plan = plan
        return plan

    def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None,
            steps_per_epoch=None, **kwargs):
        if self.compiled:  # (Keras raises its own error otherwise)
            steps, batch = describe_fit_data(x, batch_size, steps_per_epoch,
                                             kwargs.get("validation_split") or 0.0)
            plan = self.plan_execution(steps, epochs, batch, callbacks or (),
                                       steps_given=steps_per_epoch is not None)
            self._warn_per_batch_callbacks(plan, steps, callbacks or (),
                                           steps_per_epoch is not None)
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks,
                           steps_per_epoch=steps_per_epoch, **kwargs)

    def _warn_per_batch_callbacks(self, plan, steps, callbacks, steps_given):
        """A `KerasVAEWarning` when batch-level callbacks alone forced one step per call:
        once per model and set of such callbacks, naming them and the measured cost."""
        if not getattr(self, "_auto_spe", False) or plan["steps_per_execution"] != 1:
            return
        blocking = tuple(type(c).__name__ for c in callbacks
                         if not _callback_runs_per_execution(c))
        if not blocking:
            return
        without, _ = _plan_spe(self, steps, (), steps_given)
        if without <= 1:
            return
        warned = self.__dict__.setdefault("_kv_warned_per_batch", set())  # not model state
        if blocking in warned:
            return
        warned.add(blocking)
        warnings.warn(
            f"{', '.join(blocking)} has batch-level hooks (on_train_batch_begin/end), so fit "
            f"runs one step per call instead of {without}: {PER_BATCH_COST}. "
            f"Pass compile(steps_per_execution=1) to choose this explicitly (no warning), or "
            f"use epoch-level callbacks (TensorBoard(update_freq=\"epoch\"); for KL warm-up "
            f"VAE(warmup_steps=...) instead of KLWarmup). Said once per model.",
            KerasVAEWarning, stacklevel=3)

    @property
    def _auto_xla_chosen(self):
        """XLA on a CPU-only machine because "auto" chose it (not because compile() said so)."""
        return (getattr(self, "_auto_jit", False) and bool(self.jit_compile)
                and not _device_has_accelerator())

    def _graph_function(self, make, force):
        if not self._auto_xla_chosen:
            return make(force)
        with keras_api.graph_mode(self):
            return make(force)

    def make_train_function(self, force=False):
        if not (self.execution_plan or {}).get("loop"):
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        self.train_function = looped_train_function(self, int(self.steps_per_execution))
        return self.train_function

    def make_test_function(self, force=False):
        return self._graph_function(super().make_test_function, force)

    def make_predict_function(self, force=False):
        return self._graph_function(super().make_predict_function, force)


def looped_train_function(model, steps):
    """A Keras train function running each call's `steps` training steps as one XLA loop.

    Keras's multi-step function (TensorFlow backend) launches one XLA program
    per step from a graph-mode `tf.while_loop`. This one takes the call's
    batches from the iterator (`get_next_as_optional`, as Keras), stacks them
    and runs `model.train_step` on each inside one compiled `tf.while_loop`.
    A call with fewer batches left (the end of an epoch) runs them one by one
    with the per-step XLA program; with none left it raises StopIteration, as
    Keras's does. It returns the last step's logs. Only for the default
    distribution strategy (`plan_execution` chooses it).
    """
    def one_step(data):
        return model.train_step(data)

    one_step = tf.function(one_step, jit_compile=True, reduce_retracing=True)

    def run_steps(stacked, logs):
        def body(i, logs):
            return i + 1, model.train_step(tf.nest.map_structure(lambda t: t[i], stacked))
        return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), logs))[1]

    run_steps = tf.function(run_steps, jit_compile=True)

    @tf.function
    def multi_step_on_iterator(iterator):
        outputs = one_step.get_concrete_function(iterator.element_spec).structured_outputs
        logs = tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype), outputs)
        batches = [iterator.get_next_as_optional() for _ in range(steps)]
        count = tf.add_n([tf.cast(b.has_value(), tf.int32) for b in batches])

        def whole():
            stacked = tf.nest.map_structure(lambda *t: tf.stack(t),
                                            *[b.get_value() for b in batches])
            return run_steps(stacked, logs)

        def rest():
            out = logs
            for b in batches:
                out = tf.cond(b.has_value(), lambda b=b: one_step(b.get_value()),
                              lambda out=out: out)
            return out

        return count, tf.cond(tf.equal(count, steps), whole, rest)

    def function(iterator):
        count, logs = multi_step_on_iterator(iterator)
        if int(count) == 0:
            raise StopIteration
        return logs

    return function
