"""Imputation and one-class anomaly detection on scikit-learn's embedded tables (issue 15).

Imputation: breast cancer, wine, iris, diabetes (features only); 50% of the
entries hidden completely at random (seeded, `repetitions` times), every
table standardised with the statistics of its observed entries. RMSE on the
hidden entries (standardised units) for MIWAE (d=10, h=128, K=20,
gaussian_learned decoder, the setup of Mattei & Frellsen's notebook, trained
for `steps` Adam steps of batch 64, lr 1e-3, then importance imputation with
L=10,000), mean imputation, KNNImputer, IterativeImputer(BayesianRidge) and
IterativeImputer(ExtraTreesRegressor) (a missForest stand-in), with the wall
time of each. Published anchor: MSE 0.2867 (RMSE 0.535) for MIWAE on breast
cancer at 50% MCAR in the authors' notebook (much longer training).

Anomaly detection: breast cancer, train on benign rows (70%), score held-out
benign vs every malignant row by -log p(x) (K=1000), complete and with 20% of
the scored *and* training entries missing; ROC AUC vs IsolationForest and
OneClassSVM (both on mean-imputed rows when entries are missing).

Usage:
  python -m benchmarks imputation [--repetitions 5] [--steps 3000] [--write benchmarks/RESULTS.md]
"""

import time

import numpy as np

TABLES = ("breast_cancer", "wine", "iris", "diabetes")


def _table(name):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    data = loader()
    return data.data.astype("float32"), data.target


