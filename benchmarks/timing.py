"""Measurement tools: interleaved timing, peak memory, the matmul ceiling, the machine.

The benchmark machine is shared (2 cores, other jobs running), so every
comparison is interleaved: round r runs A, B, C, ... (in a rotated order),
each for about the same wall time, and the reported numbers are medians over
rounds. Ratios are medians of the per-round ratios, so a load change that
hits a whole round cancels out.
"""

import datetime
import os
import platform
import re
import subprocess
import time

import numpy as np

__all__ = ["peak_rss", "reset_peak_rss", "rss", "interleave", "median_ratio",
           "ceiling_runner", "matmul_ceiling", "environment", "fmt"]


def _status(field):
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) / 1024.0 if match else float("nan")


def rss():
    """Resident set size of this process now, MB."""
    return _status("VmRSS")


def peak_rss():
    """Peak resident set size since the last `reset_peak_rss`, MB (Linux VmHWM)."""
    return _status("VmHWM")


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def interleave(runners, rounds, on_round=None):
    """Times `runners` (name -> zero-argument callable) interleaved over `rounds`.

    Round r runs every callable once, starting at position r of the list, so no
    runner always goes first. Records the wall time, the process CPU time (all
    threads; less sensitive to other jobs on the machine, but it also counts
    threads that spin while waiting) and the peak RSS over the run (MB, and
    its growth over the RSS at the start).

    Returns:
      dict name -> {"seconds": [rounds], "cpu_seconds": [rounds], "peak_mb": float,
      "growth_mb": float}.
    """
    names = list(runners)
    out = {n: {"seconds": [], "cpu_seconds": [], "peak_mb": 0.0, "growth_mb": 0.0}
           for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            reset_peak_rss()
            before = rss()
            start, cpu = time.perf_counter(), time.process_time()
            runners[name]()
            out[name]["seconds"].append(time.perf_counter() - start)
            out[name]["cpu_seconds"].append(time.process_time() - cpu)
            peak = peak_rss()
            out[name]["peak_mb"] = max(out[name]["peak_mb"], peak)
            out[name]["growth_mb"] = max(out[name]["growth_mb"], peak - before)
        if on_round is not None:
            on_round(r)
    return out


def median_ratio(a, b):
    """Median over rounds of `a[r] / b[r]` (paired), and its interquartile range."""
    ratios = np.asarray(a, float) / np.asarray(b, float)
    return float(np.median(ratios)), float(np.subtract(*np.percentile(ratios, [75, 25])))


def ceiling_runner(batch, k=784, n=200, seconds=0.5):
    """A calibrated zero-argument callable running `[B, k] x [k, n]` products in-graph.

    One `tf.function` runs a `tf.while_loop` of R products of the same shape (a
    loop-carried scalar keeps each iteration alive); FLOPs are `2 B k n` each.

    Returns:
      `(run, flop)`: `run()` does the R products, `flop` is their FLOP count.
    """
    import tensorflow as tf

    x = tf.Variable(tf.random.stateless_uniform([batch, k], [1, 2]))
    w = tf.Variable(tf.random.stateless_uniform([k, n], [3, 4]))

    @tf.function
    def loop(reps):
        def body(i, acc):
            return i + 1, acc + tf.matmul(x, w)[0, 0]
        return tf.while_loop(lambda i, _: i < reps, body, (tf.constant(0), 0.0))[1]

    loop(tf.constant(10))
    reps = 10
    while True:  # calibrate to about `seconds`
        start = time.perf_counter()
        loop(tf.constant(reps)).numpy()
        dt = time.perf_counter() - start
        if dt > 0.2 * seconds:
            break
        reps *= 4
    reps = tf.constant(max(10, int(reps * seconds / dt)))
    return (lambda: loop(reps).numpy()), 2.0 * batch * k * n * int(reps)


def matmul_ceiling(batch_sizes=(128,), k=784, n=200, seconds=1.0, rounds=3):
    """Measured float32 matmul throughput, GFLOP/s, for `[B, k] x [k, n]` products in-graph.

    The best of `rounds` timed runs of `ceiling_runner` (a ceiling is what the
    machine can do; the throughput tables also pair each round with its own
    ceiling measurement, see `benchmarks.throughput`).

    Returns:
      dict B -> GFLOP/s.
    """
    out = {}
    for b in batch_sizes:
        run, flop = ceiling_runner(b, k, n, seconds)
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            best = max(best, flop / (time.perf_counter() - start) / 1e9)
        out[b] = best
    return out


def _git_commit():
    """Short HEAD commit, with "+uncommitted changes" when the tree differs from it."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=here).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return commit + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment():
    """A dict describing when and where the benchmark ran (for the results file)."""
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s+:\s+(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": _git_commit(),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "load_average": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
        "versions": f"Python {platform.python_version()}, TF {tf.__version__}, "
                    f"Keras {keras.__version__}, TFP {tfp.__version__}",
    }


def fmt(value, digits=0):
    """Formats a number with thousands separators (`digits` decimals)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"
