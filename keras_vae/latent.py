"""The latent space: embeddings (posterior means), active units, and the PCA baseline.

The source material reads an autoencoder as manifold learning, i.e. nonlinear
dimension reduction; this module measures it against PCA with the same number
of dimensions: reconstruction error at equal dimension and the k-NN label
accuracy of the codes. Works for VAEs and deterministic autoencoders (only
the encoder's `.mean()` and the decoder's mean are used).

#### Mathematical details

```none
embedding       : z(x) = E_q(z|x)[z]                              [N, d]
reconstruction  : x^(x) = E_p(x|z(x))[x]
active unit u   : Var_x(z_u(x)) > 0.01            (Burda et al., 2016)
error           : 1/N sum_n ||x_n - x^_n||^2      (sum over data dimensions)
k-NN accuracy   : leave-one-out, Euclidean, majority of the k nearest other codes
```

Example:

>>> z = embed(vae, x_test)                        # (N, latent_dim)
>>> latent_vs_pca(vae, x_test, y_test)            # dict of floats
"""

import numpy as np
import tensorflow as tf

from keras_vae import validation
from keras_vae.access import check_inputs, encode, reconstruct

__all__ = [
    "embed",
    "reconstruct",  # keras_vae.access.reconstruct, re-exported
    "active_units",
    "active_units_per_layer",
    "pca_embedding",
    "knn_accuracy",
    "latent_vs_pca",
]


def embed(model, x, batch_size=1000):
    """Posterior means `E_q(z|x)[z]`: float32 `[N, latent_dim]`.

    Example:
      >>> z = embed(vae, x_test)      # e.g. (300, 2) for a 2-D latent space
    """
    x = check_inputs(model, x)
    batch_size = validation.batch_size(batch_size)
    return np.concatenate([
        np.asarray(encode(model, tf.constant(x[s:s + batch_size])).mean())
        for s in range(0, len(x), batch_size)
    ]).astype("float32")


def active_units(model, x, threshold=0.01, batch_size=1000):
    """Number of latent units whose posterior mean varies across `x` by more than `threshold`.

    A unit u is active when `Var_x(E_q(z|x)[z_u]) > threshold` (Burda et al.,
    2016); inactive units carry no information about x (posterior collapse).

    Returns:
      int in [0, latent_dim].
    """
    variances = np.var(embed(model, x, batch_size).astype("float64"), axis=0)
    return int(np.sum(variances > float(threshold)))


def active_units_per_layer(model, x, threshold=0.01, batch_size=1000, seed=0):
    """Active units of every stochastic layer: a list of ints, bottom (z1) first.

    A model with stacked latents exposes `posterior_means(x, seed=, batch_size=)`
    (e.g. `keras_vae.HierarchicalVAE`: `E_q(zl|x)[zl]` per layer, the upper ones
    Monte Carlo averages); any other model has one layer, `[active_units(model, x)]`.
    """
    means = getattr(model, "posterior_means", None)
    if not callable(means):
        return [active_units(model, x, threshold, batch_size)]
    x = check_inputs(model, x)
    return [int(np.sum(np.var(m.astype("float64"), axis=0) > float(threshold)))
            for m in means(x, seed=seed, batch_size=batch_size)]


def pca_embedding(x, n_components, x_fit=None):
    """PCA baseline: projections and reconstructions of `x` with `n_components` axes.

    Args:
      x: `[N] + data_shape` array.
      n_components: number of principal axes (clipped to min(N_fit, D)).
      x_fit: data to fit the axes on (default `x`).

    Returns:
      `(codes [N, n], reconstructions [N] + data_shape)`, float32.
    """
    from sklearn.decomposition import PCA

    n_components = validation.positive_int("n_components", n_components)
    flat = np.asarray(x, "float64").reshape(len(x), -1)
    fit = flat if x_fit is None else np.asarray(x_fit, "float64").reshape(len(x_fit), -1)
    pca = PCA(n_components=min(n_components, *fit.shape), svd_solver="full").fit(fit)
    codes = pca.transform(flat)
    recon = pca.inverse_transform(codes).reshape(np.shape(x))
    return codes.astype("float32"), recon.astype("float32")


def knn_accuracy(features, labels, k=5):
    """Leave-one-out k-nearest-neighbour label accuracy of an embedding.

    Each example is classified by the majority label of its k nearest other
    examples (Euclidean); ties go to the smallest label.

    Args:
      features: `[N, d]` array.
      labels: `[N]` integer labels.
      k: neighbours, 1 <= k < N.

    Returns:
      float in [0, 1].
    """
    from sklearn.neighbors import NearestNeighbors

    features = np.asarray(features, "float64").reshape(len(features), -1)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(features):
        raise ValueError(
            f"Expected one label per example ({len(features)}). "
            f"Received: labels.shape={labels.shape}"
        )
    k = validation.positive_int("k", k)
    if k >= len(labels):
        raise ValueError(f"`k` must be smaller than the number of examples "
                         f"({len(labels)}). Received: k={k}")
    _, idx = NearestNeighbors(n_neighbors=k).fit(features).kneighbors()  # excludes self
    classes, codes = np.unique(labels, return_inverse=True)
    votes = np.zeros((len(labels), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(labels)), k), codes[idx].ravel()), 1)
    return float(np.mean(classes[np.argmax(votes, axis=1)] == labels))


def latent_vs_pca(model, x, y=None, k=5, batch_size=1000):
    """Compares the model's latent space with PCA at the same dimensionality.

    Reconstruction error is the sum over data dimensions of the squared
    difference between x and its reconstruction, averaged over examples: for
    the model the mean of p(x | z = E[q(z|x)]), for PCA the projection on the
    top `latent_dim` principal axes fitted on `x`. With labels, the k-NN
    leave-one-out accuracy of the posterior means and of the PCA codes.

    Returns:
      dict of floats: `latent_dim`, `model_reconstruction_error`,
      `pca_reconstruction_error` (and `knn_accuracy_latent`,
      `knn_accuracy_pca` when `y` is given).
    """
    x = check_inputs(model, x)
    z = embed(model, x, batch_size)
    codes, pca_recon = pca_embedding(x, z.shape[1])
    axes = tuple(range(1, x.ndim))
    out = {
        "latent_dim": int(z.shape[1]),
        "model_reconstruction_error": float(np.mean(np.sum(
            (reconstruct(model, x, batch_size) - x) ** 2, axis=axes))),
        "pca_reconstruction_error": float(np.mean(np.sum((pca_recon - x) ** 2, axis=axes))),
    }
    if y is not None:
        out["knn_accuracy_latent"] = knn_accuracy(z, y, k)
        out["knn_accuracy_pca"] = knn_accuracy(codes, y, k)
    return out
