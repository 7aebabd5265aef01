"""Pictures of a trained model: samples, reconstructions, latent space vs PCA, manifold grid.

Every function builds a `matplotlib.figure.Figure` directly (Agg canvas, no
pyplot, no display, no global backend change; matplotlib is imported only
when a picture is drawn), returns it, and also writes a PNG when `path` is
given. `plot_all` writes the whole set into a folder.

Data shapes: `(H, W, 1)`, `(H, W)` and `(H, W, 3)` are drawn as image
mosaics; any other shape (e.g. flat vectors `(D,)`) is drawn flattened as
small line plots laid out in the same grid, and the title says so.

Example:

>>> paths = plot_all(vae, x_test, y_test, out_dir="runs/demo/plots", history=h.history)
>>> fig = latent_scatter(vae, x_test, y_test)      # a Figure; fig.savefig("latent.png")
"""

import io
import os

import numpy as np
import tensorflow as tf

from keras_vae import files, latent, resources, validation
from keras_vae.access import check_inputs, decode, prior_distribution, reconstruct, require_prior

__all__ = [
    "sample_grid",
    "class_sample_grid",
    "reconstruction_grid",
    "manifold_grid",
    "latent_scatter",
    "interpolation_grid",
    "loss_curves",
    "accuracy_vs_labels",
    "image_grid",
    "save_image_grid",
    "plot_all",
]

_CURVES = ("loss", "elbo", "reconstruction", "kl", "iwae")
_DPI = 100


# ------------------------------------------------------------ drawing helpers

def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI)


def _save(fig, path):
    """Writes `fig` as a PNG to `path` atomically; returns `fig`.

    The picture is rendered in memory and written with
    `keras_vae.files.atomic_write` (a `.tmp-` name in the same folder, fsync,
    the mode a new file gets under the umask, one rename): a kill or an error
    mid-write leaves the old picture (if any) intact and no temporary file.
    """
    if path is None:
        return fig
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)  # bounded: grids are size-checked first
    files.atomic_write(path, buf.getvalue())
    return fig


def _is_image(data_shape):
    return len(data_shape) == 2 or (len(data_shape) == 3 and data_shape[-1] in (1, 3))


def _shape_note(data_shape):
    return "" if _is_image(data_shape) else f" (shape {tuple(data_shape)} drawn as lines)"


