"""Memory estimates and resource limits: refuse what cannot fit before allocating it.

Every request that allocates in proportion to a user's number (layer widths,
batch size, importance samples, generated examples, picture tiles) is first
estimated here and compared with the memory available (`memory_limit`).
What does not fit is refused with `ResourceLimitError`, a `ValueError` (the
CLI turns it into one line and exit status 2), naming the estimate, the
limit, what to lower and the values received:

    training step needs about 37.2 GiB, more than the 20.1 GiB available;
    lower batch_size or hidden. Received: batch_size=100000, hidden=[256, 128]

Besides memory, counts whose work is absurd even when it fits are refused
above documented maxima (`MAX_IMPORTANCE_SAMPLES`, `MAX_SAMPLES`,
`MAX_GRID_TILES`, `MAX_LINE_TILES`, `MAX_GRID_PIXELS`); all of them are below
int32, which TensorFlow needs for sizes.

The estimates are deliberately simple (float32 = 4 bytes per number):

- a model: its parameters x 5 (weights, gradients, two Adam slots and the
  initializer's temporary copy), `estimate_model_bytes`;
- a training step: the activations of the encoder over B examples and of the
  decoder over L x B samples, and their gradients, `estimate_step_bytes`;
- an importance-sampling chunk: C x B x (width + decoder widths) floats, a
  few copies, `estimate_loglik_chunk_bytes`;
- a picture grid: the tiles, the mosaic and the figure canvas,
  `estimate_image_bytes`.

`memory_limit()` is MemAvailable of /proc/meminfo, or the cgroup's limit
minus its usage when that is smaller; the environment variable
`KERAS_VAE_MEMORY_LIMIT` (bytes) overrides both (tests use it).

This module imports only `keras_vae.validation` and numpy.
"""

import math
import os

import numpy as np

from keras_vae import validation

__all__ = [
    "ENV_VAR",
    "MAX_GRID_PIXELS",
    "MAX_GRID_TILES",
    "MAX_IMPORTANCE_SAMPLES",
    "MAX_LINE_TILES",
    "MAX_SAMPLES",
    "ResourceLimitError",
    "check_grid",
    "check_importance_samples",
    "check_memory",
    "check_parameters",
    "check_sample",
    "check_training",
    "estimate_image_bytes",
    "estimate_loglik_chunk_bytes",
    "estimate_model_bytes",
    "estimate_sample_bytes",
    "estimate_step_bytes",
    "format_bytes",
    "grid_layout",
    "memory_limit",
    "mlp_parameter_count",
]

ENV_VAR = "KERAS_VAE_MEMORY_LIMIT"
# K of log_likelihood / L of elbo_terms: 10^6 samples per example is already hours
# of decoding for a test set; the config's eval_samples stops at 10^5.
MAX_IMPORTANCE_SAMPLES = 1_000_000
# Examples one `sample` call generates (an array of 10^7 x 784 floats is 31 GiB).
MAX_SAMPLES = 10_000_000
# Tiles of one picture grid: 10^4 is a 100 x 100 mosaic, a 6000 x 6000 pixel PNG.
MAX_GRID_TILES = 10_000
# Tiles drawn as line plots (non-image data): one matplotlib line each, slow beyond 10^3.
MAX_LINE_TILES = 1_000
# Pixels of a grid's mosaic and of its figure (a 7000 x 7000 picture).
MAX_GRID_PIXELS = 50_000_000

_FLOAT = 4            # bytes per float32
_PARAM_COPIES = 5     # weights, gradients, Adam m and v, initializer temporary
_LAYER_COPIES = 2     # weights and the initializer's temporary (building one layer)
_ACTIVATION_COPIES = 2  # forward activations and their gradients
_CHUNK_COPIES = 3     # samples, log-probabilities and their reductions per chunk
_TILE_INCHES, _DPI = 0.6, 100  # as keras_vae.visualization draws grids


class ResourceLimitError(ValueError):
    """A request that would need more memory (or work) than allowed; a ValueError."""


def format_bytes(n):
    """`n` bytes as text with a binary unit, e.g. "37.2 GiB".

    Args:
      n: a number of bytes (int or float, >= 0).

    Returns:
      str.
    """
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _read_int(path):
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def _mem_available():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available():
    out = []
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap = _read_int(limit)
        if cap is not None and cap < 2 ** 60:  # v1 reports "no limit" as a huge number
            out.append(max(0, cap - (_read_int(usage) or 0)))
    return min(out) if out else None


