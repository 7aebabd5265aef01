"""The run configuration: one schema from which flags, JSON checks and resume checks derive.

A run (`keras-vae train`, `keras_vae.runs.train`, the multi-worker launcher)
is described by a flat dict of plain values. `OPTIONS` lists every key once:
its default, its kind, its help text, where its allowed values come from and
whether a resumed run may change it. Everything else is derived:

- `defaults()`: the dict of defaults;
- `validate(config)`: unknown keys, wrong types (no coercion: "no" is not
  false, "3" is not 3), values out of range or not among the choices: one
  clear error naming the key, what was expected and what was received;
- `read_json(path)`: a config file, size-limited, a flat JSON object;
- `add_arguments(parser)` / `overrides(args)`: the `keras-vae train` flags
  (the same for `--workers N`);
- `resume_differences(saved, requested)`: the model-defining settings a
  `--resume` would change.

Allowed values of `likelihood`, `posterior`, `prior` and `objective` are read
from the library's registries (`keras_vae.likelihoods.LIKELIHOODS`,
`keras_vae.distributions.POSTERIORS`, `keras_vae.priors.PRIORS`,
`keras_vae.objectives.OBJECTIVES`) when they are needed, so registering a new
one there makes it a valid flag value and config value with no other edit.
"""

import argparse
import dataclasses
import json
import os

from keras_vae import validation

__all__ = ["Option", "OPTIONS", "defaults", "validate", "read_json", "add_arguments",
           "overrides", "resume_differences", "resumable_keys", "MAX_CONFIG_BYTES"]

# A run config is a few hundred bytes; anything much larger is not one.
MAX_CONFIG_BYTES = 64 * 1024
# Widths beyond this are refused outright (memory is estimated separately).
_MAX_WIDTH = 1_000_000


def _likelihoods():
    from keras_vae import likelihoods
    return tuple(likelihoods.LIKELIHOODS)


def _posteriors():
    from keras_vae import distributions
    return tuple(k for k in distributions.POSTERIORS if k != "point_mass")  # AEs set it


def _priors():
    from keras_vae import priors
    return tuple(priors.PRIORS)


def _objectives():
    from keras_vae import objectives
    return tuple(objectives.OBJECTIVES)


def _schedules():
    from keras_vae import callbacks
    return tuple(callbacks.KLWarmup.SCHEDULES)


def _corruptions():
    from keras_vae import corruption
    return (None,) + tuple(corruption.CORRUPTIONS)


def _tflite_variants():
    from keras_vae.export import lite
    return tuple(lite.VARIANTS)


@dataclasses.dataclass(frozen=True)
class Option:
    """One config key.

    Attributes:
      key: the JSON key (the flag is `--key-with-dashes`).
      default: its default value.
      kind: "str", "int", "count" (int >= 0), "float", "nonneg" (float >= 0),
        "fraction", "bool", "choice", "ints" (list of positive ints), "choices"
        (list of distinct choices), "names" (list of distinct non-empty strings),
        "seed" or "auto_bool" (true, false, "auto").
      group: "data", "model", "training" or "outputs" (the `--help` sections).
      help: one line for `--help`.
      choices: a tuple, or a function returning one (read from a registry).
      nullable: None is allowed (JSON null; the flag value "none").
      resumable: a resumed run may change it (everything else defines the model
        or its training and must stay as it was).
      maximum: largest allowed int.
    """

    key: str
    default: object
    kind: str
    group: str
    help: str
    choices: object = None
    nullable: bool = False
    resumable: bool = False
    maximum: int = validation.INT32_MAX

    @property
    def flag(self):
        return "--" + self.key.replace("_", "-")

    def allowed(self):
        choices = self.choices() if callable(self.choices) else self.choices
        return tuple(choices or ())