def _draw_grid(ax, grid, data_shape):
    """Draws `grid [rows, cols] + data_shape` on one Axes: an image mosaic or line tiles."""
    rows, cols = grid.shape[:2]
    grid = np.asarray(grid, "float32")
    lo, hi = float(grid.min()), float(grid.max())
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    scale = max(hi - lo, 1e-12)
    ax.set_xticks([])
    ax.set_yticks([])
    if _is_image(data_shape):
        h, w = data_shape[:2]
        c = data_shape[2] if len(data_shape) == 3 else 1
        tiles = ((grid - lo) / scale).reshape(rows, cols, h, w, c)
        mosaic = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, c), "float32")
        for r in range(rows):
            for k in range(cols):
                mosaic[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = tiles[r, k]
        if c == 1:
            ax.imshow(mosaic[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(np.clip(mosaic, 0.0, 1.0), interpolation="nearest")
        return
    flat = ((grid - lo) / scale).reshape(rows, cols, -1)
    d = flat.shape[-1]
    t = np.arange(d)
    for r in range(rows):
        for k in range(cols):
            ax.plot(k * (d * 1.15) + t, -1.3 * r + flat[r, k], lw=0.8, color="C0")
    ax.set_xlim(-1, cols * d * 1.15)
    ax.set_ylim(-1.3 * rows + 1.1, 1.1)


def _grid_figure(grid, data_shape, title, tile_inches=0.6):
    rows, cols = grid.shape[:2]
    fig = _figure(max(3.0, cols * tile_inches + 0.4), max(1.5, rows * tile_inches + 0.7))
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.96 - 0.45 / fig.get_figheight()])
    _draw_grid(ax, grid, data_shape)
    ax.set_title(title + _shape_note(data_shape), fontsize=9)
    return fig


def _mean(dist):
    return np.asarray(dist.mean(), "float32")


def _latent_dim(model, x=None):
    dim = getattr(model, "latent_dim", None) or getattr(model.encoder, "latent_dim", None)
    prior = prior_distribution(model)
    if dim is None and prior is not None:
        dim = prior.event_shape[-1]
    if dim is None:
        dim = latent.embed(model, x[:1]).shape[1]
    return int(dim)


def _data_shape(model, x=None):
    shape = getattr(model, "data_shape", None)
    return tuple(shape) if shape is not None else tuple(np.shape(x)[1:])


# ------------------------------------------------------------ the pictures

def image_grid(examples, title=None, cols=None):
    """Grid picture of arrays `[n] + data_shape` (images, or lines for other shapes).

    Args:
      examples: array `[n] + data_shape`, n >= 1.
      title: optional title (default: "n examples").
      cols: columns (default: ceil(sqrt(n))).

    Returns:
      `matplotlib.figure.Figure`.

    Raises:
      ValueError: for an empty or non-finite array.
      keras_vae.resources.ResourceLimitError (a ValueError): for more tiles
        than `resources.MAX_GRID_TILES` (`MAX_LINE_TILES` for data drawn as
        lines), more pixels than `MAX_GRID_PIXELS`, or more memory than
        available.
    """
    examples = np.asarray(examples.numpy() if isinstance(examples, tf.Tensor) else examples)
    if examples.ndim < 2 or len(examples) == 0 or not np.issubdtype(examples.dtype, np.number):
        raise ValueError("Expected a finite numeric array of shape (n,) + data_shape with "
                         f"n >= 1. Received: examples.shape={examples.shape}")
    n, data_shape = len(examples), examples.shape[1:]
    cols = validation.positive_int("cols", cols) if cols is not None else int(np.ceil(np.sqrt(n)))
    resources.check_grid(n, data_shape, cols, name="n")  # before any copy of the tiles
    if not np.all(np.isfinite(examples)):
        raise ValueError("Expected a finite numeric array of shape (n,) + data_shape with "
                         f"n >= 1. Received: examples.shape={examples.shape} with "
                         "NaN or infinite values")
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * cols,) + data_shape, examples.min(), "float32")
    grid[:n] = examples
    return _grid_figure(grid.reshape((rows, cols) + data_shape), data_shape,
                        title if title is not None else f"{n} examples")


def save_image_grid(examples, path, title=None):
    """Writes `image_grid(examples, title)` to the PNG file `path`, atomically; returns path.

    Args:
      examples: array `[n] + data_shape`.
      path: PNG path; an existing file is replaced in one rename (a failure
        leaves it intact and no temporary file behind).
      title: optional title.

    Returns:
      `path`.

    Raises:
      ValueError / ResourceLimitError: as `image_grid`.
    """
    _save(image_grid(examples, title), path)
    return path


def sample_grid(model, n=64, seed=0, mean=True, path=None):
    """Grid of `n` examples generated from the prior: z ~ p(z), x = mean of p(x|z).

    Args:
      model: a VAE (needs a prior).
      n: number of samples, laid out in a near-square grid.
      seed: integer; the same seed gives the same picture.
      mean: draw the likelihood's mean (default) or a sample from it.
      path: optional PNG path.

    Returns:
      `matplotlib.figure.Figure`.

    Raises:
      ValueError: if the model has no prior.
      keras_vae.resources.ResourceLimitError (a ValueError): for a grid of
        too many tiles or pixels (see `image_grid`), before sampling.
    """
    prior = require_prior(model, "sample_grid")
    n = validation.positive_int("n", n)
    seed = validation.seed(seed)
    shape = getattr(model, "data_shape", None)
    if shape is not None:  # before generating anything
        resources.check_grid(n, tuple(shape), name="n")
    if callable(getattr(model, "sample", None)):
        samples = np.asarray(model.sample(n, seed=seed, mean=mean), "float32")
    else:
        seeds = tf.random.split(tf.constant([seed, 7], tf.int32), 2)
        z = prior.sample(n, seed=seeds[0])
        p = decode(model, z)
        samples = np.asarray(p.mean() if mean else p.sample(seed=seeds[1]), "float32")
    return _save(image_grid(samples, f"{n} samples from the prior (seed {seed})"), path)


