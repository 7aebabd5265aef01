"""Run folders: a training job described by a config (plain data) and its files.

A run folder holds everything one `train` produced:

```none
RUN_DIR/
  config.json      the full config (defaults filled in), enough to rebuild the model
  status.json      {"status": "running" | "finished" | "failed", "reason": ..., "epochs": ...,
                   "execution": the XLA / steps_per_execution plan and why (finished runs)}
  model.keras      the trained model (Keras format, exact round trip)
  history.json     per-epoch logs (loss, elbo, reconstruction, kl, beta and val_*)
  history.csv      the same as a table
  metrics.json     test-set metrics (see keras_vae.evaluation.evaluate_model)
  plots/*.png      loss curves, reconstructions, samples, latent vs PCA, manifold, interpolation
  export/          SavedModel (TF Serving layout), TFLite files, parity report
  backup/          only while training: keras.callbacks.BackupAndRestore state for --resume
```

Every file is written to a temporary name and renamed, so a crash never
leaves a half-written file in place of a good one.
"""

import csv
import io
import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_vae import config as config_schema
from keras_vae.build import build_model, load_data
from keras_vae.files import atomic_write, save_model

__all__ = ["DEFAULTS", "requested_config", "resolve_config", "build_model", "train",
           "load_run", "load_data", "evaluate_run", "plot_run", "export_run", "sample_run"]

# The defaults of every config key, derived from the schema in keras_vae/config.py.
DEFAULTS = config_schema.defaults()

_RUN_FILES = ("config.json", "status.json", "model.keras", "history.json", "history.csv",
              "history.partial.json", "metrics.json", "plots", "export", "backup",
              "tensorboard", "workers")


# ----------------------------------------------------------------- config

def requested_config(overrides=None, config_file=None):
    """The settings a user asked for: a JSON config file, updated by `overrides` (None = not given).

    Every value is checked (see `keras_vae.config.validate`), but only the
    keys given are returned: a `--resume` compares exactly these with the run.

    Raises:
      FileNotFoundError / ValueError / TypeError: a missing or malformed config
        file, unknown keys, values of the wrong type or outside their choices.
    """
    given = dict(config_schema.read_json(config_file)) if config_file is not None else {}
    given.update({k: v for k, v in (overrides or {}).items() if v is not None})
    full = config_schema.validate(given)
    return {k: full[k] for k in given}


def resolve_config(overrides=None, config_file=None):
    """DEFAULTS, updated by a JSON config file, updated by `overrides`; validated.

    Raises:
      FileNotFoundError / ValueError / TypeError: for a missing or malformed
        config file, unknown keys, or values of the wrong type or outside their choices.
    """
    return config_schema.validate(requested_config(overrides, config_file))


# ------------------------------------------------------------- file writes

def _write_json(path, obj):
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_history(run_dir, history):
    _write_json(os.path.join(run_dir, "history.json"), history)
    keys = sorted(history)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["epoch"] + keys)
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1] + [history[k][i] for k in keys])
    atomic_write(os.path.join(run_dir, "history.csv"), out.getvalue())


def write_status(run_dir, status, **details):
    _write_json(os.path.join(run_dir, "status.json"), {"status": status, **details})


# -------------------------------------------------------------------- jobs

