"""Tensor-only serving functions of a trained VAE, shared by SavedModel and TFLite export.

Exported signatures cannot return distribution objects, so every function
here returns a dict of float32 tensors read off the distributions the
encoder, decoder and prior return (never re-implementing a head):

| likelihood (decoder head)    | decode outputs                      |
| ---------------------------- | ----------------------------------- |
| `bernoulli`                  | `probs`, `logits`, `x_mean`         |
| `continuous_bernoulli`       | `mean`, `logits`, `x_mean`          |
| `gaussian`, `gaussian_learned` | `loc`, `scale`, `x_mean`          |
| any other head               | `x_mean`                            |

`x_mean` is always the mean of `p(x|z)`, so clients have one uniform key (for
the continuous Bernoulli it is *not* `sigmoid(logits)`).

A model trained on incomplete data (`VAE(objective="miwae")`) also gets
`impute(x, mask)` -> `x`: the missing entries (`mask` False) replaced by the
importance-sampled conditional mean with `IMPUTE_SAMPLES` samples and the fixed
seed `IMPUTE_SEED`, the same numbers as `kv.impute(model, x, mask,
method="importance", num_samples=IMPUTE_SAMPLES, seed=IMPUTE_SEED)` for a
request of at most `batch_size` (500) rows.

`build_archive` wires these into a `keras.export.ExportArchive`, whose
SavedModel the C++ loader (TF Serving, `saved_model_cli run`) can read; a
plain `tf.Module` holding Keras 3 layers cannot (DESIGN section 5).
"""

import os

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import imputation, validation
from keras_vae.access import allows_missing, batch_seed

tfd = tfp.distributions

__all__ = [
    "PARTS",
    "check_model",
    "likelihood_outputs",
    "posterior_outputs",
    "decode_outputs",
    "encode_outputs",
    "reconstruct_outputs",
    "sample_outputs",
    "random_sample_outputs",
    "prior_from_noise",
    "signature_specs",
    "build_archive",
    "check_parts",
    "prior_of",
    "read_signatures",
    "condition_of",
    "condition_spec",
    "export_model",
    "impute_outputs",
    "IMPUTE_SAMPLES",
    "IMPUTE_SEED",
]

PARTS = ("decoder", "encoder")
IMPUTE_SAMPLES = 1000   # importance samples L of the `impute` signature
IMPUTE_SEED = 0         # its seed: batch 0 of `kv.impute(..., seed=IMPUTE_SEED)`
_IMPUTE_CHUNK = 100     # samples decoded at once (the estimate does not depend on it)


def check_model(model, allow_untrained=False):
    """Raises unless `model` is a built (and, by default, trained) keras_vae model.

    Args:
      model: a `keras_vae.VAE` or `keras_vae.Autoencoder` (a keras.Model with
        `encoder`, `decoder`, `latent_dim`, `data_shape` and optionally
        `prior`; without a prior there is no `sample` signature).
      allow_untrained: accept a model whose optimizer has never stepped.

    Raises:
      TypeError: `model` is not a VAE, or `allow_untrained` is not a bool.
      ValueError: unbuilt model, untrained model, or encoder/decoder/prior
        built for different latent sizes.
    """
    allow_untrained = validation.boolean("allow_untrained", allow_untrained)
    needed = ("encoder", "decoder", "latent_dim", "data_shape")
    if not isinstance(model, keras.Model) or not all(hasattr(model, a) for a in needed):
        raise TypeError(
            "Expected a keras_vae.VAE or Autoencoder (a keras.Model with encoder and "
            f"decoder). Received: model={model!r}"
        )
    parts = (("model", model), ("encoder", model.encoder), ("decoder", model.decoder),
             ("prior", prior_of(model)))
    unbuilt = [name for name, obj in parts if obj is not None and not obj.built]
    if unbuilt:
        raise ValueError(
            "Only a built model can be exported: build it (keras_vae.VAE builds "
            "itself) and train it first. Received: unbuilt parts=" + ",".join(unbuilt)
        )
    sizes = {"encoder.latent_dim": model.encoder.latent_dim,
             "decoder.latent_dim": model.decoder.latent_dim}
    if prior_of(model) is not None:
        sizes["prior.latent_dim"] = getattr(model.prior, "latent_dim", model.latent_dim)
    if any(v != model.latent_dim for v in sizes.values()):
        raise ValueError(
            f"Latent size mismatch: the model has latent_dim={model.latent_dim} but "
            "its parts disagree. Received: "
            + ", ".join(f"{k}={v}" for k, v in sizes.items())
        )
    optimizer = getattr(model, "optimizer", None)
    steps = 0 if optimizer is None else int(optimizer.iterations)
    if steps == 0 and not allow_untrained:
        raise ValueError(
            "The model has never been trained (its optimizer has taken no step), "
            "so the export would hold initial random weights. Train it with fit(), "
            "load a trained .keras file, or pass allow_untrained=True. Received: "
            f"model.optimizer={'None' if optimizer is None else type(optimizer).__name__}"
            f", iterations={steps}"
        )


