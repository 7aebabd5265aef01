"""Multi-worker training with `tf.distribute.MultiWorkerMirroredStrategy` (MWMS).

Keras 3.15's `fit` fails under MWMS ("Invalid reduction dimension 0",
tensorflow#72388), so this module runs the model's own `train_step` in a
small distributed loop: `strategy.run(model.train_step, ...)` once per global
batch, Keras callbacks called as `fit` calls them, epoch logs averaged over
replicas with scalar (`axis=None`) reductions.

Data: every worker builds the same seeded `keras_vae.data.make_dataset` of
*global* batches (same shuffle, same dynamic binarization) and keeps its own
slice of each, so global batch `b` holds exactly the examples single-process
training with the same `batch_size` would see. The model's `train_step`
divides its loss by `num_replicas_in_sync` (gradients are summed across
replicas, so they average over the global batch) and folds the global replica
id into its noise seed (every replica draws its own noise).

#### Running it

```none
# one machine, N local worker processes on 127.0.0.1 (free ports, TF_CONFIG set for you);
# the run folder is then evaluated, drawn and exported like any other
keras-vae train RUN_DIR --workers 2 --data digits --epochs 5 --batch-size 128

# several machines: the same command on each, with the full cluster and its own index
python -m keras_vae.distributed RUN_DIR --cluster host1:12345,host2:12345 --task-index 0   # host1
python -m keras_vae.distributed RUN_DIR --cluster host1:12345,host2:12345 --task-index 1   # host2
```

Both take every `keras-vae train` flag (derived from `keras_vae.config`) and
end bad input with one line on stderr and exit code 2.

Across machines the ports must be reachable between the hosts and every worker
loads the data itself; the chief (task 0) writes `model.keras`, `history.json`
and `status.json` to RUN_DIR, every worker `workers/worker-<i>.json`. On GPU
machines every local GPU is a replica and `--communication nccl` selects NCCL
all-reduce (CPU default: RING over gRPC). `--batch-size` is the global batch,
divisible by the number of replicas; each epoch's last partial batch is dropped.
"""

import argparse
import importlib
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time

import numpy as np

from keras_vae.files import atomic_write, save_model

__all__ = ["make_strategy", "distribute_data", "fit_distributed", "run_worker", "launch",
           "free_ports", "tf_config", "main"]

_COMMUNICATIONS = ("auto", "ring", "nccl")


def tf_config(addresses, index):
    """The TF_CONFIG JSON string of worker `index` in a cluster of `addresses` ("host:port")."""
    return json.dumps({"cluster": {"worker": list(addresses)},
                       "task": {"type": "worker", "index": int(index)}})