def _check_run_dir(run_dir, overwrite, resume):
    """Refuses an existing run without --overwrite/--resume; touches nothing."""
    if overwrite and resume:
        raise ValueError("Choose one of overwrite and resume. "
                         "Received: overwrite=True, resume=True")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"The run folder path is a file. Received: run_dir={run_dir!r}")
    existing = os.path.isdir(run_dir) and any(
        os.path.exists(os.path.join(run_dir, name)) for name in _RUN_FILES)
    if existing and not (overwrite or resume):
        raise FileExistsError(
            f"{run_dir!r} already holds a run; pass --overwrite to replace it or --resume "
            f"to continue it. Received: run_dir={run_dir!r}")
    if resume and not existing:
        raise FileNotFoundError(f"Nothing to resume in {run_dir!r}. Received: run_dir={run_dir!r}")
    parent = os.path.dirname(os.path.abspath(run_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    target = run_dir if os.path.isdir(run_dir) else parent
    if not os.access(target, os.W_OK):
        raise PermissionError(f"The run folder is not writable. Received: run_dir={run_dir!r}")


def _create_run_dir(run_dir, overwrite):
    """Creates the folder; with `overwrite`, removes the previous run's files first."""
    os.makedirs(run_dir, exist_ok=True)
    if overwrite:
        for name in _RUN_FILES:
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)


def _resume_config(run_dir, requested):
    """The saved config of `run_dir` with the resumable settings of `requested` applied.

    Raises:
      ValueError: the run already finished, or `requested` changes settings that
        define the model or its training (all listed, with those that may change).
    """
    saved = resolve_config(config_file=os.path.join(run_dir, "config.json"))
    status_path = os.path.join(run_dir, "status.json")
    if os.path.isfile(status_path):
        try:
            with open(status_path, encoding="utf-8") as f:
                status = json.load(f).get("status")
        except (ValueError, OSError, AttributeError):
            status = None
        if status == "finished":
            raise ValueError(f"{run_dir!r} holds a finished run; there is nothing to resume "
                             "(train into a new folder, or --overwrite to replace it). "
                             f"Received: run_dir={run_dir!r}, status='finished'")
    given = set(requested)
    requested = config_schema.validate(requested)  # checked and normalised like the saved one
    diffs = config_schema.resume_differences(saved, {k: requested[k] for k in given})
    if diffs:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)
        raise ValueError(
            f"--resume continues the run as it was configured; these settings differ: {listed}. "
            f"A resumed run may change only {', '.join(config_schema.resumable_keys())}. "
            f"Received: run_dir={run_dir!r}")
    saved.update({k: requested[k] for k in given if k in config_schema.resumable_keys()})
    return saved