def class_sample_grid(model, per_class=10, seed=0, mean=True, path=None):
    """Class-conditional samples of a conditional model: row c holds `sample(per_class, y=c)`.

    Args:
      model: a class-conditional model (`keras_vae.ConditionalVAE` with
        `num_classes`).
      per_class: columns, samples per class.
      seed: integer; the same seed gives the same picture (every row draws
        the same latents, so a column shows one z across the classes).
      mean: the likelihood's mean (default) or a draw from it.
      path: optional PNG path.

    Returns:
      `matplotlib.figure.Figure`.

    Raises:
      ValueError: for a model without class labels (`num_classes`).
      keras_vae.resources.ResourceLimitError (a ValueError): for too many tiles.
    """
    num_classes = getattr(model, "num_classes", None)
    if not num_classes:
        raise ValueError("class_sample_grid needs a class-conditional model (a "
                         "keras_vae.ConditionalVAE with num_classes). Received: model of type "
                         f"{type(model).__name__}")
    per_class = validation.positive_int("per_class", per_class)
    seed = validation.seed(seed)
    resources.check_grid(num_classes * per_class, tuple(model.data_shape), cols=per_class,
                         name="num_classes x per_class")
    rows = [np.asarray(model.sample(per_class, y=c, seed=seed, mean=mean), "float32")
            for c in range(num_classes)]
    fig = _grid_figure(np.stack(rows), tuple(model.data_shape),
                       f"samples per class (row c: y = c; seed {seed})")
    return _save(fig, path)


def reconstruction_grid(model, x, n=10, path=None):
    """Inputs (top row) above their reconstructions E[p(x | z = E q(z|x))] (bottom row).

    Args:
      model: a VAE or autoencoder.
      x: `[N] + data_shape`; the first `min(n, N)` examples are drawn.
      n: number of columns.
      path: optional PNG path.

    Returns:
      `matplotlib.figure.Figure`.
    """
    n = validation.positive_int("n", n)
    x = check_inputs(model, x)[:n]
    resources.check_grid(2 * len(x), x.shape[1:], cols=len(x), name="2 x n")
    recon = reconstruct(model, x)
    fig = _grid_figure(np.stack([x, recon]), x.shape[1:],
                       "inputs (top) and reconstructions (bottom)")
    return _save(fig, path)


def manifold_grid(model, n=15, dims=(0, 1), path=None):
    """Decoded `n x n` grid of latents at standard-normal quantiles (Kingma & Welling, 2014).

    `z[dims] = (Phi^-1(u_i), Phi^-1(u_j))` with `u = (0.5, ..., n - 0.5) / n`,
    other latent dimensions at 0; each tile is the mean of p(x|z).

    Args:
      model: a VAE with latent_dim >= 2 (2 gives the full manifold).
      n: tiles per side.
      dims: the two latent dimensions to vary.
      path: optional PNG path.

    Returns:
      `matplotlib.figure.Figure`.
    """
    from scipy.stats import norm

    n = validation.positive_int("n", n)
    shape = getattr(model, "data_shape", None)
    if shape is not None:  # n x n tiles, before allocating the latent grid
        resources.check_grid(n * n, tuple(shape), cols=n, name="n x n")
    d = _latent_dim(model)
    if len(dims) != 2 or len(set(dims)) != 2 or not all(0 <= int(i) < d for i in dims):
        raise ValueError(f"`dims` must be two different latent dimensions in [0, {d}). "
                         f"Received: dims={dims!r}")
    q = norm.ppf((np.arange(n) + 0.5) / n)
    z = np.zeros((n, n, d), "float32")
    z[..., dims[0]] = q[None, :]
    z[..., dims[1]] = q[::-1, None]  # larger values at the top
    tiles = _mean(decode(model, tf.constant(z)))
    fig = _grid_figure(tiles, tiles.shape[2:],
                       f"decoded latent grid at N(0,1) quantiles, dims {tuple(dims)}",
                       tile_inches=0.5)
    return _save(fig, path)


