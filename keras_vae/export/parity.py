"""Parity report of exported artifacts: max |diff| against Keras, file sizes, latency.

`parity_report` runs every SavedModel signature through `tf.saved_model.load`
and through the graph session loader that `saved_model_cli run` and TF
Serving use (optionally also through the real `saved_model_cli run` command)
and every `.tflite` file (through `ai_edge_litert`) on one fixed batch,
compares each output with the Keras model, and writes `parity.json` (machine
readable) and `parity.md` (a table) to `out_dir`.

The fixed batch: `z` = `batch_size` draws from the prior with seed `[0, 3]`
(from N(0, I) for models without a prior);
`x` = the first `batch_size` rows of `data` if given (training images),
else the decoder's mean at `z`.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_vae import validation
from keras_vae.export import lite as tflite_lib
from keras_vae.export import signatures
from keras_vae.export.lite import within_tolerance
from keras_vae.files import atomic_write

__all__ = ["parity_report", "conditional_parity_report", "max_abs_diff", "within_tolerance",
           "run_session_loader",
           "run_saved_model_cli", "TOLERANCES"]

_UNCHECKED = ("logits",)
_ORDER = ("decode", "sample", "encode", "reconstruct")
# Max |diff| against Keras (every output but logits) each artifact must stay within.
TOLERANCES = {"saved_model": 1e-5, "float32": 1e-5, "sampler": 1e-5, "classifier": 1e-5,
              "float16": 1e-3,
              "int8": 3e-2, "int8_full": tflite_lib.INT8_FULL_TOLERANCE}


def _saved_model_cli():
    exe = shutil.which("saved_model_cli")
    return [exe] if exe else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def run_session_loader(version_dir, signature, inputs):
    """Runs one signature the way `saved_model_cli run` does, in this process.

    Loads the MetaGraph into a fresh graph session (`loader.load(sess, ["serve"],
    dir)`), restores the variables and runs the signature's tensors by name:
    the graph path of TF Serving's C++ loader, not `tf.saved_model.load`'s
    object graph. A SavedModel of a plain `tf.Module` holding Keras 3 layers
    fails here with "Could not find variable", as it does in TF Serving.

    Args:
      version_dir: the SavedModel directory.
      signature: signature name.
      inputs: dict input name -> numpy array.

    Returns:
      dict output name -> numpy array.
    """
    from tensorflow.python.util import deprecation

    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        with deprecation.silence():
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], os.fspath(version_dir))
        sig = meta.signature_def[signature]
        feed = {sig.inputs[k].name: np.asarray(v) for k, v in inputs.items()}
        keys = sorted(sig.outputs)
        values = sess.run([sig.outputs[k].name for k in keys], feed_dict=feed)
    return dict(zip(keys, values))


def run_saved_model_cli(version_dir, signature, inputs, timeout=300):
    """Runs one signature through the C++ SavedModel loader (`saved_model_cli run`).

    This is the loader TF Serving uses, unlike `tf.saved_model.load`.

    Args:
      version_dir: the SavedModel directory.
      signature: signature name, e.g. "decode".
      inputs: dict input name -> numpy array (dtypes must match the signature).

    Returns:
      dict output name -> numpy array.

    Raises:
      RuntimeError: the CLI failed; the message holds its last output lines.
    """
    with tempfile.TemporaryDirectory(prefix="keras_vae_cli_") as tmp:
        args = []
        for key, value in inputs.items():
            path = os.path.join(tmp, f"in_{key}.npy")
            np.save(path, np.asarray(value))
            args.append(f"{key}={path}")
        outdir = os.path.join(tmp, "out")
        cmd = _saved_model_cli() + ["run", "--dir", os.fspath(version_dir), "--tag_set", "serve",
                                    "--signature_def", signature, "--inputs", ";".join(args),
                                    "--outdir", outdir]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0 or not os.path.isdir(outdir):
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"saved_model_cli run failed for signature {signature!r}: {tail}")
        return {f[:-4]: np.load(os.path.join(outdir, f)) for f in os.listdir(outdir)}


def max_abs_diff(got, expected):
    """dict key -> max |got[key] - expected[key]| (float) over the keys of `expected` in `got`."""
    return {k: float(np.max(np.abs(np.asarray(got[k], np.float64) -
                                   np.asarray(v, np.float64))))
            for k, v in expected.items() if k in got}


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


def _latency_ms(fn, sizes, repeats):
    """Median wall time (ms) of `fn(batch)` per batch size, after one warm-up call."""
    out = {}
    for b in sizes:
        fn(b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(b)
            times.append(time.perf_counter() - start)
        out[f"batch_{b}"] = round(1e3 * float(np.median(times)), 4)
    return out


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def _row(path, out_dir, got, expected, tolerance, latency=None, size=None, **extra):
    # `logits` are unbounded and only reported; every other output is held to
    # `tolerance` (relative above magnitude 1, see `within_tolerance`).
    diffs = max_abs_diff(got, expected)
    checked = [v for k, v in diffs.items() if k not in _UNCHECKED]
    row = {"path": os.path.relpath(path, out_dir) if path else None,
           "size_bytes": size if size is not None else (
               os.path.getsize(path) if path and os.path.isfile(path) else None),
           "max_abs_diff": diffs, "tolerance": tolerance,
           "max_checked_diff": max(checked) if checked else None,
           "within_tolerance": within_tolerance(got, expected, tolerance) if checked else None}
    if latency:
        row["latency_ms"] = latency
    row.update(extra)
    return row


def _saved_model_rows(model, out_dir, version_dir, z, x, ref, sizes, repeats, cli):
    """Rows `saved_model/<sig>` (tf.saved_model.load), `session_loader/<sig>` (the
    graph loader of saved_model_cli and TF Serving) and, if `cli`,
    `saved_model_cli/decode` (the real command in a subprocess)."""
    tol = TOLERANCES["saved_model"]
    loaded = tf.saved_model.load(version_dir)
    size = _dir_size(version_dir)
    available = signatures.read_signatures(version_dir)
    rows = {}
    for name in [n for n in _ORDER if n in available]:
        fn = loaded.signatures[name]
        extra = {}
        if name == "sample":
            n, seed = int(z.shape[0]), np.array([0, 7], np.int32)
            inputs = {"n": np.array(n, np.int32), "seed": seed}
            expected = _numpy(signatures.sample_outputs(model, n, tf.constant(seed)))
            extra["compared_with"] = ("Keras: sample_outputs(n, seed=[0, 7]) == "
                                      "vae.sample(n, seed=0)")
        else:
            inputs = {"z": z} if name == "decode" else {"x": x}
            expected = ref[name]
        out = _numpy(fn(**{k: tf.constant(v) for k, v in inputs.items()}))
        latency = None
        if name == "decode":
            latency = _latency_ms(lambda b, fn=fn: fn(z=tf.constant(z[:b])), sizes, repeats)
        rows[f"saved_model/{name}"] = _row(version_dir, out_dir, out, expected,
                                           tol, latency, size=size, loader="tf.saved_model.load",
                                           **extra)
        out = run_session_loader(version_dir, name, inputs)
        rows[f"session_loader/{name}"] = _row(
            version_dir, out_dir, out, expected, tol, size=size,
            loader="graph session loader (as saved_model_cli run / TF Serving)", **extra)
        if cli and name == "decode":
            out = run_saved_model_cli(version_dir, name, inputs)
            rows["saved_model_cli/decode"] = _row(
                version_dir, out_dir, out, expected, tol, size=size,
                loader="saved_model_cli run (subprocess)")
    if "sample" in available:  # the served sampler reproduces vae.sample(n, seed=s)
        n = int(z.shape[0])
        out = loaded.signatures["sample"](n=tf.constant(n), seed=tf.constant([0, 7]))
        rows["saved_model/sample"]["max_abs_diff"]["x_mean_vs_vae_sample"] = max_abs_diff(
            _numpy(out), {"x_mean": model.sample(n, seed=0).numpy()})["x_mean"]
    return rows


def _tflite_rows(model, out_dir, paths, z, ref, sizes, repeats):
    rows = {}
    for variant, path in paths.items():
        if variant == "sampler":
            runner = tflite_lib.signature_runner(path, "sample")
            out = runner(n=np.array(z.shape[0], np.int32))
            at_z = _numpy(signatures.decode_outputs(model, out["z"]))
            latency = _latency_ms(lambda b, run=runner: run(n=np.array(b, np.int32)), sizes,
                                  repeats)
            rows["tflite/sampler"] = _row(
                path, out_dir, out, at_z, TOLERANCES["sampler"], latency,
                compared_with="Keras decoder at the sampled z",
                z_batch_mean=[round(float(v), 4) for v in out["z"].mean(0)],
                z_batch_std=[round(float(v), 4) for v in out["z"].std(0)])
            continue
        runner = tflite_lib.signature_runner(path, "decode")
        out = runner(z=z)
        latency = _latency_ms(lambda b, run=runner: run(z=z[:b]), sizes, repeats)
        rows[f"tflite/{variant}"] = _row(path, out_dir, out, ref["decode"],
                                         TOLERANCES.get(variant, 3e-2), latency)
    return rows


def _markdown(report):
    lines = ["# Export parity report", "",
             f"Fixed batch: {report['batch']['z']}; {report['batch']['x']}.",
             "max|diff| is against the Keras model, per output (x_mean = mean of p(x|z)); "
             "every output except the unbounded logits is held to the tolerance (relative to "
             "the value where its magnitude exceeds 1). Latency is "
             "the median wall time per call on this machine.", "",
             "| artifact | size (bytes) | max abs diff (checked) | tolerance | ok | per output "
             "| latency batch 1 (ms) | latency batch "
             f"{report['batch']['size']} (ms) |",
             "| --- | ---: | ---: | ---: | :---: | --- | ---: | ---: |"]
    big = f"batch_{report['batch']['size']}"
    for name, row in report["artifacts"].items():
        diffs = row.get("max_abs_diff", {})
        each = ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
        lat = row.get("latency_ms", {})
        ok = {True: "yes", False: "NO", None: ""}[row.get("within_tolerance")]
        worst = row.get("max_checked_diff")
        lines.append(
            f"| {name} | {row.get('size_bytes') or ''} | "
            f"{'' if worst is None else f'{worst:.2e}'} | "
            f"{row.get('tolerance') or ''} | {ok} | {each} | "
            f"{lat.get('batch_1', '')} | {lat.get(big, '')} |")
    if report["model"].get("compute_dtype", "float32") != "float32":
        lines += ["", f"The Keras model computes in {report['model']['compute_dtype']}; the "
                  "TFLite files are converted from a float32 copy with the same weights, so "
                  "they differ from it by that rounding."]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
              ""]
    return "\n".join(lines)


def parity_report(model, out_dir, saved_model_dir=None, tflite_paths=None, data=None,
                  saved_model_cli=False, latency_repeats=20, batch_size=256):
    """Compares exported artifacts with the Keras model; writes parity.json and parity.md.

    Args:
      model: the VAE the artifacts were exported from.
      out_dir: where the two files go (paths in the report are relative to it).
      saved_model_dir: a version directory written by `kv.export.saved_model`.
      tflite_paths: dict variant -> path, as returned by `kv.export.tflite`.
      data: images `[N] + data_shape`; the first `batch_size` rows are the
        `encode`/`reconstruct` batch.
      saved_model_cli: also run `decode` through the real `saved_model_cli run`
        command in a subprocess (a few seconds); every signature always runs
        through the same graph loader in-process (`run_session_loader`).
      latency_repeats: timed calls per latency figure (median reported).
      batch_size: the large batch (latency is reported for 1 and this size).

    Returns:
      dict with "model", "batch", "artifacts" (name -> path, size_bytes,
      max_abs_diff per output, tolerance, within_tolerance, latency_ms) and
      "versions"; the same content as parity.json.

    Raises:
      TypeError / ValueError: not a VAE, `data` of the wrong shape or outside
        the likelihood's support, `batch_size`/`latency_repeats` not a
        positive int, `saved_model_cli` not a bool.
    """
    model = signatures.export_model(model)  # e.g. a HierarchicalVAE's top-latent view
    signatures.check_model(model, allow_untrained=True)
    batch_size = validation.batch_size(batch_size)
    latency_repeats = validation.positive_int("latency_repeats", latency_repeats)
    saved_model_cli = validation.boolean("saved_model_cli", saved_model_cli)
    if data is not None:
        validation.check_data(data, model.data_shape, model.decoder.head, name="data")
    z = tflite_lib.probe_latents(model, batch_size, seed=(0, 3), data=data)
    ref = {"decode": _numpy(signatures.decode_outputs(model, z))}
    if data is not None:
        x = np.asarray(data[:batch_size], "float32")
        x_note = f"x = first {len(x)} rows of the given data"
    else:
        x = ref["decode"]["x_mean"]
        x_note = "x = the decoder's mean at z"
    ref["encode"] = _numpy(signatures.encode_outputs(model, x))
    ref["reconstruct"] = _numpy(signatures.reconstruct_outputs(model, x))
    sizes = (1, batch_size)
    artifacts = {"keras/decode": {
        "path": None, "size_bytes": None, "max_abs_diff": {}, "tolerance": None,
        "max_checked_diff": None, "within_tolerance": None,
        "latency_ms": _latency_ms(lambda b: signatures.decode_outputs(model, z[:b]), sizes,
                                  latency_repeats),
        "note": "reference (eager Keras call)"}}
    if saved_model_dir:
        artifacts.update(_saved_model_rows(model, out_dir, os.fspath(saved_model_dir), z, x,
                                           ref, sizes, latency_repeats, saved_model_cli))
    if tflite_paths:
        artifacts.update(_tflite_rows(model, out_dir, tflite_paths, z, ref, sizes,
                                      latency_repeats))
    optimizer = getattr(model, "optimizer", None)
    prior = signatures.prior_of(model)
    report = {
        "model": {"latent_dim": int(model.latent_dim),
                  "data_shape": [int(d) for d in model.data_shape],
                  "likelihood": getattr(model.decoder.head, "likelihood_name",
                                        type(model.decoder.head).__name__),
                  "prior": None if prior is None else type(prior).__name__,
                  "optimizer_steps": 0 if optimizer is None else int(optimizer.iterations),
                  "compute_dtype": model.decoder.compute_dtype},
        "batch": {"size": batch_size,
                  "z": "z = prior draws with seed [0, 3]" if prior is not None else (
                      "z = N(0, I) draws, seed [0, 3]" if data is None else
                      "z = codes E[q(z|x)] of the given data"),
                  "x": x_note},
        "artifacts": artifacts,
        "versions": _versions(),
    }
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(os.path.join(out_dir, "parity.json"), json.dumps(report, indent=2) + "\n")
    atomic_write(os.path.join(out_dir, "parity.md"), _markdown(report))
    return report


def _versions():
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__,
                "keras": keras.__version__}
    try:
        from importlib.metadata import version

        versions["ai-edge-litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001  the [tflite] extra is optional
        pass
    return versions


def conditional_parity_report(model, out_dir, saved_model_dir, data=None, saved_model_cli=False,
                              batch_size=64, tflite_paths=None):
    """`parity_report` for a conditional model's SavedModel and TFLite files.

    TFLite decoders (`tflite_paths`, variant -> path) run `decode(z, y)` with
    ai-edge-litert against Keras within `TOLERANCES[variant]`; the sampler
    runs `decode(z, y)` likewise and `sample(n, y)` (fresh noise) for shapes
    and finite values; M2's `classifier.tflite` runs `classify(x)` against
    `model.classify` within `TOLERANCES["classifier"]`.

    Every signature (`decode(z, y)`, `sample(n, y, seed)`, `encode(x, y)`,
    `reconstruct(x, y)`) runs through `tf.saved_model.load` and the graph
    session loader (and, with `saved_model_cli`, `decode` through the real
    command) and is compared with the Keras model's own methods, on labels
    `y = b mod C` (class-conditional) or N(0, I) condition vectors, seed [0, 4].

    Returns:
      dict with "model", "batch", "artifacts" (as `parity_report`) and "note";
      also written to `parity.json` and `parity.md`.
    """
    signatures.check_model(model, allow_untrained=True)
    batch_size = validation.batch_size(batch_size)
    saved_model_cli = validation.boolean("saved_model_cli", saved_model_cli)
    version_dir = os.fspath(saved_model_dir)
    if getattr(model, "num_classes", None):
        y = (np.arange(batch_size) % model.num_classes).astype("int32")
    else:
        y = np.random.default_rng(4).normal(size=(batch_size, model.condition_dim))
        y = y.astype("float32")
    z = np.asarray(model.prior.distribution().sample(batch_size, seed=tf.constant([0, 4])),
                   "float32")
    if data is not None:
        validation.check_data(data, model.data_shape, model.decoder.head, name="data")
        x = np.resize(np.asarray(data[:batch_size], "float32"), (batch_size, *model.data_shape))
    else:
        x = np.asarray(model.decode(z, y).mean(), "float32")
    q = model.encode(x, y)
    expected = {
        "decode": ({"z": z, "y": y}, {"x_mean": np.asarray(model.decode(z, y).mean())}),
        "sample": ({"n": np.array(batch_size, np.int32), "y": y, "seed": np.array([0, 7],
                                                                                 np.int32)},
                   {"x_mean": np.asarray(model.sample(batch_size, y=y, seed=0))}),
        "encode": ({"x": x, "y": y}, {"z_mean": np.asarray(q.mean()),
                                      "z_stddev": np.asarray(q.stddev())}),
        "reconstruct": ({"x": x, "y": y}, {"x_mean": np.asarray(model.reconstruct(x, y))}),
    }
    if hasattr(model, "classify"):
        expected["classify"] = ({"x": x}, {"probs": model.classify(x)})
    tol = TOLERANCES["saved_model"]
    loaded = tf.saved_model.load(version_dir)
    available = signatures.read_signatures(version_dir)
    size = _dir_size(version_dir)
    rows = {}
    for name in [n for n in _ORDER + ("classify",) if n in available]:
        inputs, ref = expected[name]
        out = _numpy(loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()}))
        rows[f"saved_model/{name}"] = _row(version_dir, out_dir, out, ref, tol,
                                           size=size, loader="tf.saved_model.load")
        out = run_session_loader(version_dir, name, inputs)
        rows[f"session_loader/{name}"] = _row(
            version_dir, out_dir, out, ref, tol, size=size,
            loader="graph session loader (as saved_model_cli run / TF Serving)")
        if saved_model_cli and name == "decode":
            out = run_saved_model_cli(version_dir, name, inputs)
            rows["saved_model_cli/decode"] = _row(version_dir, out_dir, out, ref,
                                                  tol, size=size,
                                                  loader="saved_model_cli run (subprocess)")
    decode_inputs, decode_ref = expected["decode"]
    for variant, path in (tflite_paths or {}).items():
        if variant == "classifier":  # M2's q(y|x): classify(x) -> probs
            inputs, ref = expected["classify"]
            out = tflite_lib.run(path, "classify", **inputs)
            rows["tflite/classifier"] = _row(path, out_dir, out, ref,
                                             TOLERANCES["classifier"],
                                             size=os.path.getsize(path), loader="ai-edge-litert")
            continue
        out = tflite_lib.run(path, "decode", **decode_inputs)
        tol = TOLERANCES[variant]
        extra = {}
        if variant == "sampler":
            drawn = tflite_lib.run(path, "sample", n=np.array(batch_size, np.int32), y=y)
            extra["sample_ok"] = bool(drawn["x_mean"].shape == (batch_size, *model.data_shape)
                                      and np.all(np.isfinite(drawn["x_mean"])))
        rows[f"tflite/{variant}"] = _row(path, out_dir, out, decode_ref, tol,
                                         size=os.path.getsize(path), loader="ai-edge-litert",
                                         **extra)
    report = {
        "model": {"latent_dim": int(model.latent_dim),
                  "data_shape": [int(d) for d in model.data_shape],
                  "conditional": {"num_classes": model.num_classes,
                                  "condition_dim": model.condition_dim}},
        "batch": {"size": batch_size, "z": "prior draws with seed [0, 4]",
                  "x": "rows of the given data" if data is not None else "decoder means",
                  "y": "labels b mod C" if model.num_classes else "N(0, I) vectors, seed 4"},
        "artifacts": rows,
        "note": "conditional models: TFLite decoders take (z, y), the sampler (n, y); "
                "int8_full is calibrated on (z, y) pairs; M2's classifier.tflite runs "
                "classify(x)",
        "versions": _versions(),
    }
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(os.path.join(out_dir, "parity.json"), json.dumps(report, indent=2) + "\n")
    atomic_write(os.path.join(out_dir, "parity.md"), _markdown(report))
    return report
