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
                   (removed once model.keras and history.json are written)
  .keras-vae-run   the marker: this folder is a keras-vae run (format version, creation time)
  .keras-vae-lock  held (fcntl.flock, with the PID) while a process writes the folder
```

Every file is written to a temporary name (`.tmp-*`, ignored by readers) and renamed,
so a crash never leaves a half-written file in place of a good one. `--overwrite`
replaces only a folder with the marker, only after the new run validated, and moves
the old run aside until the new one is complete (a failed new run puts it back).
A second writer refuses while the lock is held; SIGINT/SIGTERM end a run as
"interrupted" (resumable). status.json says the phase as it goes. A run stopped
after its training (in the evaluation, pictures or exports) keeps the trained
model: `--resume` loads it and goes on from there (`training_finished`).
"""

import contextlib
import csv
import datetime
import errno
import fcntl
import io
import json
import os
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_vae import config as config_schema
from keras_vae import files
from keras_vae.build import (
    build_model,
    is_table,
    label_subset,
    load_data,
    load_table,
    num_classes_of,
)
from keras_vae.files import atomic_write, save_model

__all__ = ["DEFAULTS", "requested_config", "resolve_config", "build_model", "train",
           "load_run", "load_data", "evaluate_run", "plot_run", "export_run", "sample_run",
           "impute_run", "score_run", "impute_rows", "score_rows"]

# The defaults of every config key, derived from the schema in keras_vae/config.py.
DEFAULTS = config_schema.defaults()

_RUN_FILES = ("config.json", "status.json", "model.keras", "history.json", "history.csv",
              "history.partial.json", "metrics.json", "plots", "export", "web", "backup",
              "tensorboard", "workers")

MARKER = ".keras-vae-run"
LOCK = ".keras-vae-lock"
MARKER_FORMAT = 1
_PREVIOUS = files.TMP_PREFIX + "previous-run"  # the old run while --overwrite replaces it


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
    """Writes `status.json` atomically; on a full disk, in place as a last resort.

    A run that fails because the disk is full must still say so: the rename
    needs a new block the disk no longer has, while rewriting the few hundred
    bytes of the existing file reuses its own.
    """
    path = os.path.join(run_dir, "status.json")
    text = json.dumps({"status": status, **details}, indent=2, sort_keys=True,
                      default=_jsonable) + "\n"
    try:
        atomic_write(path, text)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not os.path.isfile(path):
            raise
        with open(path, "r+b") as f:
            f.write(text.encode("utf-8"))
            f.truncate()
            f.flush()
            os.fsync(f.fileno())


# -------------------------------------------------------------------- jobs

def _contents(run_dir):
    """The names in `run_dir` that count (not the marker, the lock or `.tmp-*` names)."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(n for n in os.listdir(run_dir)
                  if n not in (MARKER, LOCK) and not n.startswith(files.TMP_PREFIX))


def is_marked(run_dir):
    """True if `run_dir` carries the keras-vae run marker."""
    return os.path.isfile(os.path.join(run_dir, MARKER))


def _is_legacy(run_dir):
    """A run folder written before the marker existed: config.json and status.json."""
    return all(os.path.isfile(os.path.join(run_dir, n)) for n in ("config.json", "status.json"))


def read_status(run_dir):
    """The dict in `run_dir/status.json` ({} if missing or unreadable)."""
    try:
        with open(os.path.join(run_dir, "status.json"), encoding="utf-8") as f:
            status = json.load(f)
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _write_marker(run_dir):
    if not is_marked(run_dir):
        _write_json(os.path.join(run_dir, MARKER), {
            "format": MARKER_FORMAT, "created": datetime.datetime.now(
                datetime.timezone.utc).isoformat(timespec="seconds")})


class RunLock:
    """An exclusive `fcntl.flock` on `run_dir/.keras-vae-lock` holding the writer's PID.

    The kernel releases it when the process ends (however it ends), so a lock left by
    a dead process is simply taken over.

    Raises (on acquiring):
      FileExistsError: another live process holds it (its PID in the message).
    """

    def __init__(self, run_dir):
        self.run_dir, self.path, self.fd = run_dir, os.path.join(run_dir, LOCK), None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise FileExistsError(
                f"{self.run_dir!r} is being written by another keras-vae process "
                f"(PID {self._holder()}); wait for it to finish or stop it. "
                f"Received: run_dir={self.run_dir!r}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def check_free(self):
        """Raises the FileExistsError of `acquire` if a live process holds the lock."""
        if os.path.isfile(self.path):
            self.acquire().release()

    def _holder(self):
        import time
        for _ in range(20):  # the holder writes its PID just after taking the lock
            try:
                with open(self.path, encoding="utf-8") as f:
                    pid = f.read().strip()
            except OSError:
                pid = ""
            if pid:
                return pid
            time.sleep(0.05)
        return "unknown"

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _check_run_dir(run_dir, overwrite, resume, locked=False):
    """Refuses what train must not do to `run_dir`; touches nothing."""
    if overwrite and resume:
        raise ValueError("Choose one of overwrite and resume. "
                         "Received: overwrite=True, resume=True")
    files.check_path(run_dir, "run_dir")
    if os.path.lexists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"The run folder path is a file. Received: run_dir={run_dir!r}")
    if not locked and os.path.isdir(run_dir) and os.access(run_dir, os.W_OK):
        RunLock(run_dir).check_free()  # a run being written: say by whom
    contents = _contents(run_dir)
    marked = is_marked(run_dir)
    if contents and not marked and not (resume and _is_legacy(run_dir)):
        raise FileExistsError(
            f"{run_dir!r} holds files and is not a keras-vae run folder (no {MARKER} marker); "
            "nothing was changed. Choose a new or empty folder. "
            f"Received: run_dir={run_dir!r}, first entries={contents[:3]}")
    existing = bool(contents)
    if existing and not (overwrite or resume):
        raise FileExistsError(
            f"{run_dir!r} already holds a run; pass --overwrite to replace it or --resume "
            f"to continue it. Received: run_dir={run_dir!r}")
    if resume and not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise FileNotFoundError(f"Nothing to resume in {run_dir!r}. Received: run_dir={run_dir!r}")
    parent = os.path.dirname(os.path.abspath(run_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    target = run_dir if os.path.isdir(run_dir) else parent
    if not os.access(target, os.W_OK):
        raise PermissionError(f"The run folder is not writable. Received: run_dir={run_dir!r}")


def _move_aside(run_dir):
    """Renames the previous run's files into `run_dir/.tmp-previous-run` (links stay links);
    returns that folder, or None if there was nothing to move."""
    aside = os.path.join(run_dir, _PREVIOUS)
    files.remove(aside)  # left by an overwrite that was killed: an older run, replaced
    names = [n for n in _RUN_FILES if os.path.lexists(os.path.join(run_dir, n))]
    if not names:
        return None
    os.mkdir(aside)
    for name in names:
        os.rename(os.path.join(run_dir, name), os.path.join(aside, name))
    return aside


def _put_back(run_dir, aside):
    """Removes the new (failed) run's files and renames the previous run back."""
    for name in _RUN_FILES:
        files.remove(os.path.join(run_dir, name))
    for name in os.listdir(aside):
        os.rename(os.path.join(aside, name), os.path.join(run_dir, name))
    os.rmdir(aside)


def _check_backup(run_dir, repair):
    """Checks the BackupAndRestore state a --resume will load; with `repair`, puts the
    previous checkpoint pair (`*.bkp`) in place if the latest is damaged.

    Raises:
      ValueError: the checkpoint is damaged and no intact earlier one exists.
    """
    import h5py

    backup = os.path.join(run_dir, "backup")
    weights = os.path.join(backup, "latest.weights.h5")
    meta = os.path.join(backup, "training_metadata.json")
    if not os.path.lexists(weights) and not os.path.lexists(meta):
        return  # no epoch had finished: the run restarts from its first epoch

    def intact(w, m):
        try:
            with open(m, encoding="utf-8") as f:
                epoch = json.load(f)["epoch"]
            if not isinstance(epoch, int):
                return False
            def read(_, obj):
                if isinstance(obj, h5py.Dataset):
                    obj[()]  # reads every byte: a truncated file fails here

            with h5py.File(w, "r") as h5:
                h5.visititems(read)
            return True
        except Exception:  # h5py and json raise many kinds for a damaged file
            return False

    if intact(weights, meta):
        return
    if intact(weights + ".bkp", meta + ".bkp"):
        for src in (weights, meta) if repair else ():
            with open(src + ".bkp", "rb") as f:
                atomic_write(src, f.read())
        return
    raise ValueError(
        f"The checkpoint in {backup!r} is damaged or incomplete (latest.weights.h5 / "
        "training_metadata.json cannot be read), so the run cannot be resumed; train again "
        f"with --overwrite. Received: run_dir={run_dir!r}")


def _resume_config(run_dir, requested):
    """The saved config of `run_dir` with the resumable settings of `requested` applied.

    Raises:
      ValueError: the run already finished, or `requested` changes settings that
        define the model or its training (all listed, with those that may change).
    """
    saved = resolve_config(config_file=os.path.join(run_dir, "config.json"))
    if read_status(run_dir).get("status") == "finished":
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


class _Progress:
    """Keeps status.json current: the phase ("pretraining", "training", "evaluating",
    "plotting", "exporting") and the last completed epoch."""

    def __init__(self, run_dir, epochs, **extra):
        self.run_dir, self.epochs, self.extra = run_dir, epochs, extra
        self.phase, self.epoch = "starting", 0

    def set(self, phase=None, epoch=None):
        self.phase = phase or self.phase
        self.epoch = self.epoch if epoch is None else epoch
        write_status(self.run_dir, "running", phase=self.phase, epochs=self.epochs,
                     epoch=self.epoch, pid=os.getpid(), **self.extra)

    def end(self, status, **details):
        try:  # on a full disk this may fail too; the error being raised matters more
            write_status(self.run_dir, status, phase=self.phase, epochs=self.epochs,
                         epoch=self.epoch, **self.extra, **details)
        except OSError:
            pass


def train(config, run_dir, overwrite=False, resume=False, verbose=1, workers=1):
    """Trains the model `config` describes and fills `run_dir` (see module docstring).

    Args:
      config: dict of config keys (see `keras_vae.config.OPTIONS`); missing
        keys take their defaults. With `resume`, only the keys given count: they
        must equal the run's, except the resumable ones (e.g. `epochs`).
      run_dir: the run folder.
      overwrite: replace the run in `run_dir` (only a folder with the run marker).
      resume: continue the interrupted run in `run_dir` from its last completed
        epoch (`keras.callbacks.BackupAndRestore`).
      verbose: Keras verbosity.
      workers: > 1 trains on that many local worker processes
        (`keras_vae.distributed.launch`, MultiWorkerMirroredStrategy on
        127.0.0.1), then evaluates, draws and exports here as usual.

    Returns:
      dict with `history` (per-epoch logs) and `metrics` (test-set metrics).

    Raises:
      FileExistsError: `run_dir` holds a run (without overwrite/resume), holds files
        that are not a run, or another process is writing it.
      KeyboardInterrupt: SIGINT (or SIGTERM via the CLI); status.json says
        "interrupted" and the checkpoint stays for `resume`.
    """
    from keras_vae import validation

    workers = validation.positive_int("workers", workers, maximum=64)
    _check_run_dir(run_dir, overwrite, resume)
    if not isinstance(config, dict):
        config_schema.validate(config)  # raises the TypeError
    if resume:
        config = _resume_config(run_dir, config)
        _check_backup(run_dir, repair=False)
    else:
        config = resolve_config(config)
    if workers > 1:
        for flag, bad in (("--resume", resume), ("--tensorboard", config["tensorboard"]),
                          ("--stacked", config["stacked"]),
                          ("--conditional", config["conditional"]),
                          ("--labels", config["labels"] is not None),
                          ("a .csv table (--data)", is_table(config))):
            if bad:
                raise ValueError(f"{flag} is not available with --workers (multi-worker "
                                 f"training). Received: workers={workers}, {flag}")
    # Everything that can refuse the job runs before the folder is created or changed.
    with _notes(verbose):  # a table's left-out incomplete rows: one note line
        (x_train, y_train), (x_test, y_test) = load_data(config)
        table = load_table(config)
    if (config["conditional"] or config["labels"] is not None) and config["tensorboard"]:
        raise ValueError("--tensorboard is not available with --conditional or --labels yet. "
                         f"Received: conditional={config['conditional']}, "
                         f"labels={config['labels']}, tensorboard=True")
    if config["conditional"] and config["labels"] is not None:
        raise ValueError("Give --conditional (every label) or --labels N (semi-supervised), "
                         f"not both. Received: conditional=True, labels={config['labels']}")
    num_classes = num_classes_of(config, y_train, y_test)
    if config["labels"] is not None:  # the run trains on N labels, the rest -1
        y_train = label_subset(y_train, config["labels"], num_classes, config["seed"])
    with _notes(verbose):
        model = build_model(config, x_train.shape[1:], num_classes, table=table,
                            x_train=x_train)
    head, missing = model.decoder.head, bool(getattr(model, "allows_missing", False))
    validation.check_data(x_train, model.data_shape, head, name="training data",
                          allow_missing=missing)
    validation.check_data(x_test, model.data_shape, head, name="test data", allow_missing=missing)
    os.makedirs(run_dir, exist_ok=True)
    with RunLock(run_dir):
        _check_run_dir(run_dir, overwrite, resume, locked=True)  # again, under the lock
        if resume:
            _check_backup(run_dir, repair=True)
        aside = _move_aside(run_dir) if overwrite else None
        _write_marker(run_dir)
        try:
            if workers > 1:
                result = _train_workers(config, run_dir, workers, verbose, x_train, x_test,
                                        y_test)
            else:
                result = _train_here(config, run_dir, resume, verbose, model, x_train, x_test,
                                     y_test, y_train)
        except KeyboardInterrupt:
            if aside is not None:  # the new run is resumable; the one it replaces goes
                files.remove(aside)
            raise
        except BaseException:
            if aside is not None:
                _put_back(run_dir, aside)
            raise
        if aside is not None:
            files.remove(aside)
    return result


def _pipeline_binarize(config, model):
    """"dynamic" if the tf.data pipeline must binarize: models that binarize inside
    their step (`VAE(binarize="dynamic")`, built so by build.py) get grey batches."""
    if config["binarize"] == "dynamic" and getattr(model, "binarize", None) != "dynamic":
        return "dynamic"
    return None


def _train_here(config, run_dir, resume, verbose, model, x_train, x_test, y_test,
                y_train=None):
    """Single-process training into the locked, marked `run_dir`."""
    from keras_vae import data as data_lib
    from keras_vae.callbacks import EpochCounter, KLWarmup, StopOnNaN

    config_path = os.path.join(run_dir, "config.json")
    if not resume:
        _write_json(config_path, config)
    progress = _Progress(run_dir, config["epochs"])
    if resume and training_finished(run_dir):
        return _after_training(config, run_dir, verbose, progress, x_train, x_test, y_test)
    progress.set("starting")
    with _status_on_exit(progress):
        # Shuffle and binarization keyed by the epoch number: resumes are bit-exact.
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        # batches (x, y), validation (x_test, y_test)
        conditional = bool(config["conditional"]) or config["labels"] is not None
        train_ds = data_lib.make_dataset(
            x_train, y_train if conditional else None, batch_size=config["batch_size"],
            shuffle=True, seed=config["seed"],
            binarize=_pipeline_binarize(config, model), epoch=epoch)
        partial = os.path.join(run_dir, "history.partial.json")
        log = _EpochLog(partial, _read_partial(partial, resume), progress)
        # The backup stays until model.keras and history.json are written (below), so a
        # stop at any moment leaves either the last epoch's checkpoint or the trained model.
        backup = os.path.join(run_dir, "backup")
        callbacks = [keras.callbacks.BackupAndRestore(backup, double_checkpoint=True,
                                                      delete_checkpoint=False),
                     EpochCounter(epoch), log, StopOnNaN()]
        if config["warmup_steps"] and config["model"] == "vae" and not getattr(
                model, "warmup_steps", 0):  # a VAE warms up in its step (build.py)
            callbacks.append(KLWarmup(config["warmup_steps"], config["warmup_schedule"],
                                      target=config["beta"]))
        if config["tensorboard"]:
            from keras_vae.callbacks import tensorboard_callbacks
            callbacks += tensorboard_callbacks(os.path.join(run_dir, "tensorboard"), x_test)
        checkpointed = os.path.isfile(os.path.join(run_dir, "backup", "latest.weights.h5"))
        if config["stacked"] and not (resume and checkpointed):
            # A checkpoint holds the pretrained weights; without one (killed during the
            # pretraining or the first epoch) the pretraining runs again from the start.
            from keras_vae import autoencoders
            progress.set("pretraining")
            autoencoders.pretrain_layerwise(model, x_train, epochs=config["epochs"],
                                            batch_size=config["batch_size"], verbose=verbose)
        if resume and checkpointed:
            progress.extra["resumed_from_epoch"] = len(log.rows)
            if verbose:
                print(f"Restoring from the checkpoint after epoch {len(log.rows)}", flush=True)
        progress.set("training", epoch=len(log.rows))
        with _notes(verbose):  # e.g. "KLWarmup ... runs one step per call": one line each
            model.fit(train_ds, epochs=config["epochs"],
                      validation_data=(x_test, y_test) if conditional else (x_test,),
                      callbacks=callbacks, verbose=verbose, shuffle=False)  # dataset shuffles
        history = _history_from_rows(log.rows)
        save_model(model, os.path.join(run_dir, "model.keras"))
        _write_history(run_dir, history)  # last: it marks the training finished
        os.unlink(partial)
        files.remove(backup)
    return _outputs(model, history, config, run_dir, verbose, progress, x_train, x_test,
                    y_test)


@contextlib.contextmanager
def _status_on_exit(progress):
    """Ends the run's status as "interrupted" (SIGINT/SIGTERM) or "failed" (any other
    error) when the block raises, and lets the exception through."""
    try:
        yield
    except KeyboardInterrupt as e:
        progress.end("interrupted", signal=getattr(e, "signal_name", "SIGINT"))
        raise
    except BaseException as e:
        progress.end("failed", reason=f"{type(e).__name__}: {e}")
        raise


def training_finished(run_dir):
    """True if `run_dir`'s training ended (model.keras and history.json written) but the
    run was stopped later, in its evaluation, pictures or exports."""
    return all(os.path.isfile(os.path.join(run_dir, name))
               for name in ("model.keras", "history.json"))


def _after_training(config, run_dir, verbose, progress, x_train, x_test, y_test):
    """--resume of a run stopped after its training: the saved model, no training."""
    with _status_on_exit(progress):
        model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
        with open(os.path.join(run_dir, "history.json"), encoding="utf-8") as f:
            history = json.load(f)
        files.remove(os.path.join(run_dir, "backup"))
        progress.extra["resumed_from_epoch"] = len(next(iter(history.values()), []))
        if verbose:
            print("Training had finished; going on with the evaluation and outputs", flush=True)
    return _outputs(model, history, config, run_dir, verbose, progress, x_train, x_test,
                    y_test)


def _outputs(model, history, config, run_dir, verbose, progress, x_train, x_test, y_test):
    """Evaluation, pictures and exports of a trained single-process run; status finished."""
    with _status_on_exit(progress):
        progress.set("evaluating")
        metrics = _evaluate(model, config, x_test, y_test)
        _write_json(os.path.join(run_dir, "metrics.json"), metrics)
        if config["plots"] and is_table(config):
            if verbose:
                print("note: no pictures for a .csv table (they show images); "
                      "metrics.json has the numbers", file=sys.stderr, flush=True)
        elif config["plots"]:
            progress.set("plotting")
            _plot(model, x_test, y_test, run_dir, history, config["seed"])
        if config["export"]:
            progress.set("exporting")
            _export(model, os.path.join(run_dir, "export"), 1, config["tflite"], x_train,
                    overwrite=True)
        if config["web"] and not is_table(config):
            progress.set("exporting")
            _web(model, config, os.path.join(run_dir, "web"), overwrite=True)
    progress.phase = "done"
    write_status(run_dir, "finished", epochs=config["epochs"],
                 execution=getattr(model, "execution_plan", None), **progress.extra)
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
        if config["web"] and not is_table(config):
            _web(model, config, os.path.join(run_dir, "web"), overwrite=True)
    except KeyboardInterrupt as e:  # the launcher has ended the workers
        write_status(run_dir, "interrupted", workers=workers,
                     signal=getattr(e, "signal_name", "SIGINT"),
                     reason="multi-worker runs do not resume: train again with --overwrite")
        raise
    except BaseException as e:
        write_status(run_dir, "failed", reason=f"{type(e).__name__}: {e}", workers=workers)
        raise
    write_status(run_dir, "finished", epochs=config["epochs"], workers=workers)
    return {"history": history, "metrics": metrics}


@contextlib.contextmanager
def _notes(verbose):
    """keras_vae's own warnings as one `note:` line each on stderr (none when quiet).

    A run's execution plan is in status.json either way; other warnings pass through.
    """
    from keras_vae.validation import KerasVAEWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KerasVAEWarning)
        try:
            yield
        finally:
            for w in caught:
                if not issubclass(w.category, KerasVAEWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                elif verbose:
                    print(f"note: {w.message}", file=sys.stderr, flush=True)


class _EpochLog(keras.callbacks.Callback):
    """Writes the logs of every finished epoch to `history.partial.json` (atomically),
    so a resumed run reports its whole history."""

    def __init__(self, path, earlier, progress=None):
        super().__init__()
        self.path, self.rows, self.progress = path, earlier, progress

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [r for r in self.rows if r["epoch"] < epoch]
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        _write_json(self.path, self.rows)
        if self.progress is not None:
            self.progress.set("training", epoch=epoch + 1)


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
    # A progress bar (stdout) for a person watching; none into a pipe or a log file.
    metrics = evaluation.evaluate_model(model, x_test, y_test,
                                        num_samples=config["eval_samples"], seed=config["seed"],
                                        verbose=int(sys.stdout.isatty()))
    labelled = config.get("conditional") or config.get("labels") is not None
    keras_metrics = model.evaluate(x_test, y_test if labelled else None,
                                   batch_size=config["batch_size"], return_dict=True,
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


# Names for the web page's class selector (other data sets: "0", "1", ...).
_CLASS_NAMES = {"fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")}


def _web(model, config, out_dir, overwrite=False):
    from keras_vae import export
    names = _CLASS_NAMES.get(config["data"]) if getattr(model, "conditional", False) else None
    return export.web(model, out_dir, overwrite=overwrite, class_names=names)


def load_run(run_dir):
    """Returns `(model, config)` of a finished run folder.

    The folder must be ours (the marker, or config.json + status.json for folders
    written before the marker), finished, and hold a keras_vae model.

    Raises:
      FileNotFoundError: no such folder, or no model in it (e.g. training never finished).
      ValueError: not a keras-vae run folder, a run that did not finish, or a model file
        that is corrupt, truncated or not a keras_vae model.
    """
    from keras_vae.base import BaseAutoencoder

    files.check_path(run_dir, "run_dir")
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"No run folder at {run_dir!r}. Received: run_dir={run_dir!r}")
    if not (is_marked(run_dir) or _is_legacy(run_dir)):
        raise ValueError(f"{run_dir!r} is not a keras-vae run folder (no {MARKER} marker, "
                         "no config.json and status.json). Received: run_dir={run_dir!r}")
    status = read_status(run_dir).get("status")
    if not isinstance(status, str) and is_marked(run_dir):  # our runs always write one
        raise ValueError(f"{run_dir!r} has a missing or unreadable status.json (expected a "
                         "JSON object with a \"status\"), so it is not known to have finished. "
                         f"Received: run_dir={run_dir!r}")
    if status not in ("finished", None) or not os.path.isfile(model_path):
        if status in ("running", "interrupted", "failed"):
            raise ValueError(f"{run_dir!r} holds a run that did not finish (status "
                             f"{status!r}); continue it with `keras-vae train {run_dir} "
                             f"--resume`. Received: run_dir={run_dir!r}, status={status!r}")
        raise FileNotFoundError(f"{run_dir!r} holds no model.keras (did training finish?). "
                                f"Received: run_dir={run_dir!r}")
    config = resolve_config(config_file=os.path.join(run_dir, "config.json"))
    try:
        model = keras.models.load_model(model_path)
    except Exception as e:  # Keras raises many kinds for a broken zip
        text = " ".join(str(e).split())
        if "Could not locate class" in text or "Unknown layer" in text:
            raise ValueError(
                f"{model_path!r} is not a keras_vae model: it uses classes no imported package "
                "registered (outside this CLI, `import keras_vae` before "
                "keras.models.load_model; a model of another package needs that package). "
                f"Received: run_dir={run_dir!r}, error={text[:200]!r}") from None
        raise ValueError(f"Could not load {model_path!r}: the file is corrupt or truncated "
                         f"({type(e).__name__}: {text[:300]}). "
                         f"Received: run_dir={run_dir!r}") from None
    if not isinstance(model, BaseAutoencoder):
        raise ValueError(f"{model_path!r} is not a keras_vae model (expected a VAE or an "
                         f"autoencoder of keras_vae). Received: run_dir={run_dir!r}, "
                         f"a model of type {type(model).__module__}.{type(model).__name__}")
    return model, config


