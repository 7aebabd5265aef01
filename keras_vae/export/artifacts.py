"""Writing exports to disk: `saved_model`, `tflite` and `export_all` (as `kv.export.*`).

This module holds the file side of export: TF Serving's version layout,
warm-up records, refusing to overwrite, atomic renames. What is exported
comes from `keras_vae.export.signatures`, the TFLite flatbuffers from
`keras_vae.export.lite`, the report from `keras_vae.export.parity`.
(It is not called `saved_model.py`/`tflite.py` so that the submodules do not
shadow the functions `kv.export.saved_model` and `kv.export.tflite`.)

```none
<out_dir>/saved_model/<version>/            kv.export.saved_model (TF Serving layout)
    saved_model.pb, variables/, fingerprint.pb
    assets.extra/tf_serving_warmup_requests  PredictionLog records (one per signature)
<out_dir>/tflite/decoder_<variant>.tflite   kv.export.tflite (float32, float16, int8, int8_full)
<out_dir>/tflite/sampler.tflite             `sample` on builtin random ops + `decode`
<out_dir>/parity.json, parity.md            kv.export.parity_report
```

SavedModel signatures (tensors only, float32 unless stated; B is the batch):

```none
serving_default = decode   z [B, latent_dim] -> x_mean [B, *data_shape] + the likelihood's
                           parameters: probs, logits | mean, logits | loc, scale
sample                     n int32 [], seed int32 [2] -> z [n, latent_dim], x_mean [n, *data_shape]
                           (stateless: same seed, same batch;
                           seed=[s, 7] equals vae.sample(n, seed=s))
encode                     x [B, *data_shape] -> z_mean, z_stddev [B, latent_dim]
reconstruct                x [B, *data_shape] -> decode's outputs at z = z_mean
impute                     x [B, *data_shape], mask bool [B, *data_shape] (True = observed)
                           -> x with the missing entries imputed (objective="miwae" models
                           only; importance sampling, L=1000, fixed seed)
```

Version directories are written to a hidden temporary directory next to the
target and renamed into place, so TF Serving never sees a half-written
version and a failed overwrite leaves the old version intact.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_vae import validation
from keras_vae.export import lite as tflite_lib
from keras_vae.export import signatures
from keras_vae.export.parity import (
    TOLERANCES,
    conditional_parity_report,
    parity_report,
    run_saved_model_cli,
    run_session_loader,
)
from keras_vae.export.signatures import read_signatures
from keras_vae.files import atomic_write

__all__ = [
    "saved_model",
    "tflite",
    "export_all",
    "parity_report",
    "read_signatures",
    "run_saved_model_cli",
    "run_session_loader",
    "WARMUP_FILE",
    "TOLERANCES",
]

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


# TF Serving parses version directory names as int64.
MAX_VERSION = 2 ** 63 - 1


def _normal_permissions(top):
    """Modes as a plain `mkdir`/`open` would give under the umask (mkdtemp/mkstemp give 0700/0600).

    A TF Serving process running as another user must be able to read the export.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(top, 0o777 & ~umask)
    for root, dirs, files in os.walk(top):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale_temporaries(base_dir):
    """Removes `.tmp-<version>-<pid>-*` / `.old-...` folders left by a process that died.

    TF Serving ignores them (not numeric), but they hold a model's worth of
    bytes; folders of a process that is still running are left alone.
    """
    for entry in os.listdir(base_dir):
        if not entry.startswith((".tmp-", ".old-")):
            continue
        parts = entry.split("-")
        if len(parts) < 4 or not parts[2].isdigit():
            continue  # not ours, or written before the PID was part of the name
        if not _pid_alive(int(parts[2])):
            shutil.rmtree(os.path.join(base_dir, entry), ignore_errors=True)


def _check_siblings(base_dir, version, model, allow_interface_change):
    """Refuses a version whose latent/data shapes differ from other versions in base_dir."""
    if allow_interface_change or not os.path.isdir(base_dir):
        return
    expected = {"z": (-1, model.latent_dim), "x": (-1, *model.data_shape)}
    for entry in sorted(os.listdir(base_dir)):
        path = os.path.join(base_dir, entry)
        if not entry.isdigit() or int(entry) == version or \
                not os.path.isfile(os.path.join(path, "saved_model.pb")):
            continue
        for sig in read_signatures(path).values():
            for key, (_, shape) in sig["inputs"].items():
                if key in expected and shape != expected[key]:
                    raise ValueError(
                        f"Latent size mismatch with version {entry} in {base_dir}: TF "
                        "Serving would switch clients to a different interface. Export "
                        "to a new base_dir or pass allow_interface_change=True. "
                        f"Received: {key}.shape={expected[key]} (version {entry} has "
                        f"{shape})"
                    )


