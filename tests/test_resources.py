"""Resource limits: requests that cannot fit are refused with the estimate, before allocating.

Every limit here is made deterministic with KERAS_VAE_MEMORY_LIMIT; nothing
large is ever allocated (each refusal happens before), so every test takes
seconds.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras_vae as kv
from keras_vae import estimators, resources
from keras_vae import visualization as vz

GIB = 2 ** 30


@pytest.fixture
def limit(monkeypatch):
    """Sets the memory limit (bytes) the checks see."""
    def set_limit(n):
        monkeypatch.setenv(resources.ENV_VAR, str(int(n)))
    set_limit(8 * GIB)
    return set_limit


def _cli(tmp_path, *args, limit=8 * GIB):
    """`keras-vae ARGS` in a fresh process (what a user runs), with a fixed memory limit."""
    env = dict(os.environ, **{resources.ENV_VAR: str(limit), "TF_CPP_MIN_LOG_LEVEL": "3"})
    return subprocess.run([sys.executable, "-m", "keras_vae", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)


@pytest.fixture
def cli_here(tmp_path, monkeypatch, capsys):
    """`keras-vae ARGS` in this process (no TF start-up per case): the same main()."""
    from keras_vae import cli

    def run(*args, limit=8 * GIB):
        monkeypatch.setenv(resources.ENV_VAR, str(limit))
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        code = cli.main(list(args))
        return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)

    return run


def _assert_one_line_refusal(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------- the CLI

@pytest.mark.parametrize("flags, fragment", [
    (["--hidden", "1000000,1000000"], "hidden=[1000000, 1000000]"),
    (["--latent-dim", "65536", "--hidden", "65536"], "latent_dim=65536"),
    (["--objective", "iwae", "--num-samples", "100000", "--batch-size", "1000000"],
     "num_samples=100000"),
])
def test_train_refuses_a_model_or_step_that_cannot_fit_before_creating_the_run(
        tmp_path, cli_here, flags, fragment):
    result = cli_here("train", "run", "--epochs", "1", *flags)
    _assert_one_line_refusal(result, "needs about", "more than the 8.0 GiB available",
                             fragment)
    assert not (tmp_path / "run").exists()


def test_a_fresh_process_refuses_the_same_way(tmp_path):
    result = _cli(tmp_path, "train", "run", "--epochs", "1", "--hidden", "1000000,1000000")
    _assert_one_line_refusal(result, "needs about", "more than the 8.0 GiB available")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--hidden", "100000000"], "no larger than 1,000,000"),
    (["--latent-dim", "1000000"], "no larger than 65,536"),
    (["--batch-size", str(10 ** 30)], "no larger than 1,000,000"),
    (["--objective", "iwae", "--num-samples", "1000000"], "no larger than 100,000"),
    (["--eval-samples", "3000000000"], "no larger than 100,000"),
])
def test_train_refuses_counts_above_the_config_maxima(tmp_path, cli_here, flags, fragment):
    result = cli_here("train", "run", "--epochs", "1", *flags)
    _assert_one_line_refusal(result, fragment)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- estimates and limits

def test_memory_limit_reads_the_environment_variable(limit):
    limit(12345)
    assert resources.memory_limit() == 12345


def test_memory_limit_refuses_a_bad_environment_variable(monkeypatch):
    monkeypatch.setenv(resources.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="KERAS_VAE_MEMORY_LIMIT='lots'"):
        resources.memory_limit()


def test_memory_limit_without_the_variable_is_what_the_machine_has(monkeypatch):
    monkeypatch.delenv(resources.ENV_VAR, raising=False)
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal"))
    assert 0 < resources.memory_limit() <= total


def test_model_estimate_counts_parameters_times_five_float32():
    # 8x8 data, d=2, hidden (3,): encoder 64*3+3 + 3*4+4, decoder 2*3+3 + 3*64+64
    params = (64 * 3 + 3 + 3 * 4 + 4) + (2 * 3 + 3 + 3 * 64 + 64)
    assert resources.estimate_model_bytes((8, 8, 1), 2, (3,)) == params * 4 * 5


def test_check_memory_message_names_estimate_limit_advice_and_values(limit):
    limit(GIB)
    with pytest.raises(resources.ResourceLimitError) as info:
        resources.check_memory("training step", 3 * GIB, "lower batch_size", batch_size=7)
    assert str(info.value) == ("training step needs about 3.0 GiB, more than the 1.0 GiB "
                               "available; lower batch_size. Received: batch_size=7")
    assert isinstance(info.value, ValueError) and not isinstance(info.value, MemoryError)


def test_sample_count_above_the_maximum_is_refused():
    with pytest.raises(resources.ResourceLimitError, match="num_samples=3000000000"):
        resources.check_sample(3_000_000_000, (28, 28, 1))


def test_sample_that_cannot_fit_is_refused_with_the_estimate(limit):
    limit(GIB)
    with pytest.raises(resources.ResourceLimitError, match="generating 5,000,000 examples "
                       "needs about"):
        resources.check_sample(5_000_000, (28, 28, 1), latent_dim=2, widths=(256, 128))


# ---------------------------------------------------------------- networks

@pytest.mark.parametrize("make", [
    lambda: kv.MLPEncoder(2, hidden=(1_000_000, 1_000_000)),
    lambda: kv.MLPDecoder((8, 8, 1), hidden=(1_000_000, 1_000_000)),
    lambda: kv.ConvEncoder(2, filters=(100_000, 100_000)),
    lambda: kv.ConvDecoder((8, 8, 1), filters=(100_000, 100_000)),
], ids=["mlp_encoder", "mlp_decoder", "conv_encoder", "conv_decoder"])
def test_network_constructors_refuse_widths_that_cannot_fit(limit, make):
    with pytest.raises(resources.ResourceLimitError, match="parameters needs about"):
        make()


def test_mlp_encoder_refuses_an_input_too_wide_for_its_first_layer_before_building(limit):
    encoder = kv.MLPEncoder(2, hidden=(100_000,))
    with pytest.raises(resources.ResourceLimitError, match="input_width=1000000"):
        encoder.build((None, 1_000_000))
    assert not encoder.weights


# ---------------------------------------------------------------- estimators

@pytest.fixture(scope="module")
def vae():
    import keras
    keras.utils.set_random_seed(0)
    model = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder((8, 8, 1), hidden=(8,)))
    model(np.zeros((1, 8, 8, 1), "float32"))
    return model


@pytest.mark.parametrize("k", [2 ** 31 - 1, 2 ** 31, 1_000_001])
def test_log_likelihood_refuses_absurd_num_samples_at_once(vae, k):
    x = np.zeros((3, 8, 8, 1), "float32")
    with pytest.raises(resources.ResourceLimitError, match=f"num_samples={k}"):
        kv.log_likelihood(vae, x, num_samples=k)


def test_log_likelihood_refuses_a_chunk_that_cannot_fit(vae, limit):
    limit(1024 * 1024)
    x = np.zeros((100, 8, 8, 1), "float32")
    with pytest.raises(resources.ResourceLimitError, match="one chunk of log_likelihood"):
        kv.log_likelihood(vae, x, num_samples=1000, chunk_size=1000)


def test_elbo_terms_refuses_absurd_num_samples(vae):
    with pytest.raises(resources.ResourceLimitError, match="num_samples=2147483647"):
        estimators.elbo_terms(vae, np.zeros((3, 8, 8, 1), "float32"), num_samples=2 ** 31 - 1)


def test_elbo_terms_refuses_samples_that_cannot_fit_at_once(vae, limit):
    limit(64 * 1024 * 1024)
    with pytest.raises(resources.ResourceLimitError, match="one batch of elbo_terms"):
        estimators.elbo_terms(vae, np.zeros((500, 8, 8, 1), "float32"), num_samples=100_000)


# ---------------------------------------------------------------- pictures

def test_image_grid_refuses_too_many_tiles_before_copying_them(limit):
    tiles = np.broadcast_to(np.zeros((1, 28, 28, 1), "float32"), (1_000_000, 28, 28, 1))
    with pytest.raises(resources.ResourceLimitError, match="at most 10,000"):
        vz.image_grid(tiles)


def test_image_grid_refuses_too_many_pixels(limit):
    tiles = np.broadcast_to(np.zeros((1, 256, 256, 1), "float32"), (2500, 256, 256, 1))
    with pytest.raises(resources.ResourceLimitError, match="at most 50,000,000 pixels"):
        vz.image_grid(tiles)


def test_image_grid_refuses_a_picture_that_cannot_fit(limit):
    limit(16 * 1024 * 1024)
    tiles = np.broadcast_to(np.zeros((1, 8, 8, 1), "float32"), (5000, 8, 8, 1))
    with pytest.raises(resources.ResourceLimitError, match="a picture of 5,000 tiles"):
        vz.image_grid(tiles)


def test_sample_grid_refuses_before_sampling(vae, limit, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("sampled before the check")
    monkeypatch.setattr(type(vae), "sample", fail)
    with pytest.raises(resources.ResourceLimitError, match="n=1000000"):
        vz.sample_grid(vae, n=1_000_000)


def test_manifold_grid_refuses_n_squared_tiles_before_decoding(vae, limit):
    with pytest.raises(resources.ResourceLimitError, match="n x n"):
        vz.manifold_grid(vae, n=100_000)


def test_an_iwae_step_with_a_huge_k_is_refused(tmp_path, cli_here):
    """K=100,000 at batch 64 on the digits grew past 12 GB and crawled for minutes."""
    assert resources.estimate_step_bytes(64, 100_000, 64, 2, [16]) > 12 * GIB
    result = cli_here("train", "run", "--epochs", "1", "--hidden", "16", "--objective", "iwae",
                      "--num-samples", "100000", limit=20 * GIB)
    _assert_one_line_refusal(result, "needs about", "num_samples=100000")
    assert not (tmp_path / "run").exists()
