"""`HierarchicalVAE`: a VAE with stacked stochastic layers (Burda et al., 2016, two layers).

The model of the IWAE paper's two-layer experiments, built from the parts of
the one-layer model: every Gaussian layer is an `MLPEncoder` (its
`DiagonalGaussianPosterior` head, `sigma = softplus(raw + softplus^-1(1)) +
min_scale`), the likelihood `p(x|z1)` an `MLPDecoder`, the top prior a layer of
`keras_vae.priors`; training, metrics, seeds, data checks and saving are
`keras_vae.base.BaseAutoencoder`'s, as for `keras_vae.VAE`.

#### Mathematical details

```none
inference   q(z1|x) q(z2|z1) ... q(zL|z(L-1))         x -> h1 -> h1 -> z1 -> h2 -> h2 -> z2 ...
generative  p(zL) p(z(L-1)|zL) ... p(z1|z2) p(x|z1)   zL -> h2 -> h2 -> z1 -> h1 -> h1 -> x
log w       = log p(x|z1) + sum_l [log p(zl|z(l+1)) - log q(zl|z(l-1))]   (z0 = x, p(zL|.) = p(zL))
ELBO        = E_q[log w] = -reconstruction - sum_l kl_zl
reconstruction = E_q[-log p(x|z1)]
kl_zl       = E_q[log q(zl|z(l-1)) - log p(zl|z(l+1))]            (Monte Carlo, per layer)
kl_zL       = E_q(z(L-1)|x)[KL(q(zL|z(L-1)) || p(zL))]           (closed form when analytic_kl)
free bits   loss = reconstruction + beta * sum_l sum_d max(mean_batch kl_zl[d], lambda_l)
IWAE_K      = log 1/K sum_k w_k,  (z1_k, ..., zL_k) ~ q,  reparameterized: zl = mu + sigma * eps
```
With the paper's sizes (`latent_dims=(100, 50)`): x -> 100 -> 100 -> z1 (100)
-> 50 -> 50 -> z2 (50), tanh, and the generative path mirrors it.
"""

import secrets

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import networks, objectives, resources, validation
from keras_vae import priors as priors_lib
from keras_vae.base import BaseAutoencoder
from keras_vae.corruption import check_binarize
from keras_vae.heads import reparameterized_sample, stateless_normal

tfd = tfp.distributions

__all__ = ["HierarchicalVAE", "hierarchical_terms", "OBJECTIVES"]

OBJECTIVES = ("elbo", "iwae")

# Layer l > 1 draws its noise from the layer-1 seed with this constant times (l - 1)
# xor-ed into the seed's first word (the model seed), so the layers' noises are
# independent and every other property of the layer-1 seed is kept.
_LAYER_SALT = 0x2545F491


def _layer_seed(seed, layer):
    """The stateless seed (int32 `[2]` or `[B, 2]`) of stochastic layer `layer` (0-based)."""
    seed = tf.cast(seed, tf.int32)
    if layer == 0:
        return seed
    salt = (layer * _LAYER_SALT) & 0x7FFFFFFF
    return tf.bitwise.bitwise_xor(seed, tf.constant([salt, 0], tf.int32))


def _gaussian_of(layer, z, training):
    """`layer(z)` (an `MLPEncoder`) for `z [..., d]`, as a diagonal Gaussian of batch `[...]`."""
    q = layer(z, training=training)  # batch [prod(...)]: the encoder flattens leading axes
    base = q.distribution
    shape = tf.concat([tf.shape(z)[:-1], [layer.latent_dim]], 0)
    return tfd.Independent(tfd.Normal(tf.reshape(base.loc, shape), tf.reshape(base.scale, shape)),
                           reinterpreted_batch_ndims=1)


def _draw(q, eps):
    """`z = mu + sigma * eps` for a diagonal Gaussian `q` and noise broadcasting with it."""
    return q.distribution.loc + q.distribution.scale * eps