def memory_limit():
    """Bytes of memory a request may use: what is available now.

    `KERAS_VAE_MEMORY_LIMIT` (an integer number of bytes) when set; else the
    smaller of /proc/meminfo's MemAvailable and the cgroup limit minus usage.

    Returns:
      int bytes, or None when nothing can be read (then nothing is refused
      for memory; the count maxima still apply).

    Raises:
      ValueError: for a `KERAS_VAE_MEMORY_LIMIT` that is not a positive integer.
    """
    text = os.environ.get(ENV_VAR)
    if text is not None:
        if not text.strip().isdigit() or int(text) < 1:
            raise ValueError(f"{ENV_VAR} must be a positive number of bytes. "
                             f"Received: {ENV_VAR}={text!r}")
        return int(text)
    found = [v for v in (_mem_available(), _cgroup_available()) if v is not None]
    return min(found) if found else None


def _received(received):
    return ", ".join(f"{k}={v!r}" for k, v in received.items())


def check_memory(what, estimate, advice, **received):
    """Refuses `estimate` bytes when more than `memory_limit()`.

    Args:
      what: what needs the memory, e.g. "training step".
      estimate: estimated bytes.
      advice: what to lower, e.g. "lower batch_size or hidden".
      **received: the values the estimate came from, for the message.

    Returns:
      `estimate` as an int.

    Raises:
      ResourceLimitError: when the estimate exceeds the limit (one line).
    """
    limit = memory_limit()
    estimate = int(estimate)
    if limit is not None and estimate > limit:
        raise ResourceLimitError(
            f"{what} needs about {format_bytes(estimate)}, more than the "
            f"{format_bytes(limit)} available; {advice}. Received: {_received(received)}")
    return estimate


def _count(name, value, maximum, advice):
    if not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value > maximum:
        raise ResourceLimitError(
            f"`{name}` must be at most {maximum:,} ({advice}). Received: {name}={value!r}")
    return validation.positive_int(name, value, maximum=maximum)


# ------------------------------------------------------------------ estimates

def mlp_parameter_count(in_width, hidden, out_width):
    """Weights and biases of Dense layers `in_width -> hidden... -> out_width`.

    Args:
      in_width: input features.
      hidden: hidden widths (a sequence of ints; may be empty).
      out_width: output features.

    Returns:
      int (Python ints: no overflow).
    """
    widths = [int(in_width)] + [int(h) for h in hidden] + [int(out_width)]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def _dim(data_shape):
    return int(np.prod([int(d) for d in data_shape], dtype=object)) if len(data_shape) else 1


def estimate_model_bytes(data_shape, latent_dim, hidden, posterior_params=None,
                         likelihood_params=None):
    """Bytes a trained MLP VAE's parameters take: weights, gradients, Adam slots.

    Args:
      data_shape: shape of one example; D = its product.
      latent_dim: d.
      hidden: encoder widths (the decoder mirrors them).
      posterior_params: numbers the encoder outputs (default 2d: diagonal).
      likelihood_params: numbers the decoder outputs (default D: Bernoulli).

    Returns:
      int bytes = parameters x 4 bytes x 5.
    """
    data_dim, hidden = _dim(data_shape), tuple(hidden)
    enc = mlp_parameter_count(data_dim, hidden, posterior_params or 2 * latent_dim)
    dec = mlp_parameter_count(latent_dim, hidden[::-1], likelihood_params or data_dim)
    return (enc + dec) * _FLOAT * _PARAM_COPIES


# Extra copies of every decoded sample row in a training step (see estimate_step_bytes).
_SAMPLE_ROW_COPIES = 4


