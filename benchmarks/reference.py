"""Plain-TensorFlow reference VAEs: what the benchmark compares keras_vae against.

Written the way an experienced TensorFlow user would write them by hand, with
no Keras and no TFP: `tf.Variable`s, one `tf.function` train step, hand-written
Adam with Keras's defaults, `tf.nn.bias_add` (so TensorFlow fuses
MatMul/Conv + BiasAdd + activation, as it does for Keras layers) and the same
arithmetic as keras_vae:

```none
q(z|x)  = N(mu, sigma^2),  sigma = softplus(raw + softplus^-1(1)) + 1e-4
z       = mu + sigma * eps,   eps ~ N(0, I) (stateless Philox, one sample)
loss    = mean_batch[ sum_pixels BCE(x, logits(z)) + KL(q(z|x) || N(0, I)) ]
          (or -mean_batch IWAE_K with objective="iwae")
Adam    : lr 1e-3, beta_1 0.9, beta_2 0.999, epsilon 1e-7 (Keras defaults)
```

`RECIPE` switches `PlainMLPVAE` to the IWAE paper's one-layer recipe as a
researcher writes it by hand: `sigma = exp(raw)` (no floor) and Adam epsilon
1e-4 (`PlainMLPVAE(784, **RECIPE)`); `benchmarks/parity.py` ablates it against
keras_vae one factor at a time. `copy_from_keras` / `copy_to_keras` move the
weights between it and a `kv.VAE` of the same MLP, so both contestants are
evaluated by one estimator (`kv.log_likelihood`).

- `PlainMLPVAE`: the IWAE paper's MLP, data_dim-H-H-latent with tanh
  (784-200-200-50 for Fashion-MNIST), Bernoulli likelihood.
- `PlainConvVAE`: the conv architecture of Keras's VAE example: Conv2D
  32/64 (3x3, stride 2, ReLU), Dense 16, latent 2; Dense 7*7*64,
  Conv2DTranspose 64/32 (stride 2), a 3x3 conv to the logits.

Both binarize their batch inside the step (`u < x`, Philox), take batches of
grey images from `plain_dataset` and are trained by `train_loop`, a Python
loop over the dataset calling the step: the classic hand-written TF2 loop.
"""

import math

import numpy as np
import tensorflow as tf

__all__ = ["PlainMLPVAE", "PlainConvVAE", "keras_example_vae", "plain_dataset", "train_loop",
           "matmul_flops", "RECIPE", "SCALES"]

SCALES = ("softplus", "exp")
# The IWAE paper's recipe written by hand: sigma = exp(raw), Adam epsilon 1e-4.
RECIPE = {"scale": "exp", "min_scale": 0.0, "epsilon": 1e-4}

_SOFTPLUS_INV_1 = math.log(math.expm1(1.0))
_LOG_2PI = math.log(2.0 * math.pi)


def _glorot(shape, seed):
    fan_in, fan_out = (int(np.prod(shape[:-1])), shape[-1]) if len(shape) == 2 else (
        int(np.prod(shape[:-1])), int(np.prod(shape[:-2])) * shape[-1])
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.Variable(tf.random.stateless_uniform(shape, [seed, 1], -limit, limit))