def train(config, run_dir, overwrite=False, resume=False, verbose=1, workers=1):
    """Trains the model `config` describes and fills `run_dir` (see module docstring).

    Args:
      config: dict of config keys (see `keras_vae.config.OPTIONS`); missing
        keys take their defaults. With `resume`, only the keys given count: they
        must equal the run's, except the resumable ones (e.g. `epochs`).
      run_dir: the run folder.
      overwrite: replace the run in `run_dir`.
      resume: continue the interrupted run in `run_dir` from its last completed
        epoch (`keras.callbacks.BackupAndRestore`).
      verbose: Keras verbosity.
      workers: > 1 trains on that many local worker processes
        (`keras_vae.distributed.launch`, MultiWorkerMirroredStrategy on
        127.0.0.1), then evaluates, draws and exports here as usual.

    Returns:
      dict with `history` (per-epoch logs) and `metrics` (test-set metrics).
    """
    from keras_vae import data as data_lib
    from keras_vae import validation
    from keras_vae.callbacks import EpochCounter, KLWarmup, StopOnNaN

    workers = validation.positive_int("workers", workers, maximum=64)
    _check_run_dir(run_dir, overwrite, resume)
    config_path = os.path.join(run_dir, "config.json")
    if not isinstance(config, dict):
        config_schema.validate(config)  # raises the TypeError
    if resume:
        config = _resume_config(run_dir, config)
    else:
        config = resolve_config(config)
    if workers > 1:
        for flag, bad in (("--resume", resume), ("--tensorboard", config["tensorboard"]),
                          ("--stacked", config["stacked"])):
            if bad:
                raise ValueError(f"{flag} is not available with --workers (multi-worker "
                                 f"training). Received: workers={workers}, {flag}")
    # Everything that can refuse the job runs before the folder is created or cleared.
    (x_train, y_train), (x_test, y_test) = load_data(config)
    model = build_model(config, x_train.shape[1:])
    head = model.decoder.head
    validation.check_data(x_train, model.data_shape, head, name="training data")
    validation.check_data(x_test, model.data_shape, head, name="test data")
    _create_run_dir(run_dir, overwrite)
    if workers > 1:
        return _train_workers(config, run_dir, workers, verbose, x_train, x_test, y_test)
    if not resume:
        _write_json(config_path, config)
    write_status(run_dir, "running", epochs=config["epochs"])
    try:
        # Shuffle and binarization keyed by the epoch number: resumes are bit-exact.
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        train_ds = data_lib.make_dataset(
            x_train, batch_size=config["batch_size"], shuffle=True, seed=config["seed"],
            binarize="dynamic" if config["binarize"] == "dynamic" else None, epoch=epoch)
        partial = os.path.join(run_dir, "history.partial.json")
        log = _EpochLog(partial, _read_partial(partial, resume))
        callbacks = [keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
                     EpochCounter(epoch), log, StopOnNaN()]
        if config["warmup_steps"] and config["model"] == "vae":
            callbacks.append(KLWarmup(config["warmup_steps"], config["warmup_schedule"],
                                      target=config["beta"]))
        if config["tensorboard"]:
            from keras_vae.callbacks import tensorboard_callbacks
            callbacks += tensorboard_callbacks(os.path.join(run_dir, "tensorboard"), x_test)
        if config["stacked"] and not resume:  # a resumed run restores pretrained weights
            from keras_vae import autoencoders
            autoencoders.pretrain_layerwise(model, x_train, epochs=config["epochs"],
                                            batch_size=config["batch_size"], verbose=verbose)
        model.fit(train_ds, epochs=config["epochs"], validation_data=(x_test,),
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # the dataset shuffles
        history = _history_from_rows(log.rows)
        save_model(model, os.path.join(run_dir, "model.keras"))
        _write_history(run_dir, history)
        os.unlink(partial)
        metrics = _evaluate(model, config, x_test, y_test)
        _write_json(os.path.join(run_dir, "metrics.json"), metrics)
        if config["plots"]:
            _plot(model, x_test, y_test, run_dir, history, config["seed"])
        if config["export"]:
            _export(model, os.path.join(run_dir, "export"), 1, config["tflite"], x_train,
                    overwrite=True)
    except BaseException as e:
        write_status(run_dir, "failed", reason=f"{type(e).__name__}: {e}")
        raise
    write_status(run_dir, "finished", epochs=config["epochs"],
                 execution=getattr(model, "execution_plan", None))
    return {"history": history, "metrics": metrics}


def _train_workers(config, run_dir, workers, verbose, x_train, x_test, y_test):
    """Multi-worker training into `run_dir`, then evaluation, pictures and exports here."""
    from keras_vae import distributed

    write_status(run_dir, "running", epochs=config["epochs"], workers=workers)
    try:
        results = distributed.launch(config, run_dir, workers=workers, timeout=None,
                                     overwrite=True, verbose=1 if verbose else 0)
        history = results[0]["history"]
        model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
        _write_history(run_dir, history)
        metrics = _evaluate(model, config, x_test, y_test)
        _write_json(os.path.join(run_dir, "metrics.json"), metrics)
        if config["plots"]:
            _plot(model, x_test, y_test, run_dir, history, config["seed"])
        if config["export"]:
            _export(model, os.path.join(run_dir, "export"), 1, config["tflite"], x_train,
                    overwrite=True)
    except BaseException as e:
        write_status(run_dir, "failed", reason=f"{type(e).__name__}: {e}", workers=workers)
        raise
    write_status(run_dir, "finished", epochs=config["epochs"], workers=workers)
    return {"history": history, "metrics": metrics}


class _EpochLog(keras.callbacks.Callback):
    """Writes the logs of every finished epoch to `history.partial.json` (atomically),
    so a resumed run reports its whole history."""

    def __init__(self, path, earlier):
        super().__init__()
        self.path, self.rows = path, earlier

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [r for r in self.rows if r["epoch"] < epoch]
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        _write_json(self.path, self.rows)


def _read_partial(path, resume):
    if resume and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return []


def _history_from_rows(rows):
    keys = sorted({k for r in rows for k in r} - {"epoch"})
    return {k: [r.get(k, float("nan")) for r in rows] for k in keys}


def _evaluate(model, config, x_test, y_test):
    from keras_vae import evaluation
    metrics = evaluation.evaluate_model(model, x_test, y_test,
                                        num_samples=config["eval_samples"], seed=config["seed"])
    keras_metrics = model.evaluate(x_test, batch_size=config["batch_size"], return_dict=True,
                                   verbose=0)
    metrics.update({f"keras_{k}": float(v) for k, v in keras_metrics.items()})
    return metrics


def _plot(model, x, y, run_dir, history, seed):
    from keras_vae import visualization
    plots = os.path.join(run_dir, "plots")
    os.makedirs(plots, exist_ok=True)
    return visualization.plot_all(model, x, y, out_dir=plots, history=history, seed=seed)


def _export(model, out_dir, version, variants, x_train, overwrite=False):
    from keras_vae import export
    return export.export_all(model, out_dir, version=version, tflite_variants=tuple(variants),
                             representative_data=x_train[:500], overwrite=overwrite)


def load_run(run_dir):
    """Returns `(model, config)` of a finished run folder.

    Raises:
      FileNotFoundError: no such folder, or no model in it (e.g. training never finished).
      ValueError: the model file is corrupt or truncated.
    """
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"No run folder at {run_dir!r}. Received: run_dir={run_dir!r}")
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{run_dir!r} holds no model.keras (did training finish?). "
                                f"Received: run_dir={run_dir!r}")
    config = resolve_config(config_file=os.path.join(run_dir, "config.json"))
    try:
        model = keras.models.load_model(model_path)
    except Exception as e:  # Keras raises many kinds for a broken zip
        raise ValueError(f"Could not load {model_path!r}: the file is corrupt or truncated "
                         f"({type(e).__name__}: {e}). Received: run_dir={run_dir!r}") from None
    return model, config


