"""The semi-supervised VAE M2: the unlabelled objective against a brute-force sum over
classes, save/load, bad labels, and 50 labels on digits against the classifier alone."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae as kv
from keras_vae import objectives

X8 = (np.random.default_rng(0).random((24, 8, 8, 1)) > 0.5).astype("float32")
Y8 = np.random.default_rng(1).integers(0, 4, 24)


def _m2(num_classes=4, **kwargs):
    keras.utils.set_random_seed(0)
    model = kv.SemiSupervisedVAE(kv.MLPEncoder(3, hidden=(16,)),
                                 kv.MLPDecoder((8, 8, 1), hidden=(16,)),
                                 num_classes=num_classes, classifier_hidden=(16,), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def _brute_force(model, x, labels):
    """Per-example loss, one conditional ELBO per class computed separately (numpy sums)."""
    x = tf.constant(x)
    seed = model.example_seeds(x)
    per_class = []
    for c in range(model.num_classes):
        cond = tf.one_hot(tf.fill([len(x)], c), model.num_classes)
        terms = objectives.elbo(
            x, model.encoder(x, condition=cond), lambda z, cond=cond: model.decoder(
                z, condition=cond), model.prior.distribution(), seed=seed, num_samples=1)
        per_class.append(np.asarray(terms["reconstruction"] + terms["kl"], "float64"))
    neg_l = np.stack(per_class, axis=1) + math.log(model.num_classes)        # [B, C]
    logits = np.asarray(model.classifier(x), "float64")
    log_q = logits - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1,
                                   keepdims=True)) - logits.max(1, keepdims=True)
    q = np.exp(log_q)
    out = []
    for b, y in enumerate(labels):
        if y < 0:
            out.append(np.sum(q[b] * neg_l[b]) + np.sum(q[b] * log_q[b]))
        else:
            out.append(neg_l[b, y] - model.alpha * log_q[b, y])
    return np.array(out)


def test_unlabelled_objective_equals_a_brute_force_sum_over_classes():
    model = _m2(alpha=2.5)
    model.fit(X8, Y8, epochs=1, batch_size=8, verbose=0)         # weights away from init
    labels = np.array([-1, 2, -1, 0, 3, -1, -1, 1], "int32")
    terms = model.compute_terms((tf.constant(X8[:8]), tf.constant(labels)))
    expected = _brute_force(model, X8[:8], labels)
    np.testing.assert_allclose(float(terms["loss"]), expected.mean(), rtol=1e-5)
    all_unlabelled = model.compute_terms((tf.constant(X8[:8]), tf.fill([8], -1)))
    np.testing.assert_allclose(float(all_unlabelled["loss"]),
                               _brute_force(model, X8[:8], [-1] * 8).mean(), rtol=1e-5)


def test_fit_with_unlabelled_examples_classify_and_round_trip(tmp_path):
    model = _m2()
    y = Y8.copy()
    y[::2] = -1
    history = model.fit(X8, y, epochs=2, batch_size=8, verbose=0)
    assert {"loss", "elbo", "classification", "labelled"} <= set(history.history)
    probs = model.classify(X8)
    assert probs.shape == (24, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert model.sample(5, y=1, seed=0).shape == (5, 8, 8, 1)
    path = str(tmp_path / "m2.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kv.SemiSupervisedVAE) and loaded.alpha == model.alpha
    np.testing.assert_array_equal(loaded.classify(X8), probs)
    np.testing.assert_array_equal(loaded.sample(5, y=1, seed=0), model.sample(5, y=1, seed=0))


@pytest.mark.parametrize("call, error, match", [
    (lambda: _m2().fit(X8, np.full(24, 4), verbose=0), ValueError, "\\[-1, 4\\)"),
    (lambda: _m2().fit(X8, np.full(24, -2), verbose=0), ValueError, "\\[-1, 4\\)"),
    (lambda: _m2().fit(X8, verbose=0), ValueError, "needs class labels"),
    (lambda: _m2().sample(3, y=-1), ValueError, "classifier head"),
    (lambda: kv.ConditionalVAE(kv.MLPEncoder(2), kv.MLPDecoder((8, 8, 1)), num_classes=4)
     .fit(X8, np.full(24, -1), verbose=0), ValueError, "classifier head"),
    (lambda: _m2(objective="iwae"), ValueError, "ELBO"),
    (lambda: _m2(alpha=-1.0), ValueError, "alpha"),
])
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "Received:" in str(info.value)


def test_fifty_labels_beat_the_classifier_trained_on_them_alone(digits):
    x, y = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1500], order[1500:]
    labelled = np.concatenate([rng.choice(np.where(y[train] == c)[0], 5, replace=False)
                               for c in range(10)])
    y_semi = np.full(len(train), -1)
    y_semi[labelled] = y[train][labelled]
    keras.utils.set_random_seed(0)
    model = kv.SemiSupervisedVAE(kv.MLPEncoder(8, hidden=(128,)),
                                 kv.MLPDecoder((8, 8, 1), hidden=(128,)), num_classes=10,
                                 alpha=ALPHA, classifier_hidden=(128,))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[train], y_semi, epochs=20, batch_size=64, verbose=0)
    m2 = float(np.mean(model.classify(x[test]).argmax(1) == y[test]))
    keras.utils.set_random_seed(0)
    alone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
    alone.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    alone.fit(x[train][labelled], y[train][labelled], epochs=200, verbose=0)
    supervised = float(np.mean(alone.predict(x[test], verbose=0).argmax(1) == y[test]))
    # Measured in the same setup (seed 0, 297 held-out digits): M2 0.889, the classifier
    # alone 0.862 (alpha=100: 0.896). A modest margin at 50 labels, see the notes.
    assert m2 > supervised, (m2, supervised)


ALPHA = 30.0


def test_exported_classify_signature_equals_keras(tmp_path):
    from keras_vae.export import parity

    model = _m2()
    model.fit(X8, np.where(np.arange(24) % 2, Y8, -1), epochs=1, batch_size=8, verbose=0)
    report = kv.export.export_all(model, str(tmp_path / "export"), tflite_variants=())
    assert report["artifacts"]["session_loader/classify"]["within_tolerance"]
    version = str(tmp_path / "export" / "saved_model" / "1")
    out = parity.run_saved_model_cli(version, "classify", {"x": X8[:4]})
    np.testing.assert_allclose(out["probs"], model.classify(X8[:4]), atol=1e-5)


def test_label_subset_is_balanced_and_seeded():
    from keras_vae.build import label_subset

    y = np.repeat(np.arange(10), 30)
    kept = label_subset(y, 23, 10, seed=4)
    counts = np.bincount(kept[kept >= 0], minlength=10)
    assert counts.tolist() == [3, 3, 3] + [2] * 7
    assert np.all(kept[kept >= 0] == y[kept >= 0])
    np.testing.assert_array_equal(kept, label_subset(y, 23, 10, seed=4))
    with pytest.raises(ValueError, match="Received: labels=5"):
        label_subset(y, 5, 10, seed=0)


def test_cli_trains_with_labels_and_reports_accuracy(tmp_path, capsys):
    import json
    import os

    from keras_vae import cli, runs

    path = str(tmp_path / "run")
    assert cli.main(["--quiet", "train", path, "--labels", "50", "--epochs", "2", "--hidden",
                     "16", "--eval-samples", "10", "--no-export", "--no-web", "--no-plots"]) == 0
    model, _ = runs.load_run(path)
    assert isinstance(model, kv.SemiSupervisedVAE)
    with open(os.path.join(path, "metrics.json")) as f:
        assert 0.0 <= json.load(f)["classification_accuracy"] <= 1.0
    capsys.readouterr()
    assert cli.main(["--quiet", "train", str(tmp_path / "r2"), "--labels", "5"]) == 2
    assert "Received: labels=5" in capsys.readouterr().err


def _trained_m2():
    model = _m2()
    model.fit(X8, np.where(np.arange(24) % 2, Y8, -1), epochs=3, batch_size=8, verbose=0)
    return model


def test_tflite_classifier_and_int8_full_decoder_equal_keras(tmp_path):
    """classifier.tflite (float32) equals `classify` to 1e-5 through ai-edge-litert; the
    full-integer decoder takes (z, y), uses builtin kernels only and stays near Keras."""
    import os

    from keras_vae.export import lite

    model = _trained_m2()
    report = kv.export.export_all(model, str(tmp_path / "export"),
                                  tflite_variants=("float32", "int8_full"),
                                  representative_data=(X8, Y8))    # images and labels
    folder = tmp_path / "export" / "tflite"
    assert sorted(os.listdir(folder)) == ["classifier.tflite", "decoder_float32.tflite",
                                          "decoder_int8_full.tflite", "sampler.tflite"]
    assert report["artifacts"]["tflite/classifier"]["within_tolerance"]
    probs = lite.run(str(folder / "classifier.tflite"), "classify", x=X8[:5])["probs"]
    np.testing.assert_allclose(probs, model.classify(X8[:5]), atol=1e-5)
    assert lite.op_names(str(folder / "classifier.tflite")) <= {
        "FULLY_CONNECTED", "RESHAPE", "SOFTMAX"}
    z = np.random.default_rng(2).normal(size=(6, 3)).astype("float32")
    y = np.array([0, 1, 2, 3, 1, 0], "int32")
    full = str(folder / "decoder_int8_full.tflite")
    assert not any(op.startswith("CUSTOM") for op in lite.op_names(full))
    out = lite.run(full, "decode", z=z, y=y)["x_mean"]
    # int8 activations: a few quantization steps (1/256) of the [0, 1] outputs; measured
    # 0.005, as for an unconditional decoder of this size (0.15 with TFLite's ONE_HOT).
    assert np.max(np.abs(out - np.asarray(model.decode(z, y).mean()))) < 0.02
    assert "ONE_HOT" not in lite.op_names(full)


def test_int8_full_calibration_inputs_of_a_conditional_model():
    from keras_vae.export import lite

    model = _trained_m2()
    inputs = lite.representative_inputs(model, X8)          # labels from q(y|x)
    assert inputs["z"].shape == (48, 3) and inputs["y"].shape == (48,)
    np.testing.assert_array_equal(inputs["y"][:24], model.classify(X8).argmax(1))
    given = lite.representative_inputs(model, (X8, Y8))      # labels given
    np.testing.assert_array_equal(given["y"], np.concatenate([Y8, Y8]))
    latents = lite.representative_inputs(model, np.zeros((5, 3), "float32"))
    np.testing.assert_array_equal(latents["y"], [0, 1, 2, 3, 0])
    with pytest.raises(ValueError, match="Received: representative_data.shape"):
        lite.representative_inputs(model, np.zeros((5, 7), "float32"))
    with pytest.raises(ValueError, match="Received"):
        lite.representative_inputs(model, (X8, np.full(24, 9)))


def test_accuracy_vs_labels_picture_renders(tmp_path):
    from keras_vae import visualization as vz

    path = tmp_path / "acc.png"
    results = {"M2": {100: [0.6, 0.62, 0.58], 1000: [0.75, 0.76, 0.74]},
               "MLP": {100: 0.5, 1000: [0.7]}}
    fig = vz.accuracy_vs_labels(results, path=str(path), chance=0.1, title="t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_legend().get_texts()) == 3
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    np.testing.assert_allclose(lines[0].get_ydata(), [0.6, 0.75])   # means over seeds
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = __import__("matplotlib.image").image.imread(str(path))
    assert image.shape[2] in (3, 4) and image[..., :3].std() > 0.01
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vz.accuracy_vs_labels({"M2": {100: [1.5]}})
    with pytest.raises(TypeError, match="Received: results"):
        vz.accuracy_vs_labels({})
    with pytest.raises(ValueError, match="number of labels"):
        vz.accuracy_vs_labels({"M2": {0: [0.5]}})
