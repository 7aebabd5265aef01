"""Log-likelihood evaluation speed: `kv.log_likelihood` (K importance samples) vs its FLOP floor.

```none
floor (issue's definition) = K x N x (encoder + decoder forward FLOPs) / ceiling
floor (decoder only)       = K x N x decoder forward FLOPs / ceiling
```
The estimator encodes each example once and decodes K latents, so the
decoder-only floor is the stricter one; both are reported. The ceiling is the
matmul throughput measured in the same process, before each timed round, for
the decoder's dominant product (`[C*B, 200] x [200, 784]`, C x B rows per
chunk); the medians of the rounds are reported. The time excludes
tracing (one warm-up call on the same batch shape). Memory: the peak RSS
growth of the first call (tracing and the chunk buffers, C x B x D floats per
tensor) and of the timed call, next to the size of one unchunked
K x B x D float32 tensor, to show memory is bounded by the chunk, not by K.
"""

import time

import numpy as np

from benchmarks import reference, timing

__all__ = ["loglik_benchmark"]


def loglik_benchmark(model, x, num_samples=5000, batch_size=100, rounds=3, log=print):
    """Times `kv.log_likelihood(model, x, num_samples, batch_size)` against its FLOP floors.

    Each of `rounds` rounds measures the matmul ceiling and then times the
    estimate, so every ratio divides by the ceiling of its own moment (the
    machine's speed drifts by 10% between minutes when it is shared); the
    medians over the rounds are reported, with the range of the ratio.

    Args:
      model: an MLP VAE (784-200-200-d) (weights do not change the cost).
      x: binary test images `[N, 28, 28, 1]`.
      num_samples: K.
      batch_size: examples per batch B.
      rounds: timed rounds (ceiling + estimate each).

    Returns:
      dict with `n`, `k`, `rounds`, `seconds`, `examples_per_s`, `floor_seconds`,
      `floor_decoder_seconds`, `ratio_to_floor` (with `ratio_to_floor_range`),
      `ratio_to_decoder_floor`, `ceiling_gflops`, `peak_growth_mb`, `chunk`,
      `mean_log_px`, and the extrapolated `seconds_for_10000` (medians).
    """
    import keras_vae as kv
    from keras_vae import estimators

    n = len(x)
    latent = model.latent_dim
    hidden = tuple(layer.units for layer in model.decoder.dense_layers)
    enc = reference.matmul_flops((784,) + hidden[::-1] + (2 * latent,))
    dec = reference.matmul_flops((latent,) + hidden + (784,))
    chunk = estimators.resolve_chunk_size(None, num_samples, min(batch_size, n),
                                          estimators.sample_width(model, 784))
    rows = chunk * min(batch_size, n)
    timing.reset_peak_rss()
    before = timing.rss()
    kv.log_likelihood(model, x[:batch_size], num_samples=num_samples, batch_size=batch_size)
    first_growth = timing.peak_rss() - before  # tracing + the chunk buffers, first call
    measured = []  # (ceiling GFLOP/s, seconds) per round
    growth = 0.0
    for i in range(rounds):
        ceiling = timing.matmul_ceiling((rows,), k=hidden[-1], n=784, seconds=1.0)[rows]
        timing.reset_peak_rss()
        before = timing.rss()
        start = time.perf_counter()
        ll = kv.log_likelihood(model, x, num_samples=num_samples, batch_size=batch_size)
        measured.append((ceiling, time.perf_counter() - start))
        growth = max(growth, timing.peak_rss() - before)
        log(f"  log-likelihood K={num_samples} N={n} (chunk {chunk}), round {i + 1}/{rounds}: "
            f"{measured[-1][1]:.1f} s, ceiling {ceiling:.0f} GFLOP/s")
    ratios = [sec * c * 1e9 / (num_samples * n * (enc + dec)) for c, sec in measured]
    ceiling = float(np.median([c for c, _ in measured]))
    seconds = float(np.median([sec for _, sec in measured]))
    floor = num_samples * n * (enc + dec) / (ceiling * 1e9)
    floor_dec = num_samples * n * dec / (ceiling * 1e9)
    return {"n": n, "k": num_samples, "batch_size": batch_size, "chunk": chunk,
            "seconds": seconds, "examples_per_s": n / seconds,
            "seconds_for_10000": seconds * 10000 / n,
            "floor_seconds": floor, "floor_decoder_seconds": floor_dec,
            "rounds": rounds, "ratio_to_floor": float(np.median(ratios)),
            "ratio_to_floor_range": (min(ratios), max(ratios)),
            "ratio_to_decoder_floor": float(np.median(ratios)) * (enc + dec) / dec,
            "ceiling_gflops": ceiling, "peak_growth_mb": growth,
            "first_call_growth_mb": first_growth,
            "unchunked_mb": num_samples * min(batch_size, n) * 784 * 4 / 2 ** 20,
            "mean_log_px": float(np.mean(ll.log_px))}