OPTIONS = (
    # data
    Option("data", "digits", "str", "data",
           "digits (default), fashion_mnist, mnist, a .npz/.npy file, a .csv table or an "
           "image folder"),
    Option("categorical", [], "names", "data",
           "columns of a .csv table to model as categorical, e.g. colour,ward (others inferred)"),
    Option("numeric", [], "names", "data",
           "two-valued columns of a .csv table to model as numeric, not binary"),
    Option("data_dir", None, "str", "data", "folder with the IDX/NPZ files of fashion_mnist/mnist",
           nullable=True, resumable=True),
    Option("binarize", None, "choice", "data", "binarize [0, 1] data: static or dynamic",
           choices=(None, "static", "dynamic"), nullable=True),
    # model
    Option("model", "vae", "choice", "model", "vae, ae (autoencoder) or dae (denoising AE)",
           choices=("vae", "ae", "dae")),
    Option("conditional", False, "bool", "model",
           "conditional VAE on the data set's labels: q(z|x,y), p(x|z,y) (model vae)"),
    Option("labels", None, "int", "model",
           "semi-supervised M2 with N labelled training examples (balanced per class, "
           "seeded; the rest unlabelled)", nullable=True, maximum=10_000_000),
    Option("architecture", "mlp", "choice", "model", "network body", choices=("mlp", "conv")),
    Option("latent_dim", 2, "int", "model", "size of z", maximum=65536),
    Option("latent_dims", None, "ints", "model",
           "sizes of 2+ stochastic layers, bottom first, e.g. 100,50: a HierarchicalVAE "
           "(MLP, diagonal posteriors; replaces --latent-dim)", nullable=True),
    Option("hidden", [256, 128], "ints", "model", "encoder widths, e.g. 256,128 (decoder mirrors)"),
    Option("activation", "relu", "str", "model", "Keras activation of the hidden layers"),
    Option("likelihood", "bernoulli", "choice", "model", "p(x|z)", choices=_likelihoods),
    Option("likelihood_scale", 0.1, "float", "model", "scale of the fixed Gaussian"),
    Option("posterior", "diagonal", "choice", "model", "q(z|x) covariance", choices=_posteriors),
    Option("prior", "standard_normal", "choice", "model", "p(z)", choices=_priors),
    Option("prior_components", None, "int", "model",
           "components of --prior mixture (default 10) or vamp (pseudo-inputs, default 500)",
           nullable=True, maximum=100_000),
    Option("flow_steps", None, "int", "model", "IAF steps of --posterior iaf (default 2)",
           nullable=True, maximum=64),
    Option("objective", "elbo", "choice", "model", "training objective", choices=_objectives),
    Option("num_samples", 1, "int", "model", "L samples (ELBO) or K (IWAE) per example",
           maximum=100_000),
    Option("beta", 1.0, "nonneg", "model", "weight of the KL term"),
    Option("free_bits", 0.0, "nonneg", "model", "free bits per latent dimension (ELBO)"),
    Option("warmup_steps", 0, "count", "model", "KL warm-up length in steps (0: none)"),
    Option("warmup_schedule", "linear", "choice", "model", "KL warm-up shape",
           choices=_schedules),
    Option("tied", False, "bool", "model", "tied weights (ae/dae)"),
    Option("stacked", False, "bool", "model", "greedy layer-wise pretraining first (ae/dae)"),
    Option("corruption", None, "choice", "model", "input corruption (denoising)",
           choices=_corruptions, nullable=True),
    Option("corruption_rate", 0.25, "fraction", "model", "corruption probability per element"),
    # training
    Option("epochs", 60, "int", "training", "passes over the training data", resumable=True,
           maximum=1_000_000),
    Option("batch_size", 64, "int", "training", "examples per step", maximum=1_000_000),
    Option("learning_rate", 1e-3, "float", "training", "Adam learning rate"),
    Option("seed", 0, "seed", "training", "seed of every random draw"),
    Option("jit_compile", "auto", "auto_bool", "training",
           "XLA: true, false or \"auto\" (chosen by the model, see README)"),
    # outputs
    Option("eval_samples", 1000, "int", "outputs", "K for the test log-likelihood",
           resumable=True, maximum=100_000),
    Option("plots", True, "bool", "outputs", "draw the pictures", resumable=True),
    Option("export", True, "bool", "outputs", "export SavedModel + TFLite", resumable=True),
    Option("web", True, "bool", "outputs",
           "write the browser page (LiteRT.js decoder) to RUN_DIR/web; image data only",
           resumable=True),
    Option("tflite", ["float32", "float16", "int8"], "choices", "outputs",
           "TFLite variants, e.g. float32,float16,int8 (none: no TFLite files)",
           choices=_tflite_variants, resumable=True),
    Option("tensorboard", False, "bool", "outputs", "log scalars and images to RUN_DIR/tensorboard",
           resumable=True),
)

_BY_KEY = {o.key: o for o in OPTIONS}


def defaults():
    """A fresh dict of every key's default."""
    return {o.key: (list(o.default) if isinstance(o.default, list) else o.default)
            for o in OPTIONS}


def resumable_keys():
    """The keys a `--resume` may change."""
    return tuple(o.key for o in OPTIONS if o.resumable)


