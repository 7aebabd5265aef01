"""Short comparison (issue 16): standard prior vs VampPrior, diagonal vs IAF posterior.

`python -m benchmarks.vamp_iaf [--epochs 50] [--seeds 0 1] [--components 100] [--k 1000]`

Digits (sklearn's embedded 8x8, pixels in [0, 1], Bernoulli likelihood, 1437
train / 360 test as `kv.data.load("digits")` splits them), MLP 64-128-128-d
(tanh), d = 8, Adam 1e-3, batch 64, the same epochs for every model; test
log p(x) by `kv.log_likelihood` with K importance samples. A short budget, not
the quality table of issue 16 (Fashion-MNIST, K=5000, 100+ epochs).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ("standard+diagonal", "vamp+diagonal", "standard+iaf")


def run(model_name, x_train, x_test, epochs, seed, components, k, latent_dim=8):
    import keras

    import keras_vae as kv

    keras.utils.set_random_seed(seed)
    prior_name, posterior = model_name.split("+")
    enc = kv.MLPEncoder(latent_dim, hidden=(128, 128), activation="tanh", posterior=posterior)
    dec = kv.MLPDecoder(x_train.shape[1:], hidden=(128, 128), activation="tanh")
    prior = kv.priors.VampPrior(components, seed=seed) if prior_name == "vamp" else None
    vae = kv.VAE(enc, dec, prior=prior, seed=seed)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.time()
    vae.fit(x_train, epochs=epochs, batch_size=64, verbose=0)
    train_s = time.time() - start
    start = time.time()
    ll = kv.log_likelihood(vae, x_test, num_samples=k, batch_size=120, seed=seed).log_px
    terms = kv.evaluation.elbo_terms(vae, x_test, num_samples=1, seed=seed)
    return {"model": model_name, "seed": seed, "log_px": float(ll.mean()),
            "elbo": float(terms["elbo"].mean()), "kl": float(terms["kl"].mean()),
            "train_s": train_s, "eval_s": time.time() - start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args(argv)

    import numpy as np

    import keras_vae as kv

    (x_train, _), (x_test, _) = kv.data.load("digits")
    rows = []
    print("| model | seed | test log p(x), K=%d | test ELBO | KL | train s | eval s |" % args.k)
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for seed in args.seeds:
        for name in args.models:
            r = run(name, x_train, x_test, args.epochs, seed, args.components, args.k)
            rows.append(r)
            print(f"| {r['model']} | {seed} | {r['log_px']:.2f} | {r['elbo']:.2f} | "
                  f"{r['kl']:.2f} | {r['train_s']:.0f} | {r['eval_s']:.0f} |", flush=True)
    print("\n| model | mean test log p(x) over seeds | spread (max - min) |")
    print("| --- | --- | --- |")
    for name in args.models:
        v = np.array([r["log_px"] for r in rows if r["model"] == name])
        print(f"| {name} | {v.mean():.2f} | {v.max() - v.min():.2f} |")


if __name__ == "__main__":
    main()
