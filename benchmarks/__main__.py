"""`python -m benchmarks [SUITE ...] [--quick] [--write benchmarks/RESULTS.md]`.

`python -m benchmarks setup-peers` creates the peers' own virtualenv (torch,
jax/flax, pythae; ~/.cache/keras-vae/peers-venv or $KV_PEERS_VENV) for the
`peers` suite; nothing else needs it.

Suites (default: throughput conv loglik export; `all` adds quality and conditional):

```none
throughput  MLP 784-200-200-d VAE, keras_vae vs plain TF, B 32/128/512, d 2/50, IWAE K=5
conv        the Keras example's conv VAE: keras_vae vs plain TF vs the example's own code
loglik      kv.log_likelihood K=5000 vs its FLOP floor
export      artifact sizes, decoder latency at batch 1/256 per runtime
quality     test log p(x) after a fixed budget: ELBO vs IWAE K=5 vs IWAE K=50
conditional CVAE samples classified as the asked class; M2 accuracy with 100/1,000 labels
            vs an MLP on the labels alone and M1 (k-NN / logistic regression), digits and
            Fashion-MNIST (about 25 min; --full 60 CVAE passes; --quick about 3 min)
parity      kv.VAE vs a plain-TF implementation of the IWAE paper's recipe, ablated one
            factor at a time over seeds (benchmarks/parity.py)
imputation  sklearn tables, 50% MCAR: MIWAE vs sklearn imputers; one-class anomaly AUC
peers       the throughput cells with PyTorch (eager, torch.compile), JAX/Flax (jit) and
            Pythae's TrainingPipeline as subprocesses in the same interleaved rounds, vs
            kv_auto and the plain-TF references (needs `setup-peers`; benchmarks/peers.py)
```

Everything runs in this one process; contestants are interleaved round by
round. `--quick` (under 3 minutes) shrinks the grid and the rounds and skips
quality and conditional (unless named). Tables are printed as they finish;
`--write PATH` also replaces their sections in PATH (see `benchmarks.report.write_sections`).
"""

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SUITES = ("throughput", "conv", "loglik", "export", "quality", "conditional", "parity",
          "imputation", "peers")
DEFAULT = ("throughput", "conv", "loglik", "export")
_PEERS = ("torch", "torch_compile", "jax", "pythae")  # benchmarks.peers.PEERS, without importing


