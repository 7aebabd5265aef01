"""Peers: PyTorch (eager, `torch.compile`), JAX/Flax (jit) and Pythae next to keras_vae.

The peers live in their own virtualenv, so the project stays TensorFlow-only:

```none
python -m benchmarks setup-peers          # once: ~/.cache/keras-vae/peers-venv (KV_PEERS_VENV)
python -m benchmarks peers --write benchmarks/RESULTS.md
```

Each peer runs as a subprocess of that venv's Python (`benchmarks/peers/worker.py`)
and joins the interleaved rounds of `benchmarks.throughput`'s cells: same
images (passed as a .npy file), same B, same number of steps per round, same
networks, Adam(1e-3), same FLOP count (`benchmarks/peers/spec.py`, checked
against `throughput.mlp_flops` / `conv_flops`) and the same paired matmul
ceiling. The wall time of one round is the request/reply round trip (a few
JSON bytes over a pipe); CPU time and memory are the peer process's own.
`python -m benchmarks` without `peers` never needs the venv.
"""

import json
import os
import select
import subprocess
import sys
import tempfile

import numpy as np

__all__ = ["PEERS", "venv_dir", "venv_python", "require_venv", "setup", "PeerRunner",
           "peer_contestants", "peers_table", "PeersUnavailable"]

PEERS = ("torch", "torch_compile", "jax", "pythae")
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "worker.py")
DEFAULT_VENV = os.path.join("~", ".cache", "keras-vae", "peers-venv")
# torch first and pinned: 2.13.0 is the CPU build on this machine's disk (a newer or
# unpinned torch pulls a multi-GB CUDA build); Pythae without its deps so that it
# cannot replace that torch, then its small dependencies.
INSTALL_STEPS = (
    ("torch==2.13.0", "numpy"),
    ("jax", "jaxlib", "flax", "optax"),
    ("--no-deps", "pythae"),
    ("cloudpickle", "imageio", "pydantic>=2", "scikit-learn", "scipy", "tqdm",
     "typing-extensions"),
)


class PeersUnavailable(RuntimeError):
    """The peers virtualenv is missing or broken (run `python -m benchmarks setup-peers`)."""


def venv_dir():
    """The peers virtualenv folder: $KV_PEERS_VENV or ~/.cache/keras-vae/peers-venv."""
    return os.path.expanduser(os.environ.get("KV_PEERS_VENV") or DEFAULT_VENV)


def venv_python(path=None):
    """The venv's Python if it exists and was completed by `setup`, else None."""
    path = path or venv_dir()
    python = os.path.join(path, "bin", "python")
    ok = os.path.isfile(python) and os.path.isfile(os.path.join(path, "kv-peers-ready"))
    return python if ok else None


def require_venv(path=None):
    """The venv's Python, or `PeersUnavailable` naming the setup command."""
    python = venv_python(path)
    if python is None:
        raise PeersUnavailable(
            f"the peers virtualenv is missing at {path or venv_dir()} (no bin/python with a "
            "kv-peers-ready marker); create it with `python -m benchmarks setup-peers`")
    return python


def setup(path=None, log=print):
    """Creates the peers virtualenv and installs torch, jax/flax/optax and pythae into it.

    Never touches the project's own environment. Writes `kv-peers-ready` (the
    installed versions) when every step succeeded. Returns the venv's Python.
    """
    path = path or venv_dir()
    python = os.path.join(path, "bin", "python")
    if not os.path.isfile(python):
        log(f"creating {path} ...")
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    for packages in INSTALL_STEPS:
        log(f"pip install {' '.join(packages)} ...")
        subprocess.run([python, "-m", "pip", "install", "--quiet", *packages], check=True)
    probe = ("import importlib.metadata as m; print(', '.join(f'{p} ' + m.version(p) for p in "
             "('torch', 'jax', 'flax', 'optax', 'pythae')))")
    versions = subprocess.run([python, "-c", probe], check=True, capture_output=True,
                              text=True).stdout.strip()
    from keras_vae.files import atomic_write

    atomic_write(os.path.join(path, "kv-peers-ready"), versions + "\n")
    log(f"peers ready in {path}: {versions}")
    return python


