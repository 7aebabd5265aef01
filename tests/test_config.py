"""The run-configuration schema (keras_vae/config.py): flags, JSON, resume checks, --workers."""

import json
import os
import subprocess
import sys

import pytest

from keras_vae import cli, config, likelihoods, runs


def _parse_train(*flags):
    return cli.build_parser().parse_args(["train", "RUN", *flags])


@pytest.fixture
def registered_likelihood():
    """A likelihood registered in the library only (no edit anywhere else), removed after."""
    class _Registered(likelihoods.BernoulliLikelihood):
        pass

    likelihoods.register_likelihood("registered_in_a_test", _Registered)
    yield "registered_in_a_test"
    del likelihoods.LIKELIHOODS["registered_in_a_test"]


def test_a_registered_likelihood_is_a_flag_choice_and_a_config_value(registered_likelihood):
    args = _parse_train("--likelihood", registered_likelihood)
    assert config.overrides(args)["likelihood"] == registered_likelihood
    assert config.validate({"likelihood": registered_likelihood})["likelihood"] == \
        registered_likelihood
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert registered_likelihood in help_text


def test_an_unregistered_likelihood_is_refused_by_flag_and_config():
    with pytest.raises(SystemExit) as e:
        _parse_train("--likelihood", "registered_in_a_test")
    assert e.value.code == 2
    with pytest.raises(ValueError, match="Received: likelihood='registered_in_a_test'"):
        config.validate({"likelihood": "registered_in_a_test"})


def test_register_likelihood_refuses_a_taken_name_and_a_non_head():
    with pytest.raises(ValueError, match="taken by BernoulliLikelihood"):
        likelihoods.register_likelihood("bernoulli", likelihoods.GaussianLikelihood)
    with pytest.raises(TypeError, match="Head subclass"):
        likelihoods.register_likelihood("x", dict)


def test_every_option_is_a_flag_with_its_default_in_help():
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for option in config.OPTIONS:
        assert option.flag in flags, option.key
    assert "[default: 60]" in train.format_help()  # epochs


@pytest.mark.parametrize("given, error, match", [
    ({"plots": "no"}, TypeError, "Received: plots='no'"),
    ({"export": "false"}, TypeError, "Received: export='false'"),
    ({"tensorboard": 1}, TypeError, "Received: tensorboard=1"),
    ({"tflite": "float32"}, TypeError, "Received: tflite='float32'"),
    ({"tflite": ["float32", "float32"]}, ValueError, "must not repeat"),
    ({"tflite": ["f"]}, ValueError, r"Received: tflite\[0\]='f'"),
    ({"epochs": "3"}, TypeError, "Received: epochs='3'"),
    ({"epochs": 2.0}, TypeError, "Received: epochs=2.0"),
    ({"epochs": 0}, ValueError, "Received: epochs=0"),
    ({"hidden": [64, "a"]}, TypeError, r"Received: hidden\[1\]='a'"),
    ({"hidden": {"a": 1}}, TypeError, "Received: hidden="),
    ({"latent_dim": 10 ** 30}, ValueError, "no larger than"),
    ({"seed": -1}, ValueError, "Received: seed=-1"),
    ({"seed": 1.5}, TypeError, "Received: seed=1.5"),
    ({"learning_rate": "fast"}, TypeError, "Received: learning_rate='fast'"),
    ({"beta": float("nan")}, ValueError, "Received: beta=nan"),
    ({"data": None}, TypeError, "Received: data=None"),
    ({"jit_compile": "yes"}, ValueError, "Received: jit_compile='yes'"),
    ({"no_such_key": 1}, ValueError, "Received: \\['no_such_key'\\]"),
    ({"model": "vae", "tied": True}, ValueError, "Received: model='vae', tied=True"),
])
def test_config_values_are_checked_not_coerced(given, error, match):
    with pytest.raises(error, match=match):
        config.validate(given)


@pytest.mark.parametrize("text, match", [
    ('{"epochs": {"nested": [1, 2]}}', "Received: epochs="),
    ("[1, 2]", "must hold a JSON object"),
    ("{" * 100_000, "not valid JSON|expected at most"),
    ('{"epochs": 1' + " " * (config.MAX_CONFIG_BYTES + 1) + "}", "expected at most"),
    ("\xff\xfe", "not valid JSON"),
])
def test_bad_config_files_get_one_clear_error(tmp_path, text, match):
    path = tmp_path / "c.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe"
                     else b"\xff\xfe")
    with pytest.raises((ValueError, TypeError), match=match):
        runs.resolve_config(config_file=str(path))


