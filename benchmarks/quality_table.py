"""Issue 16's quality table: nine models (and seven diagnostic arms), one budget, resumable.

`python -m benchmarks.quality_table [--dir DIR] [--epochs 100] [--seeds 0,1]
[--arms ...] [--hours H] [--report] [--write benchmarks/RESULTS.md]`

Every model is trained on dynamically binarized Fashion-MNIST (60,000 grey
images, a fresh Bernoulli draw of every pixel at every step), batch 128, Adam
(1e-3, epsilon 1e-4), tanh, for `--epochs` passes, then evaluated by
`kv.log_likelihood` with K=5000 on all 10,000 test images binarized once
(seed 1); also the one-sample test ELBO and the active units per stochastic
layer (the IWAE paper's criterion: Var_x E_q[z_u | x] > 0.01). Arms:

```none
vae       kv.VAE(MLPEncoder(50, (200, 200), "tanh"), MLPDecoder((28, 28, 1), ...)), ELBO
vae-exp   the same with MLPEncoder(..., scale="exp", min_scale=0.0): the recipe's
          sigma = exp(raw) without a floor (the parity question of issue 16)
vae-mc    the same with analytic_kl=False: the KL as a one-sample Monte Carlo term, as
          the 2-layer models' KL of z1 must be (and as in the IWAE paper's k=1 VAE): how
          much of the 2-layer deficit is the 1-layer model's closed-form KL?
iwae5     the same, IWAE bound K=5          iwae50   K=50
vamp      the same with prior=kv.priors.VampPrior(num_components=500), ELBO
iaf       the same with MLPEncoder(..., posterior="iaf") (2 IAF steps), ELBO
hvae      kv.HierarchicalVAE((28, 28, 1), latent_dims=(100, 50)), the IWAE paper's
          x-100-100-z1(100)-50-50-z2(50), ELBO
hiwae5    the same, IWAE K=5                hiwae50  K=50
hvae-wu   hvae with warmup_steps=4680 (the KL weight rises 0 -> 1 over the first 10
          passes, in the step; Sonderby et al. 2016): does the top layer's collapse
          explain the 2-layer ELBO model's deficit at this budget?
hvae-200  hvae with hidden=((200, 200), (100, 100)): the x-path as wide as the 1-layer
          model's (the paper's 100-100 model has half its parameters): is the deficit
          the narrow x-path on Fashion-MNIST?
hvae-200-wu  hvae-200 with hvae-wu's warm-up: do the two levers add?
hiwae5-200-wu  hiwae5 with hvae-200-wu's x-path and warm-up (the warm-up weighs
          log p(z) - log q(z) in log w): the IWAE k=5 side of the question
hvae-200-fb  hvae-200 with free_bits=(0.0, 0.25): z2's KL floored at 0.25 nats per unit
          (Kingma et al., 2016), z1 not floored: does a used top layer make 2 > 1?
plain     benchmarks.reference.PlainMLPVAE(784, **RECIPE): the hand-written TF recipe
          (sigma = exp(raw), own Adam, in-step binarization), ELBO
```

Resumable: each (arm, seed) lives in DIR/ARM-sSEED/: Keras's `BackupAndRestore`
state (the plain arm: a `tf.train.Checkpoint`) after every epoch, the trained
model, the evaluation in chunks of 1,000 test images, and `result.json` when
done. Killed at any point, the same command continues where it stopped (a
partly trained epoch is trained again from its start; shuffles, binarization
and the model's noise are keyed by the epoch and step counters, so the result
is the one an uninterrupted run gives). `--hours` stops starting new work after
that long.

A finished run is also published to `--results` (default
benchmarks/quality_runs/ in the repository): `eEPOCHS/ARM-sSEED.json` (the
result) and `ARM-sSEED.log_px.npy` (float32 log p(x) of every test image, for
the paired differences). The state folder lives on one machine; the published
results are what the table is made from and what a later session (on another
machine) finds done. `--report` prints (and with `--write` stores) the table of
the published runs, after publishing any finished run of the state folder.

A run longer than a session (a k=50 arm is 2.5 hours of one core on some
machines) is carried to the next machine with `--park`: stop the runners, then
`python -m benchmarks.quality_table --park` copies the state of every unfinished
run to `--results`/eEPOCHS/parked/ARM-sSEED/ (about 5 MB for a model in
training: weights and Adam's moments), to be committed; a runner whose state
folder has no such run continues from the parked copy, and publishing the
finished run deletes it. The passes after a park run on another CPU, so the
result is the same random streams but not the same floating-point sums as an
uninterrupted run; the result's "parks" says where each part was trained.
"""

