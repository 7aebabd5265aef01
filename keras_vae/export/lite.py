"""TFLite conversion of a VAE's decoder and prior sampler (in memory), and running .tflite files.

Writing the files is `kv.export.tflite` (`keras_vae.export.artifacts`); this
module is named `lite` so that it does not shadow that function.

Conversion goes through a SavedModel written by `keras.export.ExportArchive`
(converting concrete functions of a module holding Keras 3 layers produced NaN
outputs, DESIGN section 5). Files run on the builtin TFLite kernels only: the
sampler draws its noise with `RANDOM_STANDARD_NORMAL`/`RANDOM_UNIFORM`, since
stateless and TFP sampling ops would need Flex delegates, which
`ai-edge-litert` does not ship. Run the files with
`ai_edge_litert.interpreter.Interpreter` (`tf.lite.Interpreter` is deprecated).

Variants of the decoder (signature `decode`: `z float32 [None, latent_dim]` ->
the likelihood's parameters and `x_mean`, as in `keras_vae.export.signatures`):

| variant     | weights | activations | needs                    |
| ----------- | ------- | ----------- | ------------------------ |
| `float32`   | float32 | float32     |                          |
| `float16`   | float16 | float32     |                          |
| `int8`      | int8    | float32 (dynamic range) |              |
| `int8_full` | int8    | int8 (float32 inputs/outputs) | representative data |

The sampler (`sampler.tflite`) holds `sample` (`n int32 []` -> `z`, `x_mean`,
fresh noise on every call) and a float32 `decode`, so a device can also pass
its own noise through the prior's reparameterization and `decode`.

Conditional models (`ConditionalVAE`, `SemiSupervisedVAE`): every decoder
variant takes `(z, y)` (`y` int32 labels `[B]`, one-hot inside the graph with
the builtin `ONE_HOT`, or float32 condition vectors `[B, k]`) and the sampler
`sample(n, y)`. Their "int8_full" decoder is calibrated on `(z, y)` pairs from
`representative_inputs`. A model with a classifier head (M2) also gets
`classifier.tflite`, float32, signature `classify` (`x` -> `probs [B, C]`).
"""

import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_vae import distributions as dists
from keras_vae import keras_api, validation
from keras_vae.export import signatures

__all__ = [
    "VARIANTS",
    "INT8_FULL_TOLERANCE",
    "within_tolerance",
    "check_variants",
    "auto_int8_full",
    "representative_latents",
    "representative_inputs",
    "probe_latents",
    "float32_model",
    "convert",
    "run",
    "signature_runner",
    "op_names",
]

VARIANTS = ("float32", "float16", "int8", "int8_full")
# Max |diff| against Keras an automatically added "int8_full" decoder must meet on
# its calibration latents (every output but logits), else it is not written.
INT8_FULL_TOLERANCE = 1e-1


def representative_latents(model, data, max_examples=500, seed=0):
    """Calibration latents for full-integer quantization of the decoder.

    Images (`[N] + data_shape`) are encoded and one posterior draw is taken per
    image, then as many prior draws are added, so the calibrated ranges cover
    both reconstruction (aggregate posterior) and generation (prior). Arrays
    of shape `[N, latent_dim]` are used as latents directly.

    Args:
      model: the VAE.
      data: float array `[N] + data_shape` or `[N, latent_dim]`.
      max_examples: at most this many rows of `data` are used.
      seed: non-negative int, seeds the posterior and prior draws (folded
        into int32 range).

    Returns:
      float32 numpy array `[M, latent_dim]`.

    Raises:
      ValueError: `data` has neither the data shape nor the latent size, or
        bad `max_examples`/`seed` (TypeError for non-integers).
    """
    max_examples = validation.positive_int("max_examples", max_examples)
    seed = validation.seed32(seed)
    arr = np.asarray(data)
    if arr.ndim == 2 and arr.shape[1:] == (model.latent_dim,) and \
            tuple(model.data_shape) != (model.latent_dim,):
        return arr[:max_examples].astype("float32")
    if arr.ndim >= 1 and tuple(arr.shape[1:]) != tuple(model.data_shape):
        raise ValueError(
            "Latent size mismatch: `representative_data` must be training images of "
            f"shape (N,) + {tuple(model.data_shape)} or latents of shape (N, "
            f"{model.latent_dim}). Received: representative_data.shape={arr.shape}"
        )
    validation.check_data(arr, model.data_shape, model.decoder.head, name="representative_data")
    x = tf.constant(arr[:max_examples], tf.float32)
    seeds = tf.random.split(tf.constant([seed, 11], tf.int32), 2)
    q = model.encoder(x, training=False)
    parts = [dists.reparameterized_sample(q, 1, seeds[0])[0].numpy()]
    if signatures.prior_of(model) is not None:
        parts.append(model.prior.distribution().sample(int(x.shape[0]), seed=seeds[1]).numpy())
    return np.concatenate(parts).astype("float32")


