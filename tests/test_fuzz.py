"""Seeded fuzzing of every place a user hands us data or arguments.

Each generator yields inputs that are invalid by construction. Every case must
end in an *expected* error (ValueError, TypeError or a file error for the API;
exit code 2 for the CLI). Any other exception is "uncaught" and a return
without an error is "silent success"; both must be zero. The counts are
printed so CI logs show them.
"""

import io
import os
import random
import zipfile

import numpy as np
import pytest

import keras_vae as kv
from keras_vae import cli, runs

EXPECTED = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
            IsADirectoryError, PermissionError)
SHAPE = (8, 8, 1)


class Tally:
    def __init__(self):
        self.expected, self.uncaught, self.silent = 0, [], []

    def run(self, label, fn):
        try:
            fn()
        except EXPECTED as e:
            message = str(e)
            if "Received" not in message and "expected" not in message.lower() \
                    and not isinstance(e, (FileNotFoundError, FileExistsError)):
                self.uncaught.append((label, f"unhelpful message: {message[:200]}"))
            else:
                self.expected += 1
        except SystemExit as e:  # argparse
            if e.code == 2:
                self.expected += 1
            else:
                self.uncaught.append((label, f"SystemExit({e.code})"))
        except Exception as e:  # noqa: BLE001 - this is what we count
            self.uncaught.append((label, f"{type(e).__name__}: {str(e)[:200]}"))
        else:
            self.silent.append(label)

    def cli(self, label, argv):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
        except Exception as e:  # noqa: BLE001
            self.uncaught.append((label, f"{type(e).__name__}: {str(e)[:200]}"))
            return
        if code == 2:
            self.expected += 1
        elif code == 0:
            self.silent.append(label)
        else:
            self.uncaught.append((label, f"exit {code}"))

    def report(self, capsys, name):
        with capsys.disabled():
            print(f"\n[fuzz] {name}: {self.expected} expected errors, "
                  f"{len(self.uncaught)} uncaught, {len(self.silent)} silent successes")
        assert not self.uncaught, self.uncaught[:40]
        assert not self.silent, self.silent[:40]
        assert self.expected > 0


def _bad_arrays(rng, count):
    """Arrays that a model of data shape (8, 8, 1) with a Bernoulli likelihood must refuse."""
    makers = [
        lambda: rng.uniform(size=(rng.integers(1, 5), 8, 8)),                     # rank 3
        lambda: rng.uniform(size=(rng.integers(1, 5), 8, 8, 1, 1)),               # rank 5
        lambda: rng.uniform(size=(rng.integers(1, 5), rng.integers(1, 7), 8, 1)),  # height
        lambda: rng.uniform(size=(rng.integers(1, 5), 8, 8, rng.integers(2, 4))),  # channels
        lambda: rng.uniform(size=(64,)),                                           # flat
        lambda: np.zeros((0, 8, 8, 1), "float32"),                                 # empty
        lambda: _poke(rng, rng.uniform(size=(4, 8, 8, 1)), np.nan),
        lambda: _poke(rng, rng.uniform(size=(4, 8, 8, 1)), np.inf),
        lambda: _poke(rng, rng.uniform(size=(4, 8, 8, 1)), -rng.uniform(0.01, 10)),
        lambda: _poke(rng, rng.uniform(size=(4, 8, 8, 1)), 1 + rng.uniform(0.01, 300)),
        lambda: rng.integers(2, 256, size=(4, 8, 8, 1)).astype("uint8"),
        lambda: np.full((2, 8, 8, 1), "x"),
        lambda: np.array([[1, 2], [3]], dtype=object),
        lambda: rng.uniform(size=(2, 8, 8, 1)) * 1j,
        lambda: None,
        lambda: {"x": rng.uniform(size=(2, 8, 8, 1))},
        lambda: "digits",
        lambda: float(rng.uniform()),
    ]
    for i in range(count):
        yield i % len(makers), makers[i % len(makers)]()


def _poke(rng, x, value):
    x = x.astype("float32")
    x.flat[rng.integers(0, x.size)] = value
    return x


@pytest.fixture(scope="module")
def vae():
    model = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder(SHAPE, hidden=(8,)))
    model.compile(optimizer="adam")
    return model


def test_fuzz_model_data_entry_points(vae, capsys):
    rng = np.random.default_rng(0)
    tally = Tally()
    methods = {
        "fit": lambda x: vae.fit(x, epochs=1, verbose=0),
        "evaluate": lambda x: vae.evaluate(x, verbose=0),
        "predict": lambda x: vae.predict(x, verbose=0),
        "encode": vae.encode,
        "reconstruct": vae.reconstruct,
        "fit(validation_data)": lambda x: vae.fit(np.zeros((2, 8, 8, 1), "float32"),
                                                  validation_data=(x,), epochs=1, verbose=0),
    }
    for kind, x in _bad_arrays(rng, 180):
        for name, method in methods.items():
            tally.run(f"{name}/maker{kind}", lambda m=method, x=x: m(x))
    tally.report(capsys, "model data entry points")