def estimate_step_bytes(batch, num_samples, data_dim, latent_dim, widths,
                        posterior_params=None, likelihood_params=None):
    """Bytes of the activations of one training step (and their gradients).

    The encoder holds B x (D + sum(widths) + posterior params) floats, the
    decoder L x B x (d + sum(widths) + likelihood params) and the
    log-likelihood another L x B x D.

    Args:
      batch: examples per step B.
      num_samples: L (ELBO) or K (IWAE) samples per example.
      data_dim: D.
      latent_dim: d.
      widths: hidden widths.
      posterior_params: default 2d.
      likelihood_params: default D.

    Returns:
      int bytes.
    """
    width = sum(int(w) for w in widths)
    enc = batch * (data_dim + width + (posterior_params or 2 * latent_dim))
    dec = num_samples * batch * (latent_dim + width + (likelihood_params or data_dim) + data_dim)
    # Each of the L x B decoded rows is materialised several times more (pre- and
    # post-activations, the log-likelihood's intermediates, their gradients): an IWAE
    # step with K=100,000 at B=64 on 8x8 digits grew past 12 GB where the plain count
    # gives 3.7 GB.
    return (enc + _SAMPLE_ROW_COPIES * dec) * _FLOAT * _ACTIVATION_COPIES


def estimate_loglik_chunk_bytes(chunk, batch, width, hidden=()):
    """Bytes of one chunk of `keras_vae.estimators.log_likelihood`.

    A chunk decodes C samples for each of B examples: `[C, B, width]` tensors
    (`estimators.sample_width`) and the decoder's hidden activations
    `[C x B, h]`.

    Args:
      chunk: C.
      batch: B.
      width: floats per sample and example of the largest tensor.
      hidden: the decoder's hidden widths.

    Returns:
      int bytes.
    """
    per_sample = int(width) * _CHUNK_COPIES + sum(int(h) for h in hidden)
    return int(chunk) * int(batch) * per_sample * _FLOAT


def estimate_sample_bytes(n, data_dim, latent_dim=1, widths=(), likelihood_params=None):
    """Bytes of generating `n` examples at once: z, the decoder's activations, the output.

    Args:
      n: examples.
      data_dim: D.
      latent_dim: d.
      widths: the decoder's hidden widths.
      likelihood_params: numbers per example the decoder outputs (default D).

    Returns:
      int bytes.
    """
    per = latent_dim + sum(int(w) for w in widths) + (likelihood_params or data_dim) + data_dim
    return int(n) * per * _FLOAT


def grid_layout(n, cols=None):
    """`(rows, cols)` of a near-square grid of `n` tiles, as the pictures lay them out."""
    cols = int(cols) if cols is not None else int(math.ceil(math.sqrt(n)))
    return int(math.ceil(n / cols)), cols


def _is_image(data_shape):
    return len(data_shape) == 2 or (len(data_shape) == 3 and data_shape[-1] in (1, 3))


def _pixels(n, data_shape, cols=None):
    rows, cols = grid_layout(n, cols)
    figure = (max(3.0, cols * _TILE_INCHES + 0.4) * _DPI) * (max(1.5, rows * _TILE_INCHES + 0.7)
                                                            * _DPI)
    mosaic = 0
    if _is_image(data_shape):
        mosaic = (rows * (int(data_shape[0]) + 1)) * (cols * (int(data_shape[1]) + 1))
    return int(mosaic), int(figure)


def estimate_image_bytes(n, data_shape, cols=None):
    """Bytes of drawing `n` examples of `data_shape` as one picture grid.

    The padded tiles (twice: raw and normalised), the mosaic (x channels) and
    the RGBA figure canvas (twice: the resampled image and the canvas).

    Args:
      n: tiles.
      data_shape: shape of one example.
      cols: columns (default ceil(sqrt(n))).

    Returns:
      int bytes.
    """
    rows, cols = grid_layout(n, cols)
    mosaic, figure = _pixels(n, data_shape, cols)
    channels = int(data_shape[2]) if len(data_shape) == 3 and _is_image(data_shape) else 1
    return (2 * rows * cols * _dim(data_shape) + mosaic * channels) * _FLOAT + figure * 4 * 2


# ------------------------------------------------------------------ checks

def check_parameters(what, count, advice, **received):
    """Refuses a layer stack whose `count` parameters alone do not fit in memory.

    Args:
      what: e.g. "MLPEncoder".
      count: parameters.
      advice: what to lower.
      **received: values for the message.

    Returns:
      `count`.

    Raises:
      ResourceLimitError: when count x 4 bytes x 2 (weights and the
        initializer's temporary) exceeds `memory_limit()`.
    """
    check_memory(f"{what} with {count:,} parameters", count * _FLOAT * _LAYER_COPIES,
                 advice, **received)
    return count


