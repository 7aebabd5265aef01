"""Conditional VAE and semi-supervised M2: are samples the asked class, and what do few labels buy?

Two measurements, on digits (embedded, 1,497 train / 300 test 8x8 images) and
Fashion-MNIST (60,000 / 10,000 28x28 images), run by `python -m benchmarks conditional`:

1. `fidelity`: a `kv.ConditionalVAE` is trained on all training images with
   their labels; a judge, a Keras MLP (one hidden layer of 256 ReLU units)
   trained on the *real* training images (early stopping on a 10% split of
   them), labels `sample(100, y=c)` for every class c, both the likelihood
   means and Bernoulli draws. Reported: the share labelled c per class, and
   the judge's own accuracy on the real test images.
2. `m2`: `kv.SemiSupervisedVAE` (M2, Kingma et al. 2014) with 100 and 1,000
   labels (balanced per class, `keras_vae.build.label_subset`, one subset per
   seed), 3 seeds, against (i) the same classifier architecture (Dense 256
   ReLU -> 10) trained only on the labelled examples (scikit-learn
   `MLPClassifier`, 500 iterations) and (ii) M1: an unsupervised `kv.VAE`
   of the same encoder/decoder, trained on the same pool for the same number
   of passes, then 3-NN and logistic regression on the posterior means of
   the labelled examples, and (iii) M1+M2 (the paper's best): M2 trained on
   those posterior means of the whole pool, Gaussian likelihood (learned
   scale) on the codes, the same label stream and alpha. Test accuracy on
   the full test split.

`run(parts=...)` runs "cvae" (1.) and/or "m2" (2.), each its own section of
benchmarks/RESULTS.md ("conditional", "conditional_m2"): `--parts cvae`.

Budget (stated in the results): M2 evaluates the decoder for all 10 classes
of every example, about 10x a VAE step, so Fashion-MNIST runs on a pool of
`pool` training images (default 3,000, the labelled ones inside it), not the
60,000, for 8 passes; its CVAE (`FASHION_CVAE`) trains `CVAE_PASSES` passes over
the 60,000 (`full`: 60).
The labelled examples are repeated `r` times in the training stream
so that they are at least a fifth of the pool (else a batch of 100 holds one
of them) and `alpha = 0.1 * pool / r` (the paper's `alpha = 0.1 N`, divided
by the repetition so that the summed weight of the classification loss stays
`0.1 N` per labelled example).
"""

import math
import time

import keras
import numpy as np

__all__ = ["DATASETS", "settings", "fidelity", "m2_grid", "fidelity_table", "m2_table",
           "pictures", "run"]

DATASETS = ("digits", "fashion_mnist")
CVAE_PASSES = 30  # Fashion-MNIST CVAE passes at the default budget
# The Fashion-MNIST CVAE recipe (issue 14 follow-ups, chosen on trials with a judge
# that never saw the test split; see benchmarks/RESULTS.md): two hidden layers of
# 512, beta 8 and a latent of 4, which keep class information out of z (the decoder
# must take it from the label) and the posteriors close to the prior the samples
# come from.
FASHION_CVAE = {"cvae_hidden": (512, 512), "cvae_latent": 4, "cvae_beta": 8.0}
PARTS = ("cvae", "m2")


def settings(dataset, quick=False, m2_epochs=None, pool=None, seeds=3, full=False):
    """The training budget of one dataset (a dict, printed with the results).

    `full`: the long Fashion-MNIST CVAE (60 passes instead of CVAE_PASSES).
    """
    if dataset == "digits":
        s = {"latent": 8, "hidden": 256, "lr": 3e-3, "batch": 64, "cvae_epochs": 40,
             "cvae_hidden": (256,), "cvae_latent": 8, "cvae_beta": 1.0,
             "m2_epochs": 30, "pool": None, "labels": (100, 1000), "classifier_epochs": 200,
             "classifier_images": None, "m1m2_epochs": 50}
    else:
        s = {"latent": 16, "hidden": 256, "lr": 1e-3, "batch": 100,
             "cvae_epochs": 60 if full else CVAE_PASSES, **FASHION_CVAE,
             "m2_epochs": 8, "pool": 3000,
             "labels": (100, 1000), "classifier_epochs": 15, "classifier_images": None,
             "m1m2_epochs": 30}
    if quick:
        s.update(cvae_epochs=1, m2_epochs=1, classifier_epochs=3, classifier_images=5000,
                 pool=None if dataset == "digits" else 1200, labels=(100,), m1m2_epochs=2)
        seeds = 1
    if m2_epochs is not None:
        s["m2_epochs"] = int(m2_epochs)
    if pool is not None and dataset != "digits":
        s["pool"] = int(pool)
    s["seeds"] = tuple(range(int(seeds)))
    return s


