"""README command 1, as a new user runs it: `keras-vae train` with no arguments.

One run (module fixture, about a minute on 2 cores) of the default job: the
embedded digits, 60 epochs, evaluation, pictures and exports. The tests check
the numbers README.md states for it, with the tolerances written here (not the
ones the code under test reports), and every exported signature through the
C++ loader path of `saved_model_cli run`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# What README.md says command 1 prints and writes, as ranges a test can check.
LOG_PX_RANGE = (-25.0, -24.3)   # "Expect log p(x) around -24.7"
MAX_ELBO_GAP = 1.0              # "the ELBO a few tenths of a nat below it"
# TFLite max |diff| on pixel probabilities against Keras, as README.md states them.
TFLITE_TOLERANCE = {"float32": 1e-6, "float16": 1e-3, "int8": 3e-2, "sampler": 1e-6}
SAVED_MODEL_TOLERANCE = 1e-6    # "SavedModel signatures identical" (float32 round-off at most)
PLOTS = ("loss_curves", "reconstructions", "samples", "latent_vs_pca", "manifold",
         "interpolation")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("newuser")
    done = subprocess.run([sys.executable, "-m", "keras_vae", "train"], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = os.path.join(cwd, "runs", "digits-vae")
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    return {"stdout": done.stdout, "run_dir": run_dir, "metrics": metrics}


def test_it_ends_with_the_finished_line(job):
    tail = job["stdout"].strip().splitlines()[-5:]
    assert tail[0] == "Finished: runs/digits-vae"
    assert tail[1].startswith("  test log p(x) ~ ") and "(IWAE, K=1000)" in tail[1]
    # the web page (issue 18): how to open it
    assert tail[2:] == ["  open the decoder in your browser:",
                        "    python -m http.server -d runs/digits-vae/web 8000",
                        "    then http://127.0.0.1:8000/"]
    assert os.path.isfile(os.path.join(job["run_dir"], "web", "decoder.tflite"))


def test_log_likelihood_and_elbo_are_where_the_readme_says(job):
    m = job["metrics"]
    assert LOG_PX_RANGE[0] <= m["log_likelihood"] <= LOG_PX_RANGE[1], m["log_likelihood"]
    assert 0 < m["log_likelihood"] - m["elbo"] < MAX_ELBO_GAP
    assert m["num_samples"] == 1000 and m["num_examples"] == 300
    assert abs(m["elbo"] + m["reconstruction"] + m["kl"]) < 1e-3  # elbo = -(rec + kl)
    assert 1.7 < m["kl"] < 2.6, m["kl"]                            # "KL 2.16"


def test_latent_space_beats_pca_as_the_readme_says(job):
    """README: 2 active units of 2; 5-NN accuracy 0.72 latent (at least 0.68) vs 0.58 PCA;
    reconstruction error 2.6 vs 3.3 for PCA. PCA is deterministic: its numbers must round
    to the quoted ones; the VAE's lie within stated bands."""
    m = job["metrics"]
    assert m["active_units"] == 2 and m["latent_dim"] == 2
    assert round(m["knn_accuracy_pca"], 2) == 0.58, m["knn_accuracy_pca"]
    assert 0.68 <= m["knn_accuracy_latent"] <= 0.76, m["knn_accuracy_latent"]
    assert round(m["pca_reconstruction_error"], 1) == 3.3, m["pca_reconstruction_error"]
    assert 2.4 <= m["model_reconstruction_error"] <= 2.8, m["model_reconstruction_error"]


def test_imputation_beats_mean_filling_as_the_readme_says(job):
    """README: imputing a hidden half of each image: squared error 0.05 vs 0.07."""
    m = job["metrics"]
    assert m["imputation_missing_fraction"] == 0.5
    assert round(m["imputation_mse_mean_fill"], 2) == 0.07, m["imputation_mse_mean_fill"]
    assert 0.04 <= m["imputation_mse"] <= 0.06, m["imputation_mse"]
    assert m["imputation_mse"] < 0.85 * m["imputation_mse_mean_fill"]