import argparse
import io
import json
import math
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

__all__ = ["ARMS", "run_job", "park", "collect", "published_table", "render", "main"]

ARMS = ("vae", "plain", "vae-exp", "vae-mc", "iaf", "vamp", "hvae", "hvae-wu", "hvae-200",
        "hvae-200-wu", "hvae-200-fb", "iwae5", "hiwae5", "hiwae5-200-wu", "iwae50", "hiwae50")
LABELS = {"vae": "1 layer, VAE (ELBO)", "iwae5": "1 layer, IWAE k=5",
          "iwae50": "1 layer, IWAE k=50", "vamp": "1 layer, VampPrior (500), ELBO",
          "iaf": "1 layer, IAF posterior (2 steps), ELBO", "hvae": "2 layers, VAE (ELBO)",
          "hvae-wu": "2 layers, VAE (ELBO), KL warm-up over 10 passes",
          "hvae-200": "2 layers, x-path 200-200 (upper 100-100), VAE (ELBO)",
          "hvae-200-wu": "2 layers, x-path 200-200, KL warm-up over 10 passes, ELBO",
          "hvae-200-fb": "2 layers, x-path 200-200, free bits 0.25 per z2 unit, ELBO",
          "hiwae5": "2 layers, IWAE k=5",
          "hiwae5-200-wu": "2 layers, IWAE k=5, x-path 200-200, KL warm-up over 10 passes",
          "hiwae50": "2 layers, IWAE k=50",
          "plain": "plain TF reference, ELBO",
          "vae-exp": "1 layer, VAE (ELBO), the recipe's sigma = exp(raw), no floor",
          "vae-mc": "1 layer, VAE (ELBO), Monte Carlo KL (analytic_kl=False)"}
BATCH, EVAL_K, EVAL_CHUNK = 128, 5000, 1000
WARMUP_PASSES = 10  # the -wu arms; 60,000 // 128 = 468 steps per pass
FREE_BITS = (0.0, 0.25)  # the -fb arms: nats per unit, z1 then z2
WIDE = ((200, 200), (100, 100))  # the -200 arms' hidden widths, x-path first
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "keras-vae", "quality-table")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quality_runs")


def _objective(arm):
    model = arm.split("-")[0]  # hiwae5-200-wu: the model hiwae5, options 200 and wu
    if model.endswith("iwae5"):
        return "iwae", 5
    if model.endswith("iwae50"):
        return "iwae", 50
    return "elbo", 1


def build_model(arm, seed):
    """The compiled keras_vae model of `arm` (not "plain")."""
    import keras

    import keras_vae as kv

    keras.utils.set_random_seed(seed)
    objective, k = _objective(arm)
    common = {"objective": objective, "num_samples": k, "seed": seed,
              "binarize": "dynamic"}  # drawn in the compiled step
    if arm.startswith("h"):
        parts = arm.split("-")[1:]  # hvae-200-wu: the options "200" and "wu"
        warmup = WARMUP_PASSES * (60000 // BATCH) if "wu" in parts else 0
        model = kv.HierarchicalVAE((28, 28, 1), latent_dims=(100, 50), activation="tanh",
                                   hidden=WIDE if "200" in parts else None,
                                   free_bits=FREE_BITS if "fb" in parts else 0.0,
                                   warmup_steps=warmup, **common)
    else:
        enc_kwargs = {"iaf": {"posterior": "iaf"},
                      "vae-exp": {"scale": "exp", "min_scale": 0.0}}.get(arm, {})
        extra = {"vamp": {"prior": kv.priors.VampPrior(num_components=500, seed=seed)},
                 "vae-mc": {"analytic_kl": False}}.get(arm, {})
        model = kv.VAE(kv.MLPEncoder(50, hidden=(200, 200), activation="tanh", **enc_kwargs),
                       kv.MLPDecoder((28, 28, 1), hidden=(200, 200), activation="tanh"),
                       **common, **extra)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-4))
    return model


