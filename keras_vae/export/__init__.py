"""Deployment of a trained model: `kv.export.saved_model`, `.tflite` and `.export_all`.

This file only gathers the public API; the code lives in the submodules:

```none
artifacts.py    saved_model(), tflite(), export_all(): write artifacts to disk
                (TF Serving layout, warm-up records, atomic writes, refusals)
signatures.py   tensor-only serving functions shared by SavedModel and TFLite
lite.py         TFLite conversion of the decoder, sampler and M2 classifier; running them
parity.py       parity report: max |diff| against Keras, sizes, latency
web.py          web(): a static page that decodes in the browser (LiteRT.js)
```

`kv.export.web` is the function; its module is `keras_vae.export.web` in
`sys.modules` (import names from it with `from keras_vae.export.web import ...`).
"""

from keras_vae.export.artifacts import WARMUP_FILE, export_all, saved_model, tflite
from keras_vae.export.parity import (
                                     TOLERANCES,
                                     parity_report,
                                     run_saved_model_cli,
                                     run_session_loader,
)
from keras_vae.export.signatures import read_signatures
from keras_vae.export.web import web  # noqa: E402  (the function shadows its module)

__all__ = [
    "saved_model",
    "tflite",
    "export_all",
    "web",
    "parity_report",
    "read_signatures",
    "run_saved_model_cli",
    "run_session_loader",
    "WARMUP_FILE",
    "TOLERANCES",
]