def test_the_run_folder_holds_every_picture_and_export(job):
    run_dir = job["run_dir"]
    for name in PLOTS:
        path = os.path.join(run_dir, "plots", f"{name}.png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        assert os.path.getsize(path) > 2000, name
    for name in ("decoder_float32", "decoder_float16", "decoder_int8", "sampler"):
        assert os.path.isfile(os.path.join(run_dir, "export", "tflite", f"{name}.tflite"))
    assert os.path.isfile(os.path.join(run_dir, "export", "saved_model", "1", "saved_model.pb"))
    with open(os.path.join(run_dir, "status.json"), encoding="utf-8") as f:
        assert json.load(f)["status"] == "finished"


def _parity_rows(job):
    with open(os.path.join(job["run_dir"], "export", "parity.json"), encoding="utf-8") as f:
        report = json.load(f)
    return report["artifacts"]


def _checked_diff(row):
    """Max |diff| over the outputs other than the unbounded logits."""
    per = {k: v for k, v in row["max_abs_diff"].items() if k not in ("logits",)}
    return max(float(v) for v in per.values())


def test_tflite_within_the_tolerances_the_readme_states(job):
    rows = _parity_rows(job)
    for variant, tolerance in TFLITE_TOLERANCE.items():
        row = rows[f"tflite/{variant}"]
        assert _checked_diff(row) <= tolerance, (variant, row["max_abs_diff"])


def test_saved_model_signatures_equal_keras(job):
    rows = _parity_rows(job)
    names = [k for k in rows if k.startswith(("saved_model/", "session_loader/"))]
    assert {"saved_model/decode", "saved_model/sample", "saved_model/encode",
            "saved_model/reconstruct"} <= set(names)
    for name in names:
        assert _checked_diff(rows[name]) <= SAVED_MODEL_TOLERANCE, (name, rows[name])


@pytest.fixture(scope="module")
def keras_model(job):
    import keras

    import keras_vae  # noqa: F401  (registers the classes)

    return keras.models.load_model(os.path.join(job["run_dir"], "model.keras"))


Z = np.array([[0.0, 0.0], [1.5, -0.5]], np.float32)
X = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 8, 8, 1)


def _expected(model, signature):
    if signature in ("decode", "serving_default"):
        return {"x_mean": model.decode(Z).mean().numpy()}
    if signature == "encode":
        q = model.encode(X)
        return {"z_mean": q.mean().numpy(), "z_stddev": q.stddev().numpy()}
    if signature == "reconstruct":
        return {"x_mean": model.reconstruct(X).numpy()}
    return {"x_mean": model.sample(3, seed=0).numpy()}  # the served sampler's promise


SIGNATURE_INPUTS = {
    "serving_default": {"z": Z},
    "decode": {"z": Z},
    "encode": {"x": X},
    "reconstruct": {"x": X},
    "sample": {"n": np.int32(3), "seed": np.array([0, 7], np.int32)},
}

# What `saved_model_cli run --dir D --tag_set serve --signature_def S --inputs I --outdir O`
# does once its flags are parsed: the same two functions, the C++ session loader path TF
# Serving uses. All five signatures in one process (one TensorFlow import, not five); the
# command line itself runs in tests/test_export.py::test_saved_model_cli_run_sample_...
SAVED_MODEL_CLI_RUN = """
import json, sys
from tensorflow.python.tools import saved_model_cli
version_dir, jobs = sys.argv[1], json.loads(sys.argv[2])
for signature, inputs, outdir in jobs:
    feed = saved_model_cli.load_inputs_from_input_arg_string(inputs, "", "")
    saved_model_cli.run_saved_model_with_feed_dict(version_dir, "serve", signature, feed,
                                                   outdir, False)
"""


@pytest.fixture(scope="module")
def saved_model_cli_outputs(job, tmp_path_factory):
    """{signature: {output name: array}} from running every signature as saved_model_cli."""
    tmp = tmp_path_factory.mktemp("saved_model_cli")
    version_dir = os.path.join(job["run_dir"], "export", "saved_model", "1")
    jobs = []
    for signature, inputs in SIGNATURE_INPUTS.items():
        args = []
        for key, value in inputs.items():
            np.save(tmp / f"{signature}_{key}.npy", value)
            args.append(f"{key}={tmp / f'{signature}_{key}.npy'}")
        jobs.append((signature, ";".join(args), str(tmp / f"out_{signature}")))
    done = subprocess.run([sys.executable, "-c", SAVED_MODEL_CLI_RUN, version_dir,
                           json.dumps(jobs)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {signature: {name[:-4]: np.load(os.path.join(out, name)) for name in os.listdir(out)}
            for signature, _, out in jobs}


@pytest.mark.parametrize("signature", list(SIGNATURE_INPUTS))
def test_every_signature_runs_through_saved_model_cli(keras_model, saved_model_cli_outputs,
                                                      signature):
    """`saved_model_cli run`'s loader: the C++ path TF Serving uses, against the Keras model."""
    outputs = saved_model_cli_outputs[signature]
    for name, want in _expected(keras_model, signature).items():
        np.testing.assert_allclose(outputs[name], want, atol=SAVED_MODEL_TOLERANCE,
                                   err_msg=f"{signature}/{name}")
