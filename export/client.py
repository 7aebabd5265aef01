#!/usr/bin/env python
"""Small client for a keras-vae export: TF Serving REST, TF Serving gRPC, or a .tflite file.

Stand-alone (it does not import keras_vae), so it can be copied next to a
deployment. Needs numpy; REST needs nothing else; gRPC needs `grpcio` and
`tensorflow-serving-api` (which brings `tensorflow`); .tflite needs
`ai-edge-litert`.

Library use:

    import numpy as np, client
    out = client.rest_predict("http://localhost:8501", "vae", "sample",
                              {"n": 16, "seed": [1, 7]})
    out["x_mean"].shape                      # (16, 28, 28, 1)
    out = client.grpc_predict("localhost:8500", "vae", "decode",
                              {"z": np.zeros((4, 2))})
    out = client.tflite_predict("tflite/decoder_float32.tflite", "decode",
                                {"z": np.zeros((4, 2))})

Command line (writes the outputs to an .npz file):

    python export/client.py rest --url http://localhost:8501 --model vae \\
        --signature sample --n 16 --seed 1 7 --out samples.npz
    python export/client.py grpc --target localhost:8500 --model vae \\
        --signature decode --z-file z.npy --out x.npz
    python export/client.py tflite --path tflite/sampler.tflite --signature sample --n 16

Inputs are numpy-convertible; float64/int64 arrays (numpy's defaults) are
cast to float32/int32, the dtypes of every keras-vae signature, unless
`cast=False`. Outputs come back as numpy arrays (float32 for float outputs).
"""

import argparse
import json
import sys
import urllib.error
import urllib.request

import numpy as np

__all__ = ["as_inputs", "predict_request", "grpc_predict", "rest_predict",
           "tflite_predict", "main"]

_CASTS = {np.dtype("float64"): np.float32, np.dtype("int64"): np.int32}


def as_inputs(inputs, cast=True):
    """dict name -> numpy array, casting float64 -> float32 and int64 -> int32 if `cast`."""
    if not isinstance(inputs, dict) or not inputs:
        raise TypeError(f"Expected `inputs` as a non-empty dict of arrays. Received: "
                        f"inputs={inputs!r}")
    out = {}
    for key, value in inputs.items():
        arr = np.asarray(value)
        if cast and arr.dtype in _CASTS:
            arr = arr.astype(_CASTS[arr.dtype])
        out[key] = arr
    return out


def _outputs(raw):
    out = {}
    for key, value in raw.items():
        arr = np.asarray(value)
        out[key] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    return out


# ------------------------------------------------------------------- gRPC


def predict_request(model, signature, inputs, version=None, label=None, cast=True):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for one signature.

    Args:
      model: model name (TF Serving's `--model_name` / config `name`).
      signature: signature name, e.g. "decode", "sample", "encode".
      inputs: dict input name -> array.
      version: int version to pin, or None for the server's default.
      label: version label (e.g. "stable"); exclusive with `version`.
      cast: cast float64/int64 to float32/int32.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if version is not None and label is not None:
        raise ValueError(f"Pass `version` or `label`, not both. Received: version={version!r}, "
                         f"label={label!r}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    if label is not None:
        request.model_spec.version_label = label
    for key, arr in as_inputs(inputs, cast).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(arr))
    return request


def grpc_predict(target, model, signature, inputs, version=None, label=None, timeout=30.0,
                 cast=True):
    """Calls `PredictionService/Predict` on a TF Serving gRPC port (default 8500).

    Returns:
      dict output name -> numpy array.

    Raises:
      grpc.RpcError: e.g. `INVALID_ARGUMENT` for inputs that do not match the
        signature, `NOT_FOUND` for an unknown model or version.
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_request(model, signature, inputs, version, label, cast)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    return _outputs({k: tf.make_ndarray(v) for k, v in response.outputs.items()})


# ------------------------------------------------------------------- REST


def rest_predict(url, model, signature, inputs, version=None, label=None, timeout=30.0,
                 cast=True):
    """POSTs `/v1/models/<model>[/versions/<v> | /labels/<l>]:predict` (port 8501).

    Uses the columnar format, `{"signature_name": ..., "inputs": {...}}`, which
    also carries scalar inputs such as `sample`'s `n`.

    Returns:
      dict output name -> numpy array.

    Raises:
      RuntimeError: the server answered with an error (its message included).
    """
    if version is not None and label is not None:
        raise ValueError(f"Pass `version` or `label`, not both. Received: version={version!r}, "
                         f"label={label!r}")
    path = f"{url.rstrip('/')}/v1/models/{model}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{label}"
    body = {"signature_name": signature,
            "inputs": {k: v.tolist() for k, v in as_inputs(inputs, cast).items()}}
    request = urllib.request.Request(path + ":predict", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise RuntimeError(f"TF Serving returned HTTP {err.code}: {detail}") from None
    outputs = payload["outputs"]
    return _outputs(outputs if isinstance(outputs, dict) else {"output": outputs})


# ----------------------------------------------------------------- TFLite


def tflite_predict(path, signature, inputs, cast=True):
    """Runs one signature of a .tflite file with `ai_edge_litert` (builtin kernels only).

    Returns:
      dict output name -> numpy array.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner(signature)
    return _outputs(runner(**as_inputs(inputs, cast)))


# ---------------------------------------------------------------- command


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("rest", "grpc", "tflite"):
        p = sub.add_parser(mode, help=f"{mode} prediction")
        if mode == "rest":
            p.add_argument("--url", default="http://localhost:8501")
        elif mode == "grpc":
            p.add_argument("--target", default="localhost:8500")
        else:
            p.add_argument("--path", required=True, help=".tflite file")
        if mode != "tflite":
            p.add_argument("--model", default="vae", help="model name on the server")
            p.add_argument("--version", type=int, default=None)
            p.add_argument("--label", default=None, help="version label, e.g. stable")
        p.add_argument("--signature", default="sample",
                       help="decode, sample, encode or reconstruct (default sample)")
        p.add_argument("--n", type=int, default=16, help="sample: number of examples")
        p.add_argument("--seed", type=int, nargs=2, default=None,
                       help="sample (server): two int32 seed words")
        p.add_argument("--z-file", help=".npy of latents [B, latent_dim] for decode")
        p.add_argument("--x-file", help=".npy of data [B, ...] for encode/reconstruct")
        p.add_argument("--out", help="write outputs to this .npz")
    return parser.parse_args(argv)


def _inputs_from_args(args):
    if args.z_file:
        return {"z": np.load(args.z_file)}
    if args.x_file:
        return {"x": np.load(args.x_file)}
    if args.signature != "sample":
        raise SystemExit(f"--signature {args.signature} needs --z-file or --x-file")
    inputs = {"n": np.int32(args.n)}
    if args.mode != "tflite":
        inputs["seed"] = np.asarray(args.seed or [0, 7], np.int32)
    return inputs


def main(argv=None):
    """Command-line entry point; returns the outputs dict."""
    args = _parse(argv)
    inputs = _inputs_from_args(args)
    if args.mode == "rest":
        out = rest_predict(args.url, args.model, args.signature, inputs, args.version,
                           args.label)
    elif args.mode == "grpc":
        out = grpc_predict(args.target, args.model, args.signature, inputs, args.version,
                           args.label)
    else:
        out = tflite_predict(args.path, args.signature, inputs)
    for key, value in sorted(out.items()):
        print(f"{key}: shape={value.shape} dtype={value.dtype} "
              f"min={value.min():.4g} max={value.max():.4g}")
    if args.out:
        np.savez(args.out, **out)
    return out


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