def hierarchical_terms(log_px_z, log_q, log_p, objective="elbo", beta=1.0, top_kl=None,
                       free_bits=None, kl_dims=None, latent_dims=None):
    """The objective's terms from the log-densities of L joint samples of every layer.

    Args:
      log_px_z: `log p(x|z1)`, `[L, B]`.
      log_q: per stochastic layer l, `log q(zl|z(l-1))`, each `[L, B]`.
      log_p: per layer l, `log p(zl|z(l+1))` (the top one: `log p(zL)`), each `[L, B]`.
      objective: "elbo" or "iwae".
      beta: weight of the KL terms (ELBO) / of `log p(z) - log q(z)` in log w (IWAE).
      top_kl: optional `[B]` closed-form `E[KL(q(zL|.) || p(zL))]` replacing the
        Monte Carlo estimate of the top layer's KL.
      free_bits: None, or per layer the floor lambda_l in nats per latent dimension
        ("elbo" only): the loss's KL of layer l is `sum_d max(kl_dims[l][d], lambda_l)`
        (Kingma et al., 2016), or `max(mean kl_zl, lambda_l * d_l)` where `kl_dims[l]`
        is None (a top prior without a per-dimension form). `elbo` and `kl` stay
        the model's.
      kl_dims: with free_bits, per layer the batch-mean KL of each dimension `[d_l]`
        (or None).
      latent_dims: with free_bits, the layers' sizes `d_l`.

    Returns:
      dict: scalar `loss`; per-example `[B]` `elbo`, `reconstruction`, `kl` (the sum)
      and `kl_z1`, `kl_z2`, ... (per layer); `iwae` for objective "iwae".
    """
    reconstruction = -tf.reduce_mean(log_px_z, axis=0)
    kls = [tf.reduce_mean(q - p, axis=0) for q, p in zip(log_q, log_p)]
    if top_kl is not None:
        kls[-1] = top_kl
    kl = tf.add_n(kls)
    terms = {"elbo": -(reconstruction + kl), "reconstruction": reconstruction, "kl": kl}
    terms.update({f"kl_z{i + 1}": k for i, k in enumerate(kls)})
    if objective == "elbo" and free_bits is not None:
        floored = [tf.reduce_mean(k) if not lam  # a layer without a floor: its KL as is
                   else tf.reduce_sum(tf.maximum(dims, lam)) if dims is not None
                   else tf.maximum(tf.reduce_mean(k), lam * size)
                   for dims, lam, k, size in zip(kl_dims, free_bits, kls, latent_dims)]
        terms["loss"] = tf.reduce_mean(reconstruction) + beta * tf.add_n(floored)
    elif objective == "elbo":
        terms["loss"] = tf.reduce_mean(reconstruction) + beta * tf.reduce_mean(kl)
    else:
        log_w = log_px_z + beta * tf.add_n([p - q for q, p in zip(log_q, log_p)])
        terms["iwae"] = objectives.iwae_bound(log_w)
        terms["loss"] = -tf.reduce_mean(terms["iwae"])
    return terms


def _free_bits(free_bits, num_layers):
    """`free_bits` (one number, or one per layer) as one float `>= 0` per stochastic layer."""
    if isinstance(free_bits, (str, bytes)) or not hasattr(free_bits, "__len__"):
        return (validation.non_negative_float("free_bits", free_bits),) * num_layers
    if len(free_bits) != num_layers:
        raise ValueError(
            f"`free_bits` must be one number of nats per latent dimension, or one value per "
            f"stochastic layer ({num_layers}). Received: free_bits={free_bits!r}")
    return tuple(validation.non_negative_float(f"free_bits[{i}]", v)
                 for i, v in enumerate(free_bits))


def _latent_dims(latent_dims):
    if isinstance(latent_dims, (str, bytes)) or not hasattr(latent_dims, "__len__") \
            or len(latent_dims) < 2:
        raise ValueError(
            "`latent_dims` must list the sizes of two or more stochastic layers, bottom "
            "(next to x) first, e.g. (100, 50); for one layer use keras_vae.VAE. "
            f"Received: latent_dims={latent_dims!r}")
    return tuple(validation.positive_int(f"latent_dims[{i}]", d)
                 for i, d in enumerate(latent_dims))


def _hidden(hidden, num_layers):
    """Per stochastic layer, the widths of its deterministic layers."""
    if hidden is None:
        return ((100, 100),) + ((50, 50),) * (num_layers - 1)
    if isinstance(hidden, (int, np.integer)):
        return ((int(hidden),),) * num_layers
    try:
        items = tuple(hidden)
    except TypeError:
        items = None
    if items and all(isinstance(h, (int, np.integer)) for h in items):
        widths = networks.hidden_widths("hidden", items)
        return (widths,) * num_layers
    if not items or len(items) != num_layers:
        raise ValueError(
            f"`hidden` must be None (the paper's (100, 100) then (50, 50)), widths for every "
            f"layer such as (100, 100), or one tuple of widths per stochastic layer "
            f"({num_layers}). Received: hidden={hidden!r}")
    return tuple(networks.hidden_widths(f"hidden[{i}]", h) for i, h in enumerate(items))