def _check(option, value):
    key, kind = option.key, option.kind
    if value is None:
        if option.nullable:
            return None
        raise TypeError(f"`{key}` may not be null. Received: {key}=None")
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise TypeError(f"`{key}` must be a non-empty string. Received: {key}={value!r}")
        return value
    if kind == "int":
        return validation.positive_int(key, value, maximum=option.maximum)
    if kind == "count":
        return validation.non_negative_int(key, value, maximum=option.maximum)
    if kind == "float":
        return validation.positive_float(key, value)
    if kind == "nonneg":
        return validation.non_negative_float(key, value)
    if kind == "fraction":
        return validation.fraction(key, value)
    if kind == "bool":
        return validation.boolean(key, value)
    if kind == "seed":
        return validation.seed(value, key)
    if kind == "choice":
        return validation.choice(key, value, option.allowed())
    if kind == "auto_bool":
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError(f"`{key}` must be true, false or \"auto\". Received: {key}={value!r}")
    if kind in ("ints", "choices", "names"):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"`{key}` must be a list. Received: {key}={value!r}")
        if kind == "names":
            if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
                raise ValueError(f"`{key}` must list distinct, non-empty column names. "
                                 f"Received: {key}={value!r}")
            return list(value)
        if kind == "ints":
            if not value:
                raise ValueError(f"`{key}` must list at least one width. Received: {key}=[]")
            return [validation.positive_int(f"{key}[{i}]", v, maximum=_MAX_WIDTH)
                    for i, v in enumerate(value)]
        allowed = option.allowed()
        out = [validation.choice(f"{key}[{i}]", v, allowed) for i, v in enumerate(value)]
        if len(set(out)) != len(out):
            raise ValueError(f"`{key}` must not repeat a value. Received: {key}={value!r}")
        return out
    raise AssertionError(f"unknown option kind {kind!r}")  # pragma: no cover


def validate(config):
    """Defaults filled in, every value checked; returns a new dict.

    Raises:
      TypeError: `config` is not a dict, or a value of the wrong type.
      ValueError: unknown keys, values out of range or not among the choices,
        or combinations that do not go together (e.g. `tied` for a VAE).
    """
    if not isinstance(config, dict):
        raise TypeError("A run config must be a JSON object (a dict). "
                        f"Received: config of type {type(config).__name__}")
    unknown = sorted(str(k) for k in config if k not in _BY_KEY)
    if unknown:
        raise ValueError(f"Unknown config keys; expected keys of {sorted(_BY_KEY)}. "
                         f"Received: {unknown}")
    out = defaults()
    for key, value in config.items():
        out[key] = _check(_BY_KEY[key], value)
    for key in ("tied", "stacked"):
        if out[key] and out["model"] == "vae":
            raise ValueError(f"`{key}` applies to autoencoders (model 'ae' or 'dae'). "
                             f"Received: model='vae', {key}=True")
    if out["prior_components"] is not None and out["prior"] not in ("mixture", "vamp"):
        raise ValueError("`prior_components` applies to --prior mixture or vamp. "
                         f"Received: prior={out['prior']!r}, "
                         f"prior_components={out['prior_components']!r}")
    if out["flow_steps"] is not None and out["posterior"] != "iaf":
        raise ValueError("`flow_steps` applies to --posterior iaf. "
                         f"Received: posterior={out['posterior']!r}, "
                         f"flow_steps={out['flow_steps']!r}")
    if out["latent_dims"] is not None:
        _check_latent_dims(config, out)
    for key in ("categorical", "numeric"):
        if out[key] and not out["data"].lower().endswith(".csv"):
            raise ValueError(f"`{key}` declares columns of a .csv table. "
                             f"Received: data={out['data']!r}, {key}={out[key]!r}")
    if out["model"] != "vae" and out["objective"] != "elbo":
        raise ValueError("Autoencoders train on -log p(x|z) only; the objective applies to "
                         f"VAEs. Received: model={out['model']!r}, "
                         f"objective={out['objective']!r}")
    return out


def _check_latent_dims(config, out):
    """A stacked-latent run (`latent_dims`): refuses what a HierarchicalVAE does not have;
    `latent_dim` becomes `latent_dims[0]` (given as well, it must be that)."""
    dims = out["latent_dims"]
    if len(dims) < 2:
        raise ValueError("`latent_dims` must list two or more layer sizes, e.g. 100,50 (one "
                         f"layer: use latent_dim). Received: latent_dims={dims!r}")
    if "latent_dim" in config and out["latent_dim"] != dims[0]:
        raise ValueError("Give either `latent_dim` (one stochastic layer) or `latent_dims` "
                         f"(several). Received: latent_dim={out['latent_dim']!r}, "
                         f"latent_dims={dims!r}")
    clashes = {"model": "vae", "architecture": "mlp", "posterior": "diagonal",
               "conditional": False, "labels": None, "corruption": None}
    for key, allowed in clashes.items():
        if out[key] != allowed:
            raise ValueError(f"`latent_dims` (a HierarchicalVAE) needs {key}={allowed!r}. "
                             f"Received: {key}={out[key]!r}, latent_dims={dims!r}")
    if out["prior"] == "vamp":
        raise ValueError("`latent_dims` (a HierarchicalVAE) takes prior 'standard_normal' or "
                         f"'mixture'. Received: prior='vamp', latent_dims={dims!r}")
    if out["objective"] not in ("elbo", "iwae"):
        raise ValueError("`latent_dims` (a HierarchicalVAE) trains with objective 'elbo' or "
                         f"'iwae'. Received: objective={out['objective']!r}")
    out["latent_dim"] = dims[0]


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"a key is given twice: {', '.join(repeated)}")
    return dict(pairs)


