"""Property-based fuzzing (Hypothesis) of every place a user hands us data or arguments.

Each strategy draws inputs that are invalid by construction: shapes, dtypes,
values and argument combinations for the constructors, the model's methods,
`kv.data.load` on generated files, config dicts through
`keras_vae.config.validate` and argv through the CLI. Every case must end in an
*expected* error:

- the API: a `ValueError`/`TypeError` whose message carries `Received:` and
  whose raising frame (the last frame of its traceback) is in `keras_vae/`, so
  an error TensorFlow or Keras raised from its internals counts as a defect
  even when its type is right; or a file error (`FileNotFoundError`, ...) not
  raised from keras/tensorflow code;
- the CLI: exit code 2 with exactly one non-empty line on stderr.

Anything else is "uncaught"; a return without an error is a "silent success";
both must be zero. Counts are of DISTINCT scenarios (the drawn parameters that
define a case, not repeated random numbers) and print as `[fuzz] ...` lines
(`-s`). The "ci" profile (tests/conftest.py) derandomizes Hypothesis, so the
cases are the same on every run; `HYPOTHESIS_PROFILE=...` may pick another.
"""

import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keras_vae as kv
from keras_vae import cli
from keras_vae import config as config_schema

FILE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)
SHAPE = (8, 8, 1)
PACKAGE_DIR = os.path.dirname(os.path.abspath(kv.__file__)) + os.sep
FOREIGN = (os.sep + "keras" + os.sep, os.sep + "tensorflow" + os.sep,
           os.sep + "tensorflow_probability" + os.sep)


def raising_frame(error):
    """File name of the frame that raised `error` (the last frame of its traceback)."""
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename


def judge(error):
    """None when `error` is an expected, helpful error of ours; else why it is not."""
    where = raising_frame(error)
    if isinstance(error, FILE_ERRORS):
        if any(f in where for f in FOREIGN):
            return f"{type(error).__name__} leaked from {where}"
        return None
    if not isinstance(error, (ValueError, TypeError)):
        return f"{type(error).__name__} from {where}: {str(error)[:160]}"
    if not os.path.abspath(where).startswith(PACKAGE_DIR):
        return f"{type(error).__name__} raised in {where} (not keras_vae): {str(error)[:160]}"
    if "Received:" not in str(error):
        return f"message without 'Received:': {str(error)[:160]}"
    return None