def _cycled_conditions(model, n, seed):
    """`n` conditions without labels: classes `b mod C`, or N(0, I) condition vectors."""
    if getattr(model, "num_classes", None):
        return (np.arange(n) % model.num_classes).astype("int32")
    return np.random.default_rng(seed).normal(size=(n, model.condition_dim)).astype("float32")


def representative_inputs(model, data, max_examples=500, seed=0):
    """Calibration inputs of the decoder's `decode` signature for full-integer quantization.

    An unconditional model gets `{"z": representative_latents(...)}`. A
    conditional model gets `{"z": [M, latent_dim], "y": [M] or [M, k]}`:

    - `data` a pair `(x, y)` of images and their labels (or condition
      vectors): one draw of `q(z|x, y)` per image and as many prior draws,
      both with the given `y`;
    - images only, for a model with a classifier head (M2): the same, with
      `y = argmax q(y|x)`;
    - images only, otherwise (no labels to encode with): prior draws, one per
      image, with the classes `b mod C` (N(0, I) vectors for `condition_dim`);
    - latents `[N, latent_dim]`: these, with the classes `b mod C`.

    Raises:
      ValueError / TypeError: as `representative_latents`, and labels that do
        not fit the model.
    """
    if not _conditional(model):
        return {"z": representative_latents(model, data, max_examples, seed)}
    max_examples = validation.positive_int("max_examples", max_examples)
    seed = validation.seed32(seed)
    x, y = data if isinstance(data, (tuple, list)) and len(data) == 2 else (data, None)
    arr = np.asarray(x)
    if y is None and arr.ndim == 2 and arr.shape[1:] == (model.latent_dim,) and \
            tuple(model.data_shape) != (model.latent_dim,):
        z = arr[:max_examples].astype("float32")
        return {"z": z, "y": _cycled_conditions(model, len(z), seed)}
    if arr.ndim < 1 or tuple(arr.shape[1:]) != tuple(model.data_shape):
        raise ValueError(
            "Shape mismatch: `representative_data` of a conditional model must be training "
            f"images of shape (N,) + {tuple(model.data_shape)} (or a pair (images, labels), "
            f"or latents (N, {model.latent_dim})). Received: representative_data.shape="
            f"{arr.shape}")
    validation.check_data(arr, model.data_shape, model.decoder.head, name="representative_data")
    arr = arr[:max_examples].astype("float32")
    n = len(arr)
    seeds = tf.random.split(tf.constant([seed, 11], tf.int32), 2)
    prior_z = model.prior.distribution().sample(n, seed=seeds[1]).numpy()
    if y is not None:
        y = model.check_condition(np.asarray(y)[:max_examples], n, "representative_data[1]")
    elif hasattr(model, "classify"):
        y = model.classify(arr).argmax(1).astype("int32")
    else:
        return {"z": prior_z.astype("float32"), "y": _cycled_conditions(model, n, seed)}
    q = model.encode(arr, y)
    posterior_z = dists.reparameterized_sample(q, 1, seeds[0])[0].numpy()
    return {"z": np.concatenate([posterior_z, prior_z]).astype("float32"),
            "y": np.concatenate([y, y])}


def probe_latents(model, n, seed=(0, 5), data=None):
    """`n` fixed latents `[n, latent_dim]`.

    Prior draws; for a model without a prior (an Autoencoder) the codes
    `E[q(z|x)]` of the rows of `data` (repeated up to `n`) if given, else N(0, I).
    """
    n = validation.positive_int("n", n)
    seed = tf.constant(seed, tf.int32)
    if signatures.prior_of(model) is not None:
        z = model.prior.distribution().sample(n, seed=seed)
    elif data is not None:
        x = np.resize(np.asarray(data[:n], "float32"), (n, *model.data_shape))
        z = model.encoder(tf.constant(x), training=False).mean()
    else:
        z = dists.stateless_normal([n, model.latent_dim], seed)
    return np.asarray(z).astype("float32")