def _reserve_ports(n, host="127.0.0.1"):
    """`n` bound (not listening) sockets with SO_REUSEADDR, each holding a distinct port.

    While such a socket is open the kernel never hands its port to another
    `bind(port 0)`, yet a server that binds it with SO_REUSEADDR and listens
    (gRPC always sets SO_REUSEADDR, so TensorFlow's worker servers do) still
    succeeds. The launcher holds the ports until its workers have finished, so
    no other process can take a port between choosing it and the worker's bind.
    """
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def free_ports(n, host="127.0.0.1"):
    """`n` distinct TCP ports that were free on `host` a moment ago (released on return;
    `launch` holds its ports instead, see `_reserve_ports`)."""
    sockets = _reserve_ports(n, host)
    try:
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_strategy(communication="auto", timeout_seconds=None):
    """Creates the process's `MultiWorkerMirroredStrategy` from TF_CONFIG.

    Call it once per process, before any other TensorFlow work.

    Args:
      communication: "auto", "ring" (gRPC, CPU) or "nccl" (GPU) all-reduce.
      timeout_seconds: collective-op timeout (None: wait forever), so a dead
        peer makes the others fail instead of hanging.

    Raises:
      ValueError: for an unknown `communication`.
    """
    import tensorflow as tf

    if communication not in _COMMUNICATIONS:
        raise ValueError(f"`communication` must be one of {_COMMUNICATIONS}. "
                         f"Received: communication={communication!r}")
    impl = tf.distribute.experimental.CommunicationImplementation
    options = tf.distribute.experimental.CommunicationOptions(
        implementation={"auto": impl.AUTO, "ring": impl.RING, "nccl": impl.NCCL}[communication],
        timeout_seconds=timeout_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def distribute_data(strategy, x, batch_size, *, shuffle=True, seed=0, binarize=None,
                    epoch=None):
    """A distributed dataset whose global batches equal `make_dataset(x, batch_size, ...)`'s.

    Every worker builds the global-batch pipeline (`drop_remainder=True`) and
    keeps rows `[r * B/R, (r + 1) * B/R)` for each of its replicas `r` (global
    replica ids), so the union over replicas is the single-process batch.

    Args:
      strategy: a `tf.distribute.Strategy` (MWMS, or any other).
      x: `[N] + data_shape` array.
      batch_size: global batch B, divisible by `strategy.num_replicas_in_sync`.
      shuffle, seed, binarize, epoch: as in `keras_vae.data.make_dataset`; with
        `epoch` (an int64 `tf.Variable` created outside the strategy's scope)
        the shuffle and binarization are functions of `(seed, epoch)`.

    Returns:
      `(distributed_dataset, steps_per_epoch)`; elements are per-replica
      `[B/R] + data_shape` float32 batches.

    Raises:
      ValueError: if `batch_size` is not divisible by the number of replicas.
    """
    import tensorflow as tf

    from keras_vae import data

    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"The global batch_size must be divisible by the {replicas} replicas. "
                         f"Received: batch_size={batch_size}")
    per_replica = batch_size // replicas
    data_shape = list(np.shape(x)[1:])

    def dataset_fn(context):
        local = replicas // context.num_input_pipelines
        start = context.input_pipeline_id * local * per_replica
        ds = data.make_dataset(x, batch_size=batch_size, shuffle=shuffle, seed=seed,
                               binarize=binarize, drop_remainder=True, prefetch=False,
                               epoch=epoch)
        ds = ds.map(lambda xb: tf.reshape(xb[start:start + local * per_replica],
                                          [local, per_replica] + data_shape))
        return ds.unbatch().prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn), len(x) // batch_size


