"""Training throughput: keras_vae vs plain-TF references, interleaved, same data and batch.

Every cell of the grid (architecture, batch size B, latent size d, objective)
times these contestants for the same number of steps per round:

```none
ref          PlainMLPVAE / PlainConvVAE: one tf.function step, Python loop over tf.data
ref_xla      the same step with jit_compile=True (Philox RNG)
kv_keras     kv.VAE(binarize="dynamic") + kv.data.make_dataset(drop_remainder=True) of grey
             images + model.fit, compile(jit_compile=False, steps_per_execution=1): Keras's
             defaults
kv_auto      the same with compile() defaults ("auto"), planned for a 100-pass run over
             60,000 images (vae.plan_execution; what fit() itself would choose for it)
kv_spe       compile(jit_compile=False, steps_per_execution=S)          (graph)
kv_xla       compile(jit_compile=True, steps_per_execution=S)
keras_example  (conv only) the Keras VAE example's code as written, fed the same batches
<name>_pipe  (binarization_cells only) the contestant with the binarization drawn in the
             tf.data pipeline (make_dataset(binarize="dynamic")) instead of in the step
```

Data: dynamically binarized Fashion-MNIST training images (28x28x1); the
references and keras_vae (`VAE(binarize="dynamic")`, issue 17) binarize inside
the step; the keras_example contestant gets the pipeline's binarized batches.
Examples/s = steps x B / wall time; the ratio column is the median of
per-round ratios to `ref`. A round of a `fit` contestant is timed on its epoch
(an epoch-level callback; `fit`'s fixed per-call cost, which a planned
100-epoch run pays once, is reported as "fit setup s"); `ref` and the peers
are timed on their whole loop, iterator included. FLOPs per example count 3x the forward
matmul/conv multiply-adds (forward + backward); the share of the matmul
ceiling pairs each round with a `[B, 784] x [784, 200]` matmul loop timed in
the same round (so machine load affects both), median over rounds.
"""

import gc
import time

import numpy as np

from benchmarks import reference, timing

__all__ = ["mlp_grid", "conv_cells", "binarization_cells", "callback_costs", "mlp_flops",
           "conv_flops", "CONTESTANTS"]

CONTESTANTS = ("ref", "ref_xla", "kv_keras", "kv_auto", "kv_spe", "kv_xla")
PLANNED_PASSES, PLANNED_EXAMPLES = 100, 60000
HIDDEN = (200, 200)


def mlp_flops(latent_dim, data_dim=784, hidden=HIDDEN, num_samples=1):
    """Forward + backward FLOPs per example (3x forward multiply-adds) of the MLP VAE."""
    enc = reference.matmul_flops((data_dim,) + hidden + (2 * latent_dim,))
    dec = reference.matmul_flops((latent_dim,) + hidden + (data_dim,))
    return 3 * (enc + num_samples * dec)


def conv_flops(latent_dim=2):
    """Forward + backward FLOPs per example of the Keras-example conv VAE (28x28x1)."""
    enc = 2 * (14 * 14 * 9 * 1 * 32 + 7 * 7 * 9 * 32 * 64 + 3136 * 16 + 16 * 2 * latent_dim)
    # a stride-2 transposed conv costs what the conv it transposes costs (input side)
    dec = 2 * (latent_dim * 3136 + 7 * 7 * 9 * 64 * 64 + 14 * 14 * 9 * 64 * 32
               + 28 * 28 * 9 * 32 * 1)
    return 3 * (enc + dec)


def _compile(vae, jit_compile, steps_per_execution, batch):
    """jit_compile None: compile() defaults ("auto"), planned: 100 passes of batch `batch`."""
    import keras

    if jit_compile is None:
        vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        vae.plan_execution(steps_per_epoch=PLANNED_EXAMPLES // batch, epochs=PLANNED_PASSES,
                           batch_size=batch)
    else:
        vae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile,
                    steps_per_execution=steps_per_execution)
    return vae