def _policy_to_float32(config):
    if isinstance(config, dict):
        if str(config.get("class_name", "")).endswith("DTypePolicy"):
            return {**config, "config": {**config.get("config", {}), "name": "float32"}}
        return {k: _policy_to_float32(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_policy_to_float32(v) for v in config]
    return "float32" if isinstance(config, str) and config.startswith("mixed_") else config


def float32_model(model):
    """`model` itself, or for a mixed-precision model a float32 copy with the same weights.

    TFLite has no builtin float16 MatMul/Conv kernels, so a model whose layers
    compute in float16/bfloat16 is rebuilt from its config with float32
    policies (its variables are float32 already) before conversion.
    """
    layers = keras_api.flatten_layers(model)
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in layers):
        return model
    clone = keras.saving.deserialize_keras_object(
        _policy_to_float32(keras.saving.serialize_keras_object(model)))
    if [tuple(w.shape) for w in clone.weights] != [tuple(w.shape) for w in model.weights]:
        raise ValueError(
            "Could not rebuild the mixed-precision model in float32 for TFLite (its weights "
            f"differ). Received: model={type(model).__name__}"
        )
    for target, source in zip(clone.weights, model.weights):
        target.assign(tf.cast(source, target.dtype))
    return clone


def _converter(source_dir, keys, variant, inputs):
    converter = tf.lite.TFLiteConverter.from_saved_model(source_dir, signature_keys=keys)
    if variant == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8_full":
        # Batches of one size: the calibrator fails to resize a conditional decode
        # (its BROADCAST_TO of y) between batch sizes, so the last batch is the last rows.
        rows = len(inputs["z"])
        size = min(32, rows)
        starts = list(range(0, rows - size + 1, size))
        starts += [rows - size] if rows % size else []
        batches = [{k: v[i:i + size] for k, v in inputs.items()} for i in starts]
        converter.representative_dataset = lambda: iter(batches)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def check_variants(variants, representative_data):
    """Validates decoder variant names; returns them as a tuple.

    Args:
      variants: names from `VARIANTS`, or one comma-separated string
        ("float32,int8"); may be empty (no decoder files).
      representative_data: the calibration data, or None ("int8_full" needs it).

    Returns:
      tuple of distinct variant names, in the given order.

    Raises:
      ValueError: an unknown or repeated name, or "int8_full" without data.
    """
    if isinstance(variants, str):
        variants = tuple(v.strip() for v in variants.split(",") if v.strip())
    variants = tuple(variants)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or len(set(variants)) != len(variants):
        raise ValueError(
            f"`variants` must be distinct names from {VARIANTS}. "
            f"Received: variants={variants!r}"
        )
    if "int8_full" in variants and representative_data is None:
        raise ValueError(
            "The 'int8_full' variant calibrates activations on representative data: "
            "pass representative_data (training images). Received: "
            "representative_data=None"
        )
    return variants


def auto_int8_full(variants, representative_data):
    """True if `convert` adds "int8_full" implicitly: data given, "int8" asked, "int8_full" not.

    The added variant is still left out (with a warning) if it does not run or
    misses `INT8_FULL_TOLERANCE`; see `convert`.
    """
    return (representative_data is not None and "int8" in variants
            and "int8_full" not in variants)


def _conditional(model):
    return bool(getattr(model, "conditional", False))


def probe_inputs(model, z):
    """The `decode` inputs of a probe batch: `{"z": z}`, plus `y` for a conditional model
    (labels `b mod C`, or N(0, I) condition vectors with seed 6)."""
    if not _conditional(model):
        return {"z": z}
    n = len(z)
    if getattr(model, "num_classes", None):
        return {"z": z, "y": (np.arange(n) % model.num_classes).astype("int32")}
    y = np.random.default_rng(6).normal(size=(n, model.condition_dim)).astype("float32")
    return {"z": z, "y": y}


