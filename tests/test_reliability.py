"""Crash safety: SIGKILL mid-epoch then --resume lands on the uninterrupted weights bit for
bit; a kill during a save leaves the earlier model loadable; divergence stops cleanly."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import cli, files
from keras_vae.callbacks import StopOnNaN, TrainingDivergedError

TRAIN = ["--quiet", "train", "--epochs", "4", "--hidden", "32", "--batch-size", "8",
         "--binarize", "dynamic", "--warmup-steps", "300", "--eval-samples", "5",
         "--no-plots", "--no-export", "--no-web"]


def _train_cmd(run_dir, *extra):
    args = TRAIN[:2] + [run_dir] + TRAIN[2:] + list(extra)
    return [sys.executable, "-m", "keras_vae", *args]


def _rows(path):
    try:
        with open(path) as f:
            return len(json.load(f))
    except (OSError, ValueError):
        return 0


ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


class _Reference:
    """The uninterrupted 4-epoch run that a killed-and-resumed run must equal bit for bit.
    Started once (by the first test that asks, beside its victim) and shared: the SIGKILL
    and SIGTERM tests train the same config, so one reference serves both."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.proc = subprocess.Popen(_train_cmd(run_dir), env=ENV, stderr=subprocess.PIPE)

    def model(self):
        """Wait for the reference to finish; the path of its model.keras."""
        _, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, err[-2000:]
        return os.path.join(self.run_dir, "model.keras")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = _Reference(str(tmp_path_factory.mktemp("reference") / "full"))
    yield ref
    if ref.proc.poll() is None:  # a test failed before waiting for it
        ref.proc.kill()
        ref.proc.communicate()


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path, reference):
    killed = str(tmp_path / "killed")
    victim = subprocess.Popen(_train_cmd(killed), env=ENV, stderr=subprocess.PIPE)
    partial = os.path.join(killed, "history.partial.json")
    deadline = time.time() + 240
    while _rows(partial) < 2 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.15)  # into the third epoch
    assert victim.poll() is None, "training ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with open(os.path.join(killed, "status.json")) as f:
        at_kill = json.load(f)
    assert at_kill["status"] == "running"  # the kill left no chance to say otherwise
    assert at_kill["phase"] == "training" and at_kill["epoch"] >= 2, at_kill  # mid-epoch 3
    assert os.path.isdir(os.path.join(killed, "backup"))
    assert not os.path.exists(os.path.join(killed, "model.keras"))

    resumed = subprocess.run(_train_cmd(killed, "--resume"), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = keras.models.load_model(reference.model())
    b = keras.models.load_model(os.path.join(killed, "model.keras"))
    for wa, wb in zip(a.weights + a.optimizer.variables, b.weights + b.optimizer.variables):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    with open(os.path.join(reference.run_dir, "history.json")) as f, \
            open(os.path.join(killed, "history.json")) as g:
        ha, hb = json.load(f), json.load(g)
    assert len(hb["loss"]) == 4 and ha["loss"] == hb["loss"]
    with open(os.path.join(killed, "status.json")) as f:
        assert json.load(f)["resumed_from_epoch"] >= 2  # restored from backup/, not retrained


SAVE_LOOP = textwrap.dedent("""
    import os, sys
    import numpy as np
    import keras_vae as kv
    from keras_vae import files
    path, ready, log, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    big = kv.VAE(kv.MLPEncoder(2, hidden=(1500, 1500)), kv.MLPDecoder((28, 28, 1), hidden=(1500,)))
    bias = big.decoder.params_layer.bias
    open(ready, "w").close()
    i = start
    while True:
        i += 1
        bias.assign(np.full(bias.shape, i, "float32"))   # save number i is told by its weights
        files.save_model(big, path)
        with open(log, "a") as f:                        # i is complete and in place
            f.write(f"{i}\\n")
            f.flush()
            os.fsync(f.fileno())
""")


def _save_number(path):
    model = keras.models.load_model(path)
    assert isinstance(model, kv.VAE)
    return int(round(float(model.decoder.params_layer.bias.numpy()[0])))


def test_kill_during_save_at_several_points_leaves_a_complete_known_model(tmp_path):
    """SIGKILL while `files.save_model` is writing (a `.tmp-` file exists at the kill),
    three times at different points: the model in place is always complete and is the
    last save that finished (or the one whose rename landed just before the kill)."""
    path, log = str(tmp_path / "model.keras"), str(tmp_path / "done.log")
    small = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((28, 28, 1), hidden=(8,)))
    files.save_model(small, path)  # save number 0 (zero biases)
    open(log, "w").close()
    last = 0
    for delay in (0.2, 0.9, 1.7):
        ready = str(tmp_path / f"ready-{delay}")
        proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, path, ready, log, str(last)],
                                env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        mid_save = False
        try:
            deadline = time.time() + 120
            while not os.path.exists(ready) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(delay)
            deadline = time.time() + 10
            while time.time() < deadline and not mid_save:  # kill inside a save
                mid_save = any(n.startswith(files.TMP_PREFIX) and n.endswith(".keras")
                               for n in os.listdir(tmp_path))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert mid_save, "the kill did not land inside a save"
        with open(log) as f:
            done = [int(t) for t in f.read().split()]
        finished = done[-1] if done else last
        got = _save_number(path)
        assert got in (finished, finished + 1), (got, finished)
        assert got >= last
        last = max(got, finished)
        for name in os.listdir(tmp_path):  # the killed save's temporary: never the model
            if name.startswith(files.TMP_PREFIX):
                os.unlink(tmp_path / name)


