"""`keras-vae`: a thin command-line front end over `keras_vae.runs`.

    keras-vae train [RUN_DIR] [--config FILE] [flags...]   train and fill a run folder
    keras-vae evaluate RUN_DIR [--num-samples K]            recompute metrics.json
    keras-vae sample RUN_DIR [-n N] [--seed S] [--label C] [--out F]    draw from the prior
    keras-vae plot RUN_DIR                                  redraw the pictures
    keras-vae export RUN_DIR --out DIR [--version N] [--tflite ...]
    keras-vae export RUN_DIR --web [--out DIR]     (the browser page; default RUN_DIR/web)
    keras-vae impute RUN_DIR --data holes.csv --out filled.csv [--multiple M]   fill a table
    keras-vae score RUN_DIR --data rows.csv --out scores.csv [--num-samples K]   anomaly scores

Errors print one line on stderr and exit with code 2 (`--debug` shows the
traceback); a run that diverged or ran out of disk space during training exits 1.
SIGINT / SIGTERM end a run as "interrupted" (resumable with `--resume`) with exit
code 130 / 143. Nothing here is imported by the library.
"""

import argparse
import contextlib
import errno
import json
import os
import shlex
import signal
import sys

__all__ = ["main"]

DEFAULT_RUN_DIR = os.path.join("runs", "digits-vae")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage dumps."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so a run ends like on Ctrl-C (status "interrupted")."""

    signal_name = "SIGTERM"


