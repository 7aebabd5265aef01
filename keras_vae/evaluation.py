"""The evaluation report of a trained model (`evaluate_model`); the evaluation helpers re-exported.

`evaluate_model` gathers every number for a model into one JSON-ready dict:
the log-likelihood and ELBO terms (`keras_vae.estimators`), the latent space
against PCA and active units (`keras_vae.latent`), and imputation
(`keras_vae.applications`). The model-access helpers (`keras_vae.access`) and
the estimators are re-exported here, so `keras_vae.evaluation.log_likelihood`,
`.elbo_terms`, `.LogLikelihood`, `.encode`, `.decode`, `.check_inputs`,
`.prior_distribution`, `.cached_function` and `.batch_seed` keep working.

The modules import one way (an arrow points from a module to one it imports):

```none
evaluation -> applications -> estimators -> access -> validation
evaluation -> latent -------------------------^
```

and `keras_vae.visualization` builds on `access` and `latent` only.

Numbers are in nats per example unless the name says bits per dimension.

#### Mathematical details

```none
log p(x) ~ IWAE_K(x) = log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)
           ELBO = E[IWAE_1] <= E[IWAE_K] <= E[IWAE_5000] <= log p(x)
bits/dim = -log p(x) / (D log 2),  D = number of data dimensions
```

Example:

>>> ll = log_likelihood(vae, x_test, num_samples=5000)
>>> ll.log_px.mean(), ll.bits_per_dim.mean()       # nats/example, bits/dim
>>> evaluate_model(vae, x_test, y_test)["knn_accuracy_latent"]
"""

import numpy as np
import tensorflow as tf

from keras_vae import applications, latent, objectives, validation
from keras_vae.access import (
    batch_seed,
    cached_function,
    check_inputs,
    decode,
    encode,
    prior_distribution,
    require_prior,
)
from keras_vae.estimators import LogLikelihood, elbo_terms, log_likelihood

__all__ = [
    "evaluate_model",
    # re-exported from keras_vae.estimators
    "LogLikelihood",
    "log_likelihood",
    "elbo_terms",
    # re-exported from keras_vae.access
    "prior_distribution",
    "require_prior",
    "encode",
    "decode",
    "check_inputs",
    "cached_function",
    "batch_seed",
]

# Posterior samples per example behind the ELBO terms that evaluate_model reports.
_ELBO_SAMPLES = 10


def _say(verbose, what):
    if verbose:
        print(f"evaluate_model: {what}", flush=True)