def test_stop_on_nan_names_epoch_and_batch(digits):
    x, _ = digits
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((8, 8, 1), hidden=(8,)))
    vae.compile(optimizer="adam", steps_per_execution=1)  # the poison needs every batch

    def poison(batch, logs):
        if batch == 2:
            vae.decoder.params_layer.bias.assign(np.full((64,), np.nan, "float32"))

    cb = keras.callbacks.LambdaCallback(on_train_batch_end=poison)
    with pytest.raises(TrainingDivergedError, match="epoch 1, batch 4"):
        vae.fit(x[:512], epochs=2, batch_size=64, callbacks=[cb, StopOnNaN()], verbose=0)


def test_diverging_cli_run_exits_1_and_records_the_failure(tmp_path, capsys):
    run = str(tmp_path / "run")
    code = cli.main(["--quiet", "train", run, "--learning-rate", "1e5", "--likelihood",
                     "gaussian_learned", "--epochs", "3", "--no-plots", "--no-export", "--no-web"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0] and "epoch 1" in err[0]
    with open(os.path.join(run, "status.json")) as f:
        status = json.load(f)
    assert status["status"] == "failed" and "learning rate" in status["reason"]
    assert not os.path.exists(os.path.join(run, "model.keras"))


def test_atomic_write_leaves_old_content_on_failure(tmp_path):
    path = str(tmp_path / "f.json")
    files.atomic_write(path, "old")

    class Boom(str):
        def encode(self, *args):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(path, Boom("new"))
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_epoch_counter_advances_the_data_key_every_epoch(digits):
    import tensorflow as tf

    x, _ = digits
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(int(epoch.numpy())))
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((8, 8, 1), hidden=(8,)))
    vae.compile(optimizer="adam")
    vae.fit(kv.data.make_dataset(x[:64], batch_size=32, epoch=epoch), epochs=3, verbose=0,
            callbacks=[kv.EpochCounter(epoch), record])
    assert seen == [0, 1, 2]


