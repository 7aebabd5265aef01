"""export/client.py against loopback test doubles of TF Serving's gRPC and REST predict APIs.

No real TF Serving runs here. The doubles load the exported SavedModel and
answer `Predict` the way TF Serving does: they look the signature up, check
input names, dtypes (gRPC) and shapes against its SignatureDef, answer
INVALID_ARGUMENT / HTTP 400 otherwise, and run the signature. Servers bind
127.0.0.1 on an ephemeral port and are stopped in fixture teardown.
"""

import importlib.util
import json
import os
import re
import threading
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import keras_vae as kv
from keras_vae.export import lite as tl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENT = 2
SHAPE = (8, 8, 1)


def _load_client():
    spec = importlib.util.spec_from_file_location("vae_client",
                                                  os.path.join(ROOT, "export", "client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """An (untrained: transport is what is tested) tiny VAE, its SavedModel and .tflite files."""
    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.MLPEncoder(LATENT, hidden=(16,)), kv.MLPDecoder(SHAPE, hidden=(16,)))
    root = tmp_path_factory.mktemp("client")
    version_dir = kv.export.saved_model(vae, root / "vae", version=1, allow_untrained=True)
    paths = kv.export.tflite(vae, root / "tflite", variants=("float32",), allow_untrained=True)
    return vae, version_dir, paths


# --------------------------------------------------------------- the doubles


class _Rejected(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def _problems(inputs, spec, check_dtype=True):
    """Ways `inputs` (name -> array) do not fit a signature spec from read_signatures."""
    problems = []
    if set(inputs) != set(spec["inputs"]):
        problems.append(f"input names {sorted(inputs)} != {sorted(spec['inputs'])}")
        return problems
    for key, arr in inputs.items():
        dtype, shape = spec["inputs"][key]
        if check_dtype and arr.dtype != np.dtype(dtype):
            problems.append(f"{key}: expects {dtype} but {arr.dtype} is provided")
        if len(arr.shape) != len(shape) or any(s not in (-1, g) for g, s in
                                               zip(arr.shape, shape)):
            problems.append(f"{key}: shape {arr.shape} is not compatible with {shape}")
    return problems


class _Backend:
    """What TF Serving does with a predict request for one model name."""

    def __init__(self, name, base_dir, labels=None):
        self.name, self.labels = name, labels or {}
        self.paths = {int(v): os.path.join(base_dir, v) for v in os.listdir(base_dir)
                      if v.isdigit()}
        self.loaded = {v: tf.saved_model.load(p) for v, p in self.paths.items()}
        self.specs = {v: kv.export.read_signatures(p) for v, p in self.paths.items()}

    def predict(self, name, version, label, signature, inputs, check_dtype):
        if name != self.name:
            raise _Rejected("NOT_FOUND", f"Servable not found for request: Latest({name})")
        if label:
            if label not in self.labels:
                raise _Rejected("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        version = version or max(self.paths)
        if version not in self.paths:
            raise _Rejected("NOT_FOUND", f"Servable not found for request: "
                                         f"Specific({name}, {version})")
        signature = signature or "serving_default"
        if signature not in self.specs[version]:
            raise _Rejected("INVALID_ARGUMENT", f'Serving signature name: "{signature}" not '
                                                "found in signature def")
        spec = self.specs[version][signature]
        if not check_dtype:  # JSON numbers take the signature's dtype
            inputs = {k: np.asarray(v, spec["inputs"][k][0]) if k in spec["inputs"] else
                      np.asarray(v) for k, v in inputs.items()}
        problems = _problems(inputs, spec, check_dtype)
        if problems:
            raise _Rejected("INVALID_ARGUMENT", "; ".join(problems))
        fn = self.loaded[version].signatures[signature]
        out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return version, {k: v.numpy() for k, v in out.items()}


class _GrpcServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    def Predict(self, request, context):  # noqa: N802  (gRPC method name)
        spec = request.model_spec
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            version, out = self.backend.predict(
                spec.name, spec.version.value if spec.HasField("version") else None,
                spec.version_label, spec.signature_name, inputs, check_dtype=True)
        except _Rejected as err:
            context.abort(getattr(grpc.StatusCode, err.code), err.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for key, value in out.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


_REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:predict$")


def _rest_handler(backend):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _reply(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            match = _REST_PATH.match(self.path)
            if not match:
                return self._reply(404, {"error": f"Malformed request: POST {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name, version, label = match.groups()
            signature = body.get("signature_name", "serving_default")
            rows = "instances" in body
            if rows:  # row format: one object per example, stacked per input
                inputs = {k: [row[k] for row in body["instances"]]
                          for k in body["instances"][0]}
            else:
                inputs = body["inputs"]
            try:
                _, out = backend.predict(name, int(version) if version else None, label,
                                         signature, inputs, check_dtype=False)
            except _Rejected as err:
                return self._reply(404 if err.code == "NOT_FOUND" else 400,
                                   {"error": err.message})
            if rows:
                n = len(next(iter(out.values())))
                return self._reply(200, {"predictions": [
                    {k: v[i].tolist() for k, v in out.items()} for i in range(n)]})
            return self._reply(200, {"outputs": {k: v.tolist() for k, v in out.items()}})

    return Handler


@pytest.fixture(scope="module")
def backend(artifacts):
    return _Backend("vae", os.path.dirname(artifacts[1]), labels={"stable": 1})


@pytest.fixture(scope="module")
def grpc_target(backend):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _GrpcServicer(backend), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def rest_url(backend):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(backend))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _examples():
    rng = np.random.default_rng(0)
    return {"decode": {"z": rng.normal(size=(3, LATENT))},
            "sample": {"n": 5, "seed": [1, 7]},
            "encode": {"x": rng.uniform(size=(3, *SHAPE))},
            "reconstruct": {"x": rng.uniform(size=(3, *SHAPE))}}


def _direct(artifacts, signature, inputs):
    fn = tf.saved_model.load(artifacts[1]).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in
                                           client.as_inputs(inputs).items()}).items()}


# --------------------------------------------------------------------- tests


def test_predict_requests_for_every_signature_match_the_signature_defs(artifacts):
    specs = kv.export.read_signatures(artifacts[1])
    assert set(_examples()) == set(specs) - {"serving_default"}
    for signature, inputs in _examples().items():
        request = client.predict_request("vae", signature, inputs, version=1)
        assert request.model_spec.signature_name == signature
        assert request.model_spec.version.value == 1
        arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert _problems(arrays, specs[signature]) == []
    # TF Serving refuses numpy's float64 default: the client casts it unless told not to.
    raw = client.predict_request("vae", "decode", _examples()["decode"], cast=False)
    assert _problems({"z": tf.make_ndarray(raw.inputs["z"])}, specs["decode"]) == [
        "z: expects float32 but float64 is provided"]
    assert client.predict_request("vae", "decode", {"z": [[0, 0]]},
                                  label="stable").model_spec.version_label == "stable"


def test_grpc_client_gets_each_signature_output(artifacts, grpc_target):
    for signature, inputs in _examples().items():
        got = client.grpc_predict(grpc_target, "vae", signature, inputs)
        expected = _direct(artifacts, signature, inputs)
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    label = client.grpc_predict(grpc_target, "vae", "sample", {"n": 2, "seed": [0, 7]},
                                label="stable")
    np.testing.assert_allclose(label["x_mean"], artifacts[0].sample(2, seed=0), atol=1e-6)


@pytest.mark.parametrize("signature,inputs,kwargs,code", [
    ("decode", {"z": np.zeros((2, LATENT))}, {"cast": False}, "INVALID_ARGUMENT"),
    ("decode", {"z": np.zeros((2, LATENT + 1))}, {}, "INVALID_ARGUMENT"),
    ("sample", {"n": 3}, {}, "INVALID_ARGUMENT"),
    ("generate", {"n": 3}, {}, "INVALID_ARGUMENT"),
    ("decode", {"z": np.zeros((2, LATENT))}, {"version": 9}, "NOT_FOUND"),
])
def test_grpc_mismatched_requests_fail_like_tf_serving(grpc_target, signature, inputs, kwargs,
                                                       code):
    with pytest.raises(grpc.RpcError) as info:
        client.grpc_predict(grpc_target, "vae", signature, inputs, **kwargs)
    assert info.value.code() == getattr(grpc.StatusCode, code)


def test_rest_client_columnar_requests_get_each_signature_output(artifacts, rest_url):
    for signature, inputs in _examples().items():
        got = client.rest_predict(rest_url, "vae", signature, inputs, version=1)
        expected = _direct(artifacts, signature, inputs)
        for key in expected:  # JSON round trip of float32 values is exact
            np.testing.assert_array_equal(got[key], expected[key])


def test_rest_row_format_instances_return_predictions(artifacts, rest_url):
    z = np.random.default_rng(1).normal(size=(2, LATENT)).astype("float32")
    body = {"signature_name": "decode", "instances": [{"z": row.tolist()} for row in z]}
    request = urllib.request.Request(f"{rest_url}/v1/models/vae:predict",
                                     data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        predictions = json.loads(response.read())["predictions"]
    expected = _direct(artifacts, "decode", {"z": z})
    assert len(predictions) == 2 and set(predictions[0]) == {"probs", "logits", "x_mean"}
    np.testing.assert_array_equal(np.asarray([p["x_mean"] for p in predictions], "float32"),
                                  expected["x_mean"])


def test_rest_errors_raise_with_the_server_message(rest_url):
    with pytest.raises(RuntimeError, match=r"HTTP 400: z: shape \(2, 3\) is not compatible"):
        client.rest_predict(rest_url, "vae", "decode", {"z": np.zeros((2, 3))})
    with pytest.raises(RuntimeError, match="HTTP 404: Servable not found"):
        client.rest_predict(rest_url, "gan", "decode", {"z": np.zeros((2, LATENT))})


def test_tflite_client_runs_decoder_and_sampler(artifacts):
    _, _, paths = artifacts
    z = np.random.default_rng(2).normal(size=(4, LATENT))
    got = client.tflite_predict(paths["float32"], "decode", {"z": z})
    expected = tl.run(paths["float32"], "decode", z=z.astype("float32"))
    np.testing.assert_array_equal(got["x_mean"], expected["x_mean"])
    sampled = client.tflite_predict(paths["sampler"], "sample", {"n": 6})
    assert sampled["z"].shape == (6, LATENT) and sampled["x_mean"].shape == (6, *SHAPE)


def test_client_command_line_writes_outputs(artifacts, rest_url, tmp_path, capsys):
    path = str(tmp_path / "samples.npz")
    client.main(["rest", "--url", rest_url, "--model", "vae", "--signature", "sample",
                 "--n", "4", "--seed", "3", "7", "--out", path])
    saved = np.load(path)
    np.testing.assert_allclose(saved["x_mean"], artifacts[0].sample(4, seed=3), atol=1e-6)
    assert "x_mean: shape=(4, 8, 8, 1)" in capsys.readouterr().out


def test_models_config_is_a_valid_model_server_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(ROOT, "export", "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("vae", "/models/vae",
                                                                   "tensorflow")
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}