def export_model(model):
    """What is exported of `model`: its `export_view()` when it has one, else `model`.

    A model whose latent is more than one vector (e.g. `keras_vae.HierarchicalVAE`)
    gives a view with one latent (its `encoder`, `decoder`, `prior`, `latent_dim`,
    `data_shape`, `optimizer`), and every signature is built from that view.
    """
    view = getattr(model, "export_view", None)
    return view() if callable(view) else model


def prior_of(model):
    """The model's prior layer (with `distribution()`), or None (e.g. an Autoencoder)."""
    prior = getattr(model, "prior", None)
    return prior if hasattr(prior, "distribution") else None


def _as_float32(tensors):
    return {k: tf.cast(v, tf.float32) for k, v in tensors.items()}


def likelihood_outputs(dist):
    """Parameters of `p(x|z)` as named tensors, each `batch_shape + event_shape`.

    Args:
      dist: the decoder's distribution, usually `tfd.Independent` over a
        per-element distribution.

    Returns:
      dict of float32 tensors: see the module table; always has `x_mean`.
    """
    base = dist.distribution if isinstance(dist, tfd.Independent) else dist
    mean = dist.mean()
    if isinstance(base, tfd.Bernoulli):
        out = {"probs": base.probs_parameter(), "logits": base.logits_parameter()}
    elif isinstance(base, tfd.ContinuousBernoulli):
        out = {"mean": mean, "logits": base.logits_parameter()}
    elif isinstance(base, tfd.Normal):
        loc = tf.convert_to_tensor(base.loc)
        out = {"loc": loc, "scale": tf.broadcast_to(tf.cast(base.scale, loc.dtype),
                                                    tf.shape(loc))}
    else:
        out = {}
    out["x_mean"] = mean
    return _as_float32(out)


def posterior_outputs(q):
    """`z_mean`, `z_stddev` (float32 `[B, latent_dim]`) of the posterior `q(z|x)`."""
    return _as_float32({"z_mean": q.mean(), "z_stddev": q.stddev()})


def decode_outputs(model, z, y=None):
    """`decode` signature: `z [B, latent_dim]` -> likelihood parameters and `x_mean`.

    For a conditional model also `y` (int labels `[B]` or condition vectors `[B, k]`),
    turned into the network condition by `condition_of`.
    """
    if y is not None:
        return likelihood_outputs(model.decoder(z, condition=condition_of(model, y),
                                                training=False))
    return likelihood_outputs(model.decoder(z, training=False))


def encode_outputs(model, x):
    """`encode` signature: `x [B] + data_shape` -> `z_mean`, `z_stddev` `[B, latent_dim]`."""
    return posterior_outputs(model.encoder(x, training=False))


def reconstruct_outputs(model, x):
    """`reconstruct` signature: decode outputs at `z = E[q(z|x)]` (what `vae.reconstruct` uses)."""
    return decode_outputs(model, model.encoder(x, training=False).mean())