def _status(run_dir):
    try:
        with open(os.path.join(run_dir, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _wait_for(proc, run_dir, done, seconds=240):
    deadline = time.time() + seconds
    while not done(_status(run_dir)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be stopped"


def _same_weights(path_a, path_b):
    a, b = keras.models.load_model(path_a), keras.models.load_model(path_b)
    assert a.optimizer.iterations.numpy() == b.optimizer.iterations.numpy()
    for wa, wb in zip(a.weights + a.optimizer.variables, b.weights + b.optimizer.variables):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())


def test_sigterm_ends_as_interrupted_and_resume_restores(tmp_path, reference):
    import shutil

    stopped = str(tmp_path / "stopped")
    victim = subprocess.Popen(_train_cmd(stopped), env=ENV, stderr=subprocess.PIPE, text=True)
    _wait_for(victim, stopped, lambda s: s.get("phase") == "training" and s.get("epoch", 0) >= 1)
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=60) == 143
    err = victim.stderr.read().strip().splitlines()
    assert len(err) == 1 and "interrupted (SIGTERM)" in err[0] and "--resume" in err[0], err
    status = _status(stopped)
    assert status["status"] == "interrupted" and status["phase"] == "training"
    k = status["epoch"]
    assert 1 <= k < 4 and os.path.isdir(os.path.join(stopped, "backup"))

    # A damaged checkpoint (a kill while Keras wrote it) is one line, never a traceback.
    damaged = str(tmp_path / "damaged")
    shutil.copytree(stopped, damaged)
    weights = os.path.join(damaged, "backup", "latest.weights.h5")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    for name in os.listdir(os.path.join(damaged, "backup")):
        if name.endswith(".bkp"):
            os.unlink(os.path.join(damaged, "backup", name))
    # The damaged resume and the good one are independent folders: run them side by side.
    bad = subprocess.Popen(_train_cmd(damaged, "--resume"), env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    resumed = subprocess.run(_train_cmd(stopped, "--resume"), env=ENV, capture_output=True,
                             text=True, timeout=300)
    _, bad_err = bad.communicate(timeout=300)
    lines = bad_err.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "damaged" in lines[0], bad_err[-2000:]

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _status(stopped)["resumed_from_epoch"] == k  # restored, not retrained
    _same_weights(reference.model(), os.path.join(stopped, "model.keras"))
    with open(os.path.join(stopped, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 4


STACKED = ["--model", "ae", "--stacked", "--epochs", "2", "--hidden", "64,32",
           "--latent-dim", "4", "--batch-size", "8", "--no-plots", "--no-export", "--no-web"]


def test_stacked_ae_killed_during_pretraining_resumes_with_the_pretraining(tmp_path):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")

    def cmd(run_dir, *extra):
        return [sys.executable, "-m", "keras_vae", "--quiet", "train", run_dir, *STACKED,
                *extra]

    reference = subprocess.Popen(cmd(full), env=ENV, stderr=subprocess.PIPE)
    victim = subprocess.Popen(cmd(killed), env=ENV, stderr=subprocess.PIPE)
    _wait_for(victim, killed, lambda s: s.get("phase") == "pretraining")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not os.path.exists(os.path.join(killed, "backup", "latest.weights.h5"))
    resumed = subprocess.run(cmd(killed, "--resume"), env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-2000:]
    _same_weights(os.path.join(full, "model.keras"), os.path.join(killed, "model.keras"))


def test_interrupted_after_training_resumes_without_training_again(tmp_path, monkeypatch, capsys):
    """SIGTERM (or Ctrl-C) during the evaluation, pictures or exports: the trained model is
    kept; the message says so, and --resume goes on from there instead of training anew."""
    from keras_vae import cli, runs

    run_dir = str(tmp_path / "run")
    args = ["--quiet", "train", run_dir, "--epochs", "2", "--hidden", "16", "--latent-dim", "2",
            "--eval-samples", "5", "--no-plots", "--no-export", "--no-web"]
    real_evaluate = runs._evaluate

    def stopped(*a, **k):
        raise cli.Terminated()

    monkeypatch.setattr(runs, "_evaluate", stopped)
    assert cli.main(args) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training had finished" in err[0] and "--resume" in err[0], err
    status = _status(run_dir)
    assert status["status"] == "interrupted" and status["phase"] == "evaluating"
    trained = keras.models.load_model(os.path.join(run_dir, "model.keras"))

    monkeypatch.setattr(runs, "_evaluate", real_evaluate)
    fits = []
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fits.append(1))
    assert cli.main(args + ["--resume"]) == 0
    assert not fits  # nothing trained again
    status = _status(run_dir)
    assert status["status"] == "finished" and status["resumed_from_epoch"] == 2
    assert os.path.isfile(os.path.join(run_dir, "metrics.json"))
    with open(os.path.join(run_dir, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 2
    resumed = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    for a, b in zip(trained.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_stop_signal_landing_in_a_finaliser_is_not_swallowed():
    """SIGTERM's handler raises in whatever Python code runs; in a `__del__` (TensorFlow's
    iterators and h5py's files have them) Python would print "Exception ignored" and go on.
    The CLI delivers such a stop again, so it still ends the run (one line, exit 143)."""
    import gc

    from keras_vae import cli

    class Finaliser:
        def __del__(self):
            raise cli.Terminated()

    with pytest.raises(cli.Terminated):
        with cli.stop_signals():
            Finaliser()  # collected at once: the Terminated is "unraisable" there
            gc.collect()
            deadline = time.time() + 5
            while time.time() < deadline:  # ordinary code, where the stop lands
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