def _on_sigterm(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def stop_signals():
    """SIGTERM raises `Terminated` in the main thread (as Ctrl-C raises KeyboardInterrupt).

    A stop raised while a finaliser (`__del__`: TensorFlow's iterators, h5py's files)
    runs would only be printed by Python as "Exception ignored" and the run would go
    on; such a stop is delivered again, so it ends the run where ordinary code runs.
    Outside the main thread (signals cannot be handled there) this does nothing.
    """
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_hook = sys.unraisablehook

    def again(signum):  # a moment later, from another thread: after this hook returned
        import threading
        timer = threading.Timer(0.05, os.kill, args=(os.getpid(), signum))
        timer.daemon = True
        timer.start()

    def hook(unraisable):
        if isinstance(unraisable.exc_value, Terminated):
            again(signal.SIGTERM)
        elif (isinstance(unraisable.exc_value, KeyboardInterrupt)
              and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            again(signal.SIGINT)
        else:
            previous_hook(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


def _one_line(error):
    """The whole message of `error` on one line (its lines joined by "; ")."""
    if isinstance(error, OSError) and error.strerror:  # raised by the system, not by us
        where = f": {error.filename!r}" if error.filename else ""
        text = f"{error.strerror}{where}"
    else:
        text = str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(error).__name__


def _csv(text):
    """--tflite of export: comma-separated variants, or "none"; an empty item is refused."""
    if text.strip().lower() == "none":
        return []
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated variants such as float32,int8 (or none); received {text!r}")
    return items


def _common(parser):
    """--quiet and --debug, accepted before the subcommand and after it alike."""
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")


def _add_train(sub):
    from keras_vae import config

    p = sub.add_parser("train", help="train a model and write a run folder",
                       description="Train a VAE (or autoencoder) and write RUN_DIR: model, "
                                   "config, history, metrics, pictures and exports. With no "
                                   "arguments: an MLP VAE with a 2-D latent space on the "
                                   "embedded 8x8 digits, about a minute on 2 CPU cores.")
    p.add_argument("run_dir", nargs="?", default=DEFAULT_RUN_DIR,
                   help=f"output folder (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--config", help="JSON file with any of the config keys below (flags win)")
    config.add_arguments(p)
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=1,
                   help="train on N local worker processes (MultiWorkerMirroredStrategy on "
                        "127.0.0.1; --batch-size is the global batch); default 1")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace an existing run")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last epoch")
    _common(p)
    return p


def build_parser():
    parser = _Parser(prog="keras-vae", description="Variational autoencoders with Keras 3 + "
                     "TensorFlow Probability.")
    _common(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    p = sub.add_parser("evaluate", help="recompute RUN_DIR/metrics.json")
    _common(p)
    p.add_argument("run_dir")
    p.add_argument("--num-samples", type=int, help="importance samples K (default: the run's)")
    p = sub.add_parser("sample", help="generate examples from the prior")
    _common(p)
    p.add_argument("run_dir")
    p.add_argument("-n", "--num", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, default=None,
                   help="class of the samples (runs trained with --conditional)")
    p.add_argument("--out", help="write a .png grid or a .npy array")
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("plot", help="redraw every picture into RUN_DIR/plots")
    _common(p)
    p.add_argument("run_dir")
    p = sub.add_parser("export", help="SavedModel (TF Serving layout) + TFLite + parity report")
    _common(p)
    p.add_argument("run_dir")
    p.add_argument("--out", help="output folder (required, except with --web: RUN_DIR/web)")
    p.add_argument("--web", action="store_true",
                   help="write the browser page (LiteRT.js decoder) instead of SavedModel + "
                        "TFLite; image runs only")
    p.add_argument("--version", type=int, default=1, help="SavedModel version (default 1)")
    p.add_argument("--tflite", type=_csv,
                   help="variants, e.g. float32,int8, or none (default: the run's config)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p = sub.add_parser("impute", help="fill the missing cells of a CSV table (a table run)",
                       description="Fill the empty / NaN cells of a CSV with the same columns "
                                   "as the run's table; observed cells are kept as they are.")
    _common(p)
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="CSV with missing cells")
    p.add_argument("--out", required=True, help="CSV to write (never the input)")
    p.add_argument("--multiple", type=int, help="write M imputed copies (multiple imputation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p = sub.add_parser("score", help="anomaly scores (-log p(x), nats) of the rows of a CSV")
    _common(p)
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="CSV with the run's columns")
    p.add_argument("--out", required=True, help="CSV of row,score to write (never the input)")
    p.add_argument("--num-samples", type=int, default=100, help="importance samples K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def _run(args, verbose):
    from keras_vae import runs

    if args.command == "train":
        from keras_vae import config as config_schema

        requested = runs.requested_config(config_schema.overrides(args), args.config)
        result = runs.train(requested, args.run_dir, overwrite=args.overwrite,
                            resume=args.resume, verbose=verbose, workers=args.workers)
        m = result["metrics"]
        print(f"Finished: {args.run_dir}")
        if "log_likelihood" in m:
            print(f"  test log p(x) ~ {m['log_likelihood']:.2f} nats "
                  f"(IWAE, K={m['num_samples']}), ELBO {m['elbo']:.2f}, "
                  f"reconstruction {m['reconstruction']:.2f}, KL {m['kl']:.2f}")
        else:  # autoencoders have no prior, hence no likelihood of x
            print(f"  test reconstruction -log p(x|z) {m['reconstruction']:.2f} nats")
        web = os.path.join(args.run_dir, "web")
        if os.path.isfile(os.path.join(web, "index.html")):
            _how_to_open(web)
    elif args.command == "evaluate":
        print(json.dumps(runs.evaluate_run(args.run_dir, args.num_samples), indent=2,
                         sort_keys=True))
    elif args.command == "sample":
        samples = runs.sample_run(args.run_dir, args.num, args.seed, args.out, args.overwrite,
                                  label=args.label)
        print(f"{len(samples)} samples of shape {samples.shape[1:]}"
              + (f" written to {args.out}" if args.out else ""))
    elif args.command == "plot":
        for path in runs.plot_run(args.run_dir):
            print(path)
    elif args.command == "impute":
        filled = runs.impute_run(args.run_dir, args.data, args.out, multiple=args.multiple,
                                 overwrite=args.overwrite, seed=args.seed)
        copies = f"{args.multiple} imputed copies of " if args.multiple else ""
        print(f"{copies}{filled.shape[-2]} rows written to {args.out}")
    elif args.command == "score":
        scores = runs.score_run(args.run_dir, args.data, args.out, args.num_samples,
                                overwrite=args.overwrite, seed=args.seed)
        print(f"{len(scores)} scores (-log p(x), nats) written to {args.out}")
    elif args.command == "export" and args.web:
        if args.tflite is not None or args.version != 1:
            raise ValueError("--web writes the browser page (one float32 decoder); --tflite "
                             "and --version apply to the SavedModel + TFLite export. Received: "
                             f"--web with tflite={args.tflite!r}, version={args.version!r}")
        index = runs.export_run(args.run_dir, args.out, overwrite=args.overwrite, web=True)
        print(f"Web page written to {os.path.dirname(index)}")
        _how_to_open(os.path.dirname(index))
    elif args.command == "export":
        if args.out is None:
            raise ValueError("`keras-vae export` needs --out DIR (the export folder), or "
                             "--web for the browser page. Received: out=None")
        report = runs.export_run(args.run_dir, args.out, args.version, args.tflite,
                                 args.overwrite)
        print(f"Exported to {args.out}")
        print(json.dumps(report, indent=2, sort_keys=True, default=str))


def _how_to_open(folder):
    print("  open the decoder in your browser:\n"
          f"    python -m http.server -d {shlex.quote(folder)} 8000\n"
          "    then http://127.0.0.1:8000/")


def main(argv=None):
    """Entry point of the `keras-vae` console script; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    args.debug = getattr(args, "debug", False)
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    from keras_vae.callbacks import TrainingDivergedError

    try:
        with stop_signals():
            _run(args, verbose)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
            ImportError, NotADirectoryError, IsADirectoryError) as e:
        if args.debug:
            raise
        print(f"keras-vae {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except TrainingDivergedError as e:
        if args.debug:
            raise
        backup = os.path.join(args.run_dir, "backup")
        kept = (f" The last good epoch is kept in {backup} (continue with --resume)."
                if os.path.isdir(backup) else " No epoch had finished; nothing was kept.")
        print(f"keras-vae {args.command}: error: {_one_line(e)}{kept}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a name too long, no permission ...
        if args.debug:
            raise
        during = ""
        if args.command == "train" and e.errno in (errno.ENOSPC, errno.EDQUOT):
            during = " The run is marked failed; files written before are intact."
        print(f"keras-vae {args.command}: error: {_one_line(e)}.{during}", file=sys.stderr)
        if during and argv is None:
            # As the program (not called in-process): h5py, whose writes hit the full
            # disk, crashes in interpreter shutdown (a segfault after tracebacks). The
            # status is written and the line printed: leave without that shutdown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1 if during else 2
    except KeyboardInterrupt as e:
        name = getattr(e, "signal_name", "SIGINT")
        message = f"keras-vae {args.command}: interrupted ({name})"
        if args.command == "train":
            from keras_vae.runs import training_finished
            if training_finished(args.run_dir):
                message += (f"; training had finished and the trained model is kept, "
                            f"`keras-vae train {args.run_dir} --resume` goes on from there")
            elif os.path.isdir(os.path.join(args.run_dir, "backup")):
                message += (f"; the last completed epoch is kept, continue with "
                            f"`keras-vae train {args.run_dir} --resume`")
            else:
                message += "; no epoch had finished"
        print(message, file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    return 0


def _in_main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
