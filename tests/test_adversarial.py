"""Adversarial cases beyond the fuzz suite: odd paths, odd flag values, odd run-folder files.

Each test is one behaviour a red-team pass found broken (one-line errors with exit 2,
nothing written on a refusal, no silently accepted typo)."""

import os
import shutil

import pytest
from conftest import tree_digest

from keras_vae import cli, runs
from keras_vae import config as config_schema

TINY = ["--epochs", "1", "--eval-samples", "10", "--no-plots", "--no-export",
        "--no-web", "--hidden", "16",
        "--latent-dim", "2"]


def _one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def _main(argv):
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse
        return e.code


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("adversarial") / "run")
    assert cli.main(["--quiet", "train", path, *TINY]) == 0
    return path


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of a finished tiny run."""
    path = str(tmp_path / "run")
    shutil.copytree(finished, path, symlinks=True)
    return path


def _digest(folder):
    return {k: v for k, v in tree_digest(folder).items() if not k.startswith(runs.LOCK)}


# ------------------------------------------------------------------ empty paths

def test_train_refuses_an_empty_run_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--quiet", "train", "", *TINY]) == 2
    assert "Received: run_dir=''" in _one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def test_export_refuses_an_empty_out_and_writes_nothing_into_the_working_folder(
        run, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["--quiet", "export", run, "--out", ""]) == 2
    assert "Received: out=''" in _one_error_line(capsys)
    assert os.listdir(work) == []


# ------------------------------------------------------------------ --out targets

@pytest.mark.parametrize("target", ["run", "model", "devnull"])
def test_export_refuses_an_out_that_is_the_run_folder_or_a_file(run, target, capsys):
    out = {"run": run, "model": os.path.join(run, "model.keras"), "devnull": os.devnull}[target]
    before = _digest(run)
    assert cli.main(["--quiet", "export", run, "--out", out]) == 2
    assert "Received: out=" in _one_error_line(capsys)
    assert _digest(run) == before


def test_sample_refuses_an_out_in_a_missing_folder_naming_it(run, tmp_path, capsys):
    out = str(tmp_path / "no" / "such" / "s.npy")
    assert cli.main(["--quiet", "sample", run, "-n", "2", "--out", out]) == 2
    line = _one_error_line(capsys)
    assert "Received: out=" in line and ".tmp-" not in line
    assert not os.path.exists(tmp_path / "no")


@pytest.mark.parametrize("suffix", [".npy", ".png"])
def test_sample_refuses_an_out_that_is_a_folder(run, tmp_path, suffix, capsys):
    out = tmp_path / ("samples" + suffix)
    out.mkdir()
    assert cli.main(["--quiet", "sample", run, "-n", "2", "--out", str(out), "--overwrite"]) == 2
    line = _one_error_line(capsys)
    assert "Received: out=" in line and ".tmp-" not in line
    assert out.is_dir() and os.listdir(out) == []
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []


# ------------------------------------------------------------------ list flags

@pytest.mark.parametrize("flag, text", [("--hidden", "16,,16"), ("--hidden", "16,"),
                                        ("--tflite", ""), ("--tflite", "float32,,int8")])
def test_train_list_flags_refuse_empty_items(tmp_path, flag, text, capsys):
    path = tmp_path / "run"
    assert _main(["--quiet", "train", str(path), *TINY, flag, text]) == 2
    assert flag in _one_error_line(capsys)
    assert not path.exists()


def test_tflite_none_means_no_tflite_files():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "r", "--tflite", "none"])
    assert config_schema.overrides(args)["tflite"] == []
    assert parser.parse_args(["export", "r", "--out", "o", "--tflite", "none"]).tflite == []


@pytest.mark.parametrize("text", ["", "float32,", ",int8"])
def test_export_tflite_refuses_empty_items(run, tmp_path, text, capsys):
    out = tmp_path / "out"
    assert _main(["--quiet", "export", run, "--out", str(out), "--tflite", text]) == 2
    assert "--tflite" in _one_error_line(capsys)
    assert not out.exists()


# ------------------------------------------------------------------ config files

@pytest.mark.parametrize("text, expected", [
    ('{"epochs": 1, "epochs": 3}', "given twice: epochs"),
    ('{"epochs": ' + "9" * 5000 + "}", "not valid JSON"),
])
def test_config_file_refuses_repeated_keys_and_huge_integers(tmp_path, text, expected, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(text)
    path = tmp_path / "run"
    assert cli.main(["--quiet", "train", str(path), "--config", str(cfg)]) == 2
    line = _one_error_line(capsys)
    assert expected in line and "Received: config=" in line
    assert not path.exists()


@pytest.mark.parametrize("which", ["folder", "device"])
def test_config_that_is_not_a_regular_file_says_so(tmp_path, which, capsys):
    cfg = str(tmp_path) if which == "folder" else "/dev/zero"
    assert cli.main(["--quiet", "train", str(tmp_path / "run"), "--config", cfg]) == 2
    assert "regular JSON file" in _one_error_line(capsys)


# ------------------------------------------------------------------ damaged run files

@pytest.mark.parametrize("text", ["{{{", "[1, 2]", '{"loss": "abc"}', '{"loss": [1.0], "kl": []}',
                                  '{"loss": [true]}'])
def test_plot_refuses_a_damaged_history_and_draws_nothing(run, text, capsys):
    with open(os.path.join(run, "history.json"), "w") as f:
        f.write(text)
    before = _digest(run)
    assert cli.main(["--quiet", "plot", run]) == 2
    line = _one_error_line(capsys)
    assert "history.json" in line and "Received: run_dir=" in line
    assert _digest(run) == before


def test_plot_refuses_a_history_that_is_a_folder(run, capsys):
    os.unlink(os.path.join(run, "history.json"))
    os.mkdir(os.path.join(run, "history.json"))
    assert cli.main(["--quiet", "plot", run]) == 2
    assert "history.json" in _one_error_line(capsys)


@pytest.mark.parametrize("text", ["\x00garbage", '{"status": 3}', "[]", ""])
def test_readers_refuse_a_marked_run_whose_status_is_unreadable(run, text, capsys):
    with open(os.path.join(run, "status.json"), "w") as f:
        f.write(text)
    assert cli.main(["--quiet", "sample", run, "-n", "2"]) == 2
    line = _one_error_line(capsys)
    assert "status.json" in line and "no model.keras" not in line


def test_plot_refuses_a_plots_entry_that_is_a_file_and_keeps_it(run, capsys):
    shutil.rmtree(os.path.join(run, "plots"), ignore_errors=True)
    with open(os.path.join(run, "plots"), "w") as f:
        f.write("the user's notes")
    assert cli.main(["--quiet", "plot", run]) == 2
    assert "Received: run_dir=" in _one_error_line(capsys)
    with open(os.path.join(run, "plots")) as f:
        assert f.read() == "the user's notes"
