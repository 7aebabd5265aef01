"""One vs two stochastic layers, ELBO vs IWAE k=5: test log p(x) after a fixed budget (issue 16).

`python -m benchmarks.hierarchical [--data digits] [--epochs 100] [--seeds 0,1]
[--eval-samples 1000] [--eval-examples 0]`

Models (tanh, Adam 1e-3 with epsilon 1e-4, batch 128, statically binarized data,
the same epochs for every model):

```none
1 layer    kv.VAE(MLPEncoder(d1, hidden=(h1, h1)), MLPDecoder(hidden=(h1, h1)))
2 layers   kv.HierarchicalVAE(latent_dims=(d1, d2), hidden=((h1, h1), (h2, h2)))
```
with the IWAE paper's sizes on 28x28 data (d1=100, d2=50, h1=100, h2=50; the
one-layer model then gets d=50, h=200 as in the paper) and halved sizes on
digits (8x8). Each row: mean over seeds of the test log p(x) (`kv.log_likelihood`,
K = `--eval-samples`), the seed-to-seed spread (max - min), active units per
layer, and the training time.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["run", "main"]


def _models(data_shape, small, objective, k):
    import keras_vae as kv

    extra = {"objective": objective, "num_samples": k}
    if small:
        one = kv.VAE(kv.MLPEncoder(25, hidden=(100, 100), activation="tanh"),
                     kv.MLPDecoder(data_shape, hidden=(100, 100), activation="tanh"), **extra)
        two = kv.HierarchicalVAE(data_shape, latent_dims=(50, 25),
                                 hidden=((50, 50), (25, 25)), **extra)
    else:
        one = kv.VAE(kv.MLPEncoder(50, hidden=(200, 200), activation="tanh"),
                     kv.MLPDecoder(data_shape, hidden=(200, 200), activation="tanh"), **extra)
        two = kv.HierarchicalVAE(data_shape, latent_dims=(100, 50), **extra)
    return {"1 layer": one, "2 layers": two}


def run(data="digits", epochs=100, seeds=(0, 1), eval_samples=1000, eval_examples=0,
        log=print):
    """Trains every (layers, objective, seed) and returns rows of measured numbers."""
    import keras
    import numpy as np

    import keras_vae as kv

    (x_train, _), (x_test, _) = kv.data.load(data, binarize="static")
    if eval_examples:
        x_test = x_test[:eval_examples]
    small = int(np.prod(x_train.shape[1:])) < 784
    results = {}
    for seed in seeds:
        for objective, k in (("elbo", 1), ("iwae", 5)):
            keras.utils.set_random_seed(seed)
            for name, model in _models(x_train.shape[1:], small, objective, k).items():
                model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-4))
                start = time.perf_counter()
                model.fit(x_train, epochs=epochs, batch_size=128, verbose=0, shuffle=True)
                seconds = time.perf_counter() - start
                ll = kv.log_likelihood(model, x_test, num_samples=eval_samples, seed=seed).mean()
                units = kv.latent.active_units_per_layer(model, x_test)
                label = f"{name}, {'VAE (ELBO)' if objective == 'elbo' else 'IWAE k=5'}"
                results.setdefault(label, []).append((ll, units, seconds))
                log(f"  seed {seed} {label}: log p(x) {ll:.2f}, active units {units}, "
                    f"{seconds:.0f} s")
    rows = []
    for label, runs in results.items():
        lls = [r[0] for r in runs]
        rows.append({"model": label, "log_px": float(np.mean(lls)),
                     "spread": float(np.max(lls) - np.min(lls)),
                     "active_units": [r[1] for r in runs],
                     "train_seconds": float(np.mean([r[2] for r in runs]))})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--eval-examples", type=int, default=0,
                        help="first N test examples (0: all)")
    args = parser.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    rows = run(args.data, args.epochs, seeds, args.eval_samples, args.eval_examples)
    print(f"\n| model ({args.data}, {args.epochs} epochs, seeds {args.seeds}) "
          f"| test log p(x), K={args.eval_samples} | spread | active units per layer "
          "| train s |")
    print("| --- | ---: | ---: | --- | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['log_px']:.2f} | {r['spread']:.2f} | "
              f"{r['active_units']} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