def _kv_mlp(latent_dim, objective, num_samples, jit_compile, steps_per_execution, batch=128,
            binarize="dynamic", **options):
    import keras

    import keras_vae as kv

    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.MLPEncoder(latent_dim, hidden=HIDDEN, activation="tanh"),
                 kv.MLPDecoder((28, 28, 1), hidden=HIDDEN, activation="tanh"),
                 objective=objective, num_samples=num_samples, binarize=binarize, **options)
    return _compile(vae, jit_compile, steps_per_execution, batch)


def _kv_conv(latent_dim, jit_compile, steps_per_execution, batch=128, binarize="dynamic"):
    import keras

    import keras_vae as kv

    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.ConvEncoder(latent_dim), kv.ConvDecoder((28, 28, 1)), binarize=binarize)
    return _compile(vae, jit_compile, steps_per_execution, batch)


class _FitRunner:
    """One `fit(dataset, epochs=1)` per round over a finite dataset, timed on its epoch.

    A planned 100-epoch run pays `fit`'s fixed cost once (argument and
    first-batch checks, callbacks, the data adapter, dropping the iterator of
    the last epoch) and then only epochs, so a round's time is the wall and
    CPU time from the epoch's start (before its iterator is made, as `ref`
    makes one per round) to its end, read by an epoch-level callback (which
    keeps steps_per_execution). `setup_seconds` keeps the rest of each call,
    reported beside it.
    """

    def __init__(self, model, dataset):
        import keras

        self.model, self.dataset = model, dataset
        self.reset()
        clock = self

        class EpochClock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock._start = (time.perf_counter(), time.process_time())

            def on_epoch_end(self, epoch, logs=None):
                clock._end = (time.perf_counter(), time.process_time())

        self.callback = EpochClock()

    def __call__(self):
        start = time.perf_counter()
        history = self.model.fit(self.dataset, epochs=1, verbose=0, shuffle=False,
                                 callbacks=[self.callback])
        total = time.perf_counter() - start
        epoch = self._end[0] - self._start[0]
        self.seconds.append(epoch)
        self.cpu_seconds.append(self._end[1] - self._start[1])
        self.setup_seconds.append(total - epoch)
        return float(history.history["loss"][-1])

    def reset(self):
        self.seconds, self.cpu_seconds, self.setup_seconds = [], [], []
        return self

    def measured(self):
        return {"seconds": list(self.seconds), "cpu_seconds": list(self.cpu_seconds),
                "setup_seconds": list(self.setup_seconds)}


def _calibrate(run_one_step, seconds):
    """Steps per timed run so that `ref` takes about `seconds`."""
    import time

    run_one_step(5)  # warm
    start = time.perf_counter()
    run_one_step(20)
    per_step = (time.perf_counter() - start) / 20
    return max(10, int(seconds / per_step))


