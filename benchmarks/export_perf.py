"""Export performance: artifact sizes and decoder latency at batch 1 and 256 per runtime.

Contestants (all compute the decoder's mean `x_mean = E[p(x|z)]` from `z`):

```none
keras_predict     keras.Model.predict of a subclassed model wrapping vae.decoder (mean)
keras_eager       vae.decode(z).mean()          (eager, with input checks)
tf_function       tf.function(lambda z: vae.decoder(z).mean())
saved_model       tf.saved_model.load(<version>).signatures["decode"]  (TF Serving's graph)
tflite_<variant>  ai_edge_litert signature runner of decoder_<variant>.tflite
```

Latency is the median wall time of one call, interleaved across contestants
over rounds (the machine is shared); sizes are bytes on disk (`.keras`, the
SavedModel version directory, each `.tflite`).
"""

import os
import tempfile
import time

import numpy as np

from benchmarks import timing

__all__ = ["export_benchmark"]


def _dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def _contestants(vae, tmp, x_train):
    import keras
    import tensorflow as tf

    import keras_vae as kv

    class DecoderMean(keras.Model):
        def __init__(self, decoder):
            super().__init__()
            self.decoder = decoder

        def call(self, z):
            return self.decoder(z).mean()

    keras_path = os.path.join(tmp, "model.keras")
    vae.save(keras_path)
    version_dir = kv.export.saved_model(vae, os.path.join(tmp, "saved_model"), version=1,
                                        warmup=False)
    tflite_paths = kv.export.tflite(vae, os.path.join(tmp, "tflite"),
                                    variants=("float32", "float16", "int8"),
                                    representative_data=x_train[:500], sampler=False)
    wrapper = DecoderMean(vae.decoder)
    loaded = tf.saved_model.load(version_dir)
    signature = loaded.signatures["decode"]
    compiled = tf.function(lambda z: vae.decoder(z).mean())
    contestants = {
        "keras_predict": (lambda z: wrapper.predict(z, verbose=0, batch_size=len(z)),
                          _dir_size(keras_path), ".keras file"),
        "keras_eager": (lambda z: vae.decode(z).mean().numpy(), _dir_size(keras_path),
                        ".keras file"),
        "tf_function": (lambda z: compiled(z).numpy(), _dir_size(keras_path), ".keras file"),
        "saved_model": (lambda z: signature(z=tf.constant(z))["x_mean"].numpy(),
                        _dir_size(version_dir), "SavedModel version dir"),
    }
    for variant, path in tflite_paths.items():
        runner = kv.export.lite.signature_runner(path, "decode")
        contestants[f"tflite_{variant}"] = (lambda z, r=runner: r(z=z)["x_mean"],
                                            _dir_size(path), os.path.basename(path))
    return contestants


def export_benchmark(vae, x_train, batch_sizes=(1, 256), rounds=5, calls=20, log=print):
    """Exports `vae` to a temporary folder and times every runtime's `decode`.

    Args:
      vae: a trained MLP VAE.
      x_train: training images (int8 calibration data).
      batch_sizes: latent batch sizes to time.
      rounds: interleaved rounds; `calls` timed calls per round (median per call).

    Returns:
      list of row dicts: `runtime`, `artifact`, `size_bytes`, `latency_ms_<B>`,
      `max_abs_diff` (x_mean vs the tf.function at batch 256).
    """
    rng = np.random.default_rng(0)
    z = {b: rng.standard_normal((b, vae.latent_dim)).astype("float32") for b in batch_sizes}
    with tempfile.TemporaryDirectory(prefix="kv_bench_export_") as tmp:
        log("  exporting (SavedModel, TFLite float32/float16/int8/int8_full) ...")
        contestants = _contestants(vae, tmp, x_train)
        reference = np.asarray(contestants["tf_function"][0](z[max(batch_sizes)]))
        rows = {name: {"runtime": name, "artifact": art, "size_bytes": size,
                       "max_abs_diff": float(np.max(np.abs(
                           np.asarray(fn(z[max(batch_sizes)])).reshape(reference.shape)
                           - reference)))}
                for name, (fn, size, art) in contestants.items()}
        for b in batch_sizes:
            log(f"  latency at batch {b} ...")
            per_call = {name: [] for name in contestants}
            for fn, _, _ in contestants.values():
                fn(z[b])  # warm (tracing, allocation)

            def timer(name, fn, b=b):
                def go():
                    times = []
                    for _ in range(calls):
                        start = time.perf_counter()
                        fn(z[b])
                        times.append(time.perf_counter() - start)
                    per_call[name].append(float(np.median(times)))
                return go

            timing.interleave({n: timer(n, fn) for n, (fn, _, _) in contestants.items()},
                              rounds)
            for name in contestants:
                rows[name][f"latency_ms_{b}"] = 1e3 * float(np.median(per_call[name]))
        return list(rows.values())
