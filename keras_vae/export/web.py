"""The trained decoder in the browser: a static page that runs it with LiteRT.js.

`web(model, out_dir)` writes a folder that works offline under any static
file server (`python -m http.server -d OUT 8000`, then http://127.0.0.1:8000/):

```none
<out_dir>/index.html          the page: latent explorer, prior samples, class selector
<out_dir>/explorer.js         its one JS module (decoding, drawing, window.kvDecode)
<out_dir>/decoder.tflite      the float32 decoder, signature `decode` with a fixed batch of 1:
                              z [1, latent_dim] (+ y int32 [1]) -> x_mean [1, *data_shape], ...
<out_dir>/manifest.json       latent size, data shape, likelihood, prior parameters, classes
<out_dir>/litert/             the LiteRT.js runtime (Apache-2.0), vendored in
                              keras_vae/export/web_runtime/ (no node or npm needed)
```

The decoder is converted by `keras_vae.export.lite.convert` with
`batch_size=1`: LiteRT.js (2.5) cannot resize a dynamic batch dimension, so
the page decodes one latent vector per call. Everything runs in the browser:
prior draws come from a seeded JS generator (mulberry32 + Box-Muller), pushed
through the prior's parameters in `manifest.json`:

```none
standard normal / diagonal Gaussian:  z = loc + scale * eps,      eps ~ N(0, I)
mixture of diagonal Gaussians:        k ~ Categorical(softmax(logits)), z = loc_k + scale_k * eps
no prior (an autoencoder):            z = eps
```

Image models only (data shape `(H, W)` or `(H, W, C)` with C = 1 or 3), and
for conditional models only class labels (`num_classes`), not real condition
vectors.
"""

import json
import os

import numpy as np
import tensorflow_probability as tfp

from keras_vae import files, validation
from keras_vae.export import lite, signatures

tfd = tfp.distributions

__all__ = ["web", "manifest", "is_web_export", "FORMAT", "LITERTJS_VERSION", "RUNTIME_DIR",
           "PAGE_DIR", "RUNTIME_FILES"]

FORMAT = "keras-vae-web"
FORMAT_VERSION = 1
LITERTJS_VERSION = "2.5.3"
_HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME_DIR = os.path.join(_HERE, "web_runtime")
PAGE_DIR = os.path.join(_HERE, "web_page")
RUNTIME_FILES = ("litert.js", "wasm-utils.js", "litert_wasm_compat_internal.js",
                 "litert_wasm_compat_internal.wasm", "LICENSE")
_PAGE_FILES = ("index.html", "explorer.js")
DECODER_FILE = "decoder.tflite"


def _check_image_model(model):
    shape = tuple(int(d) for d in model.data_shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3))):
        raise ValueError(
            "The web export shows images: it needs a model of image data, shape (height, "
            "width) or (height, width, channels) with 1 or 3 channels (a table has no "
            f"picture to draw). Received: data_shape={shape}")
    if getattr(model, "conditional", False) and not getattr(model, "num_classes", None):
        raise ValueError(
            "The web export's class selector needs a model conditioned on class labels "
            "(num_classes); real condition vectors have no selector. Received: "
            f"condition_dim={getattr(model, 'condition_dim', None)}")
    return shape


def _likelihood_name(model):
    from keras_vae import likelihoods

    head = type(model.decoder.head)
    names = [k for k, cls in likelihoods.LIKELIHOODS.items() if cls is head]
    return names[0] if names else head.__name__


def _diagonal_normal(dist):
    if isinstance(dist, tfd.Independent) and isinstance(dist.distribution, tfd.Normal):
        loc = np.asarray(dist.distribution.loc, "float64")
        scale = np.broadcast_to(np.asarray(dist.distribution.scale, "float64"), loc.shape)
        return loc, scale
    return None


def _prior_parameters(model):
    """The prior as plain numbers for the page's sampler (see the module docstring)."""
    if signatures.prior_of(model) is None:
        return None
    dist = model.prior.distribution()
    normal = _diagonal_normal(dist)
    if normal is not None:
        loc, scale = normal
        return {"kind": "normal", "loc": loc.reshape(-1).tolist(),
                "scale": scale.reshape(-1).tolist()}
    if isinstance(dist, tfd.MixtureSameFamily):
        comps = _diagonal_normal(dist.components_distribution)
        if comps is not None:
            logits = np.asarray(dist.mixture_distribution.logits_parameter(), "float64")
            return {"kind": "mixture", "logits": logits.reshape(-1).tolist(),
                    "loc": comps[0].tolist(), "scale": comps[1].tolist()}
    raise ValueError(
        "The web page samples the prior in JavaScript and knows diagonal Gaussian priors "
        f"and mixtures of them. Received: prior distribution {type(dist).__name__}")