def _scatter(ax, points, y, title):
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6, color="C0")
    else:
        labels = np.unique(y)
        for i, label in enumerate(labels):
            sel = y == label
            ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.7,
                       color=f"C{i % 10}" if len(labels) <= 10 else None, label=str(label))
        if len(labels) <= 10:
            ax.legend(fontsize=6, markerscale=2, loc="best", frameon=False)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)


def latent_scatter(model, x, y=None, k=5, max_points=2000, seed=0, path=None):
    """Posterior means (left) next to a 2-D PCA of the data (right), coloured by label.

    The left panel shows the first two latent dimensions when latent_dim == 2,
    a 2-D PCA of the posterior means when latent_dim > 2, and the single
    dimension against a seeded jitter when latent_dim == 1 (the title says
    which). With labels, both titles give the k-NN leave-one-out accuracy of
    the full latent means and of a PCA with the same number of components.

    Args:
      model: a VAE or autoencoder.
      x: `[N] + data_shape`; at most `max_points` examples (seeded subset).
      y: optional `[N]` labels.
      k: neighbours for the accuracy.
      max_points: cap on plotted examples.
      seed: integer for the subset and jitter.
      path: optional PNG path.

    Returns:
      `matplotlib.figure.Figure`.
    """
    x = check_inputs(model, x)
    rng = np.random.default_rng(validation.seed(seed))
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"Expected one label per example ({len(x)}). "
                             f"Received: y.shape={y.shape}")
    if len(x) > max_points:
        keep = np.sort(rng.choice(len(x), max_points, replace=False))
        x, y = x[keep], (None if y is None else y[keep])
    z = latent.embed(model, x)
    d = z.shape[1]
    if d == 1:
        left, how = np.c_[z[:, 0], rng.uniform(-1, 1, len(z))], "1-D posterior mean (y: jitter)"
    elif d == 2:
        left, how = z, "posterior means, latent dims 0 and 1"
    else:
        left, how = latent.pca_embedding(z, 2)[0], f"2-D PCA of the {d}-D posterior means"
    codes = latent.pca_embedding(x, max(2, d))[0]
    right_how = f"PCA of the data, components 1-2 (of {codes.shape[1]})"
    if y is not None and k < len(x):
        acc_z = latent.knn_accuracy(z, y, k)
        acc_p = latent.knn_accuracy(codes[:, :d], y, k)
        how += f"\n{k}-NN accuracy at dim {d}: {acc_z:.3f}"
        right_how += f"\n{k}-NN accuracy at dim {d}: {acc_p:.3f}"
    fig = _figure(9.0, 4.4)
    ax_l, ax_r = fig.subplots(1, 2)
    _scatter(ax_l, left, y, "model: " + how)
    if codes.shape[1] < 2:  # one-dimensional data
        codes = np.c_[codes, rng.uniform(-1, 1, len(codes))]
    _scatter(ax_r, codes[:, :2], y, right_how)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.86, wspace=0.15)
    return _save(fig, path)