def _serving_apis():
    """(model_pb2, predict_pb2, prediction_log_pb2) of tensorflow-serving-api, or an
    ImportError that says what to install."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        raise ImportError("Writing TF Serving warm-up records needs tensorflow-serving-api: "
                          "pip install 'tensorflow-serving-api==2.21.*' (or pass "
                          "warmup=False)") from None
    return model_pb2, predict_pb2, prediction_log_pb2


def _write_warmup(version_dir, model, names, model_name):
    model_pb2, predict_pb2, prediction_log_pb2 = _serving_apis()

    examples = {"z": np.zeros((1, model.latent_dim), "float32"),
                "x": np.zeros((1, *model.data_shape), "float32"),
                "n": np.array(1, "int32"), "seed": np.array([0, 7], "int32"),
                "mask": np.ones((1, *model.data_shape), bool)}
    if getattr(model, "conditional", False):  # y: one label 0 (or a zero condition vector)
        examples["y"] = (np.zeros((1,), "int32") if getattr(model, "num_classes", None)
                         else np.zeros((1, model.condition_dim), "float32"))
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for name, sig in names.items():
            if name == "serving_default":  # an alias of the first signature
                continue
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
            for key in sig["inputs"]:
                request.inputs[key].CopyFrom(tf.make_tensor_proto(examples[key]))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def saved_model(model, base_dir, version=1, parts=("decoder", "encoder"), overwrite=False,
                warmup=True, allow_untrained=False, allow_interface_change=False,
                model_name=None):
    """Writes `<base_dir>/<version>/`, a SavedModel that TF Serving serves as is.

    Args:
      model: a trained `keras_vae.VAE`.
      base_dir: TF Serving's model base path (one model, numbered versions).
      version: positive int, the version directory name.
      parts: "decoder" (`decode` = `serving_default`, `sample`) and/or "encoder"
        (`encode`); both add `reconstruct`. See the module docstring.
      overwrite: replace an existing version directory (atomically).
      warmup: write `assets.extra/tf_serving_warmup_requests` (needs
        `tensorflow-serving-api`, the `[serving]` extra).
      allow_untrained: export a model whose optimizer never stepped.
      allow_interface_change: allow latent/data shapes that differ from other
        versions in `base_dir`.
      model_name: model name in the warm-up requests (default: basename of
        `base_dir`).

    Returns:
      str, the version directory.

    Raises:
      TypeError / ValueError: not a VAE, unbuilt or untrained model, bad
        `parts`/`version`, a flag that is not a bool, latent size mismatch
        with other versions.
      FileExistsError: the version directory exists and `overwrite=False`.
        Nothing on disk is changed when any of these is raised.

    Example:
      >>> path = kv.export.saved_model(vae, "export/models/vae", version=1)
      >>> sorted(kv.export.read_signatures(path))
      ['decode', 'encode', 'reconstruct', 'sample', 'serving_default']
    """
    model = signatures.export_model(model)  # e.g. a HierarchicalVAE's top-latent view
    signatures.check_model(model, allow_untrained)
    parts = signatures.check_parts(parts)
    version = validation.positive_int("version", version, maximum=MAX_VERSION)
    overwrite = validation.boolean("overwrite", overwrite)
    warmup = validation.boolean("warmup", warmup)
    allow_interface_change = validation.boolean("allow_interface_change",
                                                allow_interface_change)
    base_dir = os.path.abspath(os.fspath(base_dir))
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise ValueError(f"`base_dir` must be a directory. Received: base_dir={base_dir!r}")
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists; pick a new version or pass "
            f"overwrite=True (`--overwrite`). Received: path={final!r}"
        )
    _check_siblings(base_dir, version, model, allow_interface_change)
    if warmup:
        _serving_apis()  # fail before writing anything
    os.makedirs(base_dir, exist_ok=True)
    _remove_stale_temporaries(base_dir)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-{os.getpid()}-", dir=base_dir)
    old = None
    try:
        signatures.build_archive(model, parts).write_out(tmp, verbose=False)
        if warmup:
            _write_warmup(tmp, model, read_signatures(tmp),
                          model_name or os.path.basename(base_dir))
        _normal_permissions(tmp)
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".old-{version}-{os.getpid()}-", dir=base_dir)
            os.rename(final, os.path.join(old, "v"))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(final):
            os.rename(os.path.join(old, "v"), final)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _tflite_names(converted):
    return {v: (f"{v}.tflite" if v in ("sampler", "classifier") else f"decoder_{v}.tflite")
            for v in converted}


def _has_classifier(model):
    return getattr(model, "classifier", None) is not None


def tflite(model, out_dir, variants=("float32", "float16", "int8"), representative_data=None,
           sampler=True, overwrite=False, allow_untrained=False):
    """Writes `.tflite` files of the decoder (and the sampler) to `out_dir`.

    Files: `decoder_<variant>.tflite` (signature `decode`) for each variant,
    plus `decoder_int8_full.tflite` when `representative_data` is given, and
    `sampler.tflite` (signatures `sample`, `decode`); for a model with a
    classifier head (M2) also `classifier.tflite` (signature `classify`, float32).
    See `keras_vae.export.lite`.

    Args:
      model: a trained VAE.
      out_dir: directory (created if needed).
      variants: names from `keras_vae.export.lite.VARIANTS` or a comma-separated string.
      representative_data: training images `[N] + data_shape` for full int8.
      sampler: also write `sampler.tflite`.
      overwrite: replace existing files (each is written to a temporary file
        and renamed).
      allow_untrained: export a model whose optimizer never stepped.

    Returns:
      dict variant (and "sampler") -> path.

    Raises:
      ValueError / TypeError: as `saved_model`, unknown variants, bad data.
      FileExistsError: a target file exists and `overwrite=False` (nothing is
        written).
    """
    model = signatures.export_model(model)  # e.g. a HierarchicalVAE's top-latent view
    signatures.check_model(model, allow_untrained)
    variants = tflite_lib.check_variants(variants, representative_data)
    sampler = validation.boolean("sampler", sampler)
    overwrite = validation.boolean("overwrite", overwrite)
    has_prior = signatures.prior_of(model) is not None
    auto_full = tflite_lib.auto_int8_full(variants, representative_data)
    planned = list(variants) + (["int8_full"] if auto_full else []) + (
        ["sampler"] if sampler and has_prior else []) + (
        ["classifier"] if _has_classifier(model) else [])
    out_dir = os.path.abspath(os.fspath(out_dir))
    paths = {v: os.path.join(out_dir, name) for v, name in _tflite_names(planned).items()}
    _refuse_existing(paths.values(), overwrite)
    converted = tflite_lib.convert(model, variants, representative_data, sampler)
    os.makedirs(out_dir, exist_ok=True)
    for variant, content in converted.items():
        atomic_write(paths[variant], content)
    return {v: paths[v] for v in converted}


def _refuse_existing(paths, overwrite):
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(
            "Refusing to overwrite existing export files; pass overwrite=True "
            "(`keras-vae export --overwrite`) or choose another directory. "
            f"Received: existing={existing}"
        )


def export_all(model, out_dir, version=1, tflite_variants=("float32", "float16", "int8"),
               representative_data=None, overwrite=False, allow_untrained=False,
               saved_model_cli=False, latency_repeats=20):
    """SavedModel + TFLite files + parity report under `out_dir` (the CLI's `export`).

    Writes `<out_dir>/saved_model/<version>/`, `<out_dir>/tflite/*.tflite`,
    `<out_dir>/parity.json` and `<out_dir>/parity.md`. Every target is checked
    before anything is written: with `overwrite=False` an existing target
    raises `FileExistsError` and leaves all files untouched.

    Args:
      model: a trained VAE.
      out_dir: output directory.
      version: SavedModel version.
      tflite_variants: decoder variants (empty for no TFLite files).
      representative_data: training images; enables "int8_full" and is the
        parity batch for `encode`/`reconstruct`. For a conditional model also
        a pair `(images, labels)` (see `keras_vae.export.lite.representative_inputs`).
      overwrite: replace existing exports.
      allow_untrained: export a model whose optimizer never stepped.
      saved_model_cli: also run `decode` through the real `saved_model_cli run`
        command (a subprocess, a few seconds). Every signature is always
        checked through the same graph loader in-process.
      latency_repeats: timed calls per latency figure.

    Returns:
      the parity report dict (see `parity_report`).
    """
    model = signatures.export_model(model)  # e.g. a HierarchicalVAE's top-latent view
    signatures.check_model(model, allow_untrained)
    out_dir = os.path.abspath(os.fspath(out_dir))
    sm_dir = os.path.join(out_dir, "saved_model")
    if getattr(model, "conditional", False):  # SavedModel + parity; no TFLite files yet
        return _export_conditional(model, out_dir, sm_dir, version, tflite_variants,
                                   representative_data, overwrite, allow_untrained,
                                   saved_model_cli)
    version = validation.positive_int("version", version, maximum=MAX_VERSION)
    overwrite = validation.boolean("overwrite", overwrite)
    saved_model_cli = validation.boolean("saved_model_cli", saved_model_cli)
    latency_repeats = validation.positive_int("latency_repeats", latency_repeats)
    variants = tflite_lib.check_variants(tflite_variants, representative_data)
    if representative_data is not None:
        tflite_lib.representative_latents(model, representative_data, max_examples=1)
    has_prior = signatures.prior_of(model) is not None
    planned = list(variants) + (["int8_full"] if tflite_lib.auto_int8_full(
        variants, representative_data) else []) + (["sampler"] if variants and has_prior else [])
    targets = [os.path.join(sm_dir, str(version)), os.path.join(out_dir, "parity.json"),
               os.path.join(out_dir, "parity.md")]
    targets += [os.path.join(out_dir, "tflite", n) for n in _tflite_names(planned).values()]
    _refuse_existing(targets, overwrite)
    _check_siblings(sm_dir, version, model, False)
    version_dir = saved_model(model, sm_dir, version, overwrite=overwrite,
                              allow_untrained=allow_untrained)
    paths = {}
    if variants:
        paths = tflite(model, os.path.join(out_dir, "tflite"), variants, representative_data,
                       sampler=True, overwrite=overwrite, allow_untrained=allow_untrained)
    return parity_report(model, out_dir, version_dir, paths, data=representative_data,
                         saved_model_cli=saved_model_cli, latency_repeats=latency_repeats)


def _export_conditional(model, out_dir, sm_dir, version, variants, data, overwrite,
                        allow_untrained, saved_model_cli):
    """`export_all` of a conditional model: the SavedModel (signatures taking `y`), the
    TFLite decoders `decode(z, y)` (with "int8_full" calibrated on `(z, y)` pairs), the
    sampler `sample(n, y)`, M2's `classifier.tflite`, and a parity report."""
    version = validation.positive_int("version", version, maximum=MAX_VERSION)
    overwrite = validation.boolean("overwrite", overwrite)
    variants = tflite_lib.check_variants(variants, data)
    if data is not None:  # refuse bad calibration data before writing anything
        tflite_lib.representative_inputs(model, data, max_examples=1)
    planned = list(variants) + (["int8_full"] if tflite_lib.auto_int8_full(variants, data)
                                else []) + (["sampler"] if variants else []) + (
        ["classifier"] if variants and _has_classifier(model) else [])
    targets = [os.path.join(sm_dir, str(version)), os.path.join(out_dir, "parity.json"),
               os.path.join(out_dir, "parity.md")]
    targets += [os.path.join(out_dir, "tflite", n) for n in _tflite_names(planned).values()]
    _refuse_existing(targets, overwrite)
    version_dir = saved_model(model, sm_dir, version, overwrite=overwrite,
                              allow_untrained=allow_untrained)
    paths = {}
    if variants:
        paths = tflite(model, os.path.join(out_dir, "tflite"), variants, data, sampler=True,
                       overwrite=overwrite, allow_untrained=allow_untrained)
    images = data[0] if isinstance(data, (tuple, list)) and len(data) == 2 else data
    return conditional_parity_report(model, out_dir, version_dir, data=images,
                                     saved_model_cli=saved_model_cli, tflite_paths=paths)