@keras.saving.register_keras_serializable(package="keras_vae")
class HierarchicalVAE(BaseAutoencoder):
    """VAE with two (or more) stochastic layers, trained with `model.fit`.

    See the module docstring for the model and its objectives. Metrics:
    `loss`, `elbo`, `reconstruction`, `kl` (sum over layers), `kl_z1`,
    `kl_z2`, ... (per layer), `beta` (and `iwae`).

    Layers and sizes (shapes with `B` the batch and `L` the samples):
    `model.encoder` is `q(z1|x)` (an `MLPEncoder`, batch `[B]`, event `[d1]`),
    `model.decoder` is `p(x|z1)` (an `MLPDecoder`), `model.inference_layers[l]`
    is `q(z(l+2)|z(l+1))` and `model.generative_layers[l]` is `p(z(l+1)|z(l+2))`
    (both `MLPEncoder`s over latents), `model.prior` is `p(zL)`.
    `model.latent_dim` is `d1`, the size `encode`/`decode`/`reconstruct`
    work in by default (as for `keras_vae.VAE`, whose latent they mirror).

    Args:
      data_shape: shape of one example, e.g. (28, 28, 1) or (64,).
      latent_dims: sizes of the stochastic layers, bottom first, e.g. (100, 50).
      hidden: None (the paper's (100, 100) for layer 1 and (50, 50) above), one
        tuple of widths for every layer, or one tuple per stochastic layer. The
        generative networks mirror them.
      activation: Keras activation of the hidden layers, default "tanh".
      likelihood: `p(x|z1)` as for `MLPDecoder` ("bernoulli", ...), or a head.
      prior: `p(zL)`: None / "standard_normal", "mixture", or a prior layer.
      objective: "elbo" or "iwae".
      num_samples: L samples per example (K for "iwae").
      beta: KL weight in the non-trainable `model.beta` (warm-up callbacks work).
      warmup_steps, warmup_schedule: as for `keras_vae.VAE`: with `warmup_steps=N`
        the weight of every layer's KL rises from 0 to `beta` over N optimizer
        steps inside the compiled step (keeps `steps_per_execution`). Ladder-VAE
        style warm-up (Sonderby et al., 2016) against the upper layers' collapse.
      analytic_kl: closed-form KL of the top layer given each sample of the
        layer below; the lower layers' KLs are always Monte Carlo.
      min_scale: floor on every Gaussian layer's standard deviation.
      free_bits: lambda in nats per latent dimension, one number for every layer or
        one per layer (0: none; "elbo" only). The loss's KL of layer l becomes
        `sum_d max(batch mean of kl_zl[d], lambda_l)` (Kingma et al., 2016), so a
        layer's units are not pushed below lambda nats each; a top prior without a
        per-dimension KL ("mixture") is floored as a whole at `lambda * d_L`. The
        reported `elbo` and `kl` metrics are the model's, not the floored loss.
      seed, corruption, corruption_rate, corruption_stddev, input_key, binarize: as
        for `keras_vae.VAE` (`binarize="dynamic"`: a fresh Bernoulli(x) draw of every
        training batch inside the compiled step).

    Call arguments:
      x: `[B] + data_shape`; returns the mean of `p(x | z1 = E[q(z1|x)])`.

    Raises:
      TypeError / ValueError: for arguments of the wrong type or value, and for
        data of the wrong shape, dtype or range.

    Example:
      >>> model = HierarchicalVAE((28, 28, 1), latent_dims=(100, 50), objective="iwae",
      ...                         num_samples=5)
      >>> model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-4))
      >>> model.fit(x_train, epochs=10, batch_size=128)
      >>> kv.log_likelihood(model, x_test, num_samples=5000).mean()
    """

    _nested = ()

    def __init__(self, data_shape, latent_dims=(100, 50), hidden=None, activation="tanh",
                 likelihood="bernoulli", prior=None, objective="elbo", num_samples=1, beta=1.0,
                 analytic_kl=True, min_scale=1e-4, seed=0, corruption=None,
                 corruption_rate=0.25, corruption_stddev=0.1, input_key=None, binarize=None,
                 warmup_steps=0, warmup_schedule="linear", free_bits=0.0, **kwargs):
        data_shape = validation.event_shape("data_shape", data_shape)
        dims = _latent_dims(latent_dims)
        widths = _hidden(hidden, len(dims))
        activation = networks.check_activation(activation)
        if objective not in OBJECTIVES:
            raise ValueError(f"`objective` must be one of {OBJECTIVES}. "
                             f"Received: objective={objective!r}")
        if not isinstance(analytic_kl, (bool, np.bool_)):
            raise TypeError(f"`analytic_kl` must be a bool. Received: analytic_kl={analytic_kl!r}")
        if isinstance(prior, dict):
            prior = keras.saving.deserialize_keras_object(prior)
        gaussian = {"activation": activation, "min_scale": min_scale}
        encoder = networks.MLPEncoder(dims[0], hidden=widths[0], name="q_z1", **gaussian)
        decoder = networks.MLPDecoder(data_shape, hidden=widths[0][::-1], activation=activation,
                                      likelihood=likelihood, name="p_x")
        super().__init__(encoder, decoder, corruption=corruption, corruption_rate=corruption_rate,
                         corruption_stddev=corruption_stddev, seed=seed, input_key=input_key,
                         **kwargs)
        self.latent_dims, self.hidden, self.activation = dims, widths, activation
        self.binarize = check_binarize(binarize, getattr(self.decoder.head, "support", None))
        self.min_scale = min_scale
        self.inference_layers = [
            networks.MLPEncoder(dims[i + 1], hidden=widths[i + 1], name=f"q_z{i + 2}", **gaussian)
            for i in range(len(dims) - 1)]
        self.generative_layers = [
            networks.MLPEncoder(dims[i], hidden=widths[i + 1][::-1], name=f"p_z{i + 1}",
                                **gaussian)
            for i in range(len(dims) - 1)]
        if prior == "vamp" or isinstance(prior, priors_lib.VampPrior):
            raise ValueError("A HierarchicalVAE's top prior p(z_L) is 'standard_normal' or "
                             "'mixture' (a VampPrior mixes q(z|x) of a one-layer encoder). "
                             f"Received: prior={prior!r}")
        self.prior = priors_lib.get_prior(prior, dims[-1])
        self.objective = objective
        self.num_samples = validation.positive_int("num_samples", num_samples)
        self.analytic_kl = bool(analytic_kl)
        self.free_bits = _free_bits(free_bits, len(dims))
        if objective != "elbo" and any(self.free_bits):
            raise ValueError("free_bits applies to the 'elbo' objective only. "
                             f"Received: objective={objective!r}, free_bits={free_bits!r}")
        self._init_kl_weight(beta, warmup_steps, warmup_schedule)
        names = ["loss", "elbo", "reconstruction", "kl"]
        names += [f"kl_z{i + 1}" for i in range(len(dims))] + ["beta"]
        if objective == "iwae":
            names.append("iwae")
        self._finish_init(names)

    def build(self, input_shape=None):
        super().build(input_shape)
        for i, layer in enumerate(self.inference_layers):
            if not layer.built:
                layer.build((None, self.latent_dims[i]))
        for i, layer in enumerate(self.generative_layers):
            if not layer.built:
                layer.build((None, self.latent_dims[i + 1]))
        if not self.prior.built:
            self.prior.build()

    def _scalar_metrics(self):
        return {"beta": self.beta}

    # ------------------------------------------------------------ the model

    def _score(self, x, noise, training, seed=None):
        """Draws every layer with `noise(l)` (`[L, B, d_l]` standard normal) and scores it.

        Returns:
          `(zs, qs, ps, log_q, log_p, log_px_z)`: samples `[L, B, d_l]`, the posteriors
          (layer 1 batch `[B]`, the others `[L, B]`), the priors `p(zl|z(l+1))` (batch
          `[L, B]`; the top one `p(zL)`), and the `[L, B]` log-densities
          `log q(zl|z(l-1))`, `log p(zl|z(l+1))`, `log p(x|z1)`.
        """
        q = self.encoder(self.encoder_input(x, training, seed), training=training)
        zs, qs = [_draw(q, noise(0))], [q]
        for i, layer in enumerate(self.inference_layers, start=1):
            qs.append(_gaussian_of(layer, zs[-1], training))
            zs.append(_draw(qs[-1], noise(i)))
        ps = [_gaussian_of(layer, zs[i + 1], training)
              for i, layer in enumerate(self.generative_layers)]
        ps.append(self.prior.distribution())
        log_q = [q.log_prob(z) for q, z in zip(qs, zs)]
        log_p = [p.log_prob(z) for p, z in zip(ps, zs)]
        log_px_z = objectives.masked_log_prob(self.decoder(zs[0], training=training), x)
        return zs, qs, ps, log_q, log_p, log_px_z

    def _noise(self, x, seed, num_samples):
        """`l -> [L, B, d_l]` noise from a seed `[2]` or per-example seeds `[B, 2]`."""
        batch = tf.shape(x)[0]

        def noise(layer):
            standard = tfd.Independent(tfd.Normal(
                tf.zeros(tf.stack([batch, self.latent_dims[layer]])), 1.0), 1)
            return reparameterized_sample(standard, num_samples, _layer_seed(seed, layer))
        return noise

    def compute_terms(self, x, training=False, seed=None, num_samples=None):
        """The objective on a batch: dict of `loss` (scalar) and per-example `[B]` `elbo`,
        `reconstruction`, `kl`, `kl_z1`, `kl_z2`, ... (and `iwae`), float32 nats.

        Args: as for `keras_vae.VAE.compute_terms`.
        """
        x = tf.cast(x, tf.float32)
        if seed is None and training:
            seed = self.noise_seed(True)
        elif seed is None:
            seed = self.example_seeds(x)
        num_samples = num_samples or self.num_samples
        # Corruption (denoising) draws from seed + [0, 1], as in keras_vae.VAE.
        zs, qs, ps, log_q, log_p, log_px_z = self._score(
            x, self._noise(x, seed, num_samples), training, seed)
        top_kl = None
        if self.analytic_kl:
            kl = _analytic_or_none(qs[-1], ps[-1])
            top_kl = None if kl is None else tf.reduce_mean(kl, axis=0)
        if not any(self.free_bits):
            return hierarchical_terms(log_px_z, log_q, log_p, self.objective, self.beta, top_kl)
        kl_dims = [self._kl_per_dimension(q, p, z, top=i == len(zs) - 1)
                   for i, (q, p, z) in enumerate(zip(qs, ps, zs))]
        return hierarchical_terms(log_px_z, log_q, log_p, self.objective, self.beta, top_kl,
                                  self.free_bits, kl_dims, self.latent_dims)

    def _kl_per_dimension(self, q, p, z, top):
        """Batch (and sample) mean of each dimension's KL term `[d]`, the estimator of the
        layer's `kl_zl` metric (closed form for the top layer with analytic_kl, else
        Monte Carlo at the drawn `z`); None when `q` or `p` has no per-dimension form."""
        q_d, p_d = objectives.diagonal_normal(q), objectives.diagonal_normal(p)
        if q_d is None or p_d is None:
            return None
        if top and self.analytic_kl:
            per_dim = tfd.kl_divergence(q_d, p_d)
        else:
            per_dim = q_d.log_prob(z) - p_d.log_prob(z)
        return tf.reduce_mean(tf.reshape(per_dim, [-1, tf.shape(per_dim)[-1]]), axis=0)

    def log_importance_weights(self, x, seeds):
        """`(log w, log p(x|z1))`, each `[C, B]`: sample c of every example drawn from
        `seeds[c]` (int32 `[C, 2]`). The hook `keras_vae.log_likelihood` and
        `keras_vae.elbo_terms` use for this model (the proposal is the whole chain q)."""
        x = tf.cast(x, tf.float32)
        batch = tf.shape(x)[0]

        def noise(layer):
            shape = tf.stack([batch, self.latent_dims[layer]])
            return tf.map_fn(lambda s: stateless_normal(shape, _layer_seed(s, layer)), seeds,
                             fn_output_signature=tf.float32)
        _, _, _, log_q, log_p, log_px_z = self._score(x, noise, False)
        log_w = log_px_z + tf.add_n([p - q for q, p in zip(log_q, log_p)])
        return log_w, log_px_z

    # ------------------------------------------------------- user methods

    def _check_layer(self, layer):
        layer = validation.positive_int("layer", layer)
        if layer > len(self.latent_dims):
            raise ValueError(f"`layer` must be between 1 and {len(self.latent_dims)} (the "
                             f"stochastic layers, 1 next to x). Received: layer={layer}")
        return layer

    def encode(self, x, layer=1):
        """`q(z_layer | x)` along the means: layer 1 is `q(z1|x)` (default, batch `[B]`,
        event `[d1]`); layer l > 1 is `q(zl | z(l-1) = E[q(z(l-1)|...)])` (event `[d_l]`)."""
        layer = self._check_layer(layer)
        q = super().encode(x)
        for net in self.inference_layers[:layer - 1]:
            q = net(q.mean(), training=False)
        return q

    def decode(self, z, layer=1):
        """`p(x | z_layer = z)`: layer 1 (default) is `p(x|z1)`, `z [..., d1]`; layer l > 1
        goes down the means: `z(l-1) = E[p(z(l-1)|zl)]`, ..., then `p(x|z1)`.

        Returns:
          a distribution of batch shape `z.shape[:-1]`, event shape `data_shape`.
        """
        layer = self._check_layer(layer)
        if layer == 1:
            return super().decode(z)
        z = _latents(z, self.latent_dims[layer - 1])
        return self.decoder(self.top_down_mean(z, layer), training=False)

    def top_down_mean(self, z, layer):
        """`z1` reached from `z_layer = z` along the means `E[p(z(l-1)|zl)]` (a tensor)."""
        for net in self.generative_layers[:layer - 1][::-1]:
            z = _gaussian_of(net, z, False).mean()
        return z

    def sample(self, num_samples, seed=None, mean=True):
        """Ancestral samples: `zL ~ p(zL)`, `zl ~ p(zl|z(l+1))`, then the mean of `p(x|z1)`
        (or a draw with `mean=False`). Returns float32 `[n] + data_shape`."""
        n = resources.check_sample(num_samples, self.data_shape,
                                   latent_dim=max(self.latent_dims),
                                   widths=tuple(w for h in self.hidden for w in h),
                                   likelihood_params=self.decoder.head.params_size())
        seed = secrets.randbelow(2 ** 31 - 1) if seed is None else validation.seed32(seed)
        seeds = tf.random.split(tf.constant([seed, 7], tf.int32), len(self.latent_dims) + 1)
        z = self.prior.distribution().sample(n, seed=seeds[0])
        for i, net in enumerate(self.generative_layers[::-1], start=1):
            p = _gaussian_of(net, z, False)
            z = _draw(p, stateless_normal(tf.shape(p.distribution.loc), seeds[i]))
        likelihood = self.decoder(z, training=False)
        return likelihood.mean() if mean else likelihood.sample(seed=seeds[-1])

    def posterior_means(self, x, num_samples=100, seed=0, batch_size=1000):
        """`E_q(zl|x)[zl]` of every layer, a list of float32 numpy `[N, d_l]`.

        Layer 1 is exact (the mean of `q(z1|x)`); the layers above average the
        means of `q(zl|z(l-1))` over `num_samples` draws of the chain below
        (seeded), the quantity the IWAE paper's active-unit criterion uses.
        """
        num_samples = validation.positive_int("num_samples", num_samples)
        seed = validation.seed32(seed)
        batch_size = validation.batch_size(batch_size)
        x = self._check(x)
        x = np.asarray(validation.select_input(x, self.input_key), "float32")
        out = [[] for _ in self.latent_dims]
        for b, start in enumerate(range(0, len(x), batch_size)):
            xb = tf.constant(x[start:start + batch_size])
            base = tf.constant([seed, b], tf.int32)
            _, qs, _, _, _, _ = self._score(xb, self._noise(xb, base, num_samples), False)
            out[0].append(qs[0].mean().numpy())
            for i, q in enumerate(qs[1:], start=1):
                out[i].append(tf.reduce_mean(q.mean(), axis=0).numpy())
        return [np.concatenate(parts).astype("float32") for parts in out]

    def export_view(self):
        """The one-latent view `keras_vae.export` exports: latents are the top layer zL.

        `decode(zL)` = `p(x | z1 = E[p(z1|z2)], ...)` down the means, `encode(x)` =
        `q(zL | z(L-1) = E[...])` up the means, `sample` = `zL ~ p(zL)` then decode.
        """
        return TopLatentView(self)

    # ------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update({
            "data_shape": list(self.data_shape),
            "latent_dims": list(self.latent_dims),
            "hidden": [list(h) for h in self.hidden],
            "activation": self.activation,
            "likelihood": self.decoder.get_config()["likelihood"],
            "prior": keras.saving.serialize_keras_object(self.prior),
            "objective": self.objective,
            "num_samples": self.num_samples,
            "analytic_kl": self.analytic_kl,
            "min_scale": self.min_scale,
        })
        if any(self.free_bits):
            config["free_bits"] = list(self.free_bits)
        config.update(self._kl_weight_config())
        if self.binarize is not None:
            config["binarize"] = self.binarize
        return config


