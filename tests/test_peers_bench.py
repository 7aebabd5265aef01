"""The peers benchmark without the peers: refusal without the venv, FLOP accounting.

No torch, jax or pythae is imported here (they live only in the peers
virtualenv, never in tests or CI); `benchmarks/peers/spec.py` is pure Python.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spec_module():
    path = os.path.join(ROOT, "benchmarks", "peers", "spec.py")
    loaded = importlib.util.spec_from_file_location("peers_spec", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


@pytest.mark.parametrize("latent,k", [(2, 1), (50, 1), (50, 5), (10, 3)])
def test_mlp_flops_equal_throughputs(latent, k):
    from benchmarks import throughput

    spec = _spec_module()
    assert spec.flops("mlp", latent, k) == throughput.mlp_flops(latent, num_samples=k)


@pytest.mark.parametrize("latent", [2, 16])
def test_conv_flops_equal_throughputs(latent):
    from benchmarks import throughput

    assert _spec_module().flops("conv", latent) == throughput.conv_flops(latent)


def test_mlp_flops_closed_form():
    # d=2: encoder 784*200 + 200*200 + 200*4, decoder 2*200 + 200*200 + 200*784, x2 x3
    enc = 784 * 200 + 200 * 200 + 200 * 4
    dec = 2 * 200 + 200 * 200 + 200 * 784
    assert _spec_module().flops("mlp", 2, 5) == 3 * 2 * (enc + 5 * dec)


def test_spec_imports_nothing_heavy():
    # the spec is plain Python (no torch/jax/numpy), so the count can be checked anywhere
    code = ("import sys, importlib.util as u; s = u.spec_from_file_location('s', "
            f"{os.path.join(ROOT, 'benchmarks', 'peers', 'spec.py')!r}); m = u.module_from_spec(s);"
            " s.loader.exec_module(m); m.flops('conv', 2);"
            " print(sorted(n for n in ('torch', 'jax', 'numpy', 'tensorflow')"
            " if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_arch_is_refused():
    with pytest.raises(ValueError, match="`arch` must be 'mlp' or 'conv'. Received: arch='rnn'"):
        _spec_module().flops("rnn", 2)


def test_require_venv_refuses_without_venv(tmp_path, monkeypatch):
    from benchmarks import peers

    monkeypatch.setenv("KV_PEERS_VENV", str(tmp_path / "nowhere"))
    assert peers.venv_python() is None
    with pytest.raises(peers.PeersUnavailable, match="setup-peers"):
        peers.require_venv()
    # a venv folder without the marker of a completed setup is not ready either
    (tmp_path / "half" / "bin").mkdir(parents=True)
    (tmp_path / "half" / "bin" / "python").write_text("")
    assert peers.venv_python(str(tmp_path / "half")) is None


def _cli(args, tmp_path):
    env = {**os.environ, "KV_PEERS_VENV": str(tmp_path / "nowhere"), "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_cli_peers_refuses_cleanly_without_venv(tmp_path):
    out = _cli(["peers", "--write", str(tmp_path / "R.md")], tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "setup-peers" in lines[0] and "missing" in lines[0], out.stderr
    assert not (tmp_path / "R.md").exists()


def test_cli_bad_peer_name(tmp_path):
    out = _cli(["peers", "--peers", "torch,mxnet"], tmp_path)
    assert out.returncode == 2
    assert "--peers must name some of" in out.stderr and "mxnet" in out.stderr