def _standardise(x_holes):
    mean = np.nanmean(x_holes, axis=0)
    std = np.nanstd(x_holes, axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((x_holes - mean) / std).astype("float32"), mean, std


def _mcar(x, rate, seed):
    holes = np.random.default_rng(seed).uniform(size=x.shape) < rate
    holes[holes.all(axis=1), 0] = False  # keep at least one entry per row
    out = x.copy()
    out[holes] = np.nan
    return out


def train_miwae(x_holes, steps, seed=0, latent=10, hidden=128, k=20, batch_size=64):
    import keras

    import keras_vae as kv

    keras.utils.set_random_seed(seed)
    d = x_holes.shape[1]
    model = kv.VAE(kv.MLPEncoder(latent, hidden=(hidden, hidden)),
                   kv.MLPDecoder((d,), hidden=(hidden, hidden), likelihood="gaussian_learned"),
                   objective="miwae", num_samples=k, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    per_epoch = -(-len(x_holes) // batch_size)
    model.fit(x_holes, epochs=max(1, steps // per_epoch), batch_size=batch_size, verbose=0)
    return model


def _sklearn_imputers(seed):
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
    from sklearn.linear_model import BayesianRidge

    return {
        "mean": SimpleImputer(strategy="mean"),
        "knn": KNNImputer(n_neighbors=5),
        "iterative_bayesridge": IterativeImputer(BayesianRidge(), max_iter=10,
                                                 random_state=seed),
        "iterative_extratrees": IterativeImputer(
            ExtraTreesRegressor(n_estimators=50, random_state=seed, n_jobs=1), max_iter=10,
            random_state=seed),
    }


def imputation_benchmark(repetitions=5, steps=3000, num_samples=10_000, rate=0.5, log=print):
    import keras_vae as kv

    rows = []
    for name in TABLES:
        x_raw, _ = _table(name)
        for rep in range(repetitions):
            holes = _mcar(x_raw, rate, seed=rep)
            x_holes, mean, std = _standardise(holes)
            truth = (x_raw - mean) / std
            missing = np.isnan(x_holes)
            results = {}
            for label, imputer in _sklearn_imputers(rep).items():
                t = time.perf_counter()
                filled = imputer.fit_transform(x_holes)
                results[label] = (filled, time.perf_counter() - t)
            t = time.perf_counter()
            model = train_miwae(x_holes, steps, seed=rep)
            filled = kv.impute(model, x_holes, num_samples=num_samples, method="importance",
                               seed=rep)
            results["miwae"] = (filled, time.perf_counter() - t)
            for label, (filled, seconds) in results.items():
                rmse = float(np.sqrt(np.mean((filled - truth)[missing] ** 2)))
                rows.append({"table": name, "rep": rep, "method": label, "rmse": rmse,
                             "seconds": seconds})
            log(f"{name} rep {rep}: " + ", ".join(
                f"{r['method']} {r['rmse']:.3f} ({r['seconds']:.0f} s)"
                for r in rows[-len(results):]))
    return rows


def anomaly_benchmark(steps=3000, rate=0.2, seed=0, num_samples=1000, log=print):
    from sklearn.ensemble import IsolationForest
    from sklearn.svm import OneClassSVM

    import keras_vae as kv
    from keras_vae.applications import roc_auc

    x_raw, y = _table("breast_cancer")  # target 1 = benign, 0 = malignant
    rng = np.random.default_rng(seed)
    benign = np.flatnonzero(y == 1)
    rng.shuffle(benign)
    train_idx, held = benign[:int(0.7 * len(benign))], benign[int(0.7 * len(benign)):]
    test_idx = np.r_[held, np.flatnonzero(y == 0)]
    is_anomaly = np.r_[np.zeros(len(held)), np.ones(int((y == 0).sum()))]
    rows = []
    for missing_rate in (0.0, rate):
        x = _mcar(x_raw, missing_rate, seed=seed + 1) if missing_rate else x_raw.copy()
        mean = np.nanmean(x[train_idx], axis=0)
        std = np.nanstd(x[train_idx], axis=0)
        xs = ((x - mean) / std).astype("float32")
        train, test = xs[train_idx], xs[test_idx]
        t = time.perf_counter()
        model = train_miwae(train, steps, seed=seed)
        scores = kv.anomaly_scores(model, test, num_samples=num_samples)
        rows.append({"missing": missing_rate, "method": "miwae_nll",
                     "auc": roc_auc(scores, is_anomaly), "seconds": time.perf_counter() - t})
        train_f = np.where(np.isnan(train), 0.0, train)  # mean imputation (standardised)
        test_f = np.where(np.isnan(test), 0.0, test)
        for label, est in (("isolation_forest", IsolationForest(random_state=seed)),
                           ("one_class_svm", OneClassSVM(gamma="scale", nu=0.1))):
            t = time.perf_counter()
            est.fit(train_f)
            s = -est.score_samples(test_f)
            rows.append({"missing": missing_rate, "method": label,
                         "auc": roc_auc(s, is_anomaly), "seconds": time.perf_counter() - t})
        log(f"anomaly missing={missing_rate}: " + ", ".join(
            f"{r['method']} {r['auc']:.3f} ({r['seconds']:.0f} s)" for r in rows[-3:]))
    return rows


def imputation_table(rows):
    methods = ("miwae", "mean", "knn", "iterative_bayesridge", "iterative_extratrees")
    lines = ["| table | " + " | ".join(methods) + " | best |",
             "| --- |" + " --- |" * (len(methods) + 1)]
    for name in TABLES:
        cells, means = [], {}
        for m in methods:
            vals = [r["rmse"] for r in rows if r["table"] == name and r["method"] == m]
            secs = [r["seconds"] for r in rows if r["table"] == name and r["method"] == m]
            if not vals:
                cells.append("-")
                continue
            means[m] = np.mean(vals)
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f} ({np.mean(secs):.1f} s)")
        best = min(means, key=means.get) if means else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best} |")
    return ("RMSE on the hidden entries (standardised units), mean ± std over the "
            "repetitions (wall time per fit+impute).\n\n" + "\n".join(lines))


def anomaly_table(rows):
    lines = ["| entries missing | method | ROC AUC | seconds |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['missing']:.0%} | {r['method']} | {r['auc']:.3f} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines)