def sample_outputs(model, n, seed):
    """`sample` signature, stateless: `n` int32 scalar, `seed` int32 `[2]` -> `z`, `x_mean`.

    Runs the model's own prior sampler with seeds `tf.random.split(seed)`, so
    `seed=[s, 7]` reproduces `vae.sample(n, seed=s)` (for `0 <= s < 2**31 - 1`).
    Works for every prior, including `MixturePrior`.

    Returns:
      dict with `z` float32 `[n, latent_dim]` and `x_mean` float32
      `[n] + data_shape`.
    """
    seeds = tf.random.split(tf.cast(seed, tf.int32), 2)
    z = model.prior.distribution().sample(n, seed=seeds[0])
    return _as_float32({"z": z, "x_mean": model.decoder(z, training=False).mean()})


def impute_outputs(model, x, mask):
    """`impute` signature: `x [B] + data_shape` (any value where missing), `mask` bool like
    `x` (True = observed) -> `x` float32 with the missing entries imputed (SNIS mean)."""
    seed = batch_seed(IMPUTE_SEED, 0)
    return {"x": imputation.importance_mean(model, x, mask, seed, IMPUTE_SAMPLES,
                                            _IMPUTE_CHUNK)}


def prior_from_noise(prior, n, latent_dim):
    """z ~ p(z) from TFLite builtin random ops (RANDOM_STANDARD_NORMAL / RANDOM_UNIFORM).

    Stateless and TFP samplers need Flex delegates, which ai-edge-litert lacks.
    `keras_vae.export.lite.convert` calls it once eagerly to refuse an
    unsupported prior before converting anything.

    ```none
    Independent(Normal(m, s)):  z = m + s * eps,                     eps ~ N(0, I)
    mixture of those:           k = argmax_j (w_j + g_j),  g Gumbel (= -log(-log u))
                                z = m_k + s_k * eps
    ```

    Args:
      prior: the prior's distribution (`model.prior.distribution()`).
      n: int32 scalar tensor, the number of draws.
      latent_dim: int, the latent size.

    Returns:
      float32 tensor `[n, latent_dim]` (fresh noise on every call).

    Raises:
      ValueError: the prior is neither a diagonal Gaussian nor a mixture of them.
    """
    eps = tf.random.normal(tf.stack([n, latent_dim]))
    if isinstance(prior, tfd.Independent) and isinstance(prior.distribution, tfd.Normal):
        base = prior.distribution
        return base.loc + base.scale * eps
    if isinstance(prior, tfd.MixtureSameFamily):
        comps = prior.components_distribution
        if isinstance(comps, tfd.Independent) and isinstance(comps.distribution, tfd.Normal):
            logits = prior.mixture_distribution.logits_parameter()
            k_total = tf.shape(logits)[-1]
            u = tf.random.uniform(tf.stack([n, k_total]), minval=1e-7, maxval=1.0)
            k = tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1,
                          output_type=tf.int32)
            locs = tf.convert_to_tensor(comps.distribution.loc)
            scales = tf.broadcast_to(comps.distribution.scale, tf.shape(locs))
            return tf.gather(locs, k) + tf.gather(scales, k) * eps
    raise ValueError(
        "The TFLite sampler supports standard-normal and Gaussian-mixture priors "
        "only; pass sampler=False and sample z yourself. Received: prior "
        f"distribution {type(prior).__name__}"
    )


def random_sample_outputs(model, n):
    """TFLite `sample` signature: `n` int32 scalar -> `z`, `x_mean` (fresh noise per call)."""
    z = prior_from_noise(model.prior.distribution(), n, model.latent_dim)
    return _as_float32({"z": z, "x_mean": model.decoder(z, training=False).mean()})


def _spec(shape, dtype, name):
    return tf.TensorSpec(shape, dtype, name=name)


