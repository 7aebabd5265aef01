"""`keras-vae`: a thin command-line front end over `keras_vae.runs`.

    keras-vae train [RUN_DIR] [--config FILE] [flags...]   train and fill a run folder
    keras-vae evaluate RUN_DIR [--num-samples K]            recompute metrics.json
    keras-vae sample RUN_DIR [-n N] [--seed S] [--out F]    draw from the prior
    keras-vae plot RUN_DIR                                  redraw the pictures
    keras-vae export RUN_DIR --out DIR [--version N] [--tflite ...]

Errors print one line on stderr and exit with code 2 (`--debug` shows the
traceback). Nothing here is imported by the library.
"""

import argparse
import json
import os
import sys

__all__ = ["main"]

DEFAULT_RUN_DIR = os.path.join("runs", "digits-vae")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage dumps."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _csv(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text):
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 256,128; received {text!r}") from None


def _none_or(text):
    return None if text in ("none", "None", "") else text


def _add_train(sub):
    p = sub.add_parser("train", help="train a model and write a run folder",
                       description="Train a VAE (or autoencoder) and write RUN_DIR: model, "
                                   "config, history, metrics, pictures and exports. With no "
                                   "arguments: an MLP VAE with a 2-D latent space on the "
                                   "embedded 8x8 digits, about a minute on 2 CPU cores.")
    p.add_argument("run_dir", nargs="?", default=DEFAULT_RUN_DIR,
                   help=f"output folder (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--config", help="JSON file with any of the config keys below (flags win)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="digits (default), fashion_mnist, mnist, a .npz/.npy file "
                                  "or an image folder")
    g.add_argument("--data-dir", help="folder with the IDX/NPZ files of fashion_mnist/mnist")
    g.add_argument("--binarize", type=_none_or, choices=[None, "static", "dynamic"])
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["vae", "ae", "dae"])
    g.add_argument("--architecture", choices=["mlp", "conv"])
    g.add_argument("--latent-dim", type=int)
    g.add_argument("--hidden", type=_ints, help="encoder widths, e.g. 256,128 (decoder mirrors)")
    g.add_argument("--activation")
    g.add_argument("--likelihood", choices=["bernoulli", "gaussian", "gaussian_learned",
                                            "continuous_bernoulli"])
    g.add_argument("--likelihood-scale", type=float, help="scale of the fixed Gaussian")
    g.add_argument("--posterior", choices=["diagonal", "full"])
    g.add_argument("--prior", choices=["standard_normal", "mixture"])
    g.add_argument("--objective", choices=["elbo", "iwae"])
    g.add_argument("--num-samples", type=int, help="L samples (ELBO) or K (IWAE) per example")
    g.add_argument("--beta", type=float)
    g.add_argument("--free-bits", type=float)
    g.add_argument("--warmup-steps", type=int, help="KL warm-up length in steps (0: none)")
    g.add_argument("--warmup-schedule", choices=["linear", "cyclical"])
    g.add_argument("--tied", action="store_true", default=None, help="tied weights (ae/dae)")
    g.add_argument("--stacked", action="store_true", default=None,
                   help="greedy layer-wise pretraining first (ae/dae)")
    g.add_argument("--corruption", type=_none_or,
                   choices=[None, "gaussian", "masking", "salt_and_pepper"])
    g.add_argument("--corruption-rate", type=float)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--jit-compile", action="store_true", default=None,
                   help="always compile with XLA (default: chosen by the model, see README)")
    g.add_argument("--no-jit-compile", dest="jit_compile", action="store_false", default=None,
                   help="never compile with XLA")
    g = p.add_argument_group("outputs")
    g.add_argument("--eval-samples", type=int, help="K for the log-likelihood (default 1000)")
    g.add_argument("--no-plots", dest="plots", action="store_false", default=None)
    g.add_argument("--no-export", dest="export", action="store_false", default=None)
    g.add_argument("--tflite", type=_csv, help="TFLite variants, e.g. float32,float16,int8")
    g.add_argument("--tensorboard", action="store_true", default=None,
                   help="log scalars and images to RUN_DIR/tensorboard")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace an existing run")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last epoch")
    return p


