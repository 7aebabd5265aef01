"""Markdown tables of benchmark rows, and updating their sections in RESULTS.md.

Each suite's tables sit between `<!-- begin: NAME -->` and `<!-- end: NAME -->`
markers; `write_sections` replaces only the sections it is given (appending
missing ones), so suites can be re-run separately and the hand-written text
around them is kept.
"""

import os
import re

import numpy as np

from benchmarks.timing import fmt

__all__ = ["table", "throughput_tables", "loglik_table", "quality_table", "parity_table",
           "export_table",
           "environment_block", "write_sections"]


def table(header, rows):
    """A markdown table from a header list and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell_key(row):
    k = "" if row["num_samples"] == 1 else f" K={row['num_samples']}"
    return (row["arch"], row["batch"], row["latent"], row["objective"] + k)


def _plan(row):
    plan = (row or {}).get("plan")
    if not plan:
        return "-"
    kind = "XLA loop" if plan.get("loop") else "XLA" if plan["jit_compile"] else "graph"
    return f"{kind}, spe {plan['steps_per_execution']}"


def throughput_tables(rows, ceilings):
    """Summary (one line per cell: ratios to the plain-TF reference) and detail tables."""
    cells = {}
    for row in rows:
        cells.setdefault(_cell_key(row), {})[row["contestant"]] = row
    summary = []
    for (arch, batch, latent, objective), c in cells.items():
        ref = c["ref"]
        kv_best = max((c[n] for n in c if n.startswith("kv")), key=lambda r: r["ratio_to_ref"])
        ref_best = max((c[n] for n in c if n.startswith("ref")),
                       key=lambda r: r["examples_per_s"])

        def ratio(name):
            return f"{c[name]['ratio_to_ref']:.2f}" if name in c else "-"

        summary.append([
            arch, batch, latent, objective, fmt(ref["examples_per_s"]),
            ratio("ref_xla"), ratio("kv_keras"), ratio("kv_auto"), _plan(c.get("kv_auto")),
            ratio("kv_spe"), ratio("kv_xla"),
            ratio("keras_example") if "keras_example" in c else "-",
            f"{kv_best['contestant']} {kv_best['ratio_to_ref'] / ref_best['ratio_to_ref']:.2f}",
            f"{100 * kv_best['ceiling_share']:.0f}%",
        ])
    head = ["arch", "B", "d", "objective", "ref ex/s", "ref_xla", "kv_keras", "kv_auto",
            "kv_auto plan", "kv_spe",
            "kv_xla", "keras_example", "best kv / best ref", "best kv, share of ceiling"]
    detail = [[r["arch"], r["batch"], r["latent"], _cell_key(r)[3], r["contestant"],
               fmt(r["examples_per_s"]), f"{r['ratio_to_ref']:.2f} ± {r['ratio_iqr'] / 2:.2f}",
               fmt(r["examples_per_cpu_s"]), f"{r['cpu_ratio_to_ref']:.2f}",
               fmt(r["gflops"], 1), fmt(r["ceiling_gflops"], 1), f"{100 * r['ceiling_share']:.0f}%",
               fmt(r["peak_mb"]), fmt(r["growth_mb"]),
               fmt(r["final_loss"], 1) if r["final_loss"] is not None else "-",
               fmt(r["setup_seconds"], 2) if r.get("setup_seconds") is not None else "-"]
              for r in rows]
    dhead = ["arch", "B", "d", "objective", "contestant", "examples/s", "ratio to ref (± IQR/2)",
             "examples per CPU-s", "CPU ratio to ref",
             "GFLOP/s", "paired ceiling GFLOP/s", "share of ceiling", "peak RSS MB",
             "RSS growth MB", "train loss", "fit setup s (once per call, not timed)"]
    ceiling = table(["B (rows of the [B,784]x[784,200] product)", "best matmul GFLOP/s"],
                    [[b, fmt(g, 1)] for b, g in sorted(ceilings.items())])
    return ("Ratios are examples/s relative to `ref` in the same cell (medians of per-round "
            "ratios; > 1 means faster than the plain-TF reference).\n\n"
            + table(head, summary) + "\n\nBest matmul throughput measured at the start "
            "(the share columns use the ceiling timed in the same rounds instead):\n\n"
            + ceiling + "\n\nDetail:\n\n" + table(dhead, detail))


def loglik_table(result):
    r = result
    lo, hi = r.get("ratio_to_floor_range", (r["ratio_to_floor"],) * 2)
    return table(
        ["K", "N", "B", "chunk C", "seconds", "examples/s", "10,000 images (extrapolated)",
         "floor (enc+dec)", "time / floor (median; range)", "floor (dec only)",
         "time / dec floor",
         "ceiling GFLOP/s", "peak RSS growth MB (first call / timed)",
         "one unchunked K x B x D tensor MB", "mean log p(x)"],
        [[r["k"], r["n"], r["batch_size"], r["chunk"], fmt(r["seconds"], 1),
          fmt(r["examples_per_s"], 1), f"{r['seconds_for_10000'] / 60:.1f} min",
          fmt(r["floor_seconds"], 1) + " s",
          f"{r['ratio_to_floor']:.2f}x ({lo:.2f}-{hi:.2f}, {r.get('rounds', 1)} rounds)",
          fmt(r["floor_decoder_seconds"], 1) + " s", f"{r['ratio_to_decoder_floor']:.2f}x",
          fmt(r["ceiling_gflops"], 1),
          f"{fmt(r['first_call_growth_mb'])} / {fmt(r['peak_growth_mb'])}",
          fmt(r["unchunked_mb"]), fmt(r["mean_log_px"], 2)]])


def quality_table(rows):
    return table(
        ["objective", "K (train)", "passes", "schedule", "train time", "train loss",
         "test ELBO", "test log p(x) (IWAE-5000)", "± s.e.", "gain vs ELBO model (paired)",
         "bits/dim", "eval images", "eval time"],
        [[r["objective"], r["k"], r["epochs"], r["schedule"], f"{r['train_seconds'] / 60:.1f} min",
          fmt(r["train_loss"], 2), fmt(r["test_elbo"], 2), fmt(r["test_log_px"], 2),
          fmt(r["test_log_px_sem"], 2),
          f"{r['gain_vs_elbo']:+.2f} ± {r['gain_vs_elbo_sem']:.2f}", f"{r['bits_per_dim']:.4f}",
          r["eval_n"], f"{r['eval_seconds'] / 60:.1f} min"] for r in rows])


def parity_table(rows, runs):
    """Per arm: mean ± sd over seeds, paired difference to the plain recipe; then every run."""
    first = runs[0]
    summary = table(
        ["arm", "seeds", "test log p(x), mean", "sd over seeds", "minus plain (paired by seed)",
         "sd of the difference", "s.e. (seeds)", "s.e. (images)", "verdict (diff vs 2 s.e.)",
         "train loss", "train time"],
        [[r["arm"], r["seeds"], fmt(r["mean"], 2), fmt(r["sd"], 2),
          f"{r.get('diff', float('nan')):+.2f}", fmt(r.get("diff_sd", float("nan")), 2),
          fmt(r.get("diff_se", float("nan")), 2), fmt(r.get("image_se", float("nan")), 2),
          r.get("verdict", "-"), fmt(r["train_loss"], 2), f"{r['train_seconds'] / 60:.1f} min"]
         for r in rows])
    detail = table(["arm", "seed", "test log p(x)", "train loss", "train s", "eval s"],
                   [[r["arm"], r["seed"], fmt(r["test_log_px"], 2), fmt(r["train_loss"], 2),
                     fmt(r["train_seconds"]), fmt(r["eval_seconds"])] for r in runs])
    return (f"{first['epochs']} passes per arm (batch 128), test log p(x) by `kv.log_likelihood` "
            f"with K={first.get('eval_k', '?')} on the first {first.get('eval_n', '?')} test "
            "images (binarized once, seed 1); differences are paired by seed and image.\n\n"
            + summary + "\n\nEvery run:\n\n" + detail)


def export_table(rows, batch_sizes=(1, 256)):
    head = ["runtime", "artifact", "size KB"] + [f"batch {b} ms" for b in batch_sizes] + [
        "max |x_mean - tf.function|"]
    return table(head, [[r["runtime"], r["artifact"], fmt(r["size_bytes"] / 1024, 1)]
                        + [fmt(r.get(f"latency_ms_{b}", np.nan), 3) for b in batch_sizes]
                        + [f"{r['max_abs_diff']:.2g}"] for r in rows])


def environment_block(env, command):
    return (f"Run {env['date']} at commit {env['commit']} with `{command}`; "
            f"{env['cpu']}; load average at the end {env['load_average']} "
            f"(the machine was shared); {env['versions']}.")


def write_sections(path, sections):
    """Replaces (or appends) the `<!-- begin: NAME -->` sections of `path`."""
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    for name, body in sections.items():
        block = f"<!-- begin: {name} -->\n{body.strip()}\n<!-- end: {name} -->"
        pattern = re.compile(rf"<!-- begin: {re.escape(name)} -->.*?"
                             rf"<!-- end: {re.escape(name)} -->",
                             re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    from keras_vae.files import atomic_write

    atomic_write(path, text)