def _writing(run_dir):
    """The lock of a reader that writes into the run folder (evaluate, plot, export)."""
    return RunLock(run_dir)


def evaluate_run(run_dir, num_samples=None):
    """Recomputes `metrics.json` of a run with `num_samples` importance samples."""
    model, config = load_run(run_dir)
    if num_samples is not None:
        config["eval_samples"] = num_samples
    _, (x_test, y_test) = load_data(config)
    with _writing(run_dir):
        metrics = _evaluate(model, config, x_test, y_test)
        _write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def plot_run(run_dir):
    """(Re)draws every picture of a run into `run_dir/plots`; returns the paths."""
    model, config = load_run(run_dir)
    if is_table(config):
        raise ValueError(f"{run_dir!r} was trained on a .csv table; its pictures would show "
                         "images, so there are none (metrics.json has the numbers). "
                         f"Received: run_dir={run_dir!r}, data={config['data']!r}")
    _, (x_test, y_test) = load_data(config)
    history = None
    if os.path.lexists(os.path.join(run_dir, "history.json")):
        history = _read_history(run_dir)
    plots = os.path.join(run_dir, "plots")
    if os.path.islink(plots):
        raise ValueError(f"{plots!r} is a symbolic link; keras-vae draws only into a real "
                         f"folder of the run. Received: run_dir={run_dir!r}")
    if os.path.lexists(plots) and not os.path.isdir(plots):
        raise ValueError(f"{plots!r} is a file, not a folder; keras-vae draws only into the "
                         f"run's plots folder (move the file away). Received: run_dir={run_dir!r}")
    with _writing(run_dir):
        return _plot(model, x_test, y_test, run_dir, history, config["seed"])


