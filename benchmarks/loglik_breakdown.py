"""Where the time of `kv.log_likelihood` (K=5000) goes, piece by piece (issue 17).

`python -m benchmarks.loglik_breakdown [--n 100] [--k 5000] [--rounds 3]`

The MLP VAE 784-200-200-50 (tanh, Bernoulli; freshly initialised: the weights do
not change the work), N binarized Fashion-MNIST test images, K samples in the
estimator's own chunks (C = 53 at B = 100). Each line is one `tf.function`
running the same `K / C` chunk loop with only some of the work (best of
`--rounds`):

```none
full                 kv.log_likelihood's own batch function (estimators._log_px_function)
full, general log p(x|z)  the same with p(x|z).log_prob(x) (a decoder without the
                     fast path `event_log_prob`)
matmuls              the decoder's three matmuls + tanh on [C x B, 50] latents
decoder + log p(x|z) the model's decoder and its p(x|z).log_prob(x) (the estimator's work
                     without the draws and log q, log p(z))
decoder + fast log p(x|z)  the same through `access.decode_log_prob` (MLPDecoder's
                     Bernoulli fast path: sum_d x_d l_d over the 200 features)
matmuls + TFP Bernoulli log-prob   the same from the bare matmuls
matmuls + softplus   the same with softplus(logits) only (the part of log p(x|z) no
                     rewriting removes: one softplus per logit)
..., XLA             decoder + log p(x|z) compiled with XLA (jit_compile=True) inside the
                     graph-mode loop
draws (map_fn)       one stateless_normal per sample in tf.map_fn (the estimator's draws
                     before `heads.indexed_normal`)
draws (one per chunk) the estimator's draws now: `reparameterized_sample(q, C, seed,
                     first_sample=j C)`, one op per chunk, still chunk-size-free
```
"""

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["breakdown", "main"]


def breakdown(n=100, k=5000, rounds=3, log=print):
    """Returns {piece: seconds} for N images and K samples (see the module docstring)."""
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    import keras_vae as kv
    from keras_vae import estimators
    from keras_vae.access import encode
    from keras_vae.distributions import reparameterized_sample

    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.MLPEncoder(50, hidden=(200, 200), activation="tanh"),
                 kv.MLPDecoder((28, 28, 1), hidden=(200, 200), activation="tanh"))
    (_, _), (x_test, _) = kv.data.load("fashion_mnist")
    x = kv.data.binarize_static(x_test[:n], seed=1).astype("float32")
    vae(x[:1])
    chunk = estimators.resolve_chunk_size(None, k, n, 784)
    chunks = math.ceil(k / chunk)
    layers = [(d.kernel, d.bias) for d in list(vae.decoder.dense_layers)
              + [vae.decoder.params_layer]]
    x5 = tf.reshape(tf.constant(x), [1, n, 28, 28, 1])
    z = tf.random.normal([chunk * n, 50])
    seed = tf.constant([0, 1], tf.int32)

    def logits_of(z):
        h = z
        for i, (w, b) in enumerate(layers):
            h = tf.matmul(h, w) + b
            h = tf.tanh(h) if i < len(layers) - 1 else h
        return tf.reshape(h, [chunk, n, 28, 28, 1])

    def decoded_log_prob(z):  # what the estimator computes: the model's p(x|z) at x
        return kv.access.decode(vae, tf.reshape(z, [chunk, n, 50])).log_prob(x5)

    def bernoulli(logits):  # TFP's Bernoulli on the same logits
        return tfp.distributions.Independent(tfp.distributions.Bernoulli(logits=logits),
                                             3).log_prob(x5)

    decoded_log_prob_xla = tf.function(decoded_log_prob, jit_compile=True)

    def loop(piece):
        @tf.function
        def run(z):
            def body(j, acc):
                return j + 1, acc + tf.reduce_sum(piece(z, j))
            return tf.while_loop(lambda j, _: j < chunks, body, (0, 0.0))[1]
        return run

    q = None

    def draws_map_fn(_, j):
        def draw(i):
            return reparameterized_sample(q, 1, tf.random.experimental.stateless_fold_in(
                seed, i))[0]
        return tf.map_fn(draw, j * chunk + tf.range(chunk), fn_output_signature=tf.float32,
                         parallel_iterations=16)

    def draws_block(_, j):
        return reparameterized_sample(q, chunk, seed, first_sample=j * chunk)

    class General:  # the same model behind a decoder without `event_log_prob`
        encoder, prior = vae.encoder, vae.prior
        decoder = staticmethod(lambda z: vae.decoder(z, training=False))

    q = encode(vae, tf.constant(x))
    full = estimators._log_px_function(lambda: vae, (28, 28, 1), k, chunk)
    general = estimators._log_px_function(lambda: General, (28, 28, 1), k, chunk)
    pieces = {
        "full": lambda: full(x, seed),
        "full, general log p(x|z)": lambda: general(x, seed),
        "matmuls": loop(lambda z, j: logits_of(z)[..., :1]),
        "decoder + log p(x|z)": loop(lambda z, j: decoded_log_prob(z)),
        "decoder + fast log p(x|z)": loop(lambda z, j: kv.access.decode_log_prob(
            vae, tf.reshape(z, [chunk, n, 50]), x5[0])),
        "matmuls + TFP Bernoulli log-prob": loop(lambda z, j: bernoulli(logits_of(z))),
        "matmuls + softplus": loop(lambda z, j: tf.nn.softplus(logits_of(z))),
        "decoder + log p(x|z), XLA": loop(lambda z, j: decoded_log_prob_xla(z)),
        "draws (map_fn)": loop(draws_map_fn),
        "draws (one per chunk)": loop(draws_block),
    }
    out = {}
    for name, fn in pieces.items():
        call = fn if name.startswith("full") else (lambda fn=fn: fn(z))
        np.asarray(call())  # trace
        best = math.inf
        for _ in range(rounds):
            start = time.perf_counter()
            np.asarray(call())
            best = min(best, time.perf_counter() - start)
        out[name] = best
        log(f"  {name}: {best:.2f} s")
    flops = k * n * 2 * sum(int(np.prod(w.shape)) for w, _ in layers)
    out["decoder GFLOP"] = flops / 1e9
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loglik_breakdown",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    out = breakdown(args.n, args.k, args.rounds)
    gflop = out.pop("decoder GFLOP")
    print(f"\n{args.n} images, K={args.k}: decoder matmuls {gflop:.1f} GFLOP; "
          f"matmuls alone at {gflop / out['matmuls']:.0f} GFLOP/s")
    print("| piece | seconds | share of full |\n| --- | ---: | ---: |")
    for name, seconds in out.items():
        print(f"| {name} | {seconds:.2f} | {seconds / out['full']:.0%} |")


if __name__ == "__main__":
    main()