class _PlainVAE(tf.Module):
    """Shared part: the ELBO loss, hand-written Adam and the compiled train step."""

    def __init__(self, learning_rate=1e-3, seed=0, jit_compile=False, objective="elbo",
                 num_samples=1, scale="softplus", min_scale=1e-4, epsilon=1e-7, binarize=True):
        super().__init__()
        self.binarize = bool(binarize)
        if scale not in SCALES:
            raise ValueError(f"`scale` must be one of {SCALES}. Received: scale={scale!r}")
        self.objective, self.num_samples = objective, num_samples
        self.scale, self.min_scale, self.epsilon = scale, float(min_scale), float(epsilon)
        self.lr = learning_rate
        self.seed = seed
        self.jit_compile = jit_compile
        self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._opt_slots = None
        self._step = None

    # the two networks are defined by subclasses: _encode(x) -> (mu, raw), _decode(z) -> logits

    def sigma(self, raw):
        """`softplus(raw + softplus^-1(1)) + min_scale` (keras_vae's), or `exp(raw) + min_scale`."""
        if self.scale == "exp":
            return tf.exp(raw) + self.min_scale
        return tf.nn.softplus(raw + _SOFTPLUS_INV_1) + self.min_scale

    def loss(self, x, seed):
        """Negative ELBO, or negative IWAE_K bound, of binary `x [B, ...]` (scalar, nats)."""
        mu, raw = self._encode(x)
        sigma = self.sigma(raw)
        flat_x = tf.reshape(x, [tf.shape(x)[0], -1])
        if self.objective == "elbo":
            eps = tf.random.stateless_normal(tf.shape(mu), seed=seed, alg="philox")
            logits = self._decode(mu + sigma * eps)
            rec = tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=flat_x, logits=logits), axis=-1)
            kl = 0.5 * tf.reduce_sum(tf.square(mu) + tf.square(sigma) - 1.0
                                     - 2.0 * tf.math.log(sigma), axis=-1)
            return tf.reduce_mean(rec + kl)
        k = self.num_samples
        eps = tf.random.stateless_normal(tf.concat([[k], tf.shape(mu)], 0), seed=seed,
                                         alg="philox")                       # [K, B, d]
        z = mu + sigma * eps
        logits = tf.reshape(self._decode(tf.reshape(z, [-1, self.latent_dim])),
                            [k, tf.shape(mu)[0], -1])
        log_px_z = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.broadcast_to(flat_x, tf.shape(logits)), logits=logits), axis=-1)
        log_pz = -0.5 * tf.reduce_sum(tf.square(z) + _LOG_2PI, axis=-1)
        log_qz = -tf.reduce_sum(0.5 * tf.square(eps) + 0.5 * _LOG_2PI + tf.math.log(sigma),
                                axis=-1)
        log_w = log_px_z + log_pz - log_qz                                    # [K, B]
        return -tf.reduce_mean(tf.reduce_logsumexp(log_w, axis=0) - math.log(k))

    def _adam(self, grads, variables):
        t = tf.cast(self.step_count + 1, tf.float32)
        lr_t = self.lr * tf.sqrt(1.0 - 0.999 ** t) / (1.0 - 0.9 ** t)
        for g, v, (m, s) in zip(grads, variables, self._opt_slots):
            m.assign(0.9 * m + 0.1 * g)
            s.assign(0.999 * s + 0.001 * tf.square(g))
            v.assign_sub(lr_t * m / (tf.sqrt(s) + self.epsilon))
        self.step_count.assign_add(1)

    def _make_slots(self):
        # Adam's slots, created eagerly (outside the traced function), once
        if self._opt_slots is None:
            self._opt_slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v)))
                               for v in self.weights]

    def checkpoint(self):
        """A `tf.train.Checkpoint` of the weights, Adam's slots and the step counter."""
        self._make_slots()
        return tf.train.Checkpoint(weights=list(self.weights), step=self.step_count,
                                   slots=[list(pair) for pair in self._opt_slots])

    def train_step(self, x_grey):
        """One Adam step on a batch of grey images (binarized here); returns the loss.

        With `binarize=False` the batch is taken as it is (already binary): the
        step breakdown's "bits given" ablation of the reference.
        """
        if self._step is None:
            variables = list(self.weights)
            self._make_slots()

            @tf.function(jit_compile=self.jit_compile)
            def step(x_grey):
                counter = tf.cast(self.step_count, tf.int32)
                if self.binarize:
                    u = tf.random.stateless_uniform(tf.shape(x_grey),
                                                    seed=[self.seed, 2 * counter], alg="philox")
                    x = tf.cast(u < x_grey, tf.float32)
                else:
                    x = x_grey
                with tf.GradientTape() as tape:
                    loss = self.loss(x, tf.stack([self.seed, 2 * counter + 1]))
                grads = tape.gradient(loss, variables)
                self._adam(grads, variables)
                return loss

            self._step = step
        return self._step(x_grey)

    @property
    def weights(self):
        return self._weights


