"""Shared fixtures: small embedded data and tiny models, all seeded."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hashlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

LOOPBACK = "127.0.0.1,localhost"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY", "grpc_proxy")

try:  # the fuzz suite's profile: fixed examples, no deadline (a loaded CI machine is slow)
    from hypothesis import HealthCheck, settings  # noqa: E402

    settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None,
                              print_blob=True, database=None,
                              suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.function_scoped_fixture])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a declared test dependency
    pass


@pytest.fixture(scope="session", autouse=True)
def loopback_without_proxy():
    """Tests talk HTTP/gRPC to 127.0.0.1 only (export test doubles, multi-worker gRPC):
    exempt loopback from any proxy the environment sets and drop the proxies, for this
    process and the subprocesses it starts. Session-scoped so module fixtures (the
    multi-worker launch) see it too."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("no_proxy", "NO_PROXY"):
            current = os.environ.get(name, "")
            mp.setenv(name, ",".join(filter(None, [current, LOOPBACK])))
        for name in PROXY_VARIABLES:
            mp.delenv(name, raising=False)
        yield


# Data a model of shape (8, 8, 1) with a Bernoulli likelihood must refuse, with the
# error type and a fragment of its message (shared by the VAE and AE tests).
BAD_DATA_CASES = [
    (np.zeros((4, 8, 8), "float32"), ValueError, r"Received: x.shape=\(4, 8, 8\)"),
    (np.zeros((0, 8, 8, 1), "float32"), ValueError, "at least one example"),
    (np.full((4, 8, 8, 1), np.nan, "float32"), ValueError, "NaN"),
    (np.full((4, 8, 8, 1), 255, "uint8"), ValueError, "max=255"),
    (np.full((4, 8, 8, 1), "a"), TypeError, "dtype"),
]


def tree_digest(folder):
    """{relative path: sha256} of every file below `folder` (empty if it is missing)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def assert_cli_refuses(capsys, argv, needle, target):
    """`keras-vae` with `argv` exits 2 with `needle` in its last stderr line and
    leaves `target` (the run folder it names) uncreated."""
    from keras_vae import cli
    capsys.readouterr()
    try:  # argparse exits (usage + error line); a config error returns 2
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert err and needle in err[-1], (argv, err)
    assert not os.path.exists(target), argv


@pytest.fixture(scope="session")
def digits():
    """sklearn's embedded 8x8 digits in [0, 1], shape (1797, 8, 8, 1), with labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[..., None] / 16.0).astype("float32")
    return x, d.target.astype("int64")


@pytest.fixture
def small_vae():
    """Factory for a tiny MLP VAE on 8x8x1 data."""
    import keras

    import keras_vae as kv

    def make(latent_dim=4, likelihood="bernoulli", compile=True, **kwargs):
        keras.utils.set_random_seed(0)
        enc = kv.MLPEncoder(latent_dim=latent_dim, hidden=(32,))
        dec = kv.MLPDecoder(output_shape=(8, 8, 1), hidden=(32,), likelihood=likelihood)
        vae = kv.VAE(enc, dec, **kwargs)
        if compile:
            vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        return vae

    return make