def evaluate_model(model, x, y=None, num_samples=1000, batch_size=100, seed=0, verbose=0):
    """All evaluation numbers for a trained model, as JSON-serialisable floats.

    For models with a prior: `log_likelihood` (mean IWAE-K estimate of log p(x),
    nats per example, K = `num_samples`), `log_likelihood_bits_per_dim`,
    `elbo`, `elbo_bits_per_dim`, `reconstruction` (E_q[-log p(x|z)]) and `kl`
    (means over examples, 10 posterior samples each, the model's KL setting),
    and `active_units` (of z1; also `active_units_per_layer`, a list, for models
    with stacked latents such as `keras_vae.HierarchicalVAE`). Without a prior
    (deterministic autoencoders) these are left out and `reconstruction` is
    -log p(x | z = E[q(z|x)]).

    Always: `num_samples`, `num_examples`, `num_dims`, `latent_dim`, `seed`,
    the latent-vs-PCA numbers of `keras_vae.latent.latent_vs_pca` (sum-of-squares
    reconstruction error per example at equal dimension; k=5 NN accuracy when
    `y` is given), and imputation of a random half of each example's values
    (`imputation_mse` vs `imputation_mse_mean_fill`, mean squared error on the
    hidden values; see `keras_vae.applications.imputation_report`). Data with
    missing entries (NaN, a MIWAE model) gets the likelihood numbers of the
    observed entries and `num_missing_entries` instead of the PCA and
    imputation numbers, which need complete rows.

    Args:
      model: trained VAE (or autoencoder).
      x: `[N] + data_shape` evaluation data.
      y: optional `[N]` labels; required for a conditional model
        (`keras_vae.ConditionalVAE`), whose report is the conditional
        log-likelihood log p(x|y) and ELBO terms only (and, with a
        classifier head (M2), `classification_accuracy` of q(y|x)).
      num_samples: K for the log-likelihood estimate.
      batch_size: examples per batch.
      seed: integer seed for every random draw.
      verbose: 0 (default, quiet) or 1: the log-likelihood estimate, by far the
        longest part, shows a `keras.utils.Progbar` on stdout, and a line
        names each later part.

    Returns:
      dict of str -> float/int.

    Raises:
      ValueError / TypeError: for bad arguments or data.

    Example:
      >>> metrics = evaluate_model(vae, x_test, y_test, num_samples=1000)
      >>> metrics["log_likelihood"], metrics["knn_accuracy_latent"]
    """
    x = check_inputs(model, x)
    num_samples = validation.positive_int("num_samples", num_samples)
    verbose = validation.choice("verbose", verbose, (0, 1))
    num_dims = int(np.prod(x.shape[1:]))
    metrics = {"num_samples": num_samples, "num_examples": int(len(x)),
               "num_dims": num_dims, "seed": validation.seed32(seed)}
    if getattr(model, "conditional", False):  # log p(x|y) and the conditional ELBO
        _say(verbose, f"log-likelihood (K={num_samples}) of {len(x)} examples")
        ll = log_likelihood(model, x, num_samples=num_samples, batch_size=batch_size,
                            seed=seed, y=y, verbose=verbose)
        terms = elbo_terms(model, x, num_samples=_ELBO_SAMPLES, batch_size=batch_size,
                           seed=seed, y=y)
        metrics.update({
            "log_likelihood": ll.mean(),
            "log_likelihood_bits_per_dim": float(np.mean(ll.bits_per_dim)),
            "elbo": float(np.mean(terms["elbo"])),
            "elbo_bits_per_dim": float(objectives.bits_per_dim(-np.mean(terms["elbo"]),
                                                               num_dims)),
            "reconstruction": float(np.mean(terms["reconstruction"])),
            "kl": float(np.mean(terms["kl"])),
        })
        if callable(getattr(model, "classify", None)):  # M2: q(y|x) on the test labels
            predicted = model.classify(x, batch_size=max(batch_size, 500)).argmax(axis=1)
            metrics["classification_accuracy"] = float(np.mean(predicted == np.asarray(y)))
        return metrics
    if prior_distribution(model) is not None:
        _say(verbose, f"log-likelihood (K={num_samples}) of {len(x)} examples")
        ll = log_likelihood(model, x, num_samples=num_samples, batch_size=batch_size,
                            seed=seed, verbose=verbose)
        _say(verbose, "ELBO terms and active units")
        terms = elbo_terms(model, x, num_samples=_ELBO_SAMPLES, batch_size=batch_size,
                           seed=seed)
        metrics.update({
            "log_likelihood": ll.mean(),
            "log_likelihood_bits_per_dim": float(np.mean(ll.bits_per_dim)),
            "elbo": float(np.mean(terms["elbo"])),
            "elbo_bits_per_dim": float(objectives.bits_per_dim(-np.mean(terms["elbo"]),
                                                               num_dims)),
            "reconstruction": float(np.mean(terms["reconstruction"])),
            "kl": float(np.mean(terms["kl"])),
            "active_units": latent.active_units(model, x, batch_size=batch_size),
        })
        if callable(getattr(model, "posterior_means", None)):  # stacked latents
            metrics["active_units_per_layer"] = latent.active_units_per_layer(
                model, x, batch_size=max(batch_size, 500), seed=seed)
    else:
        q = [encode(model, tf.constant(x[s:s + batch_size])).mean()
             for s in range(0, len(x), batch_size)]
        nll = [-decode(model, z).log_prob(x[i * batch_size:(i + 1) * batch_size])
               for i, z in enumerate(q)]
        metrics["reconstruction"] = float(np.mean(np.concatenate(nll)))
    missing = int(np.isnan(x).sum())
    if missing:  # a MIWAE model's data with holes: PCA and hiding values need complete rows
        metrics["num_missing_entries"] = missing
        return metrics
    _say(verbose, "latent space vs PCA, imputation")
    metrics.update(latent.latent_vs_pca(model, x, y, batch_size=max(batch_size, 500)))
    metrics.update(applications.imputation_report(model, x, seed=seed,
                                                  batch_size=max(batch_size, 500)))
    return metrics
