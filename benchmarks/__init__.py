"""Reproducible speed and quality benchmarks of keras_vae against plain-TF references.

Run `python -m benchmarks --quick` (under 3 minutes) or `python -m benchmarks`
(the full grid); see `benchmarks/__main__.py` for the suites and
`benchmarks/RESULTS.md` for the latest tables and how they were measured.

Modules: `reference` (plain-TF VAEs and the Keras example's code), `timing`
(interleaved timing, peak memory, matmul ceiling), `throughput`, `loglik`,
`quality`, `parity` (keras_vae vs the plain IWAE recipe, ablated), `export_perf`,
`report` (markdown tables, RESULTS.md sections).
"""

__all__ = ["reference", "timing", "throughput", "loglik", "quality", "parity", "export_perf",
           "report"]