def fit_distributed(model, x, strategy, *, epochs=1, batch_size=128, shuffle=True, seed=0,
                    binarize=None, callbacks=None, verbose=0):
    """Trains `model` (built and compiled under `strategy.scope()`) with a distributed loop.

    Equivalent to `model.fit(make_dataset(x, batch_size, shuffle=shuffle, seed=seed,
    binarize=binarize, drop_remainder=True, epoch=v), epochs=epochs,
    callbacks=[EpochCounter(v)])` on one device (what `keras-vae train` runs, with
    the last partial batch dropped): the same global batches, keyed by the epoch
    number, and the loss averaged over the global batch.

    Args:
      model: a keras_vae model (any `keras.Model` whose `train_step` divides its
        loss by `num_replicas_in_sync`), created and compiled in `strategy.scope()`.
      x: `[N] + data_shape` training array.
      strategy: the `tf.distribute.Strategy` the model lives in.
      epochs: number of passes over `x`.
      batch_size: global batch size.
      shuffle, seed, binarize: as in `keras_vae.data.make_dataset`.
      callbacks: Keras callbacks (`on_train_batch_*` get no logs; epoch logs are
        the replica-averaged metrics), e.g. `KLWarmup`.
      verbose: 1 prints one line per epoch (chief only).

    Returns:
      `keras.callbacks.History` with per-epoch metrics (`loss`, `elbo`, ...).
    """
    import keras
    import tensorflow as tf

    from keras_vae.callbacks import EpochCounter

    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)  # call this outside scope()
    dist_ds, steps = distribute_data(strategy, x, batch_size, shuffle=shuffle, seed=seed,
                                     binarize=binarize, epoch=epoch_var)
    with strategy.scope():  # optimizer slots as mirrored variables, outside the step
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def step(iterator):
        return strategy.run(model.train_step, args=(next(iterator),))

    callbacks = [EpochCounter(epoch_var)] + list(callbacks or [])
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, model=model,
                                                 epochs=epochs, steps=steps, verbose=0)
    chief = _task_index(strategy) == 0
    callback_list.on_train_begin()
    for epoch in range(epochs):
        for metric in model.metrics:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        iterator = iter(dist_ds)
        logs = None
        for batch in range(steps):
            callback_list.on_train_batch_begin(batch)
            logs = step(iterator)
            callback_list.on_train_batch_end(batch)
        epoch_logs = {k: float(strategy.reduce(tf.distribute.ReduceOp.MEAN, logs[k], axis=None))
                      for k in sorted(logs)}
        if not math.isfinite(epoch_logs.get("loss", 0.0)):
            from keras_vae.callbacks import TrainingDivergedError
            raise TrainingDivergedError(
                f"The loss became {epoch_logs['loss']} in epoch {epoch + 1}; lower the learning "
                "rate or check the data's range against the likelihood.")
        callback_list.on_epoch_end(epoch, epoch_logs)
        if verbose and chief:
            print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(
                f"{k}: {v:.4f}" for k, v in epoch_logs.items()), flush=True)
        if getattr(model, "stop_training", False):
            break
    callback_list.on_train_end()
    return model.history


def _task_index(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0)