def interpolation_grid(model, x, pairs=((0, 1),), steps=8, path=None):
    """Rows of decoded linear interpolations between the posterior means of two inputs.

    Each row: input a, `steps` decoded points z = (1 - t) mu_a + t mu_b for
    t in linspace(0, 1, steps), input b.

    Args:
      model: a VAE or autoencoder.
      x: `[N] + data_shape`.
      pairs: index pairs into `x`, one row each.
      steps: decoded points per row (>= 2).
      path: optional PNG path.

    Returns:
      `matplotlib.figure.Figure`.
    """
    x = check_inputs(model, x)
    steps = validation.positive_int("steps", steps)
    pairs = np.asarray(pairs, "int64").reshape(-1, 2) if len(pairs) else np.zeros((0, 2))
    if steps < 2 or len(pairs) == 0 or pairs.min() < 0 or pairs.max() >= len(x):
        raise ValueError(f"Expected steps >= 2 and index pairs into x (N={len(x)}). "
                         f"Received: steps={steps}, pairs={pairs.tolist()}")
    resources.check_grid(len(pairs) * (steps + 2), x.shape[1:], cols=steps + 2,
                         name="pairs x (steps + 2)")
    mu = latent.embed(model, x[pairs.ravel()]).reshape(len(pairs), 2, -1)
    t = np.linspace(0.0, 1.0, steps, dtype="float32")[None, :, None]
    z = (1 - t) * mu[:, :1] + t * mu[:, 1:]                       # [P, steps, d]
    decoded = _mean(decode(model, tf.constant(z)))
    grid = np.concatenate([x[pairs[:, 0]][:, None], decoded, x[pairs[:, 1]][:, None]], axis=1)
    fig = _grid_figure(grid, x.shape[1:], "interpolation in latent space "
                       "(inputs at both ends)")
    return _save(fig, path)