def _read_history(run_dir):
    """history.json of a run: a dict of equally long lists of numbers (ValueError if not)."""
    path = os.path.join(run_dir, "history.json")
    try:
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
        ok = (isinstance(history, dict) and history
              and all(isinstance(v, list) and v and all(
                  isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                  for v in history.values())
              and len({len(v) for v in history.values()}) == 1)
    except (OSError, ValueError, RecursionError):
        ok = False
    if not ok:
        raise ValueError(f"{path!r} is damaged (expected a JSON object of equally long lists of "
                         "numbers, one per logged quantity); restore it, or delete it to draw "
                         f"the other pictures. Received: run_dir={run_dir!r}")
    return history


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def export_run(run_dir, out_dir, version=1, tflite=None, overwrite=False, web=False):
    """Exports a run's model (SavedModel + TFLite + parity report) into `out_dir`.

    With `web`, writes the browser page instead (`kv.export.web`; image runs only) into
    `out_dir`, by default `run_dir/web`, and returns the path of its index.html.
    """
    if web:
        return _export_web(run_dir, out_dir, overwrite)
    files.check_path(out_dir, "out")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"The export folder path is a file, not a folder. "
                         f"Received: out={out_dir!r}")
    if os.path.isdir(run_dir) and os.path.realpath(out_dir) == os.path.realpath(run_dir):
        raise ValueError("The export folder may not be the run folder itself (its files would "
                         f"mix with the run's; the run's own export is {run_dir!r}/export). "
                         f"Received: out={out_dir!r}, run_dir={run_dir!r}")
    model, config = load_run(run_dir)
    (x_train, _), _ = load_data(config)
    variants = config["tflite"] if tflite is None else tflite
    if _inside(out_dir, run_dir):
        with _writing(run_dir):
            return _export(model, out_dir, version, variants, x_train, overwrite=overwrite)
    return _export(model, out_dir, version, variants, x_train, overwrite=overwrite)