def _cell(builders, batch, x, rounds, seconds, flops, ceiling, external=None):
    """Builds, warms and times the contestants of one cell. Returns a list of row dicts.

    `external`: name -> `make(steps)` for contestants in other processes (the
    peers, `benchmarks/peers.py`): called after the warm-up with the timed
    number of steps, it returns a warmed zero-argument runner (returning the
    loss) whose `measured()` replaces the CPU time and memory measured here,
    or None when that contestant cannot run this cell. Every row also gets
    `ratio_to`: other contestant -> (median, IQR) of its per-round seconds
    over this row's (> 1: this row is faster).
    """
    import keras_vae as kv

    models = {name: build() for name, build in builders.items()}
    calibration = reference.plain_dataset(x, batch, seed=0).repeat()
    steps = _calibrate(lambda n: reference.train_loop(models["ref"], calibration, n), seconds)
    steps = min(steps, len(x) // batch)
    # A round is one epoch over the first steps x B images: finite datasets, as in a
    # planned run (kv_auto plans for 100 of them). keras_vae contestants binarize in
    # their step (grey batches); "_pipe" ones and the Keras example get batches the
    # tf.data pipeline binarized.
    x_round = x[:steps * batch]
    kv_ds = kv.data.make_dataset(x_round, batch_size=batch, drop_remainder=True, seed=0)
    pipe_ds = kv.data.make_dataset(x_round, batch_size=batch, binarize="dynamic",
                                   drop_remainder=True, seed=0)
    ref_ds = reference.plain_dataset(x_round, batch, seed=0)

    def runner(name):
        model = models[name]
        if name.startswith("ref"):
            # one pass of its Python loop, a new iterator run to the end (as every epoch)
            return lambda: reference.train_loop(model, ref_ds)
        in_graph = getattr(model, "binarize", None) == "dynamic"
        return _FitRunner(model, kv_ds if in_graph else pipe_ds)

    # Warm every contestant (tracing, XLA compilation) with one timed-size epoch.
    runners = {name: runner(name) for name in models}
    for run in runners.values():
        run()
        if hasattr(run, "reset"):
            run.reset()
    for name, make in (external or {}).items():
        run = make(steps)
        if run is not None:
            runners[name] = run
    losses = {}

    def timed(name):
        def go():
            losses[name] = runners[name]()
        return go

    ceiling_run, ceiling_flop = timing.ceiling_runner(batch, seconds=min(0.5, seconds))
    result = timing.interleave({"_ceiling": ceiling_run, **{n: timed(n) for n in runners}},
                               rounds)
    for name in runners:  # peers' own CPU/memory; fit runners' epoch-only times
        if hasattr(runners[name], "measured"):
            result[name].update(runners[name].measured())
    ceiling_gflops = ceiling_flop / np.asarray(result["_ceiling"]["seconds"]) / 1e9
    rows = []
    ref_seconds = result["ref"]["seconds"]
    for name in runners:
        secs = result[name]["seconds"]
        rate = steps * batch / float(np.median(secs))
        # share of the ceiling measured in the same round (paired), median over rounds
        share = float(np.median(steps * batch * flops / np.asarray(secs) / 1e9 / ceiling_gflops))
        ratio, iqr = timing.median_ratio(ref_seconds, secs)
        cpu = result[name]["cpu_seconds"]
        cpu_ratio, _ = timing.median_ratio(result["ref"]["cpu_seconds"], cpu)
        rows.append({
            "contestant": name, "batch": batch, "steps": steps, "rounds": rounds,
            "examples_per_s": rate, "ratio_to_ref": ratio, "ratio_iqr": iqr,
            "examples_per_cpu_s": steps * batch / float(np.median(cpu)),
            "cpu_ratio_to_ref": cpu_ratio,
            "gflops": rate * flops / 1e9, "ceiling_share": share,
            "ceiling_gflops": float(np.median(ceiling_gflops)),
            "best_ceiling_gflops": ceiling,
            "peak_mb": result[name]["peak_mb"], "growth_mb": result[name]["growth_mb"],
            "final_loss": losses.get(name),
            "setup_seconds": (float(np.median(result[name]["setup_seconds"]))
                              if "setup_seconds" in result[name] else None),
            "plan": getattr(models.get(name), "execution_plan", None),
            "ratio_to": {other: timing.median_ratio(result[other]["seconds"], secs)
                         for other in runners if other != name},
        })
    for name in runners:
        if name not in models:
            runners[name].close()
    models.clear()  # free the cell's models, datasets and iterators before the next
    runners.clear()
    gc.collect()
    return rows


def mlp_grid(x, batches=(32, 128, 512), latents=(2, 50), rounds=5, seconds=1.0,
             ceilings=None, spe=32, iwae_k=5, log=print, skip=(), external=None):
    """Times the MLP VAE over batch sizes and latent sizes (plus IWAE K at B=128, d=50).

    Args:
      x: training images `[N, 28, 28, 1]` in [0, 1].
      batches, latents: the grid.
      rounds: interleaved repetitions per cell (medians reported).
      seconds: target wall time of one timed run.
      ceilings: dict B -> GFLOP/s from `timing.matmul_ceiling` (for the share column).
      spe: steps_per_execution of the `kv_spe` and `kv_xla` contestants.
      iwae_k: K of the extra IWAE cell (0 to skip).
      log: progress printer.
      skip: contestants to leave out.
      external: cell dict (`arch`, `batch`, `latent`, `objective`, `k`) -> the
        `external` contestants of `_cell` (the peers, `benchmarks.peers`).

    Returns:
      list of row dicts (one per contestant and cell) with `arch`, `latent`,
      `objective`, `examples_per_s`, `ratio_to_ref`, `ceiling_share`, `peak_mb`, ...
    """
    cells = [(b, d, "elbo", 1) for d in latents for b in batches]
    if iwae_k:
        cells.append((128 if 128 in batches else batches[0], max(latents), "iwae", iwae_k))
    rows = []
    for batch, latent, objective, k in cells:
        log(f"  mlp B={batch} d={latent} {objective}{'' if k == 1 else f' K={k}'} ...")
        builders = {
            "ref": lambda: reference.PlainMLPVAE(784, HIDDEN, latent, objective=objective,
                                                 num_samples=k),
            "ref_xla": lambda: reference.PlainMLPVAE(784, HIDDEN, latent, objective=objective,
                                                     num_samples=k, jit_compile=True),
            "kv_keras": lambda: _kv_mlp(latent, objective, k, False, 1),
            "kv_auto": lambda: _kv_mlp(latent, objective, k, None, None, batch),
            "kv_spe": lambda: _kv_mlp(latent, objective, k, False, spe),
            "kv_xla": lambda: _kv_mlp(latent, objective, k, True, spe),
        }
        builders = {k_: v for k_, v in builders.items() if k_ not in skip}
        flops = mlp_flops(latent, num_samples=k)
        ceiling = (ceilings or {}).get(batch, np.nan)
        extra = external({"arch": "mlp", "batch": batch, "latent": latent,
                          "objective": objective, "k": k}) if external else None
        for row in _cell(builders, batch, x, rounds, seconds, flops, ceiling, extra):
            rows.append({"arch": "mlp", "latent": latent, "objective": objective,
                         "num_samples": k, **row})
    return rows


def conv_cells(x, batches=(128,), latent=2, rounds=5, seconds=1.0, ceilings=None, spe=32,
               log=print, skip=(), external=None):
    """Times the Keras-example conv VAE: keras_vae vs plain TF vs the example's own code.

    Args: as `mlp_grid`; `skip` names contestants to leave out.
    """
    rows = []
    for batch in batches:
        log(f"  conv B={batch} d={latent} ...")
        builders = {
            "ref": lambda: reference.PlainConvVAE((28, 28, 1), latent),
            "ref_xla": lambda: reference.PlainConvVAE((28, 28, 1), latent, jit_compile=True),
            "keras_example": lambda: reference.keras_example_vae(latent),
            "kv_keras": lambda: _kv_conv(latent, False, 1),
            "kv_auto": lambda: _kv_conv(latent, None, None, batch),
            "kv_spe": lambda: _kv_conv(latent, False, spe),
            "kv_xla": lambda: _kv_conv(latent, True, spe),
        }
        builders = {k: v for k, v in builders.items() if k not in skip}
        ceiling = (ceilings or {}).get(batch, np.nan)
        extra = external({"arch": "conv", "batch": batch, "latent": latent,
                          "objective": "elbo", "k": 1}) if external else None
        for row in _cell(builders, batch, x, rounds, seconds, conv_flops(latent), ceiling,
                         extra):
            rows.append({"arch": "conv", "latent": latent, "objective": "elbo",
                         "num_samples": 1, **row})
    return rows


def binarization_cells(x, cells=((512, 50), (128, 50)), rounds=7, seconds=1.0, spe=32,
                       ceilings=None, log=print):
    """Dynamic binarization in the step (`VAE(binarize="dynamic")`) vs in the tf.data
    pipeline (`make_dataset(binarize="dynamic")`), interleaved in the same rounds.

    Contestants per cell (B, d): ref, ref_xla, kv_auto, kv_spe, kv_xla (in the step)
    and kv_auto_pipe, kv_spe_pipe, kv_xla_pipe (the pipeline, as before issue 17).

    Returns:
      list of row dicts as `mlp_grid`'s.
    """
    rows = []
    for batch, latent in cells:
        log(f"  binarization mlp B={batch} d={latent} ...")
        builders = {
            "ref": lambda: reference.PlainMLPVAE(784, HIDDEN, latent),
            "ref_xla": lambda: reference.PlainMLPVAE(784, HIDDEN, latent, jit_compile=True),
        }
        for suffix, binarize in (("", "dynamic"), ("_pipe", None)):
            builders.update({
                f"kv_auto{suffix}": lambda b=binarize: _kv_mlp(latent, "elbo", 1, None, None,
                                                               batch, binarize=b),
                f"kv_spe{suffix}": lambda b=binarize: _kv_mlp(latent, "elbo", 1, False, spe,
                                                              binarize=b),
                f"kv_xla{suffix}": lambda b=binarize: _kv_mlp(latent, "elbo", 1, True, spe,
                                                              binarize=b),
            })
        ceiling = (ceilings or {}).get(batch, np.nan)
        for row in _cell(builders, batch, x, rounds, seconds, mlp_flops(latent), ceiling):
            rows.append({"arch": "mlp", "latent": latent, "objective": "elbo",
                         "num_samples": 1, **row})
    return rows


def callback_costs(x, batch=128, examples=30000, latent=50, rounds=7, log=print):
    """Epoch wall time of `fit` with callbacks vs without, keras_vae's compile() defaults.

    Each contestant is one model fitting one epoch of `examples // batch` steps per
    timed run (the "auto" plan: graph, up to 32 steps per call, unless a callback
    forces one), interleaved round by round:

    ```none
    none              no callbacks
    empty_batch_hook  LambdaCallback(on_train_batch_end=<nothing>): one step per call
    klwarmup          KLWarmup(steps) callback: one step per call (before issue 17)
    warmup_in_graph   VAE(warmup_steps=steps): the schedule in the step
    tensorboard_spe1  TensorBoard(update_freq="epoch") with steps_per_execution=1 (what
                      the auto plan chose for it before issue 17)
    tensorboard       TensorBoard(update_freq="epoch") under the auto plan (issue 17)
    ```

    Returns:
      dict name -> {"seconds": median epoch seconds, "ratio": median of per-round
      time / none's time, "iqr": its interquartile range, "spe": steps per call}.
    """
    import tempfile
    import warnings

    import keras

    import keras_vae as kv
    from benchmarks import timing

    x = x[:examples // batch * batch]
    steps = len(x) // batch
    logdir = tempfile.mkdtemp(prefix="kv_tb_")

    def model(spe="auto", **options):
        vae = _kv_mlp(latent, "elbo", 1, False, spe, binarize="dynamic", **options)
        if spe == "auto":
            vae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
        return vae

    empty = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    contestants = {
        "none": (model(), []),
        "empty_batch_hook": (model(), [empty]),
        "klwarmup": (model(), [kv.KLWarmup(10 * steps)]),
        "warmup_in_graph": (model(warmup_steps=10 * steps), []),
        "tensorboard_spe1": (model(spe=1), [keras.callbacks.TensorBoard(
            f"{logdir}/a", update_freq="epoch")]),
        "tensorboard": (model(), [keras.callbacks.TensorBoard(f"{logdir}/b",
                                                              update_freq="epoch")]),
    }

    def runner(name):
        vae, callbacks = contestants[name]

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the one-step-per-call notice, on purpose
                vae.fit(x, epochs=1, batch_size=batch, shuffle=False, verbose=0,
                        callbacks=callbacks)
        return run

    runners = {name: runner(name) for name in contestants}
    log(f"  callbacks: {steps} steps of B={batch} per epoch ...")
    for run in runners.values():  # trace
        run()
    result = timing.interleave(runners, rounds)
    out = {}
    for name, (vae, _) in contestants.items():
        ratio, iqr = timing.median_ratio(result[name]["seconds"], result["none"]["seconds"])
        out[name] = {"seconds": float(np.median(result[name]["seconds"])), "ratio": ratio,
                     "iqr": iqr, "spe": int(vae.steps_per_execution)}
    return out


def _binarization_table(rows):
    cells = {}
    for row in rows:
        cells.setdefault((row["batch"], row["latent"]), {})[row["contestant"]] = row
    lines = ["| B | d | ref ex/s | ref_xla | kv_auto (step / pipeline) | kv_spe (step / pipeline)"
             " | kv_xla (step / pipeline) | best kv / best ref (step) | best kv / best ref "
             "(pipeline) | best kv share of ceiling (step) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (batch, latent), c in cells.items():
        best_ref = max(c["ref"]["ratio_to_ref"], c["ref_xla"]["ratio_to_ref"])

        def pair(name):
            a, b = c[name], c[f"{name}_pipe"]
            return (f"{a['ratio_to_ref']:.2f} ± {a['ratio_iqr'] / 2:.2f} / "
                    f"{b['ratio_to_ref']:.2f} ± {b['ratio_iqr'] / 2:.2f}")

        step = max((c[n] for n in ("kv_auto", "kv_spe", "kv_xla")),
                   key=lambda r: r["ratio_to_ref"])
        pipe = max((c[n] for n in ("kv_auto_pipe", "kv_spe_pipe", "kv_xla_pipe")),
                   key=lambda r: r["ratio_to_ref"])
        lines.append(
            f"| {batch} | {latent} | {c['ref']['examples_per_s']:,.0f} | "
            f"{c['ref_xla']['ratio_to_ref']:.2f} | {pair('kv_auto')} | {pair('kv_spe')} | "
            f"{pair('kv_xla')} | {step['contestant']} {step['ratio_to_ref'] / best_ref:.2f} | "
            f"{pipe['contestant']} {pipe['ratio_to_ref'] / best_ref:.2f} | "
            f"{100 * step['ceiling_share']:.0f}% |")
    return "\n".join(lines)


def _callback_table(costs):
    lines = ["| callbacks | steps per call | epoch s (median) | time / none (± IQR/2) |",
             "| --- | --- | --- | --- |"]
    for name, c in costs.items():
        lines.append(f"| {name} | {c['spe']} | {c['seconds']:.2f} | "
                     f"{c['ratio']:.2f} ± {c['iqr'] / 2:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    """`python -m benchmarks.throughput gaps`: the issue-17 cells (binarization in the step
    vs the pipeline; callback costs), printed as Markdown with the run's conditions.

    `python -m benchmarks.throughput conv --rounds 12 --seconds 3`: the conv cell alone
    (B=128, d=2; ref, ref_xla and kv_auto), with more and longer rounds than the grid
    can afford: the cell where one epoch of 1 s holds only a few steps."""
    import argparse

    import keras_vae as kv
    from benchmarks import timing

    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput")
    p.add_argument("what", choices=("gaps", "binarization", "callbacks", "conv"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--spe", type=int, default=32)
    args = p.parse_args(argv)
    env = timing.environment()
    (x, _), _ = kv.data.load("fashion_mnist")
    if args.what in ("gaps", "binarization"):
        ceilings = timing.matmul_ceiling((128, 512), seconds=1.0)
        rows = binarization_cells(x, rounds=args.rounds, seconds=args.seconds, spe=args.spe,
                                  ceilings=ceilings)
        print("\n" + _binarization_table(rows), flush=True)
    if args.what == "conv":
        from benchmarks import report

        ceilings = timing.matmul_ceiling((128,), seconds=1.0)
        rows = conv_cells(x, (128,), 2, args.rounds, args.seconds, ceilings, args.spe,
                          skip=("keras_example", "kv_keras", "kv_spe", "kv_xla"))
        print("\n" + report.throughput_tables(rows, ceilings), flush=True)
    if args.what in ("gaps", "callbacks"):
        print("\n" + _callback_table(callback_costs(x, rounds=args.rounds)), flush=True)
    end = timing.environment()
    print(f"\n{env['date']} to {end['date']}, commit {env['commit']}, {env['cpu']}, "
          f"load average {env['load_average']} at the start, {end['load_average']} at the end; "
          f"{env['versions']}; `python -m benchmarks.throughput {' '.join(argv or [])}`".rstrip())


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