def check_training(data_shape, latent_dim, hidden, batch_size, num_samples,
                   posterior_params=None, likelihood_params=None):
    """Refuses an MLP model and training step that do not fit together in memory.

    Args:
      data_shape: shape of one example.
      latent_dim: d.
      hidden: encoder widths (the decoder mirrors them).
      batch_size: B.
      num_samples: L or K.
      posterior_params: numbers the encoder outputs (default 2d).
      likelihood_params: numbers the decoder outputs (default D).

    Returns:
      int: the estimated bytes.

    Raises:
      ResourceLimitError: when model + step exceed `memory_limit()`.
    """
    hidden = [int(h) for h in hidden]
    model = estimate_model_bytes(data_shape, latent_dim, hidden, posterior_params,
                                 likelihood_params)
    step = estimate_step_bytes(batch_size, num_samples, _dim(data_shape), latent_dim, hidden,
                               posterior_params, likelihood_params)
    what = f"training (model {format_bytes(model)}, step {format_bytes(step)})"
    return check_memory(what, model + step,
                        "lower batch_size, num_samples, hidden or latent_dim",
                        batch_size=batch_size, num_samples=num_samples, hidden=hidden,
                        latent_dim=latent_dim, data_shape=tuple(data_shape))


def check_importance_samples(num_samples, name="num_samples"):
    """`num_samples` as an int in [1, MAX_IMPORTANCE_SAMPLES].

    Raises:
      ResourceLimitError: above `MAX_IMPORTANCE_SAMPLES` (the work is absurd).
      ValueError / ArgumentTypeError: for a value that is not a positive int.
    """
    return _count(name, num_samples, MAX_IMPORTANCE_SAMPLES,
                  "each example decodes that many samples")


def check_sample(n, data_shape, latent_dim=1, widths=(), likelihood_params=None,
                 name="num_samples"):
    """Refuses generating more than `MAX_SAMPLES` examples or more than fits in memory.

    Args:
      n: examples to generate.
      data_shape: shape of one example.
      latent_dim: d.
      widths: the decoder's hidden widths.
      likelihood_params: numbers per example the decoder outputs (default D).
      name: the argument's name for the message.

    Returns:
      int n.

    Raises:
      ResourceLimitError: above `MAX_SAMPLES` or the memory limit.
      ValueError / ArgumentTypeError: for an n that is not a positive int.
    """
    n = _count(name, n, MAX_SAMPLES, "draw several batches instead")
    check_memory(f"generating {n:,} examples",
                 estimate_sample_bytes(n, _dim(data_shape), latent_dim, widths,
                                       likelihood_params),
                 f"lower {name}", **{name: n, "data_shape": tuple(data_shape)})
    return n


def check_grid(n, data_shape, cols=None, name="n"):
    """Refuses a picture grid of too many tiles or pixels, or that does not fit in memory.

    Args:
      n: tiles.
      data_shape: shape of one example.
      cols: columns (default ceil(sqrt(n))).
      name: the argument's name for the message.

    Returns:
      int n.

    Raises:
      ResourceLimitError: above `MAX_GRID_TILES` (`MAX_LINE_TILES` for data
        drawn as lines), `MAX_GRID_PIXELS` or the memory limit.
    """
    data_shape = tuple(int(d) for d in data_shape)
    image = _is_image(data_shape)
    maximum = MAX_GRID_TILES if image else MAX_LINE_TILES
    n = _count(name, n, maximum, "one picture of that many tiles is unreadable; "
               "save an array (.npy) instead")
    mosaic, figure = _pixels(n, data_shape, cols)
    if max(mosaic, figure) > MAX_GRID_PIXELS:
        raise ResourceLimitError(
            f"A picture grid may have at most {MAX_GRID_PIXELS:,} pixels; this one needs "
            f"{max(mosaic, figure):,}; lower {name} or save an array (.npy) instead. "
            f"Received: {name}={n}, data_shape={data_shape}")
    check_memory(f"a picture of {n:,} tiles", estimate_image_bytes(n, data_shape, cols),
                 f"lower {name}", **{name: n, "data_shape": data_shape})
    return n