class PeerRunner:
    """One peer in one cell: a worker process, called once per interleaved round.

    `runner()` trains `steps` steps in the worker and returns the loss it
    reports; `measured()` gives the worker's per-round CPU seconds and memory
    (to replace what the parent process measured for itself).
    """

    def __init__(self, python, peer, cell, data_path, threads=None, log_path=None,
                 timeout=900):
        self.peer, self.cell, self.timeout = peer, cell, timeout
        self.log_path = log_path or os.devnull
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([python, WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        reply = self._ask({"op": "build", "peer": peer, "data": data_path, "seed": 0,
                           "threads": threads, **cell})
        self.flops, self.versions = reply["flops"], reply["versions"]
        self.steps, self.cpu_seconds, self.peak_mb, self.growth_mb = None, [], 0.0, 0.0
        self.inner_seconds = []

    def _ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise PeersUnavailable(f"peer {self.peer} gave no reply within {self.timeout} s "
                                   f"(log: {self.log_path})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"peer {self.peer}: {reply.get('error')}")
        return reply

    def warm(self, steps):
        """Runs the timed number of steps once (compilation, caches); clears the records."""
        self.steps = steps
        self._ask({"op": "run", "steps": steps})
        self.cpu_seconds, self.inner_seconds = [], []
        return self

    def __call__(self):
        reply = self._ask({"op": "run", "steps": self.steps})
        self.cpu_seconds.append(reply["cpu_seconds"])
        self.inner_seconds.append(reply["seconds"])
        self.peak_mb = max(self.peak_mb, reply["peak_mb"])
        self.growth_mb = max(self.growth_mb, reply["growth_mb"])
        return reply["loss"]

    def measured(self):
        return {"cpu_seconds": list(self.cpu_seconds), "peak_mb": self.peak_mb,
                "growth_mb": self.growth_mb}

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def peer_contestants(python, x, peers=PEERS, threads=None, log=print, work_dir=None):
    """The `external` hook of `throughput.mlp_grid` / `conv_cells` for these peers.

    Writes `x` once to a .npy file in `work_dir` (a temporary folder by
    default). Returns `(external, failures, close)`: `external(cell)` gives
    name -> `make(steps)` (building the worker, checking its FLOP count and
    warming it); `failures` collects (peer, cell, message) of peers that could
    not run a cell (e.g. `torch.compile` failing), which the table reports;
    `close()` removes the folder.
    """
    from benchmarks import throughput

    work_dir = work_dir or tempfile.mkdtemp(prefix="kv-peers-")
    data_path = os.path.join(work_dir, "x.npy")
    np.save(data_path, np.ascontiguousarray(x, dtype=np.float32))
    failures, versions = [], {}

    def external(cell):
        if cell["arch"] == "mlp":
            want = throughput.mlp_flops(cell["latent"], num_samples=cell["k"])
        else:
            want = throughput.conv_flops(cell["latent"])
        names = [p for p in peers if not (p == "pythae" and cell["objective"] != "elbo")]

        def make_for(peer):
            def make(steps):
                try:
                    runner = PeerRunner(python, peer, cell, data_path, threads=threads,
                                        log_path=os.path.join(work_dir, f"{peer}.log"))
                except (RuntimeError, OSError) as e:
                    failures.append((peer, dict(cell), str(e)))
                    log(f"    {peer}: failed to build: {e}")
                    return None
                if runner.flops != want:
                    runner.close()
                    raise AssertionError(f"peer {peer} counts {runner.flops} FLOPs per example, "
                                         f"throughput counts {want} for {cell}")
                versions[peer] = runner.versions
                try:
                    return runner.warm(steps)
                except (RuntimeError, OSError) as e:
                    runner.close()
                    failures.append((peer, dict(cell), str(e)))
                    log(f"    {peer}: failed to run: {e}")
                    return None
            return make
        return {f"peer_{p}": make_for(p) for p in names}

    def close():
        import shutil
        shutil.rmtree(work_dir, ignore_errors=True)

    external.versions = versions
    return external, failures, close


def _cell_key(row):
    k = "" if row["num_samples"] == 1 else f" K={row['num_samples']}"
    return (row["arch"], row["batch"], row["latent"], row["objective"] + k)


def peers_table(rows, failures=(), threads=None):
    """Per cell: each peer's speed relative to kv_auto (keras_vae's default path) and best ref.

    A ratio is the median over rounds of `kv_auto seconds / peer seconds` in
    the same round (> 1: the peer is faster); `±` is half the IQR.
    """
    from benchmarks import report, timing

    cells = {}
    for row in rows:
        cells.setdefault(_cell_key(row), {})[row["contestant"]] = row
    head = ["arch", "B", "d", "objective", "kv_auto ex/s", "best ref", "best ref ex/s"]
    head += [f"{p} ex/s (vs kv_auto; vs best ref)" for p in PEERS]
    head += ["kv_auto / fastest peer", "kv_auto share of ceiling"]
    out = []
    for (arch, batch, latent, objective), c in cells.items():
        kv = c.get("kv_auto")
        refs = [c[n] for n in ("ref", "ref_xla") if n in c]
        best_ref = max(refs, key=lambda r: r["examples_per_s"]) if refs else None
        line = [arch, batch, latent, objective, timing.fmt(kv and kv["examples_per_s"]),
                best_ref["contestant"] if best_ref else "-",
                timing.fmt(best_ref and best_ref["examples_per_s"])]
        peer_rows = []
        for p in PEERS:
            r = c.get(f"peer_{p}")
            if r is None:
                failed = [f for f in failures if f[0] == p and _same_cell(f[1], arch, batch,
                                                                           latent, objective)]
                line.append("failed" if failed else "-")
                continue
            peer_rows.append(r)
            vs_kv, iqr = r["ratio_to"]["kv_auto"]
            vs_ref, _ = r["ratio_to"][best_ref["contestant"]] if best_ref else (np.nan, 0)
            line.append(f"{timing.fmt(r['examples_per_s'])} ({vs_kv:.2f} ± {iqr / 2:.2f}; "
                        f"{vs_ref:.2f})")
        if peer_rows and kv is not None:
            fastest = min(peer_rows, key=lambda r: r["ratio_to"]["kv_auto"][0] ** -1)
            line.append(f"{1 / fastest['ratio_to']['kv_auto'][0]:.2f} "
                        f"({fastest['contestant'][5:]})")
        else:
            line.append("-")
        line.append(f"{100 * kv['ceiling_share']:.0f}%" if kv else "-")
        out.append(line)
    note = (f"torch threads: {threads or 'library default'}. Ratios are a peer's examples/s "
            "over the named contestant's in the same round (median over rounds, ± half "
            "the IQR); < 1 means slower than keras_vae. ")
    text = note + "\n\n" + report.table(head, out)
    if failures:
        text += "\n\nPeers that could not run a cell:\n\n" + "\n".join(
            f"- {p} at {cell}: {msg}" for p, cell, msg in failures)
    return text


def _same_cell(cell, arch, batch, latent, objective):
    k = "" if cell["k"] == 1 else f" K={cell['k']}"
    return (cell["arch"], cell["batch"], cell["latent"], cell["objective"] + k) == (
        arch, batch, latent, objective)