def condition_spec(model):
    """The `y` input of a conditional model's signatures: int32 labels `[B]` (class-
    conditional) or float32 vectors `[B, condition_dim]`."""
    if getattr(model, "num_classes", None):
        return _spec([None], tf.int32, "y")
    return _spec([None, model.condition_dim], tf.float32, "y")


def condition_of(model, y):
    """The network condition of `y` in a graph: one-hot `[B, C]` of int32 labels (labels
    outside [0, C) give an all-zero row, as `tf.one_hot` does), or `y` as float32.

    The one-hot code is `cast(float(y)[:, None] == range(C), float32)` rather
    than `tf.one_hot`: in a full-integer TFLite model the converter quantizes
    ONE_HOT's on-value with its own scale (1/255) but the kernel copies it into
    an output of another scale, so 1 became 2.9 (decoder outputs off by 0.15
    on a small model, 0.005 with this form). The comparison is in float32
    because the converter fuses an int32 EQUAL + CAST back into ONE_HOT.
    Labels are exact in float32 (C <= 65536).
    """
    if getattr(model, "num_classes", None):
        labels = tf.cast(tf.cast(y, tf.int32), tf.float32)
        classes = tf.range(model.num_classes, dtype=tf.float32)
        return tf.cast(tf.equal(labels[:, None], classes[None, :]), tf.float32)
    return tf.cast(y, tf.float32)


def _conditional_specs(model, parts, sampler, batch_size=None):
    """`decode(z, y)`, `sample(n, y, seed)` (y of length n, or 1: repeated n times),
    `encode(x, y)`, `reconstruct(x, y)` of a conditional model (see `signature_specs`), and
    `classify(x)` -> `probs [B, C]` for a model with a classifier head (M2)."""
    z_spec = _spec([batch_size, model.latent_dim], tf.float32, "z")
    x_spec = _spec([batch_size, *model.data_shape], tf.float32, "x")
    y_spec = condition_spec(model)
    y_spec = _spec([batch_size, *y_spec.shape[1:]], y_spec.dtype, "y")

    def decoder(z, y):
        return model.decoder(z, condition=condition_of(model, y), training=False)

    def encoder(x, y):
        return model.encoder(x, condition=condition_of(model, y), training=False)

    def repeat(y, n):  # y [1] or [n] -> [n]
        shape = tf.concat([[n], tf.shape(y)[1:]], 0)
        return tf.broadcast_to(y, shape)

    def stateless(n, y, seed):
        seeds = tf.random.split(tf.cast(seed, tf.int32), 2)
        z = model.prior.distribution().sample(n, seed=seeds[0])
        return _as_float32({"z": z, "x_mean": decoder(z, repeat(y, n)).mean()})

    def random(n, y):
        z = prior_from_noise(model.prior.distribution(), n, model.latent_dim)
        return _as_float32({"z": z, "x_mean": decoder(z, repeat(y, n)).mean()})

    n_spec = _spec([], tf.int32, "n")
    specs = {}
    if "decoder" in parts:
        specs["decode"] = (lambda z, y: likelihood_outputs(decoder(z, y)), [z_spec, y_spec])
        if sampler == "stateless":
            specs["sample"] = (stateless, [n_spec, y_spec, _spec([2], tf.int32, "seed")])
        elif sampler == "random":
            specs["sample"] = (random, [n_spec, y_spec])
    if "encoder" in parts:
        specs["encode"] = (lambda x, y: posterior_outputs(encoder(x, y)), [x_spec, y_spec])
        if getattr(model, "classifier", None) is not None:  # M2: q(y|x)
            specs["classify"] = (
                lambda x: {"probs": tf.nn.softmax(model.classifier(x, training=False))},
                [x_spec])
        if "decoder" in parts:
            specs["reconstruct"] = (
                lambda x, y: likelihood_outputs(decoder(encoder(x, y).mean(), y)),
                [x_spec, y_spec])
    return specs


