"""One-class anomaly detection on Fashion-MNIST with a VAE (a demo, not a test: minutes).

Trains an MLP VAE on the training images of every class but one, picks the
anomaly threshold on held-out *normal* training images at a 5 % false-positive
rate, then scores the test set (normal classes vs the held-out class) and
prints ROC AUC for each score and the detection rate at the threshold, as one
JSON object.

Usage:
  python benchmarks/anomaly_fashion.py [--anomaly-class 8] [--epochs 10] [--num-samples 100]
"""

import argparse
import json
import time

import keras
import numpy as np

import keras_vae as kv
from keras_vae import applications

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anomaly-class", type=int, default=8, choices=range(10))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=100, help="K for the NLL score")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = kv.data.load("fashion_mnist", download=False)
    rng = np.random.default_rng(args.seed)
    normal = rng.permutation(np.flatnonzero(y_train != args.anomaly_class))
    x_fit, x_val = x_train[normal[:-5000]], x_train[normal[-5000:]]

    keras.utils.set_random_seed(args.seed)
    vae = kv.VAE(kv.MLPEncoder(args.latent_dim), kv.MLPDecoder((28, 28, 1)), seed=args.seed)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    vae.fit(x_fit, epochs=args.epochs, batch_size=128, verbose=0)
    train_seconds = time.perf_counter() - start

    is_anomaly = y_test == args.anomaly_class
    result = {"anomaly_class": args.anomaly_class, "anomaly_name": CLASSES[args.anomaly_class],
              "epochs": args.epochs, "train_seconds": round(train_seconds, 1),
              "num_test": int(len(x_test)), "num_anomalies": int(is_anomaly.sum())}
    for method in applications.SCORES:
        start = time.perf_counter()
        kwargs = dict(method=method, num_samples=args.num_samples, seed=args.seed)
        threshold = applications.select_threshold(
            applications.anomaly_scores(vae, x_val, **kwargs), false_positive_rate=0.05)
        scores = applications.anomaly_scores(vae, x_test, **kwargs)
        flagged = scores > threshold
        result[method] = {
            "roc_auc": round(applications.roc_auc(scores, is_anomaly), 4),
            "detection_rate_at_5pct_fpr": round(float(flagged[is_anomaly].mean()), 4),
            "test_false_positive_rate": round(float(flagged[~is_anomaly].mean()), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