def _export_web(run_dir, out_dir, overwrite):
    out_dir = os.path.join(run_dir, "web") if out_dir is None else out_dir
    files.check_path(out_dir, "out")
    if os.path.isdir(run_dir) and os.path.realpath(out_dir) == os.path.realpath(run_dir):
        raise ValueError("The web export folder may not be the run folder itself (the run's "
                         f"own page is {run_dir!r}/web). Received: out={out_dir!r}")
    model, config = load_run(run_dir)
    if is_table(config):
        raise ValueError(f"{run_dir!r} was trained on a .csv table; the web page shows "
                         "images, so there is none. Received: "
                         f"run_dir={run_dir!r}, data={config['data']!r}")
    if _inside(out_dir, run_dir):
        with _writing(run_dir):
            return _web(model, config, out_dir, overwrite=overwrite)
    return _web(model, config, out_dir, overwrite=overwrite)


def sample_run(run_dir, num_samples=64, seed=0, out=None, overwrite=False, label=None):
    """Draws `num_samples` examples from a run's model; writes `.npy` or `.png` if `out` given.

    `label`: the class of every sample of a conditional run (`--conditional`);
    required there, refused for other runs.
    """
    if out is not None:
        _check_out_file(out, (".npy", ".png"), overwrite)
    model, _ = load_run(run_dir)
    if getattr(model, "prior", None) is None:
        raise ValueError("Sampling needs a generative model with a prior (a VAE). "
                         f"Received: a model of type {type(model).__name__}")
    conditional = bool(getattr(model, "conditional", False))
    if conditional and label is None:
        raise ValueError(f"This run is conditional: give the class with --label (0 to "
                         f"{model.num_classes - 1}). Received: label=None")
    if not conditional and label is not None:
        raise ValueError("--label needs a conditional run (train with --conditional); this "
                         f"run is unconditional. Received: label={label!r}")
    if conditional:
        from keras_vae import validation
        validation.labels("label", [label] if not isinstance(label, (str, bytes)) else label,
                          None, model.num_classes)
    if out is not None and out.lower().endswith(".png"):  # refuse a picture too big before sampling
        from keras_vae import resources
        resources.check_grid(num_samples, model.data_shape, name="num_samples")
    samples = np.asarray(model.sample(num_samples, y=label, seed=seed) if conditional
                         else model.sample(num_samples, seed=seed))
    if out is not None:
        if os.path.exists(out) and not overwrite:
            raise FileExistsError(f"{out!r} exists; pass --overwrite to replace it. "
                                  f"Received: out={out!r}")
        if out.lower().endswith(".npy"):
            buf = io.BytesIO()
            np.save(buf, samples)
            atomic_write(out, buf.getvalue())
        elif out.lower().endswith(".png"):
            from keras_vae import visualization
            visualization.save_image_grid(samples, out)  # atomic: a temporary name, renamed
        else:
            raise ValueError(f"`out` must end in .npy or .png. Received: out={out!r}")
    return samples