def test_fuzz_latents_and_sampling(vae, capsys):
    rng = np.random.default_rng(1)
    tally = Tally()
    for i in range(60):
        choice = i % 6
        if choice == 0:
            z = rng.normal(size=(3, int(rng.choice([1, 3, 4, 10]))))
        elif choice == 1:
            z = _poke(rng, rng.normal(size=(3, 2)), np.nan)
        elif choice == 2:
            z = np.float32(rng.normal())
        elif choice == 3:
            z = np.full((3, 2), "a")
        elif choice == 4:
            z = _poke(rng, rng.normal(size=(2, 3, 2)), -np.inf)
        else:
            z = None
        tally.run(f"decode/{choice}", lambda z=z: vae.decode(z))
    for n in (0, -1, -100, 1.5, "3", None, True, 2.0, [4], np.array([2, 3])):
        tally.run(f"sample({n!r})", lambda n=n: vae.sample(n, seed=0))
    tally.report(capsys, "latents and sampling")


def test_fuzz_constructors(capsys):
    rng = random.Random(2)
    bad_ints = [0, -1, -7, 2.5, "4", None, True, [2], float("nan")]
    bad_floats = [-1.0, -1e-9, float("nan"), float("inf"), "x", None, [1.0]]
    tally = Tally()
    cases = []
    for v in bad_ints:
        cases += [
            (f"MLPEncoder(latent_dim={v!r})", lambda v=v: kv.MLPEncoder(v)),
            (f"ConvEncoder(latent_dim={v!r})", lambda v=v: kv.ConvEncoder(v)),
            (f"MLPEncoder(hidden=({v!r},))", lambda v=v: kv.MLPEncoder(2, hidden=(v,))),
            (f"VAE(num_samples={v!r})",
             lambda v=v: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), num_samples=v)),
            (f"KLWarmup(steps={v!r})", lambda v=v: kv.KLWarmup(steps=v)),
            (f"MixturePrior(num_components={v!r})",
             lambda v=v: kv.MixturePrior(2, num_components=v)),
        ]
    for v in bad_floats:
        cases += [
            (f"VAE(beta={v!r})", lambda v=v: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), beta=v)),
            (f"VAE(free_bits={v!r})",
             lambda v=v: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), free_bits=v)),
            (f"GaussianLikelihood(scale={v!r})", lambda v=v: kv.GaussianLikelihood((4,), scale=v)),
            (f"KLWarmup(target={v!r})", lambda v=v: kv.KLWarmup(10, target=v)),
        ]
    for shape in [(), (0,), (-1, 3), (2.5,), ("a",), None, (8, 8, 0)]:
        cases.append((f"MLPDecoder(output_shape={shape!r})", lambda s=shape: kv.MLPDecoder(s)))
    for name in ["poisson", "", "BERNOULLI", None, 3]:
        cases.append((f"likelihood={name!r}", lambda n=name: kv.MLPDecoder((4,), likelihood=n)))
        cases.append((f"posterior={name!r}", lambda n=name: kv.MLPEncoder(2, posterior=n)))
        cases.append((f"objective={name!r}",
                      lambda n=name: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), objective=n)))
        if name is not None:  # None is the standard normal prior / a linear activation
            cases.append((f"prior={name!r}",
                          lambda n=name: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), prior=n)))
            cases.append((f"activation={name!r}", lambda n=name: kv.MLPEncoder(2, activation=n)))
    cases += [
        ("VAE(encoder=str)", lambda: kv.VAE("enc", kv.MLPDecoder((4,)))),
        ("VAE(decoder=None)", lambda: kv.VAE(kv.MLPEncoder(2), None)),
        ("VAE(seed='a')", lambda: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), seed="a")),
        ("VAE(analytic_kl='yes')",
         lambda: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), analytic_kl="yes")),
        ("VAE(iwae, free_bits)", lambda: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)),
                                                objective="iwae", free_bits=0.5)),
        ("ConvDecoder(flat)", lambda: kv.ConvDecoder((16,))),
        ("ConvEncoder on flat data", lambda: kv.VAE(kv.ConvEncoder(2), kv.MLPDecoder((16,)))),
        ("KLWarmup(schedule)", lambda: kv.KLWarmup(10, schedule="cosine")),
        ("KLWarmup(ratio=2)", lambda: kv.KLWarmup(10, schedule="cyclical", ratio=2.0)),
        ("mixture prior latent mismatch", lambda: kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)),
                                                         prior=kv.MixturePrior(3))),
    ]
    rng.shuffle(cases)
    for label, make in cases:
        tally.run(label, make)
    tally.report(capsys, "constructors")


