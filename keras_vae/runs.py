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

from keras_vae.files import atomic_write, save_model

__all__ = ["DEFAULTS", "resolve_config", "build_model", "train", "load_run",
           "evaluate_run", "plot_run", "export_run", "sample_run"]

DEFAULTS = {
    # data
    "data": "digits", "data_dir": None, "binarize": None,
    # model
    "model": "vae", "architecture": "mlp", "latent_dim": 2, "hidden": [256, 128],
    "activation": "relu", "likelihood": "bernoulli", "likelihood_scale": 0.1,
    "posterior": "diagonal", "prior": "standard_normal",
    "objective": "elbo", "num_samples": 1, "beta": 1.0, "free_bits": 0.0,
    "warmup_steps": 0, "warmup_schedule": "linear",
    "tied": False, "stacked": False, "corruption": None, "corruption_rate": 0.25,
    # training
    "epochs": 60, "batch_size": 64, "learning_rate": 1e-3, "seed": 0, "jit_compile": "auto",
    # outputs
    "eval_samples": 1000, "plots": True, "export": True,
    "tflite": ["float32", "float16", "int8"], "tensorboard": False,
}

_CHOICES = {
    "binarize": (None, "static", "dynamic"), "model": ("vae", "ae", "dae"),
    "architecture": ("mlp", "conv"), "posterior": ("diagonal", "full"),
    "prior": ("standard_normal", "mixture"), "objective": ("elbo", "iwae"),
    "likelihood": ("bernoulli", "gaussian", "gaussian_learned", "continuous_bernoulli"),
    "warmup_schedule": ("linear", "cyclical"),
    "corruption": (None, "gaussian", "masking", "salt_and_pepper"),
}

_RUN_FILES = ("config.json", "status.json", "model.keras", "history.json", "history.csv",
              "history.partial.json", "metrics.json", "plots", "export", "backup",
              "tensorboard")


# ----------------------------------------------------------------- config

def resolve_config(overrides=None, config_file=None):
    """DEFAULTS, updated by a JSON config file, updated by `overrides`; validated.

    Raises:
      FileNotFoundError / ValueError: for a missing or malformed config file,
        unknown keys, or values of the wrong type or outside their choices.
    """
    config = dict(DEFAULTS)
    if config_file is not None:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"Config file not found. Received: config={config_file!r}")
        try:
            with open(config_file, encoding="utf-8") as f:
                from_file = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"Config file is not valid JSON ({e}). "
                             f"Received: config={config_file!r}") from None
        if not isinstance(from_file, dict):
            raise ValueError("A config file must hold a JSON object. "
                             f"Received: config={config_file!r}")
        config.update(from_file)
    config.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown config keys; expected keys of {sorted(DEFAULTS)}. "
                         f"Received: {unknown}")
    for key, choices in _CHOICES.items():
        if config[key] not in choices:
            raise ValueError(f"`{key}` must be one of {list(choices)}. "
                             f"Received: {key}={config[key]!r}")
    for key in ("latent_dim", "epochs", "batch_size", "num_samples", "eval_samples"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"`{key}` must be a positive integer. Received: {key}={config[key]!r}")
    if not (config["jit_compile"] is True or config["jit_compile"] is False
            or config["jit_compile"] == "auto"):
        raise ValueError("`jit_compile` must be true, false or \"auto\". "
                         f"Received: jit_compile={config['jit_compile']!r}")
    for key in ("learning_rate", "likelihood_scale"):
        if not isinstance(config[key], (int, float)) or not config[key] > 0:
            raise ValueError(f"`{key}` must be a positive number. Received: {key}={config[key]!r}")
    for key in ("tied", "stacked"):
        if config[key] and config["model"] == "vae":
            raise ValueError(f"`{key}` applies to autoencoders (model 'ae' or 'dae'). "
                             f"Received: model='vae', {key}=True")
    if config["model"] != "vae" and config["objective"] != "elbo":
        raise ValueError("Autoencoders train on -log p(x|z) only; the objective applies to "
                         f"VAEs. Received: model={config['model']!r}, "
                         f"objective={config['objective']!r}")
    return config


def _likelihood(config, data_shape):
    from keras_vae import distributions
    if config["likelihood"] == "gaussian":
        return distributions.GaussianLikelihood(data_shape, scale=config["likelihood_scale"])
    return config["likelihood"]