class Tally:
    """Distinct scenarios per group, and the verdict for each."""

    def __init__(self, group):
        self.group = group
        self.expected, self.uncaught, self.silent = set(), {}, set()

    def run(self, scenario, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every exception is judged
            problem = judge(e)
            if problem is None:
                self.expected.add(scenario)
            else:
                self.uncaught[scenario] = problem
        else:
            self.silent.add(scenario)

    def cli(self, scenario, argv, capsys):
        capsys.readouterr()
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        except Exception as e:  # noqa: BLE001
            self.uncaught[scenario] = f"{type(e).__name__}: {str(e)[:160]}"
            return
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        if code == 0:
            self.silent.add(scenario)
        elif code != 2 or len(lines) != 1:
            self.uncaught[scenario] = f"exit {code}, stderr lines {lines[:3]}"
        else:
            self.expected.add(scenario)

    def report(self, capsys):
        total = len(self.expected) + len(self.uncaught) + len(self.silent)
        with capsys.disabled():
            print(f"\n[fuzz] {self.group}: {total} distinct scenarios, "
                  f"{len(self.expected)} expected errors, {len(self.uncaught)} uncaught, "
                  f"{len(self.silent)} silent successes")
        assert not self.uncaught, sorted(self.uncaught.items())[:30]
        assert not self.silent, sorted(self.silent)[:30]
        assert len(self.expected) >= 10, self.expected


# ---------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------

FLOAT_DTYPES = ("float16", "float32", "float64")
FILLS = ("ok", "nan", "inf", "-inf", "negative", "above_one")


@st.composite
def bad_data(draw):
    """(scenario, x) that a model of data shape (8, 8, 1) with a Bernoulli likelihood
    must refuse: wrong rank/shape, empty, non-finite or out-of-range values, wrong dtype,
    or not an array at all."""
    kind = draw(st.sampled_from(["array", "integers", "text", "complex", "not_array"]))
    if kind == "not_array":
        value = draw(st.sampled_from(["none", "str", "float", "dict", "ragged", "list"]))
        x = {"none": None, "str": "digits", "float": 0.5, "dict": {"x": np.zeros((2,) + SHAPE)},
             "ragged": np.array([[1, 2], [3]], dtype=object),
             "list": [[0.0] * 8] * 8}[value]
        return ("not_array", value), x
    batch = draw(st.integers(0, 3))
    tail = draw(st.one_of(st.just(SHAPE), st.lists(st.integers(1, 9), max_size=4).map(tuple)))
    shape = (batch,) + tail
    if kind == "array":
        dtype, fill = draw(st.sampled_from(FLOAT_DTYPES)), draw(st.sampled_from(FILLS))
        if fill == "ok" and batch >= 1 and tail == SHAPE:
            fill = draw(st.sampled_from(FILLS[1:]))      # the only valid combination
        if fill != "ok" and (batch == 0 or not tail):
            fill = "ok"  # nothing to poke; the shape is what is wrong
        x = np.random.default_rng(len(shape)).uniform(size=shape).astype(dtype)
        if fill != "ok":
            value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "negative": -0.5,
                     "above_one": draw(st.sampled_from([1.5, 2.0, 300.0]))}[fill]
            x.flat[draw(st.integers(0, x.size - 1))] = value
        return ("array", shape, dtype, fill), x
    if kind == "integers":  # pixels 2..255: outside a Bernoulli's [0, 1]
        assume_shape = shape if batch and tail else (2,) + SHAPE
        dtype = draw(st.sampled_from(["uint8", "int32", "int64"]))
        x = np.full(assume_shape, draw(st.sampled_from([2, 17, 255])), dtype)
        return ("integers", assume_shape, dtype), x
    if kind == "text":
        return ("text", shape), np.full(shape, "a")
    return ("complex", shape), np.zeros(shape, "complex64") + 0.5j


BAD_INTS = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True).filter(
    lambda v: not float(v).is_integer() if np.isfinite(v) else True),
    st.text(max_size=3), st.none(), st.booleans(), st.lists(st.integers(1, 3), max_size=2))
BAD_NONNEG = st.one_of(st.floats(max_value=-1e-12), st.just(float("nan")),
                       st.just(float("inf")), st.text(max_size=3), st.none(),
                       st.lists(st.floats(0, 1), max_size=2))
BAD_NAMES = st.one_of(st.text(max_size=8), st.integers(), st.none())


def _vae(**kwargs):
    return kv.VAE(kv.MLPEncoder(2), kv.MLPDecoder((4,)), **kwargs)