def within_tolerance(got, expected, tolerance):
    """True if every checked output (all but `logits`) of `got` is within
    `tolerance` of `expected` relative to the expected value's magnitude where
    that exceeds 1: `|got - expected| <= tolerance * max(1, |expected|)` entry
    by entry. Outputs in [0, 1] (images, probabilities) are held to the
    absolute tolerance; outputs in a table's units (a column in the thousands)
    to float32's relative precision, which an absolute 1e-5 cannot meet.

    Example:
      >>> within_tolerance({"x_mean": [2000.0]}, {"x_mean": [2000.01]}, 1e-5)
      True
    """
    keys = [k for k in expected if k in got and k != "logits"]
    return all(np.all(np.abs(np.asarray(got[k], np.float64) - np.asarray(expected[k], np.float64))
                      <= tolerance * np.maximum(1.0, np.abs(np.asarray(expected[k], np.float64))))
               for k in keys)


def _probe(content, signature, inputs, expected=None, tolerance=None):
    """None if the flatbuffer runs on `inputs` with finite outputs (within
    `tolerance` of `expected`, logits aside, if given), else the problem."""
    try:
        out = run(content, signature, **inputs)
    except (RuntimeError, ValueError) as err:
        return str(err).strip().splitlines()[0]
    bad = [k for k, v in out.items() if not np.all(np.isfinite(v))]
    if bad:
        return f"non-finite outputs {bad}"
    if expected is not None and not within_tolerance(out, expected, tolerance):
        worst = max(float(np.max(np.abs(out[k] - np.asarray(v)))) for k, v in expected.items()
                    if k != "logits")
        return (f"max |diff| {worst:.3g} against Keras on its calibration latents exceeds "
                f"{tolerance:g} (relative where the value exceeds 1)")
    return None


def convert(model, variants=("float32", "float16", "int8"), representative_data=None,
            sampler=True, classifier=True, batch_size=None):
    """Converts the decoder (and the sampler) to TFLite flatbuffers in memory.

    Every flatbuffer is run once on a few latents before it is returned.

    Args:
      model: a trained VAE (see `keras_vae.export.signatures.check_model`).
      variants: names from `VARIANTS` (or a comma-separated string).
        "int8_full" is added automatically when `representative_data` is given
        and "int8" is requested; if that added variant does not run on the
        builtin int8 kernels (e.g. the continuous Bernoulli mean may divide by
        a quantized zero) or misses `INT8_FULL_TOLERANCE` on its calibration
        latents, it is left out with a warning. A variant named explicitly is
        always written if it runs (check the parity report).
      representative_data: training images `[N] + data_shape` (or latents
        `[N, latent_dim]`) for full-integer calibration; see
        `representative_latents`.
      sampler: also build the sampler model (key "sampler"); ignored for
        models without a prior (an Autoencoder).
      classifier: also build `classify` (key "classifier", float32) for a
        model with a classifier head (M2); ignored for other models.
      batch_size: None (the decoder takes any batch) or a fixed batch B of
        `decode`'s inputs, for runtimes that cannot resize inputs (LiteRT.js,
        `kv.export.web`, uses B = 1).

    Returns:
      dict variant -> bytes (`.tflite` flatbuffer).

    Raises:
      ValueError: unknown variant, "int8_full" without data, data of the wrong
        shape, a requested variant that does not run, or a prior the sampler
        cannot draw from with builtin ops.
    """
    variants = check_variants(variants, representative_data)
    auto_full = auto_int8_full(variants, representative_data)
    if batch_size is not None:
        batch_size = validation.positive_int("batch_size", batch_size)
        if "int8_full" in variants or auto_full:
            raise ValueError("The 'int8_full' variant calibrates on batches of 32; it takes "
                             f"no fixed batch_size. Received: batch_size={batch_size}")
    variants += ("int8_full",) if auto_full else ()
    calibration = None
    if "int8_full" in variants:
        calibration = representative_inputs(model, representative_data)
    sampler = validation.boolean("sampler", sampler) and signatures.prior_of(model) is not None
    classifier = (validation.boolean("classifier", classifier)
                  and getattr(model, "classifier", None) is not None)
    if sampler:  # fail before converting anything if the prior is unsupported
        signatures.prior_from_noise(model.prior.distribution(), tf.constant(1),
                                     model.latent_dim)
    probe = probe_inputs(model, probe_latents(model, batch_size or 8))
    out = {}
    with tempfile.TemporaryDirectory(prefix="keras_vae_tflite_") as tmp:
        source = os.path.join(tmp, "saved_model")
        signatures.build_archive(float32_model(model), ("decoder",), sampler="random",
                                 batch_size=batch_size).write_out(source, verbose=False)
        with warnings.catch_warnings():  # the calibrator still uses tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            for variant in variants:
                content = _converter(source, ["decode"], variant, calibration).convert()
                problem = _probe(content, "decode", probe)
                if not problem and variant == "int8_full" and auto_full:
                    calib = {k: v[:256] for k, v in calibration.items()}
                    problem = _probe(content, "decode", calib,
                                     signatures.decode_outputs(model, calib["z"],
                                                               calib.get("y")),
                                     INT8_FULL_TOLERANCE)
                if problem and variant == "int8_full" and auto_full:
                    warnings.warn(f"Skipping the 'int8_full' TFLite decoder: {problem}",
                                  validation.KerasVAEWarning, stacklevel=2)
                    continue
                if problem:
                    raise ValueError(
                        f"The {variant!r} TFLite decoder of this model does not run on the "
                        f"builtin kernels ({problem}); leave it out of `variants`. "
                        f"Received: variants={variants!r}"
                    )
                out[variant] = content
            if sampler:
                out["sampler"] = _converter(source, ["sample", "decode"], "float32",
                                            None).convert()
            if classifier:
                out["classifier"] = _classifier(model, tmp)
    return out