# ------------------------------------------------------------ tables: impute and score

# Importance samples per row behind `keras-vae impute` for a MIWAE table model, and the
# resampled draws whose most frequent value fills a binary or categorical cell.
IMPUTE_SAMPLES = 1000
_MODE_DRAWS = 101


def impute_rows(model, x, multiple=None, seed=0):
    """The imputation behind `keras-vae impute`: the one place that picks the method.

    A model trained on incomplete data (`objective="miwae"`) imputes by
    importance sampling (`keras_vae.impute(..., method="importance")`, L =
    `IMPUTE_SAMPLES`): a numeric cell gets E[x_m | x_o]; a binary or categorical
    cell, whose conditional mean is not one of its values, gets the most
    frequent value of `_MODE_DRAWS` sampling-importance-resampling draws (an
    estimate of its conditional mode). `multiple=M` gives M SIR copies
    (`method="multiple"`). A complete-data model uses `method="mean"` (the
    encode/decode fixed point, observed values clamped, missing ones starting
    at the column means) and for `multiple=M` M pseudo-Gibbs chains (seeds
    `seed..seed+M-1`).

    Args:
      x: float32 `[N, D]`, NaN = missing (user units).
      multiple: None, or M >= 1 imputed copies.

    Returns:
      `[N, D]`, or `[M, N, D]` with `multiple`; every observed entry unchanged.
    """
    from keras_vae.applications import impute
    if getattr(model, "allows_missing", False):
        if multiple is not None:
            return impute(model, x, method="multiple", num_samples=IMPUTE_SAMPLES,
                          num_imputations=multiple, seed=seed)
        filled = impute(model, x, method="importance", num_samples=IMPUTE_SAMPLES, seed=seed)
        kinds = getattr(model.decoder.head, "kinds", ("numeric",) * x.shape[1])
        discrete = np.array([k != "numeric" for k in kinds])
        holes = np.isnan(x) & discrete[None]
        if holes.any():
            draws = impute(model, x, method="multiple", num_samples=IMPUTE_SAMPLES,
                           num_imputations=_MODE_DRAWS, seed=seed + 1)
            filled[holes] = _most_frequent(draws)[holes]
        return filled
    mask = np.isfinite(x)
    start = np.where(mask, x, _start_values(model, x)[None]).astype(np.float32)
    if multiple is None:
        return impute(model, start, mask, method="mean", init=start)
    return np.stack([impute(model, start, mask, method="pseudo_gibbs", seed=seed + i,
                            init=start) for i in range(multiple)])