# (constructor label, argument strategy, factory): every drawn value must be refused.
CONSTRUCTORS = [
    ("MLPEncoder(latent_dim)", BAD_INTS, lambda v: kv.MLPEncoder(v)),
    ("ConvEncoder(latent_dim)", BAD_INTS, lambda v: kv.ConvEncoder(v)),
    ("MLPEncoder(hidden=(v,))", BAD_INTS, lambda v: kv.MLPEncoder(2, hidden=(v,))),
    ("VAE(num_samples)", BAD_INTS, lambda v: _vae(num_samples=v)),
    ("KLWarmup(steps)", BAD_INTS, lambda v: kv.KLWarmup(steps=v)),
    ("MixturePrior(num_components)", BAD_INTS, lambda v: kv.MixturePrior(2, num_components=v)),
    ("VAE(beta)", BAD_NONNEG, lambda v: _vae(beta=v)),
    ("VAE(free_bits)", BAD_NONNEG, lambda v: _vae(free_bits=v)),
    ("GaussianLikelihood(scale)", st.one_of(BAD_NONNEG, st.just(0.0)),
     lambda v: kv.GaussianLikelihood((4,), scale=v)),
    ("KLWarmup(target)", BAD_NONNEG, lambda v: kv.KLWarmup(10, target=v)),
    ("MLPDecoder(output_shape)",
     st.one_of(st.just(()), st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(tuple),
               st.tuples(st.floats(0.1, 9).filter(lambda v: not v.is_integer())),
               st.tuples(st.text(min_size=1, max_size=2)), st.none()),
     lambda v: kv.MLPDecoder(v)),
    ("MLPDecoder(likelihood)", BAD_NAMES.filter(
        lambda v: v not in kv.likelihoods.LIKELIHOODS),
     lambda v: kv.MLPDecoder((4,), likelihood=v)),
    ("MLPEncoder(posterior)", BAD_NAMES.filter(
        lambda v: v not in kv.distributions.POSTERIORS),
     lambda v: kv.MLPEncoder(2, posterior=v)),
    ("VAE(objective)", BAD_NAMES.filter(lambda v: v not in kv.objectives.OBJECTIVES),
     lambda v: _vae(objective=v)),
    ("VAE(prior)", BAD_NAMES.filter(lambda v: v is not None
                                    and v not in kv.priors.PRIORS),
     lambda v: _vae(prior=v)),
    ("VAE(analytic_kl)", st.one_of(st.text(max_size=3), st.integers(), st.none()),
     lambda v: _vae(analytic_kl=v)),
    ("VAE(seed)", st.one_of(st.text(max_size=3), st.floats(0.1, 9).filter(
        lambda v: not v.is_integer()), st.lists(st.integers(), max_size=2)),
     lambda v: _vae(seed=v)),
    ("VAE(iwae, free_bits)", st.floats(1e-6, 10), lambda v: _vae(objective="iwae", free_bits=v)),
    ("VAE(mixture prior of other size)", st.integers(1, 6).filter(lambda d: d != 2),
     lambda v: _vae(prior=kv.MixturePrior(v))),
    ("VAE(encoder)", st.sampled_from(["enc", None, 3, "MLPEncoder"]),
     lambda v: kv.VAE(v, kv.MLPDecoder((4,)))),
    ("VAE(decoder)", st.sampled_from(["dec", None, 3]), lambda v: kv.VAE(kv.MLPEncoder(2), v)),
    ("KLWarmup(schedule)", BAD_NAMES.filter(lambda v: v not in ("linear", "cyclical")),
     lambda v: kv.KLWarmup(10, schedule=v)),
    ("KLWarmup(ratio)", st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0001)),
     lambda v: kv.KLWarmup(10, schedule="cyclical", ratio=v)),
    ("ConvDecoder(flat)", st.integers(1, 64), lambda v: kv.ConvDecoder((v,))),
]


# ---------------------------------------------------------------------------
# the groups
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vae():
    model = kv.VAE(kv.MLPEncoder(2, hidden=(8,)), kv.MLPDecoder(SHAPE, hidden=(8,)))
    model.compile(optimizer="adam")
    return model


def _methods(vae):
    good = np.zeros((2,) + SHAPE, "float32")
    return {
        "fit": lambda x: vae.fit(x, epochs=1, verbose=0),
        "evaluate": lambda x: vae.evaluate(x, verbose=0),
        "predict": lambda x: vae.predict(x, verbose=0),
        "encode": vae.encode,
        "reconstruct": vae.reconstruct,
        "fit(validation_data)": lambda x: vae.fit(good, validation_data=(x,), epochs=1,
                                                  verbose=0),
    }


def test_fuzz_model_data_entry_points(vae, capsys):
    tally, methods = Tally("model data entry points"), _methods(vae)

    @settings(max_examples=300)
    @given(method=st.sampled_from(sorted(methods)), case=bad_data())
    def check(method, case):
        scenario, x = case
        tally.run((method,) + scenario, lambda: methods[method](x))

    check()
    tally.report(capsys)


@st.composite
def bad_latents(draw):
    kind = draw(st.sampled_from(["width", "rank", "nonfinite", "text", "none"]))
    if kind == "width":
        width = draw(st.integers(1, 6).filter(lambda w: w != 2))
        return ("width", width), np.zeros((3, width), "float32")
    if kind == "rank":
        shape = draw(st.sampled_from([(), (2, 0), (0,)]))  # [..., 2] of any rank >= 1 is valid
        return ("rank", shape), np.zeros(shape, "float32")
    if kind == "nonfinite":
        value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        z = np.zeros((3, 2), "float32")
        z.flat[draw(st.integers(0, 5))] = value
        return ("nonfinite", str(value)), z
    if kind == "text":
        return ("text",), np.full((3, 2), "a")
    return ("none",), None