def _parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"any of {', '.join(SUITES)}, or all (default: {' '.join(DEFAULT)})")
    p.add_argument("--quick", action="store_true", help="small grid, few rounds, no quality")
    p.add_argument("--rounds", type=int, help="interleaved rounds per cell (default 12; quick 3)")
    p.add_argument("--seconds", type=float, help="wall time per timed run (default 1.0; quick 0.4)")
    p.add_argument("--spe", type=int, default=32,
                   help="steps_per_execution of kv_spe/kv_xla (the auto plan's at most)")
    p.add_argument("--loglik-n", type=int, help="test images for loglik (default 500; quick 30)")
    p.add_argument("--loglik-k", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10, help="quality: passes per model")
    p.add_argument("--eval-n", type=int, default=1000, help="quality: test images for log p(x)")
    p.add_argument("--eval-k", type=int, default=5000, help="quality: importance samples")
    p.add_argument("--schedule", choices=("short", "paper"), default="short",
                   help="quality: 'paper' is the IWAE paper's 3,280-pass schedule (days)")
    p.add_argument("--save-dir", help="quality: save the trained models here (.keras + .json)")
    p.add_argument("--load-dir", help="quality: evaluate the models saved here, no training")
    p.add_argument("--m2-epochs", type=int,
                   help="conditional: M2/M1 passes (default 30 on digits, 8 on Fashion-MNIST)")
    p.add_argument("--m2-pool", type=int,
                   help="conditional: Fashion-MNIST training images M2 sees (default 3000)")
    p.add_argument("--full", action="store_true",
                   help="conditional: 60 Fashion-MNIST CVAE passes instead of 30")
    p.add_argument("--parts", default="cvae,m2",
                   help="conditional: comma-separated parts, cvae (samples) and/or m2")
    p.add_argument("--datasets", default="digits,fashion_mnist",
                   help="conditional: comma-separated data sets")
    p.add_argument("--plot-dir",
                   help="conditional: folder of the accuracy-vs-labels pictures (default "
                   "benchmarks/; none with --quick, so a smoke run never replaces them)")
    p.add_argument("--seeds", type=int, default=3,
                   help="conditional: seeds per label count; parity: seeds 0..N-1 (interleaved)")
    p.add_argument("--arms", help="parity: comma-separated arms (default: all; see parity.py)")
    p.add_argument("--parity-epochs", type=int, default=10, help="parity: passes per arm")
    p.add_argument("--parity-eval-n", type=int, default=1000,
                   help="parity: test images for log p(x)")
    p.add_argument("--repetitions", type=int, default=5, help="imputation: MCAR masks per table")
    p.add_argument("--steps", type=int, default=3000, help="imputation: MIWAE Adam steps per fit")
    p.add_argument("--impute-l", type=int, default=10_000,
                   help="imputation: importance samples L")
    p.add_argument("--peers", default=",".join(_PEERS),
                   help="peers: comma-separated peers to run (default: all)")
    p.add_argument("--peer-threads", type=int,
                   help="peers: torch.set_num_threads in the torch peers (default: torch's)")
    p.add_argument("--batches", help="peers: comma-separated B (default 32,128,512; quick 128)")
    p.add_argument("--latents", help="peers: comma-separated d (default 2,50; quick 50)")
    p.add_argument("--no-conv", action="store_true", help="peers: leave out the conv cell")
    p.add_argument("--write", metavar="PATH", help="update these results' sections in PATH")
    return p