class PlainMLPVAE(_PlainVAE):
    """MLP VAE in plain TF: `data_dim -> hidden -> 2*latent`, `latent -> hidden -> data_dim`.

    Args:
      data_dim: flattened data size D (784 for 28x28x1).
      hidden: hidden widths, default (200, 200) (the IWAE paper's MLP).
      latent_dim: d.
      activation: a `tf.nn` function, default `tf.tanh`.
      learning_rate, seed, jit_compile: Adam step size, initialisation and noise
        seed, XLA compilation of the train step.
      objective, num_samples: "elbo" (one sample) or "iwae" with K = num_samples.

    Example:
      >>> ref = PlainMLPVAE(784, latent_dim=50)
      >>> loss = ref.train_step(tf.random.uniform([128, 28, 28, 1]))
    """

    def __init__(self, data_dim, hidden=(200, 200), latent_dim=50, activation=tf.tanh, **kwargs):
        super().__init__(**kwargs)
        self.data_dim, self.latent_dim, self.act = data_dim, latent_dim, activation
        seeds = iter(range(self.seed * 100, self.seed * 100 + 100))

        def mlp(sizes):
            return [(_glorot((a, b), next(seeds)), tf.Variable(tf.zeros([b])))
                    for a, b in zip(sizes[:-1], sizes[1:])]

        self.enc = mlp((data_dim,) + tuple(hidden) + (2 * latent_dim,))
        self.dec = mlp((latent_dim,) + tuple(hidden) + (data_dim,))
        self._weights = [v for layer in self.enc + self.dec for v in layer]

    def _mlp(self, layers, h):
        for i, (w, b) in enumerate(layers):
            h = tf.nn.bias_add(tf.matmul(h, w), b)
            if i < len(layers) - 1:
                h = self.act(h)
        return h

    def _encode(self, x):
        out = self._mlp(self.enc, tf.reshape(x, [-1, self.data_dim]))
        return tf.split(out, 2, axis=-1)

    def _decode(self, z):
        return self._mlp(self.dec, z)

    def copy_from_keras(self, vae):
        """Loads the weights of a `kv.VAE(MLPEncoder, MLPDecoder)` of the same sizes.

        The encoder's last Dense layer gives `[mu, raw]` in the same order as
        ours, so with the same `scale` and `min_scale` the two models compute
        the same functions (tests/test_parity_option.py).
        """
        for (w, b), layer in self._paired(vae):
            w.assign(layer.kernel.numpy())
            b.assign(layer.bias.numpy())
        return self

    def copy_to_keras(self, vae):
        """Writes these weights into `vae` (the reverse of `copy_from_keras`); returns `vae`."""
        for (w, b), layer in self._paired(vae):
            layer.kernel.assign(w.numpy())
            layer.bias.assign(b.numpy())
        return vae

    def _paired(self, vae):
        pairs = []
        for mine, part in ((self.enc, vae.encoder), (self.dec, vae.decoder)):
            theirs = list(part.dense_layers) + [part.params_layer]
            if len(mine) != len(theirs):
                raise ValueError(f"Expected {len(mine)} Dense layers. Received: {len(theirs)}")
            pairs += list(zip(mine, theirs))
        return pairs


class PlainConvVAE(_PlainVAE):
    """The Keras VAE example's conv architecture in plain TF (`tf.nn.conv2d`).

    Args:
      image_shape: (H, W, C) with H and W divisible by 4 (28x28x1).
      latent_dim: d, default 2 as in the Keras example.
      learning_rate, seed, jit_compile: as in `PlainMLPVAE`.
    """

    def __init__(self, image_shape=(28, 28, 1), latent_dim=2, **kwargs):
        super().__init__(**kwargs)
        h, w, c = image_shape
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        self.base = (h // 4, w // 4, 64)
        flat = self.base[0] * self.base[1] * 64
        s = self.seed * 100
        self.c1 = (_glorot((3, 3, c, 32), s + 1), tf.Variable(tf.zeros([32])))
        self.c2 = (_glorot((3, 3, 32, 64), s + 2), tf.Variable(tf.zeros([64])))
        self.d1 = (_glorot((flat, 16), s + 3), tf.Variable(tf.zeros([16])))
        self.d2 = (_glorot((16, 2 * latent_dim), s + 4), tf.Variable(tf.zeros([2 * latent_dim])))
        self.d3 = (_glorot((latent_dim, flat), s + 5), tf.Variable(tf.zeros([flat])))
        # conv2d_transpose filters are [kh, kw, out_channels, in_channels]
        self.t1 = (_glorot((3, 3, 64, 64), s + 6), tf.Variable(tf.zeros([64])))
        self.t2 = (_glorot((3, 3, 32, 64), s + 7), tf.Variable(tf.zeros([32])))
        self.out = (_glorot((3, 3, c, 32), s + 8), tf.Variable(tf.zeros([c])))
        self._weights = [v for pair in (self.c1, self.c2, self.d1, self.d2, self.d3, self.t1,
                                        self.t2, self.out) for v in pair]

    def _encode(self, x):
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, self.c1[0], 2, "SAME"), self.c1[1]))
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, self.c2[0], 2, "SAME"), self.c2[1]))
        h = tf.reshape(h, [tf.shape(h)[0], -1])
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, self.d1[0]), self.d1[1]))
        return tf.split(tf.nn.bias_add(tf.matmul(h, self.d2[0]), self.d2[1]), 2, axis=-1)

    def _decode(self, z):
        b = tf.shape(z)[0]
        hh, ww, c = self.image_shape
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(z, self.d3[0]), self.d3[1]))
        h = tf.reshape(h, [b, *self.base])
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d_transpose(
            h, self.t1[0], [b, hh // 2, ww // 2, 64], 2, "SAME"), self.t1[1]))
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d_transpose(
            h, self.t2[0], [b, hh, ww, 32], 2, "SAME"), self.t2[1]))
        # a stride-1 transposed conv to the logits, as the Keras example (a plain
        # conv2d to 1 channel has a ~4x slower gradient on CPU)
        h = tf.nn.bias_add(tf.nn.conv2d_transpose(h, self.out[0], [b, hh, ww, c], 1, "SAME"),
                           self.out[1])
        return tf.reshape(h, [b, -1])