def test_requested_config_keeps_only_the_given_keys(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"epochs": 3, "hidden": [32]}')
    assert runs.requested_config({"seed": 4, "beta": None}, str(path)) == \
        {"epochs": 3, "hidden": [32], "seed": 4}


def _interrupted_run(tmp_path, status="running", **settings):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(runs.resolve_config(settings)))
    (run_dir / "status.json").write_text(json.dumps({"status": status}))
    return str(run_dir)


def test_resume_refuses_changed_model_settings_and_lists_them(tmp_path):
    run_dir = _interrupted_run(tmp_path, epochs=4)
    with pytest.raises(ValueError) as e:
        runs.train({"epochs": 6, "latent_dim": 5, "hidden": [256, 128]}, run_dir, resume=True)
    message = str(e.value)
    assert "latent_dim: 2 -> 5" in message and "hidden" not in message.split("may change")[0]
    assert "may change only" in message and "epochs" in message.split("may change")[1]
    assert sorted(os.listdir(run_dir)) == ["config.json", "status.json"]  # nothing touched


def test_resume_of_a_finished_run_says_there_is_nothing_to_resume(tmp_path):
    run_dir = _interrupted_run(tmp_path, status="finished")
    with pytest.raises(ValueError, match="nothing to resume"):
        runs.train({}, run_dir, resume=True)


def test_resume_differences_ignore_resumable_keys():
    saved = runs.resolve_config({"epochs": 4})
    assert config.resume_differences(saved, {"epochs": 8, "plots": False}) == []
    assert config.resume_differences(saved, {"batch_size": 32}) == [("batch_size", 64, 32)]


def _keras_vae(*argv, timeout=600):
    env = {**os.environ, "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.run([sys.executable, "-m", "keras_vae", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_train_with_two_workers_fills_the_run_folder(tmp_path):
    run_dir = str(tmp_path / "mw")
    done = _keras_vae("train", run_dir, "--workers", "2", "--epochs", "1", "--batch-size", "64",
                      "--eval-samples", "10", "--no-plots", "--no-export", "--no-web", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test log p(x)" in done.stdout
    with open(os.path.join(run_dir, "status.json"), encoding="utf-8") as f:
        status = json.load(f)
    assert status["status"] == "finished" and status["workers"] == 2
    for name in ("config.json", "model.keras", "history.json", "history.csv", "metrics.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert sorted(os.listdir(os.path.join(run_dir, "workers")))[:2] == \
        ["worker-0.json", "worker-0.log"]


def _exit_code(argv):
    """cli.main's exit code, whether it returns it or argparse exits with it."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("flags, match", [
    (["--workers", "0"], "Received: workers=0"),
    (["--workers", "2", "--latent-dim", "-1"], "Received: latent_dim=-1"),
    (["--workers", "2", "--epochs", "x"], "invalid int value"),
    (["--workers", "2", "--tensorboard"], "not available with --workers"),
])
def test_bad_flags_with_workers_exit_2_with_one_line(tmp_path, capsys, flags, match):
    capsys.readouterr()
    assert _exit_code(["train", str(tmp_path / "mw"), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], lines
    assert not os.path.exists(tmp_path / "mw")


def test_distributed_module_takes_the_same_flags_and_exits_2():
    done = subprocess.run([sys.executable, "-m", "keras_vae.distributed", "RUN", "--epochs", "x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid int value" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["train", "RUN", "--quiet", "--debug"], ["--quiet", "train", "RUN", "--debug"],
    ["evaluate", "RUN", "--quiet"], ["sample", "RUN", "--debug"], ["plot", "RUN", "--quiet"],
    ["export", "RUN", "--out", "o", "--quiet", "--debug"],
])
def test_quiet_and_debug_are_accepted_before_and_after_the_subcommand(argv):
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, "quiet", False) == ("--quiet" in argv)
    assert getattr(args, "debug", False) == ("--debug" in argv)


@pytest.mark.parametrize("flag", ["--labels=", "--latent-dims=", "--corruption=", "--data-dir="])
def test_an_empty_flag_value_is_refused_not_taken_for_none(tmp_path, capsys, flag):
    """`--labels=$UNSET` is a mistake: exit 2 with one line, no run folder (only the words
    none/null mean "no value")."""
    run = tmp_path / "run"
    try:
        code = cli.main(["train", str(run), flag, "--epochs", "1"])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not run.exists()