def _setup_peers(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks setup-peers",
                                description="Create the peers' virtualenv (torch==2.13.0 CPU "
                                "first, jax/flax/optax, pythae without deps).")
    p.add_argument("--venv", help="folder (default: $KV_PEERS_VENV or "
                   "~/.cache/keras-vae/peers-venv)")
    args = p.parse_args(argv)
    from benchmarks import peers
    try:
        peers.setup(args.venv)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"setup-peers: failed: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["setup-peers"]:
        return _setup_peers(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES + ("all",)]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r}; expected any of {', '.join(SUITES)} or all")
    suites = list(args.suites or DEFAULT)
    if "all" in suites:
        suites = list(SUITES)
    for long_suite in ("quality", "conditional", "parity", "imputation", "peers"):
        if args.quick and long_suite in suites and long_suite not in args.suites:
            suites.remove(long_suite)  # `all --quick`; named explicitly it runs its own budget
    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    if not datasets or any(d not in ("digits", "fashion_mnist") for d in datasets):
        parser.error(f"--datasets must name some of digits, fashion_mnist; got {args.datasets!r}")
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts or any(p not in ("cvae", "m2") for p in parts):
        parser.error(f"--parts must name some of cvae, m2; got {args.parts!r}")
    peer_python = None
    if "peers" in suites:
        from benchmarks import peers as peers_mod
        chosen = tuple(p.strip() for p in args.peers.split(",") if p.strip())
        if not chosen or any(p not in peers_mod.PEERS for p in chosen):
            parser.error(f"--peers must name some of {', '.join(peers_mod.PEERS)}; "
                         f"got {args.peers!r}")
        peer_python = peers_mod.venv_python()
        if peer_python is None:
            line = (f"peers: the peers virtualenv is missing at {peers_mod.venv_dir()}; "
                    "create it with `python -m benchmarks setup-peers`")
            if "peers" in args.suites:  # asked for by name: refuse
                print(f"python -m benchmarks: error: {line}", file=sys.stderr)
                return 2
            print(f"{line} (skipped)", flush=True)
            suites.remove("peers")
    elif "all" in args.suites or not args.suites:
        from benchmarks import peers as peers_mod
        if peers_mod.venv_python() is None:
            print("peers: skipped (not in these suites; it also needs "
                  "`python -m benchmarks setup-peers`)", flush=True)
    rounds = args.rounds or (3 if args.quick else 12)
    seconds = args.seconds or (0.4 if args.quick else 1.0)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])

    import keras_vae as kv
    from benchmarks import report, timing

    started = time.perf_counter()
    env = timing.environment()  # date and commit of the code that runs

    def log(message):
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)

    images = set(suites) - {"imputation"}
    (x_train, _), (x_test, _) = kv.data.load("fashion_mnist") if images else ((None, None),) * 2
    sections = {}

    def emit(name, title, body):
        text = f"### {title}\n\n{body}\n"
        print("\n" + text, flush=True)
        sections[name] = text

    if "throughput" in suites or "conv" in suites:
        from benchmarks import throughput
        batches = (32, 128, 512)
        log("measuring the matmul ceiling ...")
        ceilings = timing.matmul_ceiling(batches, seconds=0.5 if args.quick else 1.0)
        rows = []
        if "throughput" in suites:
            latents = (50,) if args.quick else (2, 50)
            # --quick keeps the references and keras_vae's default path (kv_auto): the
            # under-3-minute budget
            rows += throughput.mlp_grid(x_train, batches, latents, rounds, seconds, ceilings,
                                        args.spe, iwae_k=0 if args.quick else 5, log=log,
                                        skip=("kv_keras", "kv_spe", "kv_xla") if args.quick
                                        else ())
        if "conv" in suites:
            skip = ("ref_xla", "kv_xla", "kv_keras", "kv_spe") if args.quick else ()
            rows += throughput.conv_cells(x_train, (128,), 2, rounds, seconds, ceilings, args.spe,
                                          log=log, skip=skip)
        emit("throughput", "Training throughput (examples/s)",
             report.throughput_tables(rows, ceilings))
    if "peers" in suites:
        from benchmarks import peers as peers_mod
        from benchmarks import throughput
        try:
            batches = tuple(int(b) for b in (args.batches or ("128" if args.quick else
                                                               "32,128,512")).split(","))
            latents = tuple(int(d) for d in (args.latents or ("50" if args.quick else
                                                              "2,50")).split(","))
        except ValueError:
            parser.error("--batches and --latents must be comma-separated integers; got "
                         f"{args.batches!r}, {args.latents!r}")
        log("peers: measuring the matmul ceiling ...")
        ceilings = timing.matmul_ceiling(batches, seconds=0.5 if args.quick else 1.0)
        external, failures, close = peers_mod.peer_contestants(
            peer_python, x_train, peers=chosen, threads=args.peer_threads, log=log)
        skip = ("kv_keras", "kv_spe")  # kept: ref, ref_xla, kv_auto (the default path), kv_xla
        try:
            rows = throughput.mlp_grid(x_train, batches, latents,
                                       rounds, seconds, ceilings, args.spe,
                                       iwae_k=0 if args.quick else 5, log=log, skip=skip,
                                       external=external)
            if not args.no_conv:
                rows += throughput.conv_cells(x_train, (128,), 2, rounds, seconds, ceilings,
                                              args.spe, log=log, skip=skip + ("keras_example",),
                                              external=external)
        finally:
            close()
        env_peers = "; ".join(f"{k}: {v}" for k, v in sorted(external.versions.items()))
        emit("peers", "Peers: PyTorch, JAX/Flax and Pythae vs keras_vae",
             f"Peers' versions: {env_peers}. Load average when the table was made: "
             f"{timing.environment()['load_average']}.\n\n"
             + peers_mod.peers_table(rows, failures, args.peer_threads)
             + "\n\nAll contestants of these cells:\n\n"
             + report.throughput_tables(rows, ceilings).split("Detail:\n\n", 1)[1])
    if "loglik" in suites:
        from benchmarks import loglik, throughput
        n = args.loglik_n or (30 if args.quick else 500)
        vae = throughput._kv_mlp(50, "elbo", 1, False, 1)
        x_eval = kv.data.binarize_static(x_test[:n], seed=1)
        result = loglik.loglik_benchmark(vae, x_eval, num_samples=args.loglik_k,
                                         rounds=1 if args.quick else 3, log=log)
        emit("loglik", f"Log-likelihood evaluation (K={args.loglik_k})",
             report.loglik_table(result))
    if "export" in suites:
        from benchmarks import export_perf, quality
        log("training a model to export (1 pass) ...")
        vae, _, _ = quality.train_model(x_train[:20000] if args.quick else x_train, "elbo", 1,
                                        epochs=1)
        rows = export_perf.export_benchmark(vae, x_train, rounds=rounds,
                                            calls=10 if args.quick else 20, log=log)
        emit("export", "Export: sizes and decoder latency", report.export_table(rows))
    if "quality" in suites:
        from benchmarks import quality
        rows = quality.quality_benchmark(x_train, x_test, epochs=args.epochs, eval_n=args.eval_n,
                                         eval_k=args.eval_k, schedule=args.schedule,
                                         save_dir=args.save_dir, load_dir=args.load_dir,
                                         log=log)
        emit("quality", "Quality on dynamically binarized Fashion-MNIST",
             report.quality_table(rows))

    if "conditional" in suites:
        from benchmarks import conditional
        bodies, _, _ = conditional.run(kv, datasets, quick=args.quick,
                                       m2_epochs=args.m2_epochs, pool=args.m2_pool,
                                       seeds=args.seeds,
                                       plot_dir=args.plot_dir or (None if args.quick
                                                                  else "benchmarks"),
                                       log=log,
                                       full=args.full, parts=parts)
        titles = {"conditional": "Conditional VAE: samples are the asked class",
                  "conditional_m2": "Semi-supervised M2 and M1+M2: accuracy with few labels"}
        for name, body in bodies.items():
            emit(name, titles[name], body)

    if "parity" in suites:
        import json

        from benchmarks import parity

        def on_run(run):  # one JSON line per finished run: an interrupted run keeps its seeds
            print("parity-run " + json.dumps({k: v for k, v in run.items() if k[0] != "_"}),
                  flush=True)

        arms = tuple(args.arms.split(",")) if args.arms else parity.DEFAULT_ARMS
        runs = parity.parity_benchmark(x_train, x_test, epochs=args.parity_epochs,
                                       seeds=tuple(range(args.seeds)), arms=arms,
                                       eval_n=args.parity_eval_n, eval_k=args.eval_k, log=log,
                                       on_run=on_run)
        emit("parity", "Parity with a plain implementation of the IWAE recipe",
             report.parity_table(parity.summarize(runs), runs))

    if "imputation" in suites:
        from benchmarks import imputation
        rows = imputation.imputation_benchmark(args.repetitions, args.steps, args.impute_l,
                                               log=log)
        emit("imputation", "Imputation on sklearn tables, 50% MCAR",
             imputation.imputation_table(rows))
        rows = imputation.anomaly_benchmark(args.steps, log=log)
        emit("anomaly_tables", "One-class anomaly detection on breast cancer",
             imputation.anomaly_table(rows))

    env["load_average"] = timing.environment()["load_average"]
    minutes = (time.perf_counter() - started) / 60
    footer = report.environment_block(env, command) + f" Took {minutes:.1f} min."
    print("\n" + footer, flush=True)
    if args.write:
        for name in sections:
            sections[name] += "\n" + footer + "\n"
        report.write_sections(args.write, sections)
        print(f"updated {args.write}: {', '.join(sections)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