def loss_curves(history, path=None):
    """Training curves per epoch: one panel per metric, validation dashed.

    Args:
      history: dict of lists (e.g. `keras.callbacks.History.history`) or a
        History object; panels for `loss`, `elbo`, `reconstruction`, `kl`
        (and `iwae`) when present, else for every key without `val_`.
      path: optional PNG path.

    Returns:
      `matplotlib.figure.Figure`.
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict) or not history:
        raise TypeError("Expected `history` as a non-empty dict of lists such as "
                        f"History.history. Received: history={history!r:.80}")
    names = [k for k in _CURVES if k in history] or sorted(
        k for k in history if not k.startswith("val_"))
    fig = _figure(3.0 * len(names), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        for key, style in ((name, "-"), ("val_" + name, "--")):
            if key in history:
                values = np.asarray(history[key], "float64").reshape(-1)
                ax.plot(np.arange(1, len(values) + 1), values, style, marker=".", label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.88, wspace=0.35)
    return _save(fig, path)


def _accuracy_series(results):
    """Checks `accuracy_vs_labels` input; returns [(method, counts [k], runs [k] lists)]."""
    if not isinstance(results, dict) or not results:
        raise TypeError("Expected `results` as a non-empty dict method -> {number of labels: "
                        f"accuracies}}. Received: results={results!r:.80}")
    series = []
    for method, by_count in results.items():
        if not isinstance(by_count, dict) or not by_count:
            raise TypeError(f"Expected results[{method!r}] as a non-empty dict number of "
                            f"labels -> accuracies. Received: {by_count!r:.80}")
        counts, runs = [], []
        for count, accs in sorted(by_count.items()):
            count = validation.positive_int(f"number of labels of {method!r}", count)
            values = np.atleast_1d(np.asarray(accs, "float64")).reshape(-1)
            if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
                raise ValueError(f"Accuracies must be numbers in [0, 1]. Received: "
                                 f"results[{method!r}][{count}]={accs!r:.80}")
            counts.append(count)
            runs.append(values)
        series.append((str(method), counts, runs))
    return series


def accuracy_vs_labels(results, path=None, title=None, chance=None):
    """Test accuracy against the number of labelled examples, one line per method.

    Each point is the mean over the runs (seeds) given for that number of
    labels; the bar spans their minimum to maximum. The x axis is logarithmic.

    Args:
      results: dict method name -> dict number of labels -> accuracies (a
        float or a list, one per seed), e.g.
        `{"M2": {100: [0.61, 0.63, 0.60], 1000: [...]}, "MLP": {...}}`.
      path: optional PNG path (written atomically).
      title: optional figure title.
      chance: optional chance accuracy (e.g. 1 / C), drawn as a dotted line.

    Returns:
      `matplotlib.figure.Figure`.

    Raises:
      TypeError: `results` is not a non-empty dict of non-empty dicts.
      ValueError: a label count that is not a positive int, or an accuracy
        outside [0, 1].
    """
    series = _accuracy_series(results)
    if chance is not None:
        chance = validation.fraction("chance", chance)
    fig = _figure(4.8, 3.4)
    ax = fig.subplots()
    for method, counts, runs in series:
        means = np.array([r.mean() for r in runs])
        low = means - np.array([r.min() for r in runs])
        high = np.array([r.max() for r in runs]) - means
        ax.errorbar(counts, means, yerr=np.stack([low, high]), marker="o", capsize=3,
                    label=f"{method}")
    if chance is not None:
        ax.axhline(chance, linestyle=":", color="grey", label="chance")
    ax.set_xscale("log")
    ticks = sorted({c for _, counts, _ in series for c in counts})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{c:,}" for c in ticks])
    ax.set_xlabel("labelled training examples", fontsize=8)
    ax.set_ylabel("test accuracy (mean, min-max over seeds)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    if title:
        ax.set_title(str(title), fontsize=9)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=0.9)
    return _save(fig, path)


def _pairs(y, count, rng, n):
    if y is None:
        return rng.choice(n, size=(count, 2), replace=n < 2 * count)
    pairs = []
    for a in rng.permutation(n):
        others = np.flatnonzero(y != y[a])
        if len(others):
            pairs.append((a, rng.choice(others)))
        if len(pairs) == count:
            break
    return np.asarray(pairs or rng.choice(n, size=(count, 2)))


def plot_all(model, x, y=None, out_dir=None, history=None, seed=0):
    """Writes every picture that applies to `model` into `out_dir` as PNG.

    Files: `loss_curves.png` (when `history` is given), `reconstructions.png`,
    `samples.png` (models with a prior), `latent_vs_pca.png`, `manifold.png`
    (latent_dim == 2 and a prior), `interpolation.png` (pairs of different
    labels when `y` is given). A conditional model (`model.conditional`) gets
    `loss_curves.png` and, with class labels, `class_samples.png` (one row per
    class) only. Existing files of these names are replaced.

    Args:
      model: a VAE or autoencoder.
      x: `[N] + data_shape` data to draw from (e.g. the test split).
      y: optional `[N]` labels (colours, k-NN numbers, interpolation pairs).
      out_dir: folder, created if missing.
      history: optional dict of lists, as in `History.history`.
      seed: integer; the same seed gives the same pictures.

    Returns:
      list of the written paths.
    """
    if out_dir is None:
        raise ValueError("plot_all needs a folder to write into. Received: out_dir=None")
    x = check_inputs(model, x)
    seed = validation.seed(seed)
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []

    def out(name):
        paths.append(os.path.join(out_dir, name))
        return paths[-1]

    if history is not None:
        loss_curves(history, path=out("loss_curves.png"))
    if getattr(model, "conditional", False):  # pictures that need no condition per input
        if getattr(model, "num_classes", None):
            class_sample_grid(model, seed=seed, path=out("class_samples.png"))
        return paths
    reconstruction_grid(model, x[np.sort(rng.choice(len(x), min(10, len(x)), replace=False))],
                        path=out("reconstructions.png"))
    has_prior = prior_distribution(model) is not None
    if has_prior:
        sample_grid(model, n=64, seed=seed, path=out("samples.png"))
    latent_scatter(model, x, y, seed=seed, path=out("latent_vs_pca.png"))
    if has_prior and _latent_dim(model, x) == 2:
        manifold_grid(model, path=out("manifold.png"))
    interpolation_grid(model, x, pairs=_pairs(y, min(4, len(x)), rng, len(x)),
                       path=out("interpolation.png"))
    return paths