def _read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def _write_json(path, value):
    from keras_vae.files import atomic_write

    atomic_write(path, json.dumps(value, indent=1))


class _EpochLog:
    """Appends (epoch, loss, seconds) to DIR/epochs.json after every epoch (kept across resumes)."""

    def __init__(self, path):
        self.path = path
        self.rows = _read_json(path, [])
        self._start = None

    def begin(self):
        self._start = time.perf_counter()

    def end(self, epoch, loss):
        self.rows = [r for r in self.rows if r["epoch"] < epoch]
        self.rows.append({"epoch": epoch, "loss": float(loss),
                          "seconds": time.perf_counter() - self._start})
        _write_json(self.path, self.rows)

    def align(self, epochs_done):
        """Makes the log agree with a backup taken after `epochs_done` epochs.

        Rows of later epochs go (they are trained again). An epoch the log lacks
        (a runner before this one wrote the backup first and could be killed
        before its log row) gets a row without a loss or time, so the pass is
        counted, not lost.
        """
        kept = {r["epoch"]: r for r in self.rows if r["epoch"] < epochs_done}
        self.rows = [kept.get(e, {"epoch": e, "loss": None, "seconds": None})
                     for e in range(epochs_done)]
        _write_json(self.path, self.rows)


def _backup_epochs(job_dir):
    """Epochs done according to Keras's `BackupAndRestore` state in `job_dir`, or None."""
    meta = _read_json(os.path.join(job_dir, "backup", "training_metadata.json"))
    return None if meta is None else int(meta["epoch"])


def _train_summary(rows):
    """The result's epochs, train seconds and loss from the epoch log (untimed rows noted)."""
    timed = [r for r in rows if r["seconds"] is not None]
    summary = {"epochs": len(rows), "train_seconds": float(sum(r["seconds"] for r in timed)),
               "train_loss": float(next(r["loss"] for r in reversed(rows)
                                        if r["loss"] is not None))}
    if len(timed) < len(rows):
        summary["untimed_passes"] = len(rows) - len(timed)
    return summary


def _train_kv(arm, seed, epochs, x_train, job_dir, log):
    import keras
    import tensorflow as tf

    import keras_vae as kv

    model = build_model(arm, seed)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    ds = kv.data.make_dataset(x_train, batch_size=BATCH, seed=seed, drop_remainder=True,
                              binarize=None if getattr(model, "binarize", None) else "dynamic",
                              epoch=epoch_var)  # grey if the step binarizes
    epoch_log = _EpochLog(os.path.join(job_dir, "epochs.json"))
    done = _backup_epochs(job_dir)
    if done is not None:
        epoch_log.align(done)

    class Log(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epoch_log.begin()

        def on_epoch_end(self, epoch, logs=None):
            epoch_log.end(epoch, logs["loss"])
            if epoch % 10 == 9 or epoch == epochs - 1:
                log(f"    {arm} seed {seed}: epoch {epoch + 1}/{epochs}, loss {logs['loss']:.2f}, "
                    f"{epoch_log.rows[-1]['seconds']:.1f} s")

    # the log is written before the backup: killed between the two, the log is one
    # epoch ahead, and that epoch is trained (and logged) again
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[Log(), kv.EpochCounter(epoch_var),
                         keras.callbacks.BackupAndRestore(os.path.join(job_dir, "backup"),
                                                          double_checkpoint=True)])
    return model, epoch_log.rows