def plain_dataset(x, batch_size, seed=0):
    """Shuffled batches of grey images: index shuffle + batch + gather, prefetched.

    Args:
      x: float32 array `[N, ...]` in [0, 1].
      batch_size: B (the last partial batch is dropped: static shapes).
      seed: shuffle seed.

    Returns:
      `tf.data.Dataset` of float32 `[B, ...]`, reshuffled on every iteration.
    """
    x_t = tf.constant(x)
    ds = tf.data.Dataset.range(len(x)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(lambda i: tf.gather(x_t, i), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def train_loop(model, dataset, steps=None):
    """Runs `steps` train steps over `dataset` (Python loop), or with None one pass over
    the whole (finite) dataset, its iterator run to the end; returns the last loss."""
    loss = None
    batches = dataset if steps is None else (xb for _, xb in zip(range(steps), dataset))
    for xb in batches:
        loss = model.train_step(xb)
    return float(loss)


def matmul_flops(sizes):
    """Forward multiply-add FLOPs of a chain of dense layers `sizes[0] -> ... -> sizes[-1]`."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def keras_example_vae(latent_dim=2, image_shape=(28, 28, 1)):
    """The conv VAE of Keras's official example (keras.io/examples/generative/vae), as written.

    Functional encoder and decoder, a `Sampling` layer with a `SeedGenerator`,
    a custom `train_step` with `binary_crossentropy` on sigmoid outputs; only
    the data feeding is ours (the same binarized `tf.data` batches as keras_vae).

    Returns:
      a compiled `keras.Model` (Adam, Keras defaults).
    """
    import keras
    from keras import layers, ops

    class Sampling(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            epsilon = keras.random.normal(shape=ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    h, w, c = image_shape
    inputs = keras.Input(shape=image_shape)
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    z = Sampling()([z_mean, z_log_var])
    encoder = keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")
    latent_inputs = keras.Input(shape=(latent_dim,))
    x = layers.Dense((h // 4) * (w // 4) * 64, activation="relu")(latent_inputs)
    x = layers.Reshape((h // 4, w // 4, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    outputs = layers.Conv2DTranspose(c, 3, activation="sigmoid", padding="same")(x)
    decoder = keras.Model(latent_inputs, outputs, name="decoder")

    class ExampleVAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder, self.decoder = encoder, decoder
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                z_mean, z_log_var, z = self.encoder(data)
                reconstruction = self.decoder(z)
                reconstruction_loss = ops.mean(ops.sum(
                    keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2)))
                kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
                total_loss = reconstruction_loss + ops.mean(ops.sum(kl_loss, axis=1))
            grads = tape.gradient(total_loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            return {"loss": self.total_loss_tracker.result()}

    model = ExampleVAE(encoder, decoder)
    model.compile(optimizer=keras.optimizers.Adam())
    return model