def _flat(x):
    return np.asarray(x, "float32").reshape(len(x), -1)


def _real_classifier(x_train, y_train, epochs, seed=0):
    """The judge: Keras MLP (Dense 256 ReLU -> 10) on the real training images.

    Early stopping on validation accuracy over a 10% split of the *training*
    images (patience 3, best weights kept); the test split is not seen.
    Returns `(predict, validation_accuracy, epochs_run)`, `predict(x)` the labels.
    """
    keras.utils.set_random_seed(seed)
    x = _flat(x_train)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = len(x) // 10
    val, train = order[:n_val], order[n_val:]
    net = keras.Sequential([keras.Input((x.shape[1],)),
                            keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
    net.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=3,
                                         restore_best_weights=True)
    history = net.fit(x[train], y_train[train], validation_data=(x[val], y_train[val]),
                      epochs=epochs, batch_size=128, verbose=0, callbacks=[stop])

    def predict(images):
        return np.asarray(net.predict(_flat(images), batch_size=1000, verbose=0)).argmax(1)

    return predict, max(history.history["val_accuracy"]), len(history.history["loss"])


def _networks(kv, s, shape):
    return (kv.MLPEncoder(s["latent"], hidden=(s["hidden"],)),
            kv.MLPDecoder(shape, hidden=(s["hidden"],)))


def fidelity(kv, dataset, data, s, per_class=100, log=print):
    """Trains a CVAE on all training images; returns the per-class rates dict.

    Rates are measured on the likelihood means `sample(n, y=c)` (the image a
    user looks at; "rates") and on Bernoulli draws `sample(n, y=c, mean=False)`
    ("draw_rates"), both in [0, 1] like the real images the judge saw.
    """
    (x_train, y_train), (x_test, y_test) = data
    shape = x_train.shape[1:]
    log(f"{dataset}: classifier on the real training images ...")
    n = s["classifier_images"] or len(x_train)
    predict, val_acc, judge_epochs = _real_classifier(x_train[:n], y_train[:n],
                                                      s["classifier_epochs"])
    real_acc = float(np.mean(predict(x_test) == y_test))
    log(f"{dataset}: judge validation {val_acc:.3f} test {real_acc:.3f} ({judge_epochs} epochs)")
    log(f"{dataset}: CVAE, {s['cvae_epochs']} passes over {len(x_train)} images ...")
    keras.utils.set_random_seed(0)
    cvae = kv.ConditionalVAE(kv.MLPEncoder(s["cvae_latent"], hidden=s["cvae_hidden"]),
                             kv.MLPDecoder(shape, hidden=s["cvae_hidden"]), num_classes=10,
                             beta=s["cvae_beta"], seed=0)
    cvae.compile(optimizer=keras.optimizers.Adam(s["lr"]))
    start = time.perf_counter()
    cvae.fit(x_train, y_train, epochs=s["cvae_epochs"], batch_size=s["batch"], verbose=0)
    seconds = time.perf_counter() - start
    rates, draw_rates = [], []
    for c in range(10):
        means = np.asarray(cvae.sample(per_class, y=c, seed=100 + c))
        draws = np.asarray(cvae.sample(per_class, y=c, seed=100 + c, mean=False))
        rates.append(float(np.mean(predict(means) == c)))
        draw_rates.append(float(np.mean(predict(draws) == c)))
    judged = predict(x_test)
    real_rates = [float(np.mean(judged[y_test == c] == c)) for c in range(10)]
    return {"dataset": dataset, "rates": rates, "draw_rates": draw_rates,
            "real_rates": real_rates, "beta": s["cvae_beta"],
            "real_test_accuracy": real_acc, "judge_validation_accuracy": float(val_acc),
            "epochs": s["cvae_epochs"], "train_images": len(x_train), "per_class": per_class,
            "train_seconds": seconds}


def _pool(y_train, s, seed):
    """Indices of the training pool of one seed (all images for digits)."""
    if s["pool"] is None or s["pool"] >= len(y_train):
        return np.arange(len(y_train))
    return np.sort(np.random.default_rng(1000 + seed).choice(len(y_train), s["pool"],
                                                             replace=False))


def _stream(x, labels, pool_size):
    """The M2 training set: the pool with its labelled rows repeated r times."""
    labelled = np.flatnonzero(labels >= 0)
    r = max(1, math.ceil(pool_size / 5 / len(labelled)))
    extra = np.repeat(labelled, r - 1)
    order = np.concatenate([np.arange(len(x)), extra])
    return x[order], labels[order], r


def _codes(vae, x, batch=2000):
    """Posterior means `E[q(z|x)]` of an unsupervised VAE, float32 `[N, latent]`."""
    return np.concatenate([np.asarray(vae.encode(x[i:i + batch]).mean())
                           for i in range(0, len(x), batch)]).astype("float32")


def _m1_scores(z_lab, y_lab, z_test, y_test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=3).fit(z_lab, y_lab)
    lr = LogisticRegression(max_iter=2000).fit(z_lab, y_lab)
    return (float(np.mean(knn.predict(z_test) == y_test)),
            float(np.mean(lr.predict(z_test) == y_test)))


def _m1m2(kv, z_pool, labels, z_test, y_test, s, seed):
    """M1+M2 (Kingma et al. 2014): M2 on the M1 posterior means, Gaussian likelihood.

    The M2 networks are MLPs with one hidden layer of `hidden` units, its own
    latent `latent` (as the paper's M2 on M1 codes), `likelihood="gaussian_learned"`
    on the codes; the same label stream and alpha as M2 on the images;
    `m1m2_epochs` passes (a step costs little: the codes are `latent` numbers).
    Returns `(test accuracy, seconds)`.
    """
    z_fit, y_fit, r = _stream(z_pool, labels, len(z_pool))
    m, seconds = _fit_m2(kv, lambda: (
        kv.MLPEncoder(s["latent"], hidden=(s["hidden"],)),
        kv.MLPDecoder((z_pool.shape[1],), hidden=(s["hidden"],), likelihood="gaussian_learned")),
        z_fit, y_fit, 0.1 * len(z_pool) / r, s["m1m2_epochs"], s, seed)
    return float(np.mean(m.classify(z_test).argmax(1) == y_test)), seconds


def _fit_m2(kv, networks, x_fit, y_fit, alpha, epochs, s, seed):
    """Builds M2 on `networks()` (after seeding), fits it on the seeded shuffle of
    the stream. Returns `(model, fit seconds)`."""
    keras.utils.set_random_seed(seed)
    m = kv.SemiSupervisedVAE(*networks(), num_classes=10, alpha=alpha,
                             classifier_hidden=(s["hidden"],), seed=seed)
    m.compile(optimizer=keras.optimizers.Adam(s["lr"]))
    order = np.random.default_rng(seed).permutation(len(x_fit))
    start = time.perf_counter()
    m.fit(x_fit[order], y_fit[order], epochs=epochs, batch_size=s["batch"], verbose=0)
    return m, time.perf_counter() - start


def m2_grid(kv, dataset, data, s, log=print):
    """Rows: one per (number of labels, seed) with every contestant's test accuracy."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from keras_vae.build import label_subset

    (x_train, y_train), (x_test, y_test) = data
    shape = x_train.shape[1:]
    rows = []
    m1_cache = {}
    for seed in s["seeds"]:
        idx = _pool(y_train, s, seed)
        x_pool, y_pool = x_train[idx], y_train[idx]
        if seed not in m1_cache:
            log(f"{dataset}: M1 VAE seed {seed}, {s['m2_epochs']} passes over {len(idx)} ...")
            keras.utils.set_random_seed(seed)
            vae = kv.VAE(*_networks(kv, s, shape), seed=seed)
            vae.compile(optimizer=keras.optimizers.Adam(s["lr"]))
            vae.fit(x_pool, epochs=s["m2_epochs"], batch_size=s["batch"], verbose=0)
            m1_cache[seed] = (_codes(vae, x_pool), _codes(vae, x_test))
        z_pool, z_test = m1_cache[seed]
        for n_labels in s["labels"]:
            labels = label_subset(y_pool, n_labels, 10, seed=seed)
            lab = np.flatnonzero(labels >= 0)
            x_fit, y_fit, r = _stream(x_pool, labels, len(idx))
            alpha = 0.1 * len(idx) / r
            log(f"{dataset}: M2 {n_labels} labels seed {seed} ({len(x_fit)} examples per "
                f"pass, labelled x{r}, alpha {alpha:g}) ...")
            m2, seconds = _fit_m2(kv, lambda: _networks(kv, s, shape), x_fit, y_fit, alpha,
                                  s["m2_epochs"], s, seed)
            m2_acc = float(np.mean(m2.classify(x_test).argmax(1) == y_test))
            mlp = MLPClassifier(hidden_layer_sizes=(s["hidden"],), max_iter=500,
                                random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                mlp.fit(_flat(x_pool[lab]), y_pool[lab])
            mlp_acc = float(np.mean(mlp.predict(_flat(x_test)) == y_test))
            knn_acc, lr_acc = _m1_scores(z_pool[lab], y_pool[lab], z_test, y_test)
            m1m2_acc, m1m2_seconds = _m1m2(kv, z_pool, labels, z_test, y_test, s, seed)
            row = {"dataset": dataset, "labels": n_labels, "seed": seed, "pool": len(idx),
                   "repeat": r, "alpha": alpha, "epochs": s["m2_epochs"],
                   "m2": m2_acc, "mlp": mlp_acc, "m1_knn": knn_acc, "m1_lr": lr_acc,
                   "m1m2": m1m2_acc, "m2_seconds": seconds, "m1m2_seconds": m1m2_seconds}
            log(f"  M2 {m2_acc:.3f}  MLP {mlp_acc:.3f}  M1+3NN {knn_acc:.3f}  "
                f"M1+LR {lr_acc:.3f}  M1+M2 {m1m2_acc:.3f}  ({seconds:.0f} s, "
                f"M1+M2 {m1m2_seconds:.0f} s)")
            rows.append(row)
    return rows


METHODS = (("m2", "M2"), ("mlp", "MLP, labelled only"), ("m1_knn", "M1 + 3-NN"),
           ("m1_lr", "M1 + logistic regression"), ("m1m2", "M1+M2"))


def _stats(values):
    v = np.asarray(values, "float64")
    spread = f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""
    return f"{v.mean():.3f}{spread} ({v.min():.3f}-{v.max():.3f})"


def fidelity_table(results):
    from benchmarks.report import table

    head = (["data set", "CVAE passes, beta", "images judged", "judge acc. on real test images"]
            + [f"class {c}" for c in range(10)] + ["min", "mean"])
    rows = []
    for r in results:
        for key, kind in (("rates", "samples: likelihood means"),
                          ("draw_rates", "samples: Bernoulli draws"),
                          ("real_rates", "real test images (reference)")):
            rows.append([r["dataset"], f"{r['epochs']}, {r['beta']:g}", kind,
                         f"{r['real_test_accuracy']:.3f}"]
                        + [f"{v:.2f}" for v in r[key]]
                        + [f"{min(r[key]):.2f}", f"{np.mean(r[key]):.3f}"])
    return table(head, rows)


def m2_table(rows):
    from benchmarks.report import table

    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["labels"]), []).append(r)
    head = (["data set", "labels", "pool (passes)", "seeds"]
            + [f"{name}: mean ± sd (min-max)" for _, name in METHODS]
            + ["M2 - MLP (mean)", "M2 train time / run"])
    out = []
    for (dataset, n), rs in groups.items():
        out.append([dataset, f"{n:,}", f"{rs[0]['pool']:,} ({rs[0]['epochs']})", len(rs)]
                   + [_stats([r[k] for r in rs]) for k, _ in METHODS]
                   + [f"{np.mean([r['m2'] - r['mlp'] for r in rs]):+.3f}",
                      f"{np.mean([r['m2_seconds'] for r in rs]) / 60:.1f} min"])
    return table(head, out)


def pictures(rows, out_dir):
    """`m2_accuracy_<dataset>.png` (accuracy vs number of labels) per data set; the paths."""
    import os

    from keras_vae import visualization as vz

    paths = []
    for dataset in sorted({r["dataset"] for r in rows}):
        results = {name: {} for _, name in METHODS}
        for r in rows:
            if r["dataset"] == dataset:
                for key, name in METHODS:
                    results[name].setdefault(r["labels"], []).append(r[key])
        path = os.path.join(out_dir, f"m2_accuracy_{dataset}.png")
        vz.accuracy_vs_labels(results, path=path, chance=0.1,
                              title=f"{dataset}: test accuracy vs labels")
        paths.append(path)
    return paths


def run(kv, datasets=DATASETS, quick=False, m2_epochs=None, pool=None, seeds=3,
        plot_dir=None, log=print, full=False, parts=PARTS):
    """The measurements of `parts` ("cvae" fidelity, "m2" grid) on `datasets`.

    Returns `(sections, fid, rows)`: `sections` maps the RESULTS.md section names
    ("conditional" for the CVAE, "conditional_m2" for M2) of the parts run to
    their markdown bodies.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"`parts` must be some of {', '.join(PARTS)}. Received: parts={parts!r}")
    fid, rows, cvae_budget, m2_budget = [], [], [], []
    for dataset in datasets:
        data = kv.data.load(dataset)
        s = settings(dataset, quick, m2_epochs, pool, seeds, full)
        (x_train, _), _ = data
        if "cvae" in parts:
            cvae_budget.append(
                f"- {dataset}: CVAE MLP encoder/decoder with hidden layers "
                f"{list(s['cvae_hidden'])} (tanh), latent {s['cvae_latent']}, beta "
                f"{s['cvae_beta']:g}, Bernoulli likelihood on the grey levels, Adam "
                f"{s['lr']:g}, batch {s['batch']}, {s['cvae_epochs']} passes over the "
                f"{len(x_train):,} training images; judge (Keras MLP, Dense 256 ReLU) on "
                f"{s['classifier_images'] or len(x_train):,} real training images (at most "
                f"{s['classifier_epochs']} epochs, early stopping on a 10% validation split "
                f"of them).")
            fid.append(fidelity(kv, dataset, data, s, log=log))
            log(f"{dataset}: per-class rates {[round(v, 2) for v in fid[-1]['rates']]}")
        if "m2" in parts:
            m2_budget.append(
                f"- {dataset}: M2 and M1 MLP encoder/decoder/classifier with one hidden layer "
                f"of {s['hidden']} units, latent {s['latent']}, Bernoulli likelihood on the "
                f"grey levels, Adam {s['lr']:g}, batch {s['batch']}, {s['m2_epochs']} passes "
                f"over a pool of {s['pool'] or len(x_train):,} training images; M1+M2: M2 "
                f"(same widths, latent {s['latent']}, Gaussian likelihood with learned scale) "
                f"on the M1 posterior means, {s['m1m2_epochs']} passes; seeds "
                f"{list(s['seeds'])}.")
            rows += m2_grid(kv, dataset, data, s, log=log)
    sections = {}
    if "cvae" in parts:
        sections["conditional"] = (
            "Budget:\n\n" + "\n".join(cvae_budget) + "\n\n"
            "**Conditional samples are the asked class**: share of `sample(100, y=c)` "
            "that the judge (an MLP classifier trained on the real training images, "
            "[0, 1] grey levels like the samples) labels c; the likelihood means (the "
            "image a user looks at, the headline) and Bernoulli draws "
            "(`mean=False`) of the same latents. For reference, the judge's own per-class "
            "accuracy on the real test images.\n\n" + fidelity_table(fid))
    if "m2" in parts:
        body = ("Budget:\n\n" + "\n".join(m2_budget) + "\n\n"
                "**Test accuracy with few labels** (full test split; mean ± sd over seeds, "
                "min-max in brackets). Paper anchor (MNIST, full 50,000-image pool, "
                "thousands of passes): M2 with 100 labels 88.03% (11.97% error), M1+M2 "
                "96.67% (3.33%).\n\n" + m2_table(rows))
        if plot_dir:
            paths = pictures(rows, plot_dir)
            body += "\n\nPictures: " + ", ".join(f"`{p}`" for p in paths) + "."
        sections["conditional_m2"] = body
    return sections, fid, rows
