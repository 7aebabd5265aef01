"""The `keras-vae` command line end to end: run folders, files and their contents, errors."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import tree_digest
from PIL import Image

from keras_vae import cli, runs

TINY = ["--epochs", "2", "--hidden", "16", "--eval-samples", "20", "--batch-size", "128"]


# metrics.json as `train` wrote it (later tests run `evaluate`, which rewrites the file).
_TRAINED_METRICS = {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "run")
    assert cli.main(["--quiet", "train", path, *TINY, "--no-export", "--no-web"]) == 0
    with open(os.path.join(path, "metrics.json")) as f:
        _TRAINED_METRICS[path] = json.load(f)
    return path


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_train_writes_the_run_folder(run_dir):
    names = set(os.listdir(run_dir))
    assert {"config.json", "status.json", "model.keras", "history.json", "history.csv",
            "metrics.json", "plots"} <= names
    assert "backup" not in names and "history.partial.json" not in names
    with open(os.path.join(run_dir, "status.json")) as f:
        assert json.load(f)["status"] == "finished"
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["epochs"] == 2 and config["hidden"] == [16] and config["data"] == "digits"


def test_history_has_one_row_per_epoch(run_dir):
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    assert {"loss", "elbo", "reconstruction", "kl", "val_elbo"} <= set(history)
    assert all(len(v) == 2 for v in history.values())
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = f.read().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,")


def test_metrics_match_evaluate_on_the_saved_model(run_dir):
    metrics = _TRAINED_METRICS[run_dir]
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    _, (x_test, _) = runs.load_data(runs.resolve_config({"epochs": 2}))
    fresh = model.evaluate(x_test, batch_size=128, return_dict=True, verbose=0)
    for key in ("elbo", "kl", "reconstruction", "loss"):
        np.testing.assert_allclose(metrics[f"keras_{key}"], fresh[key], rtol=1e-5)
    # The IWAE-K bound lies above the ELBO (K=20 and 10 ELBO draws on 300 digits: the
    # Monte Carlo error of either mean is a few hundredths of a nat).
    assert metrics["log_likelihood"] > metrics["elbo"]
    assert metrics["num_samples"] == 20


def test_pictures_are_real_images_with_content(run_dir):
    plots = os.path.join(run_dir, "plots")
    names = sorted(os.listdir(plots))
    assert {"loss_curves.png", "reconstructions.png", "samples.png", "latent_vs_pca.png",
            "manifold.png"} <= set(names)
    for name in names:
        image = np.asarray(Image.open(os.path.join(plots, name)).convert("L"), dtype=float)
        assert image.shape[0] >= 100 and image.shape[1] >= 100, name
        assert image.std() > 5, name  # not blank


def test_second_train_refuses_and_touches_nothing(run_dir, capsys):
    before = tree_digest(run_dir)
    assert cli.main(["train", run_dir, *TINY]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert tree_digest(run_dir) == before


def test_evaluate_sample_plot_subcommands(run_dir, tmp_path, capsys):
    assert cli.main(["evaluate", run_dir, "--num-samples", "7"]) == 0
    with open(os.path.join(run_dir, "metrics.json")) as f:
        assert json.load(f)["num_samples"] == 7
    out = str(tmp_path / "s.npy")
    assert cli.main(["sample", run_dir, "-n", "5", "--seed", "3", "--out", out]) == 0
    samples = np.load(out)
    assert samples.shape == (5, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 1
    np.testing.assert_array_equal(samples, runs.sample_run(run_dir, 5, seed=3))
    assert cli.main(["sample", run_dir, "-n", "5", "--out", out]) == 2  # exists
    assert "--overwrite" in _one_error_line(capsys)
    assert cli.main(["plot", run_dir]) == 0
    assert "samples.png" in capsys.readouterr().out


def _run_cli(argv):
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse exits on its own errors
        return e.code


@pytest.mark.parametrize("argv, match", [
    (["train", "--epochs", "abc"], "invalid int value"),
    (["train", "--likelihood", "poisson"], "invalid choice"),
    (["train", "--epochs", "0"], "Received: epochs=0"),
    (["train", "--hidden", "16,x"], "comma-separated integers"),
    (["train", "--tied"], "Received: model='vae', tied=True"),
    (["bogus"], "invalid choice"),
    (["evaluate", "/nonexistent/run"], "No run folder"),
    (["export", "/nonexistent/run"], "--out"),
])
def test_bad_flags_exit_2_with_one_line(argv, match, capsys, tmp_path):
    assert _run_cli(argv if argv[0] != "train" else argv + [str(tmp_path / "r")]) == 2
    assert match in _one_error_line(capsys)
    assert not os.path.exists(tmp_path / "r")


def test_missing_data_path_is_one_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["train", run, "--data", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in _one_error_line(capsys)


def test_corrupt_npz_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    assert cli.main(["train", str(tmp_path / "run"), "--data", str(bad)]) == 2
    assert "bad.npz" in _one_error_line(capsys)


def test_images_of_mixed_sizes_are_one_line(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(folder / "b.png")
    assert cli.main(["train", str(tmp_path / "run"), "--data", str(folder)]) == 2
    assert "size" in _one_error_line(capsys)


def test_nan_data_is_refused_before_training(tmp_path, capsys):
    x = np.random.default_rng(0).uniform(size=(40, 4, 4, 1)).astype("float32")
    x[3, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["train", str(tmp_path / "run"), "--data", str(tmp_path / "x.npy")]) == 2
    assert "NaN" in _one_error_line(capsys)


def test_overwrite_replaces_a_run(run_dir, tmp_path):
    target = str(tmp_path / "copy")
    assert cli.main(["--quiet", "train", target, *TINY, "--no-export",
                     "--no-web", "--no-plots"]) == 0
    assert cli.main(["--quiet", "train", target, "--epochs", "1", "--hidden", "16",
                     "--eval-samples", "5", "--no-export",
                     "--no-web", "--no-plots", "--overwrite"]) == 0
    with open(os.path.join(target, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 1


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"latent_dim": 3, "epochs": 5}))
    config = runs.resolve_config({"epochs": 1}, str(cfg))
    assert config["latent_dim"] == 3 and config["epochs"] == 1
    cfg.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        runs.resolve_config({}, str(cfg))
    with pytest.raises(ValueError, match="Unknown config keys"):
        runs.resolve_config({"latnet_dim": 3})


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0 and "--resume" in capsys.readouterr().out


def test_train_an_autoencoder_from_the_cli(tmp_path, capsys):
    run = str(tmp_path / "ae")
    assert cli.main(["--quiet", "train", run, "--model", "dae", "--tied", "--stacked",
                     "--epochs", "2", "--hidden", "16", "--latent-dim", "4",
                     "--no-export", "--no-web"]) == 0
    out = capsys.readouterr().out
    assert "reconstruction" in out and "log p(x)" not in out
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    assert "log_likelihood" not in metrics and metrics["model_reconstruction_error"] > 0
    assert os.path.isfile(os.path.join(run, "plots", "reconstructions.png"))
    assert not os.path.exists(os.path.join(run, "plots", "samples.png"))  # no prior


def test_tensorboard_logs_scalars_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = str(tmp_path / "tb")
    assert cli.main(["--quiet", "train", run, "--epochs", "2", "--hidden", "16",
                     "--eval-samples", "5", "--no-export",
                     "--no-web", "--no-plots", "--tensorboard"]) == 0
    # TF2 summaries are stored as tensors; the plugin name says what they are.
    images = EventAccumulator(os.path.join(run, "tensorboard", "images"),
                              size_guidance={"tensors": 0}).Reload()
    assert {"reconstructions", "samples"} <= set(images.Tags()["tensors"])
    assert images.SummaryMetadata("samples").plugin_data.plugin_name == "images"
    assert len(images.Tensors("samples")) == 2  # one per epoch
    scalars = EventAccumulator(os.path.join(run, "tensorboard", "train"),
                               size_guidance={"tensors": 0}).Reload()
    assert {"epoch_loss", "epoch_elbo", "epoch_kl", "epoch_beta"} <= set(scalars.Tags()["tensors"])