def _analytic_or_none(q, p):
    try:
        return tfd.kl_divergence(q, p)
    except NotImplementedError:
        return None


def _latents(z, dim):
    arr = z if isinstance(z, tf.Tensor) else np.asarray(z)
    if not isinstance(z, tf.Tensor) and arr.dtype.kind not in "biuf":
        raise TypeError(f"Expected latents as real numbers of shape (..., {dim}). "
                        f"Received: z of dtype {arr.dtype}")
    z = tf.convert_to_tensor(arr, tf.float32)
    if z.shape.rank is None or z.shape.rank < 1 or z.shape[-1] != dim:
        raise ValueError(f"Expected latents of shape (..., {dim}). "
                         f"Received: z.shape={tuple(z.shape)}")
    if not bool(tf.reduce_all(tf.math.is_finite(z))):
        raise ValueError("Latents must be finite. Received: z with NaN or Inf")
    return z


class _TopEncoder(keras.layers.Layer):
    """`x -> q(zL | z(L-1) = E[...])` up the means (for exports)."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self._model = model
        self.latent_dim = model.latent_dims[-1]
        self.built = True

    def call(self, x, training=False):
        q = self._model.encoder(x, training=False)
        for net in self._model.inference_layers:
            q = net(q.mean(), training=False)
        return q


class _TopDecoder(keras.layers.Layer):
    """`zL -> p(x | z1 = top_down_mean(zL))` (for exports)."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self._model = model
        self.latent_dim = model.latent_dims[-1]
        self.event_shape = model.data_shape
        self.head = model.decoder.head
        self.hidden = model.decoder.hidden
        self.built = True

    def call(self, z, training=False):
        m = self._model
        return m.decoder(m.top_down_mean(z, len(m.latent_dims)), training=False)