def _classifier(model, tmp):
    """`classify(x) -> probs` of an M2 model as a float32 flatbuffer (run once to check)."""
    source = os.path.join(tmp, "classifier_saved_model")
    signatures.build_archive(float32_model(model), ("encoder",), sampler=None).write_out(
        source, verbose=False)
    content = _converter(source, ["classify"], "float32", None).convert()
    x = np.asarray(model.decode(probe_latents(model, 4), _cycled_conditions(model, 4, 0))
                   .mean(), "float32")
    problem = _probe(content, "classify", {"x": x})
    if problem:
        raise ValueError(f"The TFLite classifier of this model does not run on the builtin "
                         f"kernels ({problem}); pass classifier=False. Received: "
                         f"classifier={type(model.classifier).__name__}")
    return content


def _interpreter(model):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError("Running .tflite files needs ai-edge-litert: "
                          "pip install ai-edge-litert") from None

    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model))
    return Interpreter(model_path=os.fspath(model))


def signature_runner(model, signature="decode"):
    """An `ai_edge_litert` signature runner for `signature` of a .tflite file or flatbuffer.

    Raises:
      ValueError: the file has no such signature.
    """
    interpreter = _interpreter(model)
    names = interpreter.get_signature_list()
    if signature not in names:
        raise ValueError(
            f"Expected a signature from {sorted(names)}. Received: signature={signature!r}"
        )
    return interpreter.get_signature_runner(signature)


def run(model, signature="decode", **inputs):
    """Runs one signature of a .tflite file (path or bytes) with ai-edge-litert.

    Example:
      >>> out = run("decoder_float32.tflite", "decode", z=np.zeros((4, 2), "float32"))
      >>> out["x_mean"].shape
      (4, 8, 8, 1)

    Returns:
      dict output name -> numpy array.
    """
    runner = signature_runner(model, signature)
    return runner(**{k: np.asarray(v) for k, v in inputs.items()})


def op_names(model):
    """Operator names used anywhere in a .tflite file (every subgraph/signature).

    Builtin kernels appear by name (e.g. "FULLY_CONNECTED"); custom operators,
    including Flex (TensorFlow) ops, as "CUSTOM:<code>" (e.g. "CUSTOM:FlexAddV2").
    """
    from ai_edge_litert import schema_py_generated as schema

    content = bytes(model) if isinstance(model, (bytes, bytearray)) else open(model, "rb").read()
    flat = schema.Model.GetRootAsModel(content, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = set()
    for i in range(flat.OperatorCodesLength()):
        code = flat.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.add("CUSTOM:" + code.CustomCode().decode())
        else:
            ops.add(names.get(builtin, str(builtin)))
    return ops
