"""Where keras_vae's XLA train step spends its time against `ref_xla` (issue 17).

`python -m benchmarks.step_breakdown [--batch 512] [--latent 50] [--rounds 9] [--steps 60]`

Per-step wall time of one compiled step on a fixed batch (no data pipeline,
no `fit` loop), interleaved round by round, median and range over the rounds:

```none
ref_xla                     benchmarks.reference.PlainMLPVAE, jit_compile=True (bits drawn
                            in the step)
ref_xla, bits given         the same with binarize=False on a batch binarized once
kv step                     kv.VAE(binarize="dynamic").train_step under jit_compile=True
kv step, no data guard      the same without the in-step data check: what fit() runs on arrays
                            and make_dataset datasets (validation.fully_checked); "kv step"
                            is what it runs on any other dataset
kv step, bits given         binarize=None on a batch binarized once (no draws in the step)
kv step, bits given, no guard  both
kv step, 4-D likelihood     the likelihood scored on [B, 28, 28, 1] (objectives.flat_entries
                            off: the code before the flat views of issue 17)
kv step, tf.nn.softplus     the Bernoulli log_prob with tf.nn.softplus instead of
                            likelihoods.softplus (two exps per logit for value and gradient
                            instead of one: the code before it)
```

The MLP is the throughput suite's 784-200-200-d (tanh, Bernoulli), Adam 1e-3.
The guard ablation shows what the in-step data check costs; the bits ablation
what the in-step binarization costs; "ref_xla, bits given" what the same draw
costs the reference, so the two bits ablations compare like with like.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["breakdown", "main"]


def breakdown(batch=512, latent=50, rounds=9, steps=60, log=print):
    """Returns {contestant: [ms per step, one per round]} (see the module docstring)."""
    import keras
    import tensorflow as tf

    import keras_vae as kv
    from benchmarks import reference
    from keras_vae import likelihoods, objectives

    (x_train, _), _ = kv.data.load("fashion_mnist")
    grey = tf.constant(x_train[:batch].reshape(batch, 28, 28, 1).astype("float32"))
    bits = tf.cast(tf.random.stateless_uniform(grey.shape, [1, 2]) < grey, tf.float32)

    def kv_step(binarize, x, guard=True, patch=None):
        keras.utils.set_random_seed(0)
        model = kv.VAE(kv.MLPEncoder(latent, hidden=(200, 200), activation="tanh"),
                       kv.MLPDecoder((28, 28, 1), hidden=(200, 200), activation="tanh"),
                       binarize=binarize)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
        model(x[:1])
        model.optimizer.build(model.trainable_variables)
        if not guard:  # as fit() trains on arrays and make_dataset datasets
            object.__setattr__(model, "_guard_training", False)
        step = tf.function(model.train_step, jit_compile=True)
        if patch is not None:  # traced now, with `module.name` replaced (an older code path)
            module, name, replacement = patch
            kept = getattr(module, name)
            setattr(module, name, replacement)
            try:
                step(x)
            finally:
                setattr(module, name, kept)
        return lambda: step(x)

    ref = reference.PlainMLPVAE(784, (200, 200), latent, jit_compile=True)
    ref_bits = reference.PlainMLPVAE(784, (200, 200), latent, jit_compile=True, binarize=False)
    contestants = {
        "ref_xla": lambda: ref.train_step(grey),
        "ref_xla, bits given": lambda: ref_bits.train_step(bits),
        "kv step": kv_step("dynamic", grey),
        "kv step, no data guard": kv_step("dynamic", grey, guard=False),
        "kv step, bits given": kv_step(None, bits),
        "kv step, bits given, no guard": kv_step(None, bits, guard=False),
        "kv step, 4-D likelihood": kv_step(
            "dynamic", grey, patch=(objectives, "flat_entries", lambda lik: None)),
        "kv step, tf.nn.softplus": kv_step(
            "dynamic", grey, patch=(likelihoods, "softplus", tf.nn.softplus)),
    }

    def wait(out):
        tf.nest.map_structure(lambda t: t.numpy(), out)

    for run in contestants.values():  # trace, compile, warm up
        for _ in range(5):
            wait(run())
    times = {name: [] for name in contestants}
    for r in range(rounds):
        for name, run in contestants.items():
            wait(run())
            start = time.perf_counter()
            for _ in range(steps):
                out = run()
            wait(out)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
        log(f"  round {r + 1}/{rounds}")
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_breakdown",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--latent", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    times = breakdown(args.batch, args.latent, args.rounds, args.steps)
    base = statistics.median(times["ref_xla"])
    print(f"\nB={args.batch}, d={args.latent}, {args.rounds} rounds of {args.steps} steps")
    print("| contestant | ms per step (median) | range | ref_xla / this |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | "
              f"{base / median:.2f}x |")


if __name__ == "__main__":
    main()