def test_fuzz_latents_and_sampling(vae, capsys):
    tally = Tally("latents and sampling")

    @settings(max_examples=40)
    @given(case=bad_latents())
    def decode(case):
        scenario, z = case
        tally.run(("decode",) + scenario, lambda: vae.decode(z))

    @settings(max_examples=40)
    @given(n=st.one_of(st.integers(max_value=0), st.floats(0.1, 9).filter(
        lambda v: not v.is_integer()), st.text(max_size=2), st.none(), st.booleans(),
        st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    def sample(n):
        tally.run(("sample", repr(n)), lambda: vae.sample(n, seed=0))

    decode()
    sample()
    tally.report(capsys)


def test_fuzz_constructors(capsys):
    tally = Tally("constructors")

    @settings(max_examples=400)
    @given(index=st.integers(0, len(CONSTRUCTORS) - 1), data=st.data())
    def check(index, data):
        label, values, make = CONSTRUCTORS[index]
        value = data.draw(values)
        tally.run((label, repr(value)), lambda: make(value))

    check()
    tally.report(capsys)


@st.composite
def bad_files(draw, root):
    kind = draw(st.sampled_from(["random_npz", "truncated_npz", "random_npy", "object_npy",
                                 "wrong_keys", "nan_npz", "bad_image", "empty_dir", "missing",
                                 "zip_garbage", "wrong_rank"]))
    n = len(os.listdir(root))
    path = os.path.join(root, f"f{n}")
    rng = np.random.default_rng(n)
    if kind == "random_npz":
        size = draw(st.integers(0, 400))
        path += ".npz"
        with open(path, "wb") as f:
            f.write(rng.bytes(size))
        return (kind, size), path
    if kind == "truncated_npz":
        good = io.BytesIO()
        np.savez(good, x_train=rng.uniform(size=(20, 4, 4)), x_test=rng.uniform(size=(5, 4, 4)))
        cut = draw(st.integers(1, len(good.getvalue()) - 1))
        path += ".npz"
        with open(path, "wb") as f:
            f.write(good.getvalue()[:cut])
        return (kind, cut), path
    if kind == "random_npy":
        size = draw(st.integers(1, 300))
        path += ".npy"
        with open(path, "wb") as f:
            f.write(rng.bytes(size))
        return (kind, size), path
    if kind == "object_npy":
        path += ".npy"
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return (kind,), path
    if kind == "wrong_keys":
        keys = draw(st.lists(st.sampled_from(["weights", "other", "y_train", "y", "X"]),
                             min_size=1, max_size=3, unique=True))
        path += ".npz"
        np.savez(path, **{k: np.zeros((3, 3)) for k in keys})
        return (kind, tuple(keys)), path
    if kind == "nan_npz":
        where = draw(st.sampled_from(["x_train", "x_test"]))
        arrays = {"x_train": np.zeros((3, 4, 4)), "x_test": np.zeros((2, 4, 4))}
        arrays[where][0, 0, 0] = draw(st.sampled_from([np.nan, np.inf]))
        path += ".npz"
        np.savez(path, **arrays)
        return (kind, where, str(arrays[where][0, 0, 0])), path
    if kind == "wrong_rank":
        shape = draw(st.sampled_from([(5,), (2, 3, 4, 5, 6), (0, 4, 4)]))
        path += ".npy"
        np.save(path, np.zeros(shape, "float32"))
        return (kind, shape), path
    if kind == "bad_image":
        os.mkdir(path)
        ext = draw(st.sampled_from(["png", "jpg", "bmp"]))
        with open(os.path.join(path, "a." + ext), "wb") as f:
            f.write(rng.bytes(draw(st.integers(0, 200))))
        return (kind, ext), path
    if kind == "empty_dir":
        os.mkdir(path)
        return (kind,), path
    if kind == "missing":
        return (kind, draw(st.sampled_from([".npz", ".npy", ""]))), path + "-missing.npz"
    path += ".npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", rng.bytes(draw(st.integers(0, 128))))
    return (kind,), path


def test_fuzz_data_files(tmp_path, capsys):
    tally = Tally("data files")
    root = str(tmp_path)

    @settings(max_examples=120)
    @given(case=bad_files(root))
    def files(case):
        scenario, path = case
        tally.run(("load",) + scenario, lambda: kv.data.load(path))

    @settings(max_examples=20)
    @given(name=st.text(max_size=12).filter(
        lambda s: s not in ("digits", "fashion_mnist", "mnist") and not os.path.exists(s)),
        binarize=st.sampled_from([None, "yes", True, 1, "Dynamic"]))
    def names(name, binarize):
        if binarize is None:
            tally.run(("load(name)", name), lambda: kv.data.load(name, download=False))
        else:
            tally.run(("load(binarize)", repr(binarize)),
                      lambda: kv.data.load("digits", binarize=binarize))

    files()
    names()
    tally.report(capsys)


def _bad_value(option):
    """Strategy of values `config.validate` must refuse for `option`."""
    kind = option.kind
    null = st.none() if not option.nullable else st.nothing()
    if kind == "str":
        return st.one_of(st.just(""), st.integers(), st.floats(), st.lists(st.text(), max_size=1),
                         null)
    if kind in ("int", "count"):
        low = 0 if kind == "int" else -1
        return st.one_of(st.integers(max_value=low), st.integers(min_value=option.maximum + 1),
                         st.floats(0.1, 50).filter(lambda v: not v.is_integer()),
                         st.text(max_size=3), st.booleans(), null)
    if kind in ("float", "nonneg", "fraction"):
        out = [st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf")),
               st.text(max_size=3), null]
        if kind == "float":
            out.append(st.just(0.0))
        if kind == "fraction":
            out.append(st.floats(min_value=1.0001, allow_infinity=False))
        return st.one_of(*out)
    if kind == "bool":
        return st.one_of(st.text(max_size=3), st.floats(0.1, 9),
                         st.lists(st.booleans(), max_size=1), null)
    if kind == "seed":
        return st.one_of(st.text(min_size=1, max_size=3), st.floats(0.1, 9).filter(
            lambda v: not v.is_integer()), st.integers(max_value=-1), null)
    if kind == "choice":
        allowed = option.allowed()
        return st.one_of(st.text(max_size=6), st.integers()).filter(lambda v: v not in allowed)
    if kind == "auto_bool":
        return st.one_of(st.text(max_size=4).filter(lambda v: v != "auto"), st.integers(),
                         null)
    if kind == "ints":
        return st.one_of(st.just([]), st.integers(1, 3), st.text(max_size=2),
                         st.lists(st.integers(max_value=0), min_size=1, max_size=2), null)
    if kind == "names":  # column names: a list of distinct non-empty strings
        return st.one_of(st.text(max_size=3), st.integers(), st.just([""]),
                         st.just(["a", "a"]), st.lists(st.integers(), min_size=1, max_size=2))
    allowed = option.allowed()
    return st.one_of(st.text(max_size=2), st.lists(st.text(max_size=5).filter(
        lambda v: v not in allowed), min_size=1, max_size=2),
        st.just([allowed[0], allowed[0]]), null)


OPTIONS = list(config_schema.OPTIONS)


def test_fuzz_config_dicts(capsys):
    tally = Tally("config dicts")

    @settings(max_examples=300)
    @given(index=st.integers(0, len(OPTIONS) - 1), data=st.data())
    def values(index, data):
        option = OPTIONS[index]
        value = data.draw(_bad_value(option))
        tally.run((option.key, option.kind, repr(value)),
                  lambda: config_schema.validate({option.key: value}))

    @settings(max_examples=30)
    @given(config=st.one_of(
        st.dictionaries(st.text(max_size=8).filter(lambda k: k not in config_schema._BY_KEY),
                        st.integers(), min_size=1, max_size=2),
        st.lists(st.integers(), max_size=2), st.text(max_size=3), st.none(),
        st.sampled_from([{"tied": True}, {"stacked": True}, {"model": "ae", "objective": "iwae"},
                         {"model": "dae", "objective": "iwae"}])))
    def shapes(config):
        tally.run(("config", repr(config)), lambda: config_schema.validate(config))

    values()
    shapes()
    tally.report(capsys)


def _bad_flag_text(option):
    """Text for `option`'s flag that the CLI must refuse."""
    kind = option.kind
    if kind in ("int", "count"):
        return st.sampled_from(["-1", "x", "1.5", "", str(option.maximum + 1)]
                               + (["0"] if kind == "int" else []))
    if kind in ("float", "nonneg", "fraction"):
        return st.sampled_from(["fast", "-1", "nan", "inf", ""] + (["0"] if kind == "float"
                                                                      else []))
    if kind == "choice":
        allowed = [a for a in option.allowed() if a is not None]
        return st.text(alphabet="abcxyz_", min_size=1, max_size=6).filter(
            lambda v: v not in allowed)
    if kind == "ints":
        return st.sampled_from(["a,b", "16,,x", "-1", "0", ""])
    if kind == "choices":
        return st.sampled_from(["float64", "int4,float32", "float32,float32"])
    if kind == "seed":
        return st.sampled_from(["s", "1.5", "-1"])
    return st.nothing()


FLAG_OPTIONS = [o for o in OPTIONS if o.kind not in ("str", "bool", "auto_bool")]


def test_fuzz_cli_argv_one_line_exit_2(tmp_path, capsys):
    """Bad flags end with exit 2 and exactly one non-empty stderr line; nothing is written."""
    tally = Tally("CLI argv")
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text("[1, 2")
    fixed = [["train", "--resume", "--overwrite"], ["train", "--no-such-flag"], [],
             ["evaluate"], ["evaluate", str(tmp_path / "none")], ["sample", str(tmp_path)],
             ["plot", str(tmp_path / "none")], ["export", str(tmp_path), "--out"],
             ["export", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
             ["sample", str(tmp_path / "none"), "-n", "x"], ["--quiet"], ["train", "-n", "3"],
             ["train", str(tmp_path / "fresh"), "--resume"],
             ["train", str(tmp_path / "runc"), "--config", str(bad_cfg)],
             ["train", str(tmp_path / "rund"), "--config", str(tmp_path / "nope.json")],
             ["train", str(tmp_path / "rune"), "--data", str(tmp_path / "nope.npz")]]

    @settings(max_examples=120)
    @given(index=st.integers(0, len(FLAG_OPTIONS) - 1), data=st.data(), quiet=st.booleans())
    def flags(index, data, quiet):
        option = FLAG_OPTIONS[index]
        text = data.draw(_bad_flag_text(option))
        argv = ["train", str(tmp_path / "run"), f"{option.flag}={text}"]
        tally.cli((option.key, text, quiet), (["--quiet"] if quiet else []) + argv, capsys)

    flags()
    for argv in fixed:
        tally.cli(("fixed", *argv), argv, capsys)
    created = [n for n in os.listdir(tmp_path) if n.startswith("run")]
    assert not created, created
    tally.report(capsys)


@pytest.mark.parametrize("argv", [
    ["train", "RUN", "--epochs", "0"],
    ["train", "RUN", "--likelihood", "poisson"],
    ["train", "RUN", "--data", "NOPE.npz"],
])
def test_cli_bad_input_is_one_stderr_line_and_exit_2_in_a_fresh_process(tmp_path, argv):
    """The README's claim end to end: a real `keras-vae` process (TensorFlow's own logging
    included) prints exactly one non-empty line on stderr and exits with 2."""
    argv = [a.replace("RUN", str(tmp_path / "run")).replace("NOPE", str(tmp_path / "nope"))
            for a in argv]
    proc = subprocess.run([sys.executable, "-m", "keras_vae", *argv], capture_output=True,
                          text=True, timeout=180, env={k: v for k, v in os.environ.items()
                                            if k != "TF_CPP_MIN_LOG_LEVEL"})  # as a user has it
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("keras-vae"), lines
    assert not os.path.exists(tmp_path / "run")


def test_judge_rejects_errors_raised_inside_tensorflow_or_keras():
    """The check itself can fail: TF's own ValueError (right type, even 'Received') is a defect."""
    import keras
    import tensorflow as tf

    with pytest.raises(Exception) as tf_error:
        tf.reshape(tf.zeros((2, 3)), (4, 4))
    assert judge(tf_error.value) is not None
    with pytest.raises(ValueError) as keras_error:
        keras.layers.Dense(-1)
    assert "Received" in str(keras_error.value) and judge(keras_error.value) is not None
    with pytest.raises(ValueError) as ours:
        kv.MLPEncoder(0)
    assert judge(ours.value) is None