class TopLatentView(keras.Model):
    """A `HierarchicalVAE` seen through its top latent zL (shares its weights).

    Has what `keras_vae.export` reads from a one-layer VAE: `encoder`,
    `decoder`, `prior`, `latent_dim` (= d_L), `data_shape`, `optimizer` (the
    model's, so export's trained-model check applies to the model).
    """

    def __init__(self, model, **kwargs):
        kwargs.setdefault("name", "top_latent_view")
        super().__init__(**kwargs)
        self.source = model
        self.encoder = _TopEncoder(model, name="top_encoder")
        self.decoder = _TopDecoder(model, name="top_decoder")
        self.prior = model.prior
        self.latent_dim = model.latent_dims[-1]
        self.data_shape = model.data_shape
        self.built = True

    @property
    def optimizer(self):
        return getattr(self.source, "optimizer", None)

    def sample(self, num_samples, seed=None, mean=True):
        """`zL ~ p(zL)`, then the mean of `p(x | z1 = E[p(z1|z2)], ...)` (the exported
        `sample`; `seed=[s, 7]` there gives `sample(n, seed=s)` here). Unlike
        `HierarchicalVAE.sample`, the layers below zL are their conditional means."""
        n = validation.positive_int("num_samples", num_samples)
        seed = secrets.randbelow(2 ** 31 - 1) if seed is None else validation.seed32(seed)
        seeds = tf.random.split(tf.constant([seed, 7], tf.int32), 2)
        z = self.prior.distribution().sample(n, seed=seeds[0])
        likelihood = self.decoder(z)
        return likelihood.mean() if mean else likelihood.sample(seed=seeds[1])

    def call(self, x, training=False):
        return self.decoder(self.encoder(x).mean()).mean()