def signature_specs(model, parts=PARTS, sampler="stateless", batch_size=None):
    """Input specs of each signature, in registration order (the first is `serving_default`).

    Args:
      model: the VAE.
      parts: "decoder" gives `decode` and `sample`, "encoder" gives `encode`,
        both also give `reconstruct`.
      sampler: "stateless" (`sample(n, seed)`, SavedModel) or "random"
        (`sample(n)`, TFLite builtin random ops) or None (no `sample`);
        ignored for models without a prior.
      batch_size: None (any batch, the default) or a fixed batch B of `z`, `x`
        and `y` (LiteRT.js in the browser cannot resize inputs; the web export
        converts its decoder with B = 1).

    Returns:
      dict name -> (function of the inputs returning a dict of tensors, list of
      `tf.TensorSpec` with the input names).
    """
    parts = check_parts(parts)
    sampler = validation.choice("sampler", sampler, ("stateless", "random", None))
    if getattr(model, "conditional", False):  # every signature also takes y
        return _conditional_specs(model, parts, sampler, batch_size)
    z_spec = _spec([batch_size, model.latent_dim], tf.float32, "z")
    x_spec = _spec([batch_size, *model.data_shape], tf.float32, "x")
    specs = {}
    if "decoder" in parts:
        specs["decode"] = (lambda z: decode_outputs(model, z), [z_spec])
        if prior_of(model) is None:
            pass
        elif sampler == "stateless":
            specs["sample"] = (lambda n, seed: sample_outputs(model, n, seed),
                               [_spec([], tf.int32, "n"), _spec([2], tf.int32, "seed")])
        elif sampler == "random":
            specs["sample"] = (lambda n: random_sample_outputs(model, n),
                               [_spec([], tf.int32, "n")])
    if "encoder" in parts:
        specs["encode"] = (lambda x: encode_outputs(model, x), [x_spec])
        if "decoder" in parts:
            specs["reconstruct"] = (lambda x: reconstruct_outputs(model, x), [x_spec])
            if allows_missing(model) and sampler == "stateless" and prior_of(model):
                specs["impute"] = (lambda x, mask: impute_outputs(model, x, mask),
                                   [x_spec, _spec([batch_size, *model.data_shape], tf.bool,
                                                  "mask")])
    return specs


def check_parts(parts):
    """Validates `parts`, a non-empty subset of ("decoder", "encoder"); returns a tuple."""
    if isinstance(parts, str):
        parts = (parts,)
    try:
        parts = tuple(parts)
    except TypeError:
        parts = None
    if not parts or any(p not in PARTS for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(
            f"`parts` must be a non-empty subset of {PARTS}. Received: parts={parts!r}"
        )
    return tuple(p for p in PARTS if p in parts)


def build_archive(model, parts=PARTS, sampler="stateless", batch_size=None):
    """A `keras.export.ExportArchive` with the tensor-only signatures of `model`
    (`batch_size`: see `signature_specs`).

    The first endpoint (`decode` if "decoder" is in `parts`, else `encode`) is
    also registered as `serving_default`.

    Returns:
      the archive; call `archive.write_out(path, verbose=False)`.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, inputs) in signature_specs(model, parts, sampler, batch_size).items():
        archive.add_endpoint(name, fn, input_signature=inputs)
    return archive


def read_signatures(version_dir):
    """Signatures of a SavedModel as the C++ loader sees them (parsed from saved_model.pb).

    Returns:
      dict name -> {"inputs": {key: (dtype name, shape)}, "outputs": {...},
      "method": method name}; unknown dimensions are -1. Internal signatures
      (`__saved_model_init_op`) are left out.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)

    def info(tensors):
        return {k: (tf.dtypes.as_dtype(t.dtype).name, tuple(d.size for d in t.tensor_shape.dim))
                for k, t in tensors.items()}

    return {name: {"inputs": info(sig.inputs), "outputs": info(sig.outputs),
                   "method": sig.method_name}
            for name, sig in graph.signature_def.items() if not name.startswith("__")}