def evaluate_run(run_dir, num_samples=None):
    """Recomputes `metrics.json` of a run with `num_samples` importance samples."""
    model, config = load_run(run_dir)
    if num_samples is not None:
        config["eval_samples"] = num_samples
    _, (x_test, y_test) = load_data(config)
    metrics = _evaluate(model, config, x_test, y_test)
    _write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def plot_run(run_dir):
    """(Re)draws every picture of a run into `run_dir/plots`; returns the paths."""
    model, config = load_run(run_dir)
    _, (x_test, y_test) = load_data(config)
    history = None
    if os.path.isfile(os.path.join(run_dir, "history.json")):
        with open(os.path.join(run_dir, "history.json"), encoding="utf-8") as f:
            history = json.load(f)
    return _plot(model, x_test, y_test, run_dir, history, config["seed"])


def export_run(run_dir, out_dir, version=1, tflite=None, overwrite=False):
    """Exports a run's model (SavedModel + TFLite + parity report) into `out_dir`."""
    model, config = load_run(run_dir)
    (x_train, _), _ = load_data(config)
    variants = config["tflite"] if tflite is None else tflite
    return _export(model, out_dir, version, variants, x_train, overwrite=overwrite)


def sample_run(run_dir, num_samples=64, seed=0, out=None, overwrite=False):
    """Draws `num_samples` examples from a run's model; writes `.npy` or `.png` if `out` given."""
    model, _ = load_run(run_dir)
    if getattr(model, "prior", None) is None:
        raise ValueError("Sampling needs a generative model with a prior (a VAE). "
                         f"Received: a model of type {type(model).__name__}")
    samples = np.asarray(model.sample(num_samples, seed=seed))
    if out is not None:
        if os.path.exists(out) and not overwrite:
            raise FileExistsError(f"{out!r} exists; pass --overwrite to replace it. "
                                  f"Received: out={out!r}")
        if out.endswith(".npy"):
            buf = io.BytesIO()
            np.save(buf, samples)
            atomic_write(out, buf.getvalue())
        elif out.endswith(".png"):
            from keras_vae import visualization
            visualization.save_image_grid(samples, out)
        else:
            raise ValueError(f"`out` must end in .npy or .png. Received: out={out!r}")
    return samples