def _train_plain(seed, epochs, x_train, job_dir, log):
    import tensorflow as tf

    import keras_vae as kv
    from benchmarks import parity, reference

    model = reference.PlainMLPVAE(784, latent_dim=50, seed=seed, **reference.RECIPE)
    ckpt = model.checkpoint()
    manager = tf.train.CheckpointManager(ckpt, os.path.join(job_dir, "plain-ckpt"), max_to_keep=2)
    epoch_log = _EpochLog(os.path.join(job_dir, "epochs.json"))
    start_epoch, per_epoch = 0, len(x_train) // BATCH
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        steps = int(model.step_count.numpy())
        if steps % per_epoch:
            raise RuntimeError(f"{job_dir}: checkpoint at step {steps}, not at the end of an "
                               f"epoch of {per_epoch} steps")
        start_epoch = steps // per_epoch
        epoch_log.align(start_epoch)  # the checkpoint is the truth (see _EpochLog.align)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    ds = kv.data.make_dataset(x_train, batch_size=BATCH, seed=seed, drop_remainder=True,
                              epoch=epoch_var)
    for epoch in range(start_epoch, epochs):
        epoch_var.assign(epoch)
        epoch_log.begin()
        losses = [model.train_step(xb) for xb in ds]
        epoch_log.end(epoch, np.mean([float(v) for v in losses]))  # the log first, as for _train_kv
        manager.save()
        if epoch % 10 == 9 or epoch == epochs - 1:
            log(f"    plain seed {seed}: epoch {epoch + 1}/{epochs}, "
                f"loss {epoch_log.rows[-1]['loss']:.2f}, {epoch_log.rows[-1]['seconds']:.1f} s")
    return parity._as_kv(model), epoch_log.rows


def _published(results_root, arm, seed):
    return os.path.join(results_root, f"{arm}-s{seed}")


def publish(job_dir, results_root, arm, seed):
    """Copies a finished run of `job_dir` to `results_root`; True if there was one to copy."""
    from keras_vae.files import atomic_write

    result = _read_json(os.path.join(job_dir, "result.json"))
    if result is None:
        return False
    os.makedirs(results_root, exist_ok=True)
    base = _published(results_root, arm, seed)
    buffer = io.BytesIO()
    np.save(buffer, np.load(os.path.join(job_dir, "log_px.npy")).astype(np.float32))
    atomic_write(base + ".log_px.npy", buffer.getvalue())
    _write_json(base + ".json", result)
    shutil.rmtree(_parked(results_root, arm, seed), ignore_errors=True)
    return True


def _parked(results_root, arm, seed):
    return os.path.join(results_root, "parked", f"{arm}-s{seed}")


def _progress(job_dir):
    """(passes trained, test chunks evaluated) of an unfinished state folder."""
    rows = _read_json(os.path.join(job_dir, "epochs.json"), [])
    chunks = [n for n in os.listdir(job_dir) if n.startswith("log_px-") and n.endswith(".npy")
              and ".tmp" not in n] if os.path.isdir(job_dir) else []
    return len(rows), len(chunks)


def park(job_dir, results_root, arm, seed, where=None):
    """Copies the state of an unfinished run to `results_root`/parked/ARM-sSEED.

    A runner on another machine whose state folder has no such run starts from
    the parked copy instead of from nothing (`run_job` copies it in). Only state
    at an epoch boundary is parked: Keras's backup (without its `.bkp` twin), or
    the plain arm's checkpoint, the epoch log, a trained model and the evaluated
    chunks, and `parks.json`: where each park happened (`where`, default this
    machine's CPU, the date and commit), which the result keeps as "parks" (its
    train_seconds then add up passes timed on different machines). Returns the
    (passes, chunks) parked, or None if there was nothing to park. Stop the
    runner first: a copy taken while it writes may be torn.
    """
    if _read_json(os.path.join(job_dir, "result.json")) is not None or not os.path.isdir(job_dir):
        return None
    passes, chunks = _progress(job_dir)
    backup = _backup_epochs(job_dir)
    if backup is not None and backup > passes:  # a runner that wrote the backup first
        raise RuntimeError(f"{job_dir}: the backup is after epoch {backup} but "
                           f"{passes} epochs are logged; let the runner log another pass, "
                           "then park")
    if backup is not None:
        passes = backup  # a log ahead of the backup: that epoch is trained again
    if passes == 0:
        return None
    if where is None:
        from benchmarks import timing

        env = timing.environment()
        where = {"date": env["date"], "commit": env["commit"], "cpu": env["cpu"]}
    history = [h for h in _read_json(os.path.join(job_dir, "parks.json"), [])
               if h["passes"] < passes or h["chunks"] < chunks]
    _write_json(os.path.join(job_dir, "parks.json"),
                history + [dict(where, passes=passes, chunks=chunks)])
    target = _parked(results_root, arm, seed)
    staging = target + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(job_dir, staging, ignore=shutil.ignore_patterns("*.bkp", "*.tmp*"))
    if backup is not None:
        _EpochLog(os.path.join(staging, "epochs.json")).align(backup)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return passes, chunks


