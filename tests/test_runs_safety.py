"""Run folders are safe to write into: the marker and --overwrite, the lock, file modes,
readers that check what they read, and one-line errors for file-system failures."""

import json
import os
import shutil
import subprocess
import sys

import keras
import pytest
from conftest import tree_digest

from keras_vae import cli, files, runs

TINY = ["--epochs", "1", "--eval-samples", "10", "--no-plots", "--no-export",
        "--no-web", "--hidden", "16",
        "--latent-dim", "2"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _cmd(*args):
    return [sys.executable, "-m", "keras_vae", "--quiet", *args]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("safety") / "run")
    assert cli.main(["--quiet", "train", path, *TINY]) == 0
    return path


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of a finished tiny run."""
    path = str(tmp_path / "run")
    shutil.copytree(finished, path, symlinks=True)
    return path


def _digest(folder):
    return {k: v for k, v in tree_digest(folder).items()
            if not k.startswith(runs.LOCK)}


# ------------------------------------------------------------ marker and overwrite

def test_a_run_folder_carries_the_marker(finished):
    with open(os.path.join(finished, runs.MARKER)) as f:
        marker = json.load(f)
    assert marker["format"] == runs.MARKER_FORMAT and marker["created"]


@pytest.mark.parametrize("how", ["flag", "config"])
def test_overwrite_refused_by_validation_keeps_every_old_file(run, tmp_path, how, capsys):
    before = _digest(run)
    if how == "flag":
        extra = ["--warmup-steps", "-1"]
    else:
        (tmp_path / "c.json").write_text(json.dumps({"tflite": "float32"}))
        extra = ["--config", str(tmp_path / "c.json")]
    code = cli.main(["--quiet", "train", run, "--overwrite", *TINY, *extra])
    assert code == 2
    _one_error_line(capsys)
    assert _digest(run) == before


def test_overwrite_whose_training_fails_puts_the_old_run_back(run, capsys):
    before = _digest(run)
    code = cli.main(["--quiet", "train", run, "--overwrite", "--learning-rate", "1e5",
                     "--likelihood", "gaussian_learned", "--epochs", "2", "--no-plots",
                     "--no-export", "--no-web"])
    assert code == 1
    assert "diverged" in _one_error_line(capsys)
    assert _digest(run) == before
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "backup").mkdir(parents=True)
    (folder / "export").mkdir()
    (folder / "backup" / "thesis.tex").write_text("chapter 1")
    (folder / "export" / "clients.csv").write_text("a,b")
    before = tree_digest(folder)
    for extra in (["--overwrite"], []):
        assert cli.main(["--quiet", "train", str(folder), *TINY, *extra]) == 2
        assert "not a keras-vae run folder" in _one_error_line(capsys)
        assert tree_digest(folder) == before
    assert sorted(os.listdir(folder)) == ["backup", "export"]


def test_a_symlinked_web_folder_is_unlinked_and_its_target_never_written(run, tmp_path):
    # train writes RUN/web by default: a `web` symlink to a user's folder (a
    # site, say) must never receive the page or lose a file, with --overwrite
    # or when a run is redone.
    outside = tmp_path / "site"
    outside.mkdir()
    (outside / "index.html").write_text("my own page")
    os.symlink(outside, os.path.join(run, "web"))
    with_web = [a for a in TINY if a != "--no-web"]
    assert cli.main(["--quiet", "train", run, "--overwrite", *with_web]) == 0
    assert sorted(os.listdir(outside)) == ["index.html"]
    assert (outside / "index.html").read_text() == "my own page"
    assert not os.path.islink(os.path.join(run, "web"))
    assert os.path.isfile(os.path.join(run, "web", "decoder.tflite"))

def test_overwrite_unlinks_a_symlinked_plots_folder_never_its_target(run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"precious")
    os.symlink(outside, os.path.join(run, "plots"))
    os.symlink(outside, os.path.join(run, "export"))
    assert cli.main(["--quiet", "train", run, "--overwrite", *TINY]) == 0
    assert (outside / "keep.png").read_bytes() == b"precious"
    assert not os.path.islink(os.path.join(run, "plots"))
    assert not os.path.lexists(os.path.join(run, "export"))  # --no-export: gone, link only
    assert runs.read_status(run)["status"] == "finished"


def test_overwrite_keeps_files_of_the_user_in_a_run_folder(run):
    with open(os.path.join(run, "notes.txt"), "w") as f:
        f.write("mine")
    assert cli.main(["--quiet", "train", run, "--overwrite", *TINY]) == 0
    with open(os.path.join(run, "notes.txt")) as f:
        assert f.read() == "mine"


def test_resume_of_a_finished_run_has_nothing_to_resume(run, capsys):
    before = _digest(run)
    assert cli.main(["--quiet", "train", run, "--resume"]) == 2
    assert "nothing to resume" in _one_error_line(capsys)
    assert _digest(run) == before


# ------------------------------------------------------------------------- lock

def test_a_second_writer_refuses_naming_the_pid(run, tmp_path, capsys):
    with runs.RunLock(run):
        assert cli.main(["--quiet", "train", run, "--overwrite", *TINY]) == 2
        assert f"PID {os.getpid()}" in _one_error_line(capsys)
        assert cli.main(["evaluate", run, "--num-samples", "3"]) == 2
        assert f"PID {os.getpid()}" in _one_error_line(capsys)
        fresh = str(tmp_path / "fresh")
        os.makedirs(fresh)
        with runs.RunLock(fresh):
            assert cli.main(["--quiet", "train", fresh, *TINY]) == 2
            assert "PID" in _one_error_line(capsys)
        assert os.listdir(fresh) == [runs.LOCK]


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / runs.LOCK).write_text(dead + "\n")
    assert cli.main(["--quiet", "train", str(folder), *TINY]) == 0
    assert runs.read_status(str(folder))["status"] == "finished"


def test_two_concurrent_trains_into_one_new_folder(tmp_path):
    target = str(tmp_path / "new")
    args = _cmd("train", target, *TINY[:1], "3", *TINY[2:])
    procs = [subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(loser) == 1 and "PID" in loser[0], loser
    with open(os.path.join(target, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 3
    assert runs.read_status(target)["status"] == "finished"
    assert not [n for n in os.listdir(target) if n.startswith(".tmp-")]


# ------------------------------------------------------------------- file modes

@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                       (0o077, 0o600, 0o700)])
def test_written_files_respect_the_umask(tmp_path, mask, file_mode, dir_mode, small_vae):
    old = os.umask(mask)
    try:
        files.atomic_write(str(tmp_path / "a.json"), "{}")
        files.save_model(small_vae(), str(tmp_path / "m.keras"))
        with files.atomic_directory(str(tmp_path / "d")) as d:
            files.atomic_write(os.path.join(d, "x"), "x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == file_mode
    assert os.stat(tmp_path / "m.keras").st_mode & 0o777 == file_mode
    assert os.stat(tmp_path / "d").st_mode & 0o777 == dir_mode
    assert os.stat(tmp_path / "d" / "x").st_mode & 0o777 == file_mode
    assert sorted(os.listdir(tmp_path)) == ["a.json", "d", "m.keras"]


def test_run_files_are_readable_by_others_under_umask_022(finished):
    for name in ("model.keras", "config.json", "status.json", "metrics.json"):
        assert os.stat(os.path.join(finished, name)).st_mode & 0o777 == 0o644, name


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch,
                                                              small_vae):
    path, model_path = str(tmp_path / "f.json"), str(tmp_path / "m.keras")
    files.atomic_write(path, "old")
    files.save_model(small_vae(), model_path)
    before = tree_digest(tmp_path)

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(OSError):
        files.atomic_write(path, "new")
    with pytest.raises(OSError):
        files.save_model(small_vae(latent_dim=3), model_path)
    with pytest.raises(OSError):
        with files.atomic_directory(str(tmp_path / "d")) as d:
            files.atomic_write(os.path.join(d, "x"), "x")  # the rename inside fails
    monkeypatch.undo()
    with pytest.raises(RuntimeError):
        with files.atomic_directory(str(tmp_path / "d")) as d:
            raise RuntimeError("writer failed")
    assert tree_digest(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["f.json", "m.keras"]


def test_sample_png_failing_midway_keeps_the_old_picture(run, tmp_path, monkeypatch):
    out = str(tmp_path / "grid.png")
    runs.sample_run(run, 4, out=out)
    with open(out, "rb") as f:
        old = f.read()
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~files.umask()

    import matplotlib.figure

    def half(self, fname, *args, **kwargs):  # savefig killed mid-write
        fname.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half)
    with pytest.raises(KeyboardInterrupt):
        runs.sample_run(run, 4, out=out, overwrite=True)
    with open(out, "rb") as f:
        assert f.read() == old
    assert os.listdir(tmp_path).count("grid.png") == 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


# ---------------------------------------------------------------------- readers

def test_a_foreign_keras_model_is_refused_by_every_reader(run, tmp_path, capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(os.path.join(run, "model.keras"))
    for argv in (["evaluate", run], ["plot", run], ["sample", run],
                 ["export", run, "--out", str(tmp_path / "e")]):
        assert cli.main(argv) == 2, argv
        assert "is not a keras_vae model" in _one_error_line(capsys)
    assert not os.path.exists(tmp_path / "e")


def test_readers_refuse_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model.keras").write_bytes(b"zip?")
    assert cli.main(["evaluate", str(tmp_path / "x")]) == 2
    assert "not a keras-vae run folder" in _one_error_line(capsys)


def test_readers_ignore_temporary_leftovers(run, capsys):
    (open(os.path.join(run, ".tmp-abc.keras"), "wb")).write(b"half")
    os.makedirs(os.path.join(run, ".tmp-plots-x"))
    assert cli.main(["evaluate", run, "--num-samples", "3"]) == 0


def test_readers_refuse_a_run_that_did_not_finish(run, capsys):
    runs.write_status(run, "interrupted", phase="training", epoch=1)
    assert cli.main(["evaluate", run]) == 2
    assert "--resume" in _one_error_line(capsys)


# ---------------------------------------------------------------- CLI messages

def test_a_multi_line_error_reaches_the_user_whole(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["train", run, "--data", "mnist", "--data-dir", str(tmp_path / "none")]) == 2
    line = _one_error_line(capsys)
    assert "none" in line.split("Looked in", 1)[-1], line  # the places, not cut off
    assert not os.path.exists(run)


LONG = "r" * 300


def test_a_300_character_name_is_one_line(run, tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / LONG), *TINY]) == 2
    assert "Received: run_dir=" in _one_error_line(capsys)
    assert cli.main(["sample", run, "-n", "2", "--out", str(tmp_path / (LONG + ".png"))]) == 2
    assert "Received: out=" in _one_error_line(capsys)
    assert cli.main(["export", run, "--out", str(tmp_path / LONG)]) == 2
    assert "Received: out=" in _one_error_line(capsys)
    assert cli.main(["evaluate", str(tmp_path / LONG)]) == 2
    _one_error_line(capsys)


def test_a_full_disk_is_one_line_and_marks_the_run_failed(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a 1 MiB tmpfs here (needs root)")
    try:
        run = str(disk / "run")
        proc = subprocess.run(_cmd("train", run, "--epochs", "1", "--hidden", "400,400",
                                   "--eval-samples", "5", "--no-export", "--no-web", "--no-plots"),
                              env=ENV, capture_output=True, text=True, timeout=240)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode in (1, 2) and len(err) == 1, proc.stderr[-3000:]
        assert "No space left on device" in err[0]
        if os.path.exists(os.path.join(run, "status.json")):
            assert runs.read_status(run)["status"] == "failed"
        assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize("argv, match", [
    (["-n", "3000000000"], "Received: num_samples=3000000000"),
    (["-n", "1000000", "--out", "big.png"], "Received: num_samples=1000000"),
    (["--seed", "-1"], "Received: seed=-1"),
])
def test_sample_refusals_are_one_line_and_write_nothing(run, tmp_path, capsys, argv, match):
    argv = [a if a != "big.png" else str(tmp_path / "big.png") for a in argv]
    assert cli.main(["--quiet", "sample", run, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not os.path.exists(tmp_path / "big.png")
