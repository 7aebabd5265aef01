"""Multi-worker training (keras_vae.distributed): 2 worker processes on 127.0.0.1.

One launch (module fixture, bounded by a timeout; the launcher kills its
workers on failure or timeout) serves the checks below. The encoder's posterior
scale is pushed to ~1e-13 (min_scale=0, raw bias -30), so z = mu and the update
does not depend on the replicas' noise: two workers with a global batch of 64
must take the same steps as one process with batches of 64.
"""

import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import distributed

EPOCHS, BATCH, N = 2, 64, 320

BUILDER = textwrap.dedent("""
    import os
    import keras, numpy as np
    import keras_vae as kv

    def build(config, data_shape):
        vae = kv.VAE(kv.MLPEncoder(2, hidden=(16,), min_scale=0.0),
                     kv.MLPDecoder(data_shape, hidden=(16,)), seed=config["seed"])
        init = np.load(os.path.join(os.path.dirname(__file__), "init.npz"))
        vae.set_weights([init[f"arr_{i}"] for i in range(len(init.files))])
        vae.encoder.params_layer.bias.assign([0.0, 0.0, -30.0, -30.0])  # sigma ~ 1e-13
        vae.compile(optimizer=keras.optimizers.Adam(1e-2))
        return vae
""")


def _build_single(tmp, data_shape):
    import importlib.util
    spec = importlib.util.spec_from_file_location("mw_builder", os.path.join(tmp, "builder.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build({"seed": 0}, data_shape)


@pytest.fixture(scope="module")
def launched(tmp_path_factory, digits):
    tmp = str(tmp_path_factory.mktemp("multiworker"))
    x = digits[0][:N]
    np.savez(os.path.join(tmp, "data.npz"), x_train=x, x_test=digits[0][N:N + 64])
    keras.utils.set_random_seed(0)
    start = kv.VAE(kv.MLPEncoder(2, hidden=(16,)), kv.MLPDecoder((8, 8, 1), hidden=(16,)))
    np.savez(os.path.join(tmp, "init.npz"), *start.get_weights())
    with open(os.path.join(tmp, "builder.py"), "w") as f:
        f.write(BUILDER)
    config = {"data": os.path.join(tmp, "data.npz"), "epochs": EPOCHS, "batch_size": BATCH,
              "seed": 0}
    run_dir = os.path.join(tmp, "run")
    results = distributed.launch(config, run_dir, workers=2,
                                 builder=os.path.join(tmp, "builder.py:build"),
                                 timeout=240, save_weights=True, verbose=0)
    weights = []
    for i in range(2):
        w = np.load(os.path.join(run_dir, "workers", f"worker-{i}.weights.npz"))
        weights.append([w[f"arr_{j}"] for j in range(len(w.files))])
    return {"tmp": tmp, "x": x, "run_dir": run_dir, "results": results, "weights": weights}


@pytest.fixture(scope="module")
def single(launched):
    """The same model trained in this process with fit on the same global batches."""
    vae = _build_single(launched["tmp"], (8, 8, 1))
    start = [w.copy() for w in vae.get_weights()]
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    ds = kv.data.make_dataset(launched["x"], batch_size=BATCH, shuffle=True, seed=0,
                              drop_remainder=True, epoch=epoch)
    history = vae.fit(ds, epochs=EPOCHS, callbacks=[kv.EpochCounter(epoch)], shuffle=False,
                      verbose=0).history
    return {"weights": vae.get_weights(), "start": start, "history": history}


def test_two_workers_end_with_identical_weights(launched):
    a, b = launched["weights"]
    assert [r["num_replicas"] for r in launched["results"]] == [2, 2]
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)


def test_two_workers_match_single_process_training(launched, single):
    moved = max(float(np.abs(w - s).max()) for w, s in zip(single["weights"], single["start"]))
    diff = max(float(np.abs(w - s).max())
               for w, s in zip(launched["weights"][0], single["weights"]))
    assert moved > 1e-2, moved                       # training did move the weights
    assert diff < 1e-5 * max(1.0, moved), (diff, moved)  # float32 summation order (~1e-7)


def test_two_workers_report_single_process_loss(launched, single):
    for result in launched["results"]:
        np.testing.assert_allclose(result["history"]["loss"], single["history"]["loss"],
                                   rtol=1e-5)
        np.testing.assert_allclose(result["history"]["elbo"], single["history"]["elbo"],
                                   rtol=1e-5)


def test_replicas_draw_distinct_noise(launched):
    seeds = [tuple(r["noise_seeds_step0"][0]) for r in launched["results"]]
    assert seeds[0] != seeds[1], seeds


def test_chief_writes_a_loadable_model(launched):
    run_dir = launched["run_dir"]
    with open(os.path.join(run_dir, "status.json")) as f:
        assert json.load(f)["status"] == "finished"
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    for got, want in zip(model.get_weights(), launched["weights"][0]):
        np.testing.assert_array_equal(got, want)


def test_launch_refuses_a_non_empty_run_dir(launched):
    with pytest.raises(ValueError, match="Received: run_dir="):
        distributed.launch({"data": "digits"}, launched["run_dir"], workers=2)


def test_launch_rejects_bad_worker_count(tmp_path):
    with pytest.raises(ValueError, match="Received: workers=0"):
        distributed.launch({"data": "digits"}, str(tmp_path / "run"), workers=0)


def _held(port):
    """True when a plain bind to `port` fails: someone holds it."""
    import socket
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", port))
    except OSError:
        return True
    finally:
        probe.close()
    return False


def test_reserved_ports_are_never_handed_out_yet_a_reuseaddr_server_binds_them():
    import socket
    reserved = distributed._reserve_ports(2)
    try:
        ports = {s.getsockname()[1] for s in reserved}
        assert len(ports) == 2
        others = [socket.socket() for _ in range(300)]
        try:
            for o in others:
                o.bind(("127.0.0.1", 0))
                assert o.getsockname()[1] not in ports
        finally:
            for o in others:
                o.close()
        for port in ports:  # what a worker's gRPC server does (it sets SO_REUSEADDR)
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen(1)
            server.close()
    finally:
        for s in reserved:
            s.close()


def test_launch_holds_each_port_until_the_workers_are_done(tmp_path, monkeypatch):
    """No window between choosing the ports and the workers' bind: every port in
    TF_CONFIG is still held while each worker starts, and released afterwards."""
    seen = []

    class FakeWorker:
        def __init__(self, cmd, env, **kwargs):
            cluster = json.loads(env["TF_CONFIG"])
            ports = [int(a.rsplit(":", 1)[1]) for a in cluster["cluster"]["worker"]]
            seen.append((ports, [_held(p) for p in ports]))
            index = cluster["task"]["index"]
            with open(os.path.join(cmd[3], "workers", f"worker-{index}.json"), "w") as f:
                json.dump({"index": index}, f)
            self.pid, self.returncode = 0, 0

        def poll(self):
            return 0

    monkeypatch.setattr(distributed.subprocess, "Popen", FakeWorker)
    results = distributed.launch({"data": "digits"}, str(tmp_path / "run"), workers=2)
    assert [r["index"] for r in results] == [0, 1]
    assert [held for _, held in seen] == [[True, True], [True, True]]
    assert not any(_held(p) for p in seen[0][0])


def test_loopback_is_exempt_from_proxies_in_tests_and_their_subprocesses():
    """conftest.loopback_without_proxy: with http_proxy set by CI, urllib/gRPC to
    127.0.0.1 (here and in worker processes, which inherit os.environ) skip the proxy."""
    import urllib.request

    assert not any(os.environ.get(k) for k in ("http_proxy", "https_proxy", "HTTP_PROXY",
                                                "HTTPS_PROXY", "grpc_proxy"))
    for name in ("no_proxy", "NO_PROXY"):
        assert {"127.0.0.1", "localhost"} <= set(os.environ[name].split(","))
    assert "http" not in urllib.request.getproxies()
    assert urllib.request.proxy_bypass_environment("127.0.0.1")
