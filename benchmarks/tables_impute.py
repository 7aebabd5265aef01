"""Table round trip at benchmark size: train on a CSV (complete rows), impute 30% MCAR holes.

    PYTHONPATH=$PWD python benchmarks/tables_impute.py [--epochs 300]

scikit-learn's embedded wine table (178 x 13, no download) is written to a CSV,
split by `kv.data.load` (seed 0); a VAE is built by `build.build_model` exactly as
`keras-vae train --data wine.csv` builds it, and the held-out rows get 30% of their
entries hidden (seeded). Imputation is `runs.impute_rows` (what `keras-vae impute`
runs: today `kv.impute(method="mean")`). RMSE on the hidden entries, in units of
each column's training standard deviation, against column-mean imputation.
"""

import argparse
import os
import tempfile
import time

import numpy as np

from keras_vae import config as config_schema
from keras_vae import data
from keras_vae.build import build_model, load_table
from keras_vae.runs import impute_rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--missing", type=float, default=0.3)
    args = parser.parse_args()
    from sklearn.datasets import load_wine
    table = load_wine()
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "wine.csv")
    with open(path, "w") as f:
        f.write(",".join(n.replace("/", "_") for n in table.feature_names) + "\n")
        for row in table.data:
            f.write(",".join(repr(float(v)) for v in row) + "\n")
    config = config_schema.validate({"data": path, "latent_dim": 4, "hidden": [64, 64],
                                     "epochs": args.epochs, "batch_size": 32,
                                     "jit_compile": False})
    (x_train, _), (x_test, _) = data.load(path, seed=0)
    t = load_table(config)
    model = build_model(config, x_train.shape[1:], table=t, x_train=x_train)
    start = time.time()
    model.fit(x_train, epochs=args.epochs, batch_size=32, verbose=0)
    fit_s = time.time() - start
    rng = np.random.default_rng(0)
    hidden = rng.random(x_test.shape) < args.missing
    holes = np.where(hidden, np.nan, x_test).astype(np.float32)
    start = time.time()
    filled = impute_rows(model, holes)
    impute_s = time.time() - start
    mean, std = np.nanmean(x_train, 0), np.nanstd(x_train, 0)
    err = ((filled - x_test) / std)[hidden]
    err_mean = ((mean[None] - x_test) / std)[hidden]
    print(f"wine {x_train.shape[0]} train / {x_test.shape[0]} test rows, {hidden.sum()} hidden "
          f"entries ({args.missing:.0%} MCAR), epochs {args.epochs}")
    print(f"  VAE impute (runs.impute_rows): RMSE {np.sqrt(np.mean(err ** 2)):.3f} "
          f"(train {fit_s:.0f} s, impute {impute_s:.1f} s)")
    print(f"  column mean:                   RMSE {np.sqrt(np.mean(err_mean ** 2)):.3f}")
    assert np.array_equal(filled[~hidden], x_test[~hidden])
    print("  observed entries unchanged: yes")


if __name__ == "__main__":
    main()