def manifest(model, class_names=None):
    """The `manifest.json` of the page (a dict of plain values).

    Keys: `format`, `format_version`, `model` (class name), `latent_dim`,
    `data_shape`, `likelihood`, `prior` (see the module docstring; None for an
    autoencoder), `num_classes` and `classes` (names; None for unconditional
    models), `decoder` (file name), `batch_size` (1), `runtime` and
    `litertjs_version`.

    Raises:
      ValueError: not an image model, a prior the page cannot sample, or
        `class_names` that do not match the classes.
    """
    name = type(model).__name__
    model = signatures.export_model(model)  # e.g. a HierarchicalVAE's top-latent view
    shape = _check_image_model(model)
    num_classes = getattr(model, "num_classes", None) if getattr(model, "conditional",
                                                                  False) else None
    classes = None
    if num_classes:
        if class_names is None:
            classes = [str(i) for i in range(num_classes)]
        else:
            classes = [str(c) for c in class_names]
            if len(classes) != num_classes:
                raise ValueError(f"`class_names` must name the model's {num_classes} "
                                 f"classes. Received: class_names={list(class_names)!r}")
    elif class_names is not None:
        raise ValueError("`class_names` applies to class-conditional models. Received: "
                         f"class_names={list(class_names)!r} for {name}")
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": name,
        "latent_dim": int(model.latent_dim), "data_shape": list(shape),
        "likelihood": _likelihood_name(model), "prior": _prior_parameters(model),
        "num_classes": num_classes, "classes": classes, "decoder": DECODER_FILE,
        "batch_size": 1, "runtime": "litert/litert_wasm_compat_internal.js",
        "litertjs_version": LITERTJS_VERSION,
    }


def is_web_export(path):
    """Whether `path` is a folder holding a `manifest.json` written by `web`."""
    try:
        with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_out_dir(out_dir, overwrite):
    """Refuses a file, a symlink, another folder's contents, and (without `overwrite`)
    an earlier export; returns whether an existing folder is to be replaced."""
    if os.path.islink(out_dir):
        raise ValueError("The web export folder is a symbolic link; give the real folder. "
                         f"Received: out_dir={out_dir!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"The web export folder path is a file, not a folder. "
                         f"Received: out_dir={out_dir!r}")
    if not os.path.isdir(out_dir):
        return False
    if not os.listdir(out_dir):
        return True  # an empty folder: nothing of anyone's is lost
    if not is_web_export(out_dir):
        raise FileExistsError(
            f"{out_dir!r} holds files that are not a keras-vae web export (no manifest.json "
            "of ours); choose another folder (it is never replaced, even with overwrite). "
            f"Received: out_dir={out_dir!r}")
    if not overwrite:
        raise FileExistsError(f"{out_dir!r} holds a web export already; pass overwrite=True "
                              f"(`--overwrite`) to replace it. Received: out_dir={out_dir!r}")
    return True


def _read(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The web export's {name} is missing from {folder!r}; "
                                "reinstall keras-vae. Received: path={path!r}")
    with open(path, "rb") as f:
        return f.read()


def web(model, out_dir, overwrite=False, class_names=None, allow_untrained=False):
    """Writes a static web page that decodes latent vectors in the browser (LiteRT.js).

    The page has a 2-D latent explorer (the pointer moves over a plane at
    N(0, 1) quantiles, the decoded image follows; for more than two latent
    dimensions two selectable ones, the rest at 0), a grid of prior samples
    with a seed, and for class-conditional models a class selector. It also
    defines `window.kvDecode(z, y)` (rows of latents -> rows of `x_mean`
    pixels) and `window.kvStatus`. A missing or corrupt `decoder.tflite`
    shows a message in the page.

    Args:
      model: a trained keras_vae model of images (VAE, ConditionalVAE,
        SemiSupervisedVAE, HierarchicalVAE's top latent, an autoencoder).
      out_dir: the folder to write (see the module docstring). Created; an
        existing empty folder is filled.
      overwrite: replace an earlier web export in `out_dir`. A folder that is
        not one is never replaced.
      class_names: names of the classes for the selector (default "0", "1", ...).
      allow_untrained: export a model whose optimizer never stepped.

    Returns:
      str, the absolute path of `out_dir/index.html`.

    Raises:
      TypeError / ValueError: not a trained keras_vae model, not an image
        model (e.g. a table), a prior the page cannot sample, a decoder that
        does not run on TFLite's builtin kernels; `out_dir` a file or a link.
      FileExistsError: `out_dir` holds other files, or an earlier export and
        not `overwrite`. Nothing is written when any of these is raised.

    Example:
      >>> kv.export.web(vae, "site")
      '/.../site/index.html'
      $ python -m http.server -d site 8000     # then open http://127.0.0.1:8000/
    """
    files.check_path(out_dir, "out_dir")
    overwrite = validation.boolean("overwrite", overwrite)
    signatures.check_model(signatures.export_model(model), allow_untrained)
    info = manifest(model, class_names)
    model = signatures.export_model(model)
    out_dir = os.path.abspath(os.fspath(out_dir))
    replace = _check_out_dir(out_dir, overwrite)
    page = {name: _read(PAGE_DIR, name) for name in _PAGE_FILES}
    runtime = {name: _read(RUNTIME_DIR, name) for name in RUNTIME_FILES}
    decoder = lite.convert(model, ("float32",), sampler=False, classifier=False,
                           batch_size=1)["float32"]
    _check_out_dir(out_dir, overwrite)  # again: the conversion takes seconds
    with files.atomic_directory(out_dir, overwrite=replace) as tmp:
        for name, content in page.items():
            files.atomic_write(os.path.join(tmp, name), content)
        files.atomic_write(os.path.join(tmp, DECODER_FILE), decoder)
        files.atomic_write(os.path.join(tmp, "manifest.json"),
                           json.dumps(info, indent=1) + "\n")
        os.makedirs(os.path.join(tmp, "litert"))
        for name, content in runtime.items():
            files.atomic_write(os.path.join(tmp, "litert", name), content)
    return os.path.join(out_dir, "index.html")