_TRAIN_KEYS = ("data", "data_dir", "binarize", "model", "architecture", "latent_dim", "hidden",
               "activation", "likelihood", "likelihood_scale", "posterior", "prior",
               "objective", "num_samples", "beta", "free_bits", "warmup_steps",
               "warmup_schedule", "tied", "stacked", "corruption", "corruption_rate", "epochs",
               "batch_size", "learning_rate", "seed", "jit_compile", "eval_samples", "plots",
               "export", "tflite", "tensorboard")


def build_parser():
    parser = _Parser(prog="keras-vae", description="Variational autoencoders with Keras 3 + "
                     "TensorFlow Probability.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    p = sub.add_parser("evaluate", help="recompute RUN_DIR/metrics.json")
    p.add_argument("run_dir")
    p.add_argument("--num-samples", type=int, help="importance samples K (default: the run's)")
    p = sub.add_parser("sample", help="generate examples from the prior")
    p.add_argument("run_dir")
    p.add_argument("-n", "--num", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write a .png grid or a .npy array")
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("plot", help="redraw every picture into RUN_DIR/plots")
    p.add_argument("run_dir")
    p = sub.add_parser("export", help="SavedModel (TF Serving layout) + TFLite + parity report")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--version", type=int, default=1, help="SavedModel version (default 1)")
    p.add_argument("--tflite", type=_csv, help="variants (default: the run's config)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    return parser


def _run(args, verbose):
    from keras_vae import runs

    if args.command == "train":
        overrides = {k: getattr(args, k) for k in _TRAIN_KEYS}
        config = runs.resolve_config(overrides, args.config)
        result = runs.train(config, args.run_dir, overwrite=args.overwrite,
                            resume=args.resume, verbose=verbose)
        m = result["metrics"]
        print(f"Finished: {args.run_dir}")
        if "log_likelihood" in m:
            print(f"  test log p(x) ~ {m['log_likelihood']:.2f} nats "
                  f"(IWAE, K={m['num_samples']}), ELBO {m['elbo']:.2f}, "
                  f"reconstruction {m['reconstruction']:.2f}, KL {m['kl']:.2f}")
        else:  # autoencoders have no prior, hence no likelihood of x
            print(f"  test reconstruction -log p(x|z) {m['reconstruction']:.2f} nats")
    elif args.command == "evaluate":
        print(json.dumps(runs.evaluate_run(args.run_dir, args.num_samples), indent=2,
                         sort_keys=True))
    elif args.command == "sample":
        samples = runs.sample_run(args.run_dir, args.num, args.seed, args.out, args.overwrite)
        print(f"{len(samples)} samples of shape {samples.shape[1:]}"
              + (f" written to {args.out}" if args.out else ""))
    elif args.command == "plot":
        for path in runs.plot_run(args.run_dir):
            print(path)
    elif args.command == "export":
        report = runs.export_run(args.run_dir, args.out, args.version, args.tflite,
                                 args.overwrite)
        print(f"Exported to {args.out}")
        print(json.dumps(report, indent=2, sort_keys=True, default=str))


def main(argv=None):
    """Entry point of the `keras-vae` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    from keras_vae.callbacks import TrainingDivergedError

    try:
        _run(args, verbose)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
            ImportError, NotADirectoryError, IsADirectoryError) as e:
        if args.debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"keras-vae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except TrainingDivergedError as e:
        if args.debug:
            raise
        backup = os.path.join(args.run_dir, "backup")
        kept = (f" The last good epoch is kept in {backup} (continue with --resume)."
                if os.path.isdir(backup) else " No epoch had finished; nothing was kept.")
        print(f"keras-vae {args.command}: error: {e}{kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"keras-vae {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