def build_model(config, data_shape):
    """Builds and compiles the model a config describes, for data of `data_shape`."""
    import keras_vae as kv

    data_shape = tuple(data_shape)
    keras.utils.set_random_seed(config["seed"])
    hidden = tuple(config["hidden"])
    if config["model"] in ("ae", "dae"):
        from keras_vae import autoencoders
        model = autoencoders.build_autoencoder(
            config["model"], data_shape, config["latent_dim"], hidden, config["activation"],
            _likelihood(config, data_shape), tied=config["tied"], stacked=config["stacked"],
            corruption=config["corruption"], corruption_rate=config["corruption_rate"],
            seed=config["seed"])
    else:
        if config["architecture"] == "conv":
            if len(data_shape) != 3:
                raise ValueError("The conv architecture needs image data (H, W, C). "
                                 f"Received: data shape {data_shape}")
            encoder = kv.ConvEncoder(config["latent_dim"], posterior=config["posterior"])
            decoder = kv.ConvDecoder(data_shape, likelihood=_likelihood(config, data_shape))
        else:
            encoder = kv.MLPEncoder(config["latent_dim"], hidden=hidden,
                                    activation=config["activation"],
                                    posterior=config["posterior"])
            decoder = kv.MLPDecoder(data_shape, hidden=hidden[::-1],
                                    activation=config["activation"],
                                    likelihood=_likelihood(config, data_shape))
        extra = {}
        if config["corruption"] is not None:
            extra = {"corruption": config["corruption"],
                     "corruption_rate": config["corruption_rate"]}
        model = kv.VAE(encoder, decoder, prior=config["prior"], beta=config["beta"],
                       num_samples=config["num_samples"], objective=config["objective"],
                       free_bits=config["free_bits"], seed=config["seed"], **extra)
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  jit_compile=config["jit_compile"])
    return model


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
        raise ValueError("Choose one of overwrite and resume. Received: overwrite=True, resume=True")
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


def _load_data(config):
    from keras_vae import data
    (x_train, y_train), (x_test, y_test) = data.load(
        config["data"], binarize=config["binarize"], data_dir=config["data_dir"],
        seed=config["seed"])
    if config["binarize"] == "dynamic":  # evaluate on one fixed binarization
        x_test = data.binarize_static(x_test, seed=config["seed"] + 1)
    return (x_train, y_train), (x_test, y_test)


def train(config, run_dir, overwrite=False, resume=False, verbose=1):
    """Trains the model `config` describes and fills `run_dir` (see module docstring).

    With `resume=True` the config is read from `run_dir/config.json` and training
    continues from the last completed epoch (`keras.callbacks.BackupAndRestore`).

    Returns:
      dict with `history` (per-epoch logs) and `metrics` (test-set metrics).
    """
    from keras_vae import data as data_lib
    from keras_vae.callbacks import EpochCounter, KLWarmup, StopOnNaN

    _check_run_dir(run_dir, overwrite, resume)
    config_path = os.path.join(run_dir, "config.json")
    if resume:
        config = resolve_config(config_file=config_path)
    else:
        config = resolve_config(config)
    # Everything that can refuse the job runs before the folder is created or cleared.
    (x_train, y_train), (x_test, y_test) = _load_data(config)
    model = build_model(config, x_train.shape[1:])
    model._check(x_train, "training data")
    model._check(x_test, "test data")
    _create_run_dir(run_dir, overwrite)
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
    _, (x_test, y_test) = _load_data(config)
    metrics = _evaluate(model, config, x_test, y_test)
    _write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def plot_run(run_dir):
    """(Re)draws every picture of a run into `run_dir/plots`; returns the paths."""
    model, config = load_run(run_dir)
    _, (x_test, y_test) = _load_data(config)
    history = None
    if os.path.isfile(os.path.join(run_dir, "history.json")):
        with open(os.path.join(run_dir, "history.json"), encoding="utf-8") as f:
            history = json.load(f)
    return _plot(model, x_test, y_test, run_dir, history, config["seed"])


def export_run(run_dir, out_dir, version=1, tflite=None, overwrite=False):
    """Exports a run's model (SavedModel + TFLite + parity report) into `out_dir`."""
    model, config = load_run(run_dir)
    (x_train, _), _ = _load_data(config)
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