def read_json(path):
    """The JSON object in `path` (not validated; see `validate`).

    Raises:
      FileNotFoundError: no such file.
      ValueError: larger than `MAX_CONFIG_BYTES`, not UTF-8 JSON, or not an object.
    """
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError("A config file must be a regular JSON file (not a folder, device or "
                         f"pipe). Received: config={path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file not found. Received: config={path!r}")
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"A config file holds a few hundred bytes; expected at most "
                         f"{MAX_CONFIG_BYTES} bytes. Received: config={path!r} of {size} bytes")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, digits
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"Config file is not valid JSON ({reason}). "
                         f"Received: config={path!r}") from None
    if not isinstance(loaded, dict):
        raise ValueError("A config file must hold a JSON object. "
                         f"Received: config={path!r} holding a {type(loaded).__name__}")
    return loaded


# ---------------------------------------------------------------- flags

_UNSET = None  # argparse default: "not given", so the config file and defaults apply


def _items(text):
    """The comma-separated items of a list flag; an empty item ("16,,16", "", "a,") is a
    typo, not something to drop (ValueError)."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise ValueError(text)
    return items


def _flag_value(option):
    """The argparse `type` of an option: text -> the JSON value it stands for."""
    def parse(text):
        if option.nullable and text.lower() in ("none", "null"):
            return None  # not "": an empty value is a mistake (e.g. `--labels=$UNSET`)
        if option.kind in ("int", "count", "seed"):
            return int(text)  # argparse: "invalid int value: 'abc'"
        if option.kind in ("float", "nonneg", "fraction"):
            return float(text)
        if option.kind == "ints":
            try:
                return [int(t) for t in _items(text)]
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated integers such as 256,128; received {text!r}"
                ) from None
        if option.kind in ("names", "choices"):  # comma-separated strings; "none" = []
            if text.strip().lower() == "none":
                return []
            try:
                return _items(text)
            except ValueError:
                example = ("column names such as colour,ward" if option.kind == "names" else
                           f"names such as {','.join(map(str, option.default))} (or none)")
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated {example}; received {text!r}") from None
        return text
    # argparse names the type in its messages ("invalid int value: 'abc'")
    parse.__name__ = {"int": "int", "count": "int", "seed": "int", "float": "float",
                      "nonneg": "float", "fraction": "float"}.get(option.kind, "str")
    return parse


def add_arguments(parser):
    """Adds one flag per option to `parser`, in argument groups, choices from the registries."""
    groups = {}
    for option in OPTIONS:
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        group = groups[option.group]
        default = option.default
        if isinstance(default, list):
            default = ",".join(str(d) for d in default) or "none"
        text = f"{option.help} [default: {'none' if default is None else default}]"
        if option.kind in ("bool", "auto_bool"):
            group.add_argument(option.flag, dest=option.key, default=_UNSET,
                               action=argparse.BooleanOptionalAction, help=text)
            continue
        allowed = option.allowed()
        extra = {"metavar": option.key.upper()}
        if option.kind == "choice":
            extra = {"choices": allowed, "metavar": "{" + ",".join(
                "none" if c is None else str(c) for c in allowed) + "}"}
        elif option.kind == "choices":
            text += " (any of " + ", ".join(allowed) + ")"
        group.add_argument(option.flag, dest=option.key, default=_UNSET,
                           type=_flag_value(option), help=text, **extra)
    return parser


def overrides(args):
    """The options given on the command line (others are None: not given)."""
    return {o.key: getattr(args, o.key) for o in OPTIONS
            if getattr(args, o.key, None) is not None}


# --------------------------------------------------------------- resume

def resume_differences(saved, requested):
    """`[(key, saved value, requested value)]` for model-defining keys that differ."""
    return [(o.key, saved.get(o.key), requested[o.key]) for o in OPTIONS
            if not o.resumable and o.key in requested and saved.get(o.key) != requested[o.key]]