def _most_frequent(draws):
    """Per cell, the most frequent value over the first axis of `draws [M, N, D]` (ties: the
    smallest value)."""
    ordered = np.sort(draws, axis=0)
    m = ordered.shape[0]
    best, best_count = ordered[0].copy(), np.zeros(ordered.shape[1:], int)
    run = np.ones(ordered.shape[1:], int)
    for i in range(1, m + 1):
        if i < m:
            same = ordered[i] == ordered[i - 1]
        else:
            same = np.zeros(ordered.shape[1:], bool)
        ended = ~same
        better = ended & (run > best_count)
        best = np.where(better, ordered[i - 1], best)
        best_count = np.where(better, run, best_count)
        if i < m:
            run = np.where(same, run + 1, 1)
    return best


def _start_values(model, x):
    """Per column, where the chains start: the observed mean of a numeric column, the most
    frequent observed value of a binary or categorical one (a valid value or code)."""
    kinds = getattr(model.decoder.head, "kinds", ("numeric",) * x.shape[1])
    out = np.zeros(x.shape[1], np.float32)
    for j, kind in enumerate(kinds):
        col = x[:, j][np.isfinite(x[:, j])]
        if not col.size:  # nothing observed in these rows: the training mean, low, code 0
            shift = keras.ops.convert_to_numpy(model.decoder.head.shift) if hasattr(
                model.decoder.head, "shift") else np.zeros(x.shape[1])
            out[j] = shift[j]
        elif kind == "numeric":
            out[j] = col.mean()
        else:
            values, counts = np.unique(col, return_counts=True)
            out[j] = values[np.argmax(counts)]
    return out