def test_fuzz_data_files(tmp_path, capsys):
    rng = np.random.default_rng(3)
    tally = Tally()
    good = io.BytesIO()
    np.savez(good, x_train=rng.uniform(size=(20, 4, 4)), x_test=rng.uniform(size=(5, 4, 4)))
    good = good.getvalue()
    for i in range(60):
        kind = i % 10
        path = tmp_path / f"f{i}.npz"
        if kind == 0:
            path.write_bytes(rng.bytes(int(rng.integers(0, 2000))))
        elif kind == 1:
            path.write_bytes(good[: int(rng.integers(1, len(good) - 1))])
        elif kind == 2:
            path = tmp_path / f"f{i}.npy"
            path.write_bytes(rng.bytes(int(rng.integers(1, 300))))
        elif kind == 3:
            path = tmp_path / f"f{i}.npy"
            np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        elif kind == 4:
            np.savez(path, weights=rng.uniform(size=(3, 3)), other=np.zeros(2))
        elif kind == 5:
            np.savez(path, x_train=np.full((3, 4, 4), np.nan), x_test=np.zeros((2, 4, 4)))
        elif kind == 6:
            folder = tmp_path / f"imgs{i}"
            folder.mkdir()
            (folder / "a.png").write_bytes(rng.bytes(100))
            path = folder
        elif kind == 7:
            path = tmp_path / f"empty{i}"
            path.mkdir()
        elif kind == 8:
            path = tmp_path / f"missing{i}.npz"
        else:
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("x.npy", rng.bytes(64))
        tally.run(f"load/kind{kind}", lambda p=str(path): kv.data.load(p))
    for name in ("fashion-mnist", "cifar10", "", "mnist "):
        tally.run(f"load({name!r})", lambda n=name: kv.data.load(n, download=False))
    for b in ("yes", True, 1, "Dynamic"):
        tally.run(f"binarize={b!r}", lambda b=b: kv.data.load("digits", binarize=b))
    tally.report(capsys, "data files")


def test_fuzz_config_and_cli(tmp_path, capsys):
    rng = random.Random(4)
    tally = Tally()
    bad_values = {
        "latent_dim": [0, -2, 1.5, "two", None, True], "epochs": [0, -1, 2.5, "x", False],
        "batch_size": [0, -64, 1e9 + 0.5, "64"], "learning_rate": [0, -1e-3, "fast", None],
        "likelihood": ["poisson", "", 3], "model": ["gan", "VAE"], "objective": ["kl", None],
        "binarize": ["always", True], "architecture": ["rnn"], "prior": ["laplace"],
        "corruption": ["blur"], "num_samples": [0, -5], "eval_samples": [0, "many"],
    }
    for key, values in bad_values.items():
        for value in values:
            if value is None:
                continue  # None means "not given" for overrides
            tally.run(f"config {key}={value!r}",
                      lambda k=key, v=value: runs.resolve_config({k: v}))
    flags = {
        "--epochs": ["-1", "0", "x", "1.5"], "--latent-dim": ["0", "-3", "a"],
        "--batch-size": ["0", "-1", "big"], "--learning-rate": ["fast", "-1", "0"],
        "--likelihood": ["poisson", "x"], "--model": ["gan"], "--objective": ["kl"],
        "--hidden": ["a,b", "16,,x", "-1"], "--num-samples": ["0", "x"],
        "--architecture": ["rnn"], "--tflite": [], "--seed": ["s"],
        "--data": [str(tmp_path / "nope.npz"), str(tmp_path)],
        "--config": [str(tmp_path / "nope.json")],
    }
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text("[1, 2")
    flags["--config"].append(str(bad_cfg))
    argvs = []
    for flag, values in flags.items():
        for value in values:
            argvs.append(["train", str(tmp_path / f"run{len(argvs)}"), flag, value])
    argvs += [["train", "--resume", "--overwrite"], ["train", "--no-such-flag"], [],
              ["evaluate"], ["evaluate", str(tmp_path / "none")], ["sample", str(tmp_path)],
              ["plot", str(tmp_path / "none")], ["export", str(tmp_path), "--out"],
              ["export", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
              ["sample", str(tmp_path / "none"), "-n", "x"], ["--quiet"], ["train", "-n", "3"],
              ["train", str(tmp_path / "fresh"), "--resume"]]
    rng.shuffle(argvs)
    for argv in argvs:
        tally.cli(" ".join(argv), ["--quiet", *argv] if argv and rng.random() < 0.5 else argv)
    # nothing was created by refused commands
    assert not any(n.startswith("run") for n in os.listdir(tmp_path)), os.listdir(tmp_path)
    tally.report(capsys, "config and CLI")
