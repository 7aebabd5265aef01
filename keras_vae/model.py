"""The `VAE` model: a `keras.Model` whose `train_step`/`test_step` optimise the ELBO.

The model wires an encoder (`x -> q(z|x)`), a decoder (`z -> p(x|z)`) and a
prior; the arithmetic lives in `keras_vae.objectives`, the training machinery
it shares with the deterministic autoencoders in `keras_vae.base`.
"""

import secrets

import keras
import numpy as np
import tensorflow as tf

from keras_vae import distributions as dists
from keras_vae import objectives, resources, validation
from keras_vae import priors as priors_lib
from keras_vae.base import BaseAutoencoder
from keras_vae.corruption import check_binarize

__all__ = ["VAE"]


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(BaseAutoencoder):
    """Variational autoencoder trained with `model.fit`.

    #### Mathematical details

    ```none
    loss = E_q(z|x)[-log p(x|z)] + beta * KL(q(z|x) || p(z))        objective="elbo"
    loss = -log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)                objective="iwae"
    loss = -log 1/K sum_k p(x_o|z_k) p(z_k) / q(z_k|x_o)            objective="miwae"
    (x_o: the observed entries, NaN = missing; the encoder sees NaN as
     `encoder.missing_fill`, default 0.0; Mattei & Frellsen, 2019)
    z = mu(x) + sigma(x) * eps,  eps ~ N(0, I)                      (reparameterization)
    ```
    With `warmup_steps=N` beta follows `objectives.warmup_beta(t, N,
    warmup_schedule, start=0, target=beta)` at optimizer step t; with
    `binarize="dynamic"` each training batch is replaced by a Bernoulli(x)
    draw `1[u < x]`, u ~ U[0, 1) keyed by (seed, t). Values are summed over
    data and latent dimensions and averaged over the batch, in nats. Logged
    metrics: `loss`, `elbo` (nats per example, higher is better),
    `reconstruction` (E_q[-log p(x|z)]), `kl`, `beta` (and `iwae`).
    With `corruption` (a denoising VAE) the encoder sees `q(z|x~)` of a
    corrupted `x~` during training and the terms score the clean `x`.

    Args:
      encoder: layer mapping `x [B] + data_shape` to `q(z|x)` with event shape
        `[latent_dim]` (e.g. `MLPEncoder`, `ConvEncoder`); not a point mass.
      decoder: layer mapping `z [..., latent_dim]` to `p(x|z)` with event shape
        `data_shape` (e.g. `MLPDecoder`, `ConvDecoder`, `TiedMLPDecoder`).
      prior: None or "standard_normal" for N(0, I), "mixture" for a learnable
        mixture of Gaussians, "vamp" for the VampPrior (500 pseudo-inputs; use
        `keras_vae.priors.VampPrior(K)` for another K), or a prior layer from
        `keras_vae.priors`.
      beta: weight of the KL term (>= 0), held in the non-trainable variable
        `model.beta` so callbacks such as `KLWarmup` can change it (the
        target of the warm-up when `warmup_steps` > 0).
      num_samples: L Monte Carlo samples per example (K for "iwae").
      analytic_kl: closed-form KL where TFP has one; Monte Carlo otherwise.
      objective: "elbo", "iwae" or "miwae" (incomplete data: `fit`, `evaluate`,
        `predict` and the estimators accept NaN for missing entries; needs a
        likelihood that factorises over entries).
      free_bits: nats per latent dimension below which KL is not penalised.
      seed: integer base of the stateless noise seeds.
      binarize: None (default: train on the data as given) or "dynamic": every
        training step draws new {0, 1} data from the grey values in [0, 1]
        inside the compiled step (XLA and `steps_per_execution` > 1 keep
        working; the draws depend on (seed, optimizer.iterations), so a resumed
        run draws the same bits). `evaluate`, `predict` and the estimators see
        the data as given: evaluate on a fixed binarization
        (`kv.data.binarize_static`). Needs a likelihood on [0, 1] ("bernoulli").
        The in-graph twin of `kv.data.make_dataset(binarize="dynamic")`.
      warmup_steps: 0 (default: no warm-up) or N > 0: the KL weight rises from
        0 to `beta` over N optimizer steps, computed inside the compiled step
        from `optimizer.iterations` (keeps `steps_per_execution`, unlike the
        `KLWarmup` callback; exact after a resume); `model.beta` holds the
        current value.
      warmup_schedule: "linear" (default) or "cyclical" (cycles of N steps,
        rising over the first half of each; see `objectives.warmup_beta`).
      corruption, corruption_rate, corruption_stddev: denoising training, see
        `BaseAutoencoder` and `corrupt` (default None: no corruption).

    Call arguments:
      x: `[B] + data_shape`. Returns the mean of `p(x | z = E[q(z|x)])`, the
        deterministic reconstruction used by `predict`.

    Raises:
      TypeError / ValueError: for arguments of the wrong type or value, and
        for data of the wrong shape, dtype or range (see `check_data`).

    Example:
      >>> enc = MLPEncoder(latent_dim=2, hidden=(64,))
      >>> dec = MLPDecoder(output_shape=(8, 8, 1), hidden=(64,))
      >>> vae = VAE(enc, dec)
      >>> vae.compile(optimizer="adam")
      >>> history = vae.fit(x_train, epochs=5, batch_size=64, validation_data=(x_test,))
    """

    _nested = ("encoder", "decoder", "prior")

    def __init__(self, encoder, decoder, prior=None, beta=1.0, num_samples=1,
                 analytic_kl=True, objective="elbo", free_bits=0.0, seed=0,
                 corruption=None, corruption_rate=0.25, corruption_stddev=0.1,
                 binarize=None, warmup_steps=0, warmup_schedule="linear", **kwargs):
        super().__init__(encoder, decoder, corruption=corruption,
                         corruption_rate=corruption_rate,
                         corruption_stddev=corruption_stddev, seed=seed, **kwargs)
        if isinstance(getattr(encoder, "head", None), dists.PointMassPosterior):
            raise ValueError(
                "A point-mass posterior has no ELBO (its KL to a density is infinite); "
                "train it with keras_vae.Autoencoder or give the encoder "
                "posterior='diagonal'. Received: encoder.head=PointMassPosterior"
            )
        if objective not in objectives.OBJECTIVES:
            raise ValueError(
                f"`objective` must be one of {objectives.OBJECTIVES}. "
                f"Received: objective={objective!r}"
            )
        self.prior = priors_lib.get_prior(  # a VampPrior keeps a reference to the encoder
            prior, self.latent_dim, encoder=self.encoder, data_shape=self.data_shape,
            support=getattr(self.decoder.head, "support", None))
        self.num_samples = validation.positive_int("num_samples", num_samples)
        if not isinstance(analytic_kl, (bool, np.bool_)):
            raise TypeError(f"`analytic_kl` must be a bool. Received: analytic_kl={analytic_kl!r}")
        self.analytic_kl = bool(analytic_kl)
        self.objective = objective
        self.free_bits = validation.non_negative_float("free_bits", free_bits)
        if objective != "elbo" and self.free_bits:
            raise ValueError(
                "free_bits applies to the 'elbo' objective only. "
                f"Received: objective={objective!r}, free_bits={free_bits!r}"
            )
        self.allows_missing = objective == "miwae"
        self.binarize = check_binarize(binarize, getattr(self.decoder.head, "support", None))
        self._init_kl_weight(beta, warmup_steps, warmup_schedule)
        names = ["loss", "elbo", "reconstruction", "kl", "beta"]
        if objective != "elbo":
            names.append(objective)
        self._finish_init(names)
        if self.allows_missing:  # refuse a non-factorising likelihood now, not at fit
            objectives.check_factorises(
                self.decoder(tf.zeros((1, self.latent_dim)), training=False))

    def build(self, input_shape=None):
        super().build(input_shape)
        if not self.prior.built:
            self.prior.build()

    def _scalar_metrics(self):
        return {"beta": self.beta}

    def compute_terms(self, x, training=False, seed=None, num_samples=None):
        """Runs the objective on a batch: dict of `loss` (scalar) and per-example
        `elbo`, `reconstruction`, `kl` (and `iwae`), all float32 nats.

        Args:
          x: `[B] + data_shape` float tensor (the target; with `corruption`
            and `training=True` the encoder sees a corrupted copy).
          training: passed to the encoder and decoder layers.
          seed: stateless seed int32 [2] (or [B, 2], one per example); defaults to
            `noise_seed(True)` in training and `example_seeds(x)` otherwise.
          num_samples: overrides the model's `num_samples` for this call.
        """
        x = tf.cast(x, tf.float32)
        if seed is None and training:
            seed = self.noise_seed(True)
        elif seed is None:  # evaluation: noise per example, whatever the batch size
            seed = self.example_seeds(x)
        objective = {"elbo": objectives.elbo, "iwae": objectives.iwae,
                     "miwae": objectives.miwae}[self.objective]
        posterior = self.encoder(self.encoder_input(self.fill_missing(x), training, seed),
                                 training=training)
        return objective(
            x, posterior,
            lambda z: self.decoder(z, training=training), self.prior.distribution(),
            seed=seed, num_samples=num_samples or self.num_samples,
            analytic_kl=self.analytic_kl, beta=self.beta, free_bits=self.free_bits,
        )

    def sample(self, num_samples, seed=None, mean=True):
        """Generates `num_samples` examples: z ~ p(z), x = mean of p(x|z) (or a draw).

        Args:
          num_samples: positive int n.
          seed: int for reproducible samples (the same seed gives the same batch).
          mean: return the likelihood's mean (default) or a sample from it.

        Returns:
          float32 tensor `[n] + data_shape`.
        """
        n = resources.check_sample(num_samples, self.data_shape, latent_dim=self.latent_dim,
                                   widths=getattr(self.decoder, "hidden", ()),
                                   likelihood_params=self.decoder.head.params_size())
        seed = secrets.randbelow(2 ** 31 - 1) if seed is None else validation.seed32(seed)
        seeds = tf.random.split(tf.constant([seed, 7], tf.int32), 2)
        z = self.prior.distribution().sample(n, seed=seeds[0])
        likelihood = self.decoder(z, training=False)
        return likelihood.mean() if mean else likelihood.sample(seed=seeds[1])

    def get_config(self):
        config = super().get_config()
        config.update(self._kl_weight_config())
        config.update({
            "num_samples": self.num_samples,
            "analytic_kl": self.analytic_kl,
            "objective": self.objective,
            "free_bits": self.free_bits,
        })
        if self.binarize is not None:
            config["binarize"] = self.binarize
        return config