def score_rows(model, x, num_samples=100, seed=0):
    """The anomaly score behind `keras-vae score`: -log p(x) per row (nats, IWAE with K =
    `num_samples`), `keras_vae.anomaly_scores(method="nll")`."""
    from keras_vae.applications import anomaly_scores
    return anomaly_scores(model, x, method="nll", num_samples=num_samples, seed=seed)


def _check_out_file(out, suffixes, overwrite, data=None):
    """`out` names a new file ending in one of `suffixes` (or an existing one with
    `overwrite`) in an existing folder, and is never the input file `data`."""
    files.check_path(out, "out")
    if not str(out).lower().endswith(suffixes):
        raise ValueError(f"`out` must end in {' or '.join(suffixes)}. Received: out={out!r}")
    if os.path.isdir(out):
        raise IsADirectoryError(f"{out!r} is a folder; name a {' or '.join(suffixes)} file. "
                                f"Received: out={out!r}")
    if data is not None and (os.path.realpath(out) == os.path.realpath(data) or (
            os.path.exists(out) and os.path.exists(data) and os.path.samefile(out, data))):
        raise ValueError("`out` is the input file (directly or through a link); keras-vae never "
                         f"writes over its input. Received: out={out!r}, data={data!r}")
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f"{out!r} exists; pass --overwrite to replace it. "
                              f"Received: out={out!r}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The folder of `out` does not exist: {parent!r}. "
                                f"Received: out={out!r}")