def _unpark(job_dir, results_root, arm, seed, log):
    parked = _parked(results_root, arm, seed)
    if not os.path.isdir(parked) or _progress(job_dir)[0] > 0:
        return
    shutil.rmtree(job_dir, ignore_errors=True)
    shutil.copytree(parked, job_dir)
    passes, chunks = _progress(job_dir)
    log(f"  {arm} seed {seed}: continuing the parked run ({passes} passes trained, "
        f"{chunks} test chunks evaluated) from {parked}")


def run_job(arm, seed, epochs, x_train, x_eval, job_dir, log=print, deadline=None,
            results_root=None):
    """Trains and evaluates one (arm, seed) in `job_dir`, continuing whatever is there.

    With `results_root`, a run published there counts as done, and a run finished
    here is published there. Returns the result dict, or None if `deadline` (a
    `time.time()`) passed first.
    """
    import keras

    import keras_vae as kv

    if results_root is not None:
        done = _read_json(_published(results_root, arm, seed) + ".json")
        if done is not None:
            return done
    done = _read_json(os.path.join(job_dir, "result.json"))
    if done is not None:
        if results_root is not None:
            publish(job_dir, results_root, arm, seed)
        return done
    if results_root is not None:
        _unpark(job_dir, results_root, arm, seed, log)
    os.makedirs(job_dir, exist_ok=True)
    model_path = os.path.join(job_dir, "model.keras")
    epoch_rows = _read_json(os.path.join(job_dir, "epochs.json"), [])
    if os.path.exists(model_path):
        model = keras.models.load_model(model_path)
    else:
        log(f"  training {arm} seed {seed} for {epochs} passes"
            + (f" (resuming after epoch {len(epoch_rows)})" if epoch_rows else ""))
        if arm == "plain":
            model, epoch_rows = _train_plain(seed, epochs, x_train, job_dir, log)
        else:
            model, epoch_rows = _train_kv(arm, seed, epochs, x_train, job_dir, log)
        model.save(model_path)
    chunks = []
    for i in range(0, len(x_eval), EVAL_CHUNK):
        path = os.path.join(job_dir, f"log_px-{i // EVAL_CHUNK:02d}.npy")
        if not os.path.exists(path):
            if deadline is not None and time.time() > deadline:
                return None
            start = time.perf_counter()
            ll = kv.log_likelihood(model, x_eval[i:i + EVAL_CHUNK], num_samples=EVAL_K,
                                   batch_size=100, seed=i // EVAL_CHUNK)
            values = np.asarray(ll.log_px, dtype=np.float64)
            np.save(path + ".tmp.npy", values)
            os.replace(path + ".tmp.npy", path)
            seconds = time.perf_counter() - start
            _write_json(path[:-4] + ".json", {"seconds": seconds})
            log(f"    {arm} seed {seed}: test images {i}-{i + len(values) - 1}: "
                f"log p(x) {values.mean():.2f} ({seconds:.0f} s)")
        chunks.append(np.load(path))
    log_px = np.concatenate(chunks)
    np.save(os.path.join(job_dir, "log_px.npy"), log_px)
    terms = kv.evaluation.elbo_terms(model, x_eval, seed=0)
    units = kv.latent.active_units_per_layer(model, x_eval)
    eval_seconds = sum(_read_json(os.path.join(job_dir, f"log_px-{j:02d}.json"),
                                  {"seconds": math.nan})["seconds"]
                       for j in range(len(chunks)))
    result = {"arm": arm, "seed": seed, **_train_summary(epoch_rows),
              "test_log_px": float(log_px.mean()),
              "test_log_px_sem": float(log_px.std() / math.sqrt(len(log_px))),
              "test_elbo": float(np.mean(terms["elbo"])), "active_units": list(units),
              "eval_n": int(len(log_px)), "eval_k": EVAL_K, "eval_seconds": float(eval_seconds)}
    parks = _read_json(os.path.join(job_dir, "parks.json"), [])
    if parks:
        result["parks"] = parks
    _write_json(os.path.join(job_dir, "result.json"), result)
    if results_root is not None:
        publish(job_dir, results_root, arm, seed)
    log(f"  done {arm} seed {seed}: log p(x) {result['test_log_px']:.2f}, "
        f"active units {units}, train {result['train_seconds'] / 60:.1f} min, "
        f"eval {eval_seconds / 60:.1f} min")
    return result


def jobs(arms, seeds):
    """Cheapest arms first; both seeds of an arm before the next arm."""
    return [(arm, seed) for arm in ARMS if arm in arms for seed in seeds]


def collect(results_root, arms=ARMS, seeds=(0, 1), epochs=None):
    """The published results under `results_root` and their per-image log p(x) arrays.

    The array is None for a run whose per-image values were not kept (the first
    runs, whose state folder was lost with its machine; see their "source").
    """
    out = []
    for arm, seed in jobs(arms, seeds):
        base = _published(results_root, arm, seed)
        result = _read_json(base + ".json")
        if result is None or (epochs is not None and result["epochs"] != epochs):
            continue
        log_px = np.load(base + ".log_px.npy").astype(np.float64) \
            if os.path.exists(base + ".log_px.npy") else None
        out.append((result, log_px))
    return out


def published_table(results_root, epochs, arms=ARMS, seeds=(0, 1)):
    """`(done, markdown)`: the published runs of `results_root` (`collect`) and the table
    `--report` prints and `--write` stores (`render`, with what is pending or parked)."""
    done = collect(results_root, arms, seeds, epochs)
    finished = {(r["arm"], r["seed"]) for r, _ in done}
    pending = [j for j in jobs(arms, seeds) if j not in finished]
    parked = {job: _progress(_parked(results_root, *job)) for job in pending}
    return done, render(done, epochs, pending, parked)


def render(done, epochs, pending=(), parked=None):
    """Markdown: one row per arm (mean over seeds) and the paired differences the goals name."""
    by_arm = {}
    for result, log_px in done:
        by_arm.setdefault(result["arm"], []).append((result, log_px))
    lines = [f"{epochs} passes per model (batch 128, Adam 1e-3 with epsilon 1e-4, dynamic "
             "binarization), test log p(x) by `kv.log_likelihood` with K=5000 on all 10,000 "
             "test images (binarized once, seed 1); nats per image.", "",
             "| model | seeds | test log p(x), mean | sd over seeds | test ELBO | active units "
             "per layer (each seed) | train loss | train min (each seed) | eval min |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | ---: |"]
    for arm in ARMS:
        runs = by_arm.get(arm)
        if not runs:
            continue
        lls = [r["test_log_px"] for r, _ in runs]
        sd = float(np.std(lls, ddof=1)) if len(lls) > 1 else math.nan
        train_minutes = [r["train_seconds"] / 60 for r, _ in runs]
        lines.append(
            f"| {LABELS[arm]} | {','.join(str(r['seed']) for r, _ in runs)} | "
            f"{np.mean(lls):.2f} | {'-' if math.isnan(sd) else f'{sd:.2f}'} | "
            f"{np.mean([r['test_elbo'] for r, _ in runs]):.2f} | "
            f"{'; '.join(str(r['active_units']) for r, _ in runs)} | "
            f"{np.mean([r['train_loss'] for r, _ in runs]):.2f} | "
            f"{', '.join(f'{minutes:.0f}' for minutes in train_minutes)} | "
            f"{np.mean([r['eval_seconds'] for r, _ in runs]) / 60:.1f} |")
    comparisons = [("vae", "plain", "1-layer VAE minus the plain reference (goal: within 0.3)"),
                   ("vae-exp", "plain", "1-layer VAE, exp scale, minus the plain reference"),
                   ("vae-exp", "vae", "exp scale minus keras_vae's softplus default"),
                   ("iwae5", "vae", "IWAE k=5 minus the ELBO, 1 layer (goal: > 0)"),
                   ("iwae50", "iwae5", "IWAE k=50 minus k=5, 1 layer (goal: > 0)"),
                   ("vamp", "vae", "VampPrior minus the standard prior (goal: > 0)"),
                   ("iaf", "vae", "IAF posterior minus the diagonal one"),
                   ("vae-mc", "vae", "Monte Carlo KL minus the closed form, 1 layer, ELBO"),
                   ("hvae", "vae-mc", "2 layers minus 1, both with a Monte Carlo KL, ELBO"),
                   ("hvae", "vae", "2 layers minus 1, ELBO (goal: > 0)"),
                   ("hvae-wu", "hvae", "KL warm-up minus none, 2 layers, ELBO"),
                   ("hvae-wu", "vae", "2 layers with KL warm-up minus 1 layer, ELBO"),
                   ("hvae-200", "hvae", "x-path 200-200 minus the paper's 100-100, 2 layers, "
                    "ELBO"),
                   ("hvae-200", "vae", "2 layers with the 1-layer model's x-path minus 1 "
                    "layer, ELBO"),
                   ("hvae-200-wu", "hvae-200", "KL warm-up minus none, 2 layers, x-path "
                    "200-200, ELBO"),
                   ("hvae-200-wu", "vae", "2 layers, x-path 200-200 and KL warm-up, minus "
                    "1 layer, ELBO"),
                   ("hvae-200-fb", "hvae-200", "free bits on z2 minus none, 2 layers, x-path "
                    "200-200, ELBO"),
                   ("hvae-200-fb", "vae", "2 layers, x-path 200-200 and free bits on z2, "
                    "minus 1 layer, ELBO"),
                   ("hiwae5", "iwae5", "2 layers minus 1, IWAE k=5 (goal: > 0)"),
                   ("hiwae50", "iwae50", "2 layers minus 1, IWAE k=50 (goal: > 0)"),
                   ("hiwae5", "hvae", "IWAE k=5 minus the ELBO, 2 layers (goal: > 0)"),
                   ("hiwae50", "hiwae5", "IWAE k=50 minus k=5, 2 layers (goal: > 0)"),
                   ("hiwae5-200-wu", "iwae5", "2 layers, x-path 200-200 and KL warm-up, "
                    "minus 1 layer, IWAE k=5")]
    means = {arm: {r["seed"]: r["test_log_px"] for r, _ in runs} for arm, runs in by_arm.items()}
    rows = []
    for a, b, what in comparisons:
        pa = {r["seed"]: x for r, x in by_arm.get(a, [])}
        pb = {r["seed"]: x for r, x in by_arm.get(b, [])}
        seeds = sorted(set(pa) & set(pb))
        if not seeds:
            continue
        diffs = [means[a][s] - means[b][s] for s in seeds]  # = the mean of the paired differences
        paired = [s for s in seeds if pa[s] is not None and pb[s] is not None]
        image_se = float(np.mean([np.std(pa[s] - pb[s]) / math.sqrt(len(pa[s]))
                                  for s in paired])) if paired == seeds else math.nan
        seed_se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 \
            else math.nan
        rows.append(f"| {what} | {len(seeds)} | {np.mean(diffs):+.2f} | "
                    f"{' '.join(f'{d:+.2f}' for d in diffs)} | "
                    f"{'-' if math.isnan(seed_se) else f'{seed_se:.2f}'} | "
                    f"{'-' if math.isnan(image_se) else f'{image_se:.2f}'} |")
    if rows:
        lines += ["", "| difference | seeds | mean (nats) | per seed | s.e. (seeds) "
                  "| s.e. (images) |", "| --- | --- | ---: | --- | ---: | ---: |"] + rows
    lost = [f"{r['arm']} seed {r['seed']}" for r, x in done if x is None]
    if lost:
        lines += ["", "Per-image values not kept for " + ", ".join(lost) + " (their state folder "
                  "was lost with its machine; the numbers are from the table written then, to "
                  "0.01), so the image-level s.e. of a difference with them is not given."]
        approx = sorted({r["arm"] for r, _ in done if r.get("seed_means_only")})
        if approx:
            lines[-1] += (" For " + ", ".join(approx) + " only the means over seeds of the test "
                          "ELBO, train loss and eval minutes were kept.")
    if pending:
        def state(job):
            passes, chunks = (parked or {}).get(job, (0, 0))
            if not passes:
                return ""
            return (f" (parked after {passes} passes" + (f" and {chunks} of 10 test chunks"
                                                         if chunks else "") + ")")

        lines += ["", "Not finished yet: " + ", ".join(f"{a} seed {s}{state((a, s))}"
                                                      for a, s in pending) + "."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality_table",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"state folder (default {DEFAULT_DIR})")
    parser.add_argument("--results", default=RESULTS_DIR,
                        help=f"where finished runs are published (default {RESULTS_DIR})")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--hours", type=float, default=None,
                        help="start no new (model, seed) or evaluation chunk after this long "
                             "(a training in progress runs to its end)")
    parser.add_argument("--report", action="store_true", help="only print the table of done runs")
    parser.add_argument("--park", action="store_true",
                        help="copy the state of unfinished runs to RESULTS/eEPOCHS/parked/ (stop "
                             "the runners first), so a runner on another machine continues them")
    parser.add_argument("--write", metavar="PATH", help="also store the table in PATH")
    args = parser.parse_args(argv)
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        parser.error(f"--arms must name some of {', '.join(ARMS)}; got {args.arms!r}")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        parser.error(f"--seeds must be integers separated by commas; got {args.seeds!r}")
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1; got {args.epochs}")
    root = os.path.join(args.dir, f"e{args.epochs}")
    results_root = os.path.join(args.results, f"e{args.epochs}")
    started = time.time()
    deadline = started + 3600 * args.hours if args.hours else None

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    if args.park:
        for arm, seed in jobs(arms, seeds):
            parked = park(os.path.join(root, f"{arm}-s{seed}"), results_root, arm, seed)
            if parked:
                log(f"  parked {arm} seed {seed}: {parked[0]} passes trained, "
                    f"{parked[1]} test chunks evaluated -> {_parked(results_root, arm, seed)}")
        return 0
    if not args.report:
        import keras_vae as kv

        (x_train, _), (x_test, _) = kv.data.load("fashion_mnist")
        x_eval = kv.data.binarize_static(x_test, seed=1)
        for arm, seed in jobs(arms, seeds):
            if deadline is not None and time.time() > deadline:
                log("  --hours reached: stopping (run the same command to continue)")
                break
            run_job(arm, seed, args.epochs, x_train, x_eval,
                    os.path.join(root, f"{arm}-s{seed}"), log=log, deadline=deadline,
                    results_root=results_root)
    for arm, seed in jobs(arms, seeds):  # runs finished by an earlier runner of this machine
        if not os.path.exists(_published(results_root, arm, seed) + ".json"):
            publish(os.path.join(root, f"{arm}-s{seed}"), results_root, arm, seed)
    _, body = published_table(results_root, args.epochs, arms, seeds)
    print(body)
    if args.write:
        from benchmarks import report, timing

        env = timing.environment()
        command = (f"python -m benchmarks.quality_table --epochs {args.epochs} "
                   f"--seeds {args.seeds}" + ("" if arms == ARMS else f" --arms {args.arms}"))
        report.write_sections(args.write, {"quality-table": (
            f"### Quality table (issue 16): {args.epochs} passes\n\n{body}\n\n"
            f"Table written {env['date']} at commit {env['commit']} from the runs published "
            f"under `benchmarks/quality_runs/` (`{command.strip()}`); {env['cpu']}; "
            f"{env['versions']}.")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
