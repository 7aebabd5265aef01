"""Export writes: normal permissions, int64 versions (TF Serving), no leftovers of a dead writer."""

import os
import subprocess
import sys

import pytest

import keras_vae as kv


@pytest.fixture(scope="module")
def trained(digits):
    import keras

    x, _ = digits
    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(16,)), kv.MLPDecoder((8, 8, 1), hidden=(16,)))
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    vae.fit(x[:256], epochs=1, batch_size=64, verbose=0)
    return vae


def _modes(top):
    out = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, top)] = os.stat(path).st_mode & 0o777
    return out


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644),
                                                         (0o077, 0o700, 0o600)])
def test_saved_model_files_follow_the_umask(trained, tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        version_dir = kv.export.saved_model(trained, str(tmp_path / "base"), version=1,
                                            warmup=False)
    finally:
        os.umask(old)
    modes = _modes(os.path.dirname(version_dir))
    assert modes, "nothing exported"
    for rel, mode in modes.items():
        is_dir = os.path.isdir(os.path.join(os.path.dirname(version_dir), rel))
        assert mode == (dir_mode if is_dir else file_mode), (rel, oct(mode))


@pytest.mark.parametrize("version", [2 ** 63, 10 ** 20])
def test_versions_beyond_int64_are_refused_before_writing(trained, tmp_path, version):
    with pytest.raises(ValueError, match=f"Received: version={version}"):
        kv.export.saved_model(trained, str(tmp_path / "base"), version=version)
    assert not os.path.exists(tmp_path / "base")


def test_a_large_int64_version_is_accepted(trained, tmp_path):
    path = kv.export.saved_model(trained, str(tmp_path / "base"), version=2 ** 40,
                                 warmup=False)
    assert os.path.basename(path) == str(2 ** 40)


def test_temporaries_of_a_dead_writer_are_removed_and_a_live_ones_kept(trained, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (base / f".tmp-1-{dead}-abc").mkdir()
    (base / f".tmp-1-{dead}-abc" / "saved_model.pb").write_bytes(b"half")
    (base / f".old-1-{os.getpid()}-xyz").mkdir()  # this process: alive, kept
    (base / ".tmp-user-notes").mkdir()             # not ours: kept
    kv.export.saved_model(trained, str(base), version=1, warmup=False)
    assert sorted(os.listdir(base)) == [f".old-1-{os.getpid()}-xyz", ".tmp-user-notes", "1"]