def _table_input(run_dir, data):
    """`(model, table, header, rows, x)` of a table run and a CSV of rows to work on."""
    from keras_vae import sources, tables
    files.check_path(data, "data")
    if not os.path.isfile(data):
        raise FileNotFoundError(f"No such file: {data!r}. Received: data={data!r}")
    model, _ = load_run(run_dir)
    description = getattr(getattr(model.decoder, "head", None), "table", None)
    if not description:
        raise ValueError(f"{run_dir!r} was not trained on a .csv table (train with --data "
                         f"table.csv). Received: run_dir={run_dir!r}")
    table = tables.Table.from_description(description, source=data)
    header, rows = sources.read_csv(data)
    return model, table, header, rows, table.encode(header, rows, source=data)


def impute_run(run_dir, data, out, multiple=None, overwrite=False, seed=0):
    """Fills the empty / NaN cells of the CSV `data` with a table run's model into `out`.

    `out` gets the same header and rows, the observed cells exactly as they
    were and the missing ones imputed in the table's units (category texts for
    categorical columns, one of the two values for binary ones). With
    `multiple=M` it holds M imputed copies one after the other, with a first
    column `imputation` (1..M). Written atomically; never over `data`, never
    over an existing file without `overwrite`.

    Returns:
      the imputed values, `[N, D]` or `[M, N, D]`.
    """
    from keras_vae import sources, validation
    if multiple is not None:
        multiple = validation.positive_int("multiple", multiple, maximum=1000)
    _check_out_file(out, (".csv",), overwrite, data)
    model, table, header, rows, x = _table_input(run_dir, data)
    filled = impute_rows(model, x, multiple=multiple, seed=seed)
    if multiple is None:
        text = sources.csv_text(header, table.decode(filled, cells=rows))
    else:
        copies = [(str(m + 1),) + r for m in range(multiple)
                  for r in table.decode(filled[m], cells=rows)]
        text = sources.csv_text(("imputation",) + tuple(header), copies)
    _check_out_file(out, (".csv",), overwrite, data)  # again, just before writing
    atomic_write(out, text)
    return filled


def score_run(run_dir, data, out, num_samples=100, overwrite=False, seed=0):
    """Writes `row,score` (data row from 1, -log p(x) in nats) for each row of `data` to `out`."""
    from keras_vae import sources, validation
    num_samples = validation.positive_int("num_samples", num_samples, maximum=100_000)
    _check_out_file(out, (".csv",), overwrite, data)
    model, _, _, _, x = _table_input(run_dir, data)
    scores = score_rows(model, x, num_samples=num_samples, seed=seed)
    text = sources.csv_text(("row", "score"), [(str(i + 1), repr(float(v)))
                                               for i, v in enumerate(scores)])
    _check_out_file(out, (".csv",), overwrite, data)
    atomic_write(out, text)
    return scores