def _load_builder(spec):
    """`"module:function"` or `"path/file.py:function"` -> the function."""
    if spec is None:
        from keras_vae.build import build_model
        return build_model
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError("`builder` must look like 'module:function' or 'file.py:function'. "
                         f"Received: builder={spec!r}")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location("_kv_builder", target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def run_worker(run_dir, builder=None, communication="auto", timeout_seconds=600,
               save_weights=False, verbose=1):
    """The body of one worker process: reads TF_CONFIG and `run_dir/config.json`, trains.

    Creates the strategy, loads the data named in the config, builds the model
    with `builder(config, data_shape)` under the strategy (default
    `keras_vae.build.build_model`, the model `keras-vae train` builds), trains
    with `fit_distributed` (plus `KLWarmup` when the config has `warmup_steps`),
    and writes `workers/worker-<i>.json` (history, the
    replica count, the step-0 noise seed of its replicas); the chief also writes
    `model.keras`, `history.json` and `status.json`.

    Args:
      run_dir: folder holding `config.json` (keras_vae.config keys).
      builder: None or a "module:function" / "file.py:function" spec.
      communication, timeout_seconds: see `make_strategy`.
      save_weights: also write `workers/worker-<i>.weights.npz` (for checks).
      verbose: 1 prints epoch lines on the chief.

    Returns:
      dict written to `workers/worker-<i>.json`.
    """
    strategy = make_strategy(communication, timeout_seconds)  # before other TF work
    from keras_vae import config as config_schema
    from keras_vae import data

    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        config = config_schema.validate(json.load(f))
    static = "static" if config["binarize"] == "static" else None
    (x_train, _), _ = data.load(config["data"], binarize=static, data_dir=config["data_dir"],
                                seed=config["seed"])
    import keras

    keras.utils.set_random_seed(config["seed"])  # the data's shuffle depends on TF's global seed
    with strategy.scope():
        model = _load_builder(builder)(config, x_train.shape[1:])
    seeds = strategy.run(lambda: model.noise_seed(training=True))
    seeds = [s.numpy().tolist() for s in strategy.experimental_local_results(seeds)]
    callbacks = []
    if config["warmup_steps"] and config["model"] == "vae" and not getattr(
            model, "warmup_steps", 0):  # a VAE warms up in its step (build.py)
        from keras_vae.callbacks import KLWarmup
        callbacks.append(KLWarmup(config["warmup_steps"], config["warmup_schedule"],
                                  target=config["beta"]))
    history = fit_distributed(
        model, x_train, strategy, epochs=config["epochs"], batch_size=config["batch_size"],
        seed=config["seed"], binarize="dynamic" if config["binarize"] == "dynamic" and getattr(
            model, "binarize", None) != "dynamic" else None,
        callbacks=callbacks, verbose=verbose)
    index = _task_index(strategy)
    result = {"task_index": index, "num_replicas": strategy.num_replicas_in_sync,
              "noise_seeds_step0": seeds, "history": history.history,
              "tf_config": json.loads(os.environ.get("TF_CONFIG", "{}"))}
    workers = os.path.join(run_dir, "workers")
    os.makedirs(workers, exist_ok=True)
    if save_weights:
        np.savez(os.path.join(workers, f"worker-{index}.weights.npz"),
                 *[np.asarray(w) for w in model.get_weights()])
    atomic_write(os.path.join(workers, f"worker-{index}.json"), json.dumps(result, indent=1))
    if index == 0:
        save_model(model, os.path.join(run_dir, "model.keras"))
        atomic_write(os.path.join(run_dir, "history.json"),
                          json.dumps(history.history, indent=1))
        atomic_write(os.path.join(run_dir, "status.json"),
                          json.dumps({"status": "finished", "epochs": config["epochs"],
                                      "workers": strategy.num_replicas_in_sync}))
    return result


def launch(config, run_dir, workers=2, builder=None, timeout=600, overwrite=False,
           save_weights=False, communication="auto", verbose=1):
    """Trains on `workers` local processes (127.0.0.1, free ports) and waits for them.

    Writes `run_dir/config.json` (defaults filled in), then spawns
    `python -m keras_vae.distributed RUN_DIR --worker` once per worker with its
    TF_CONFIG. Kills every worker if one fails or `timeout` passes.

    Args:
      config: dict of `keras_vae.config` keys (`batch_size` is global).
      run_dir: output folder; must be empty or missing unless `overwrite`.
      workers: number of worker processes (>= 1).
      builder: None or a "module:function" / "file.py:function" spec (see `run_worker`).
      timeout: seconds before the workers are killed and TimeoutError is raised
        (None: no limit; it also bounds each collective operation).
      overwrite: allow a non-empty `run_dir`.
      save_weights, communication, verbose: passed to every worker.

    Returns:
      list of the workers' result dicts (see `run_worker`), by task index.

    Raises:
      ValueError: bad `workers`/`config`, or a non-empty `run_dir` without `overwrite`.
      RuntimeError: a worker exited with an error (its stderr tail is in the message).
      TimeoutError: the workers did not finish within `timeout` seconds.

    Example:
      >>> results = launch({"data": "digits", "epochs": 2, "batch_size": 64}, "runs/mw")
      >>> results[0]["history"]["loss"]
    """
    from keras_vae import config as config_schema

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be a positive integer. Received: workers={workers!r}")
    config = config_schema.validate(config)
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not overwrite:
        raise ValueError("The run folder is not empty; pass overwrite=True (--overwrite) to "
                         f"replace it. Received: run_dir={run_dir!r}")
    os.makedirs(os.path.join(run_dir, "workers"), exist_ok=True)
    for name in os.listdir(os.path.join(run_dir, "workers")):
        os.unlink(os.path.join(run_dir, "workers", name))
    atomic_write(os.path.join(run_dir, "config.json"), json.dumps(config, indent=1))
    reserved = _reserve_ports(workers)  # held until the workers are done: no bind race
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in reserved]
    cmd = [sys.executable, "-m", "keras_vae.distributed", run_dir, "--worker",
           "--communication", communication, "--verbose", str(verbose)] \
        + (["--collective-timeout", str(timeout)] if timeout else []) \
        + (["--builder", builder] if builder else []) + (["--save-weights"] if save_weights else [])
    procs, logs = [], []
    try:
        for i in range(workers):
            log = open(os.path.join(run_dir, "workers", f"worker-{i}.log"), "w+b")
            logs.append(log)
            env = {**os.environ, "TF_CONFIG": tf_config(addresses, i),
                   "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
            procs.append(subprocess.Popen(cmd, env=env, stdout=log if i else None, stderr=log,
                                          start_new_session=True))
        deadline = time.monotonic() + (timeout or math.inf)
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                raise RuntimeError(f"Worker {failed[0]} failed:\n" + _tail(logs[failed[0]]))
            if time.monotonic() > deadline:
                raise TimeoutError(f"The {workers} workers did not finish within {timeout} s. "
                                   f"Received: timeout={timeout}")
            time.sleep(0.2)
        failed = [i for i, p in enumerate(procs) if p.returncode != 0]
        if failed:
            raise RuntimeError(f"Worker {failed[0]} failed:\n" + _tail(logs[failed[0]]))
    finally:
        for p in procs:
            if p.poll() is None:  # our own children, each in its own session
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:  # exited meanwhile
                    pass
                p.wait(timeout=30)
        for log in logs:
            log.close()
        for s in reserved:
            s.close()
    results = []
    for i in range(workers):
        with open(os.path.join(run_dir, "workers", f"worker-{i}.json"), encoding="utf-8") as f:
            results.append(json.load(f))
    return results


def _tail(log, chars=4000):
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-chars:]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as `keras-vae` has."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None):
    """`python -m keras_vae.distributed RUN_DIR --cluster h1:p,h2:p --task-index i [train flags]`.

    One process of a multi-machine cluster (local workers: `keras-vae train
    RUN_DIR --workers N`). Returns the exit code: 0, 1 when training failed, 2
    for bad input.
    """
    from keras_vae import config as config_schema

    parser = _Parser(prog="python -m keras_vae.distributed",
                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--cluster", help="host:port,host:port,... (one process per machine)")
    parser.add_argument("--task-index", type=int, help="this machine's index in --cluster")
    parser.add_argument("--config", help="JSON config file (keras-vae train's keys)")
    config_schema.add_arguments(parser)
    parser.add_argument("--builder", help="module:function building the model (config, shape)")
    parser.add_argument("--communication", default="auto", choices=_COMMUNICATIONS)
    parser.add_argument("--timeout", type=float, help="seconds before the workers are killed")
    parser.add_argument("--collective-timeout", type=float, default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--save-weights", action="store_true")
    parser.add_argument("--verbose", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    worker_args = (args.run_dir, args.builder, args.communication, args.collective_timeout,
                   args.save_weights, args.verbose)
    if args.worker:  # spawned by launch(): TF_CONFIG is set, config.json written
        run_worker(*worker_args)
        return 0
    try:
        given = config_schema.read_json(args.config) if args.config else {}
        config = config_schema.validate({**given, **config_schema.overrides(args)})
        if args.cluster:  # one process of a multi-machine cluster
            if args.task_index is None:
                parser.error("--cluster needs --task-index")
            os.makedirs(args.run_dir, exist_ok=True)
            atomic_write(os.path.join(args.run_dir, "config.json"),
                         json.dumps(config, indent=1))
            os.environ["TF_CONFIG"] = tf_config(args.cluster.split(","), args.task_index)
            run_worker(*worker_args)
        else:
            launch(config, args.run_dir, workers=args.workers, builder=args.builder,
                   timeout=args.timeout, overwrite=args.overwrite,
                   save_weights=args.save_weights, communication=args.communication,
                   verbose=args.verbose)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        print(f"{parser.prog}: error: {str(e).strip()}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as e:
        print(f"{parser.prog}: error: {str(e).strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
