"""The pictures: files, sizes, non-constant content, determinism, and the shapes and
models they must cope with (2-D and 4-D latents, flat vectors, colour, no prior)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from PIL import Image
from scipy.stats import norm

import keras_vae as kv
from keras_vae import visualization as vz

tfd = tfp.distributions

ALL = {"loss_curves.png", "reconstructions.png", "samples.png", "latent_vs_pca.png",
       "manifold.png", "interpolation.png"}


def _pixels(path):
    img = Image.open(path)
    assert img.format == "PNG" and img.mode == "RGBA"
    return np.asarray(img.convert("L"), "float64")


def _content_std(path):
    """Std of the non-white pixels in the central 60 % of the picture.

    A mosaic of constant tiles scores 0 here (measured), the trained model's
    pictures 45-80, so a threshold of 20 separates drawn content from blanks.
    """
    a = _pixels(path)
    h, w = a.shape
    centre = a[h // 5:h - h // 5, w // 5:w - w // 5]
    ink = centre[centre < 250]
    return float(ink.std()) if ink.size > 100 else 0.0


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(64,)), kv.MLPDecoder((8, 8, 1), hidden=(64,)))
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = vae.fit(x[:1500], epochs=8, batch_size=64, validation_data=(x[1500:],),
                      verbose=0)
    return vae, x[1500:], y[1500:], history.history


def test_plot_all_writes_every_picture_with_content(trained, tmp_path):
    vae, x, y, history = trained
    paths = vz.plot_all(vae, x, y, out_dir=str(tmp_path / "plots"), history=history, seed=0)
    assert {os.path.basename(p) for p in paths} == ALL
    assert set(os.listdir(tmp_path / "plots")) == ALL
    sizes = {os.path.basename(p): Image.open(p).size for p in paths}
    assert sizes["latent_vs_pca.png"] == (900, 440)
    assert sizes["loss_curves.png"] == (1200, 280)  # 4 panels: loss, elbo, reconstruction, kl
    assert sizes["reconstructions.png"] == (640, 190)  # 10 columns, 2 rows
    for p in paths:
        assert min(sizes[os.path.basename(p)]) >= 180
        assert _content_std(p) > 20, p


def test_pictures_are_deterministic_with_the_seed(trained, tmp_path):
    vae, x, y, _ = trained
    a = vz.plot_all(vae, x, y, out_dir=str(tmp_path / "a"), seed=3)
    b = vz.plot_all(vae, x, y, out_dir=str(tmp_path / "b"), seed=3)
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(_pixels(pa), _pixels(pb))
    other = vz.sample_grid(vae, seed=4, path=str(tmp_path / "other.png"))
    assert other is not None
    assert not np.array_equal(_pixels(str(tmp_path / "a" / "samples.png")),
                              _pixels(str(tmp_path / "other.png")))


def test_latent_scatter_reports_the_pca_comparison(trained):
    vae, x, y, _ = trained
    fig = vz.latent_scatter(vae, x, y)
    left, right = (ax.get_title() for ax in fig.axes[:2])
    assert "latent dims 0 and 1" in left
    assert "5-NN accuracy at dim 2" in left and "5-NN accuracy at dim 2" in right
    acc = float(left.rsplit(" ", 1)[1])
    assert acc == pytest.approx(kv.latent.knn_accuracy(kv.embed(vae, x), y), abs=1e-3)


def test_higher_dimensional_latents_are_projected_and_skip_the_manifold(digits, tmp_path):
    x, y = digits
    vae = kv.VAE(kv.MLPEncoder(4, hidden=(16,)), kv.MLPDecoder((8, 8, 1), hidden=(16,)))
    paths = vz.plot_all(vae, x[:200], y[:200], out_dir=str(tmp_path))
    assert {os.path.basename(p) for p in paths} == ALL - {"manifold.png", "loss_curves.png"}
    title = vz.latent_scatter(vae, x[:200], y[:200]).axes[0].get_title()
    assert "2-D PCA of the 4-D posterior means" in title


def test_manifold_grid_decodes_normal_quantiles():
    seen = []

    class Recorder:  # decoder that records the latent grid it is asked to draw
        prior = kv.StandardNormalPrior(2)

        def encoder(self, x):
            return tfd.Independent(tfd.Normal(tf.zeros([len(x), 2]), 1.0), 1)

        def decoder(self, z):
            seen.append(np.asarray(z))
            return tfd.Independent(tfd.Normal(tf.tile(z[..., :1], [1] * (z.ndim - 1) + [6]),
                                              1.0), 1)

    vz.manifold_grid(Recorder(), n=5)
    z = seen[0]
    q = norm.ppf((np.arange(5) + 0.5) / 5)
    assert z.shape == (5, 5, 2)
    np.testing.assert_allclose(z[0, :, 0], q, rtol=1e-6)      # dim 0 varies along a row
    np.testing.assert_allclose(z[:, 0, 1], q[::-1], rtol=1e-6)  # dim 1 grows upwards


def test_flat_vectors_are_drawn_as_lines(tmp_path):
    x = np.random.default_rng(0).normal(size=(120, 10)).astype("float32")
    vae = kv.VAE(kv.MLPEncoder(2, hidden=(16,)),
                 kv.MLPDecoder((10,), hidden=(16,), likelihood="gaussian"))
    paths = vz.plot_all(vae, x, out_dir=str(tmp_path))
    assert "manifold.png" in {os.path.basename(p) for p in paths}
    assert _content_std(str(tmp_path / "reconstructions.png")) > 20
    fig = vz.reconstruction_grid(vae, x)
    assert "drawn as lines" in fig.axes[0].get_title()


def test_colour_images(tmp_path):
    x = np.random.default_rng(0).uniform(size=(40, 7, 5, 3)).astype("float32")
    vae = kv.VAE(kv.ConvEncoder(3, filters=(8,), hidden=()),
                 kv.ConvDecoder((7, 5, 3), filters=(8,), likelihood="continuous_bernoulli"))
    paths = vz.plot_all(vae, x, out_dir=str(tmp_path))
    assert len(paths) == 4
    img = np.asarray(Image.open(tmp_path / "reconstructions.png").convert("RGB"), "float64")
    assert np.abs(img[..., 0] - img[..., 1]).max() > 50  # really in colour
    assert _content_std(str(tmp_path / "reconstructions.png")) > 20


def test_models_without_a_prior_skip_samples_and_manifold(trained, tmp_path):
    vae, x, y, _ = trained

    class Deterministic:  # the shape of an autoencoder: encoder, decoder, no prior
        prior = None
        data_shape = vae.data_shape
        encoder, decoder = vae.encoder, vae.decoder

    paths = vz.plot_all(Deterministic(), x, y, out_dir=str(tmp_path))
    assert {os.path.basename(p) for p in paths} == {
        "reconstructions.png", "latent_vs_pca.png", "interpolation.png"}
    with pytest.raises(ValueError, match="Received: model.prior=None"):
        vz.sample_grid(Deterministic())


def test_loss_curves_draw_train_and_validation(trained):
    history = trained[3]
    fig = vz.loss_curves(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "elbo", "reconstruction", "kl"]
    styles = [line.get_linestyle() for line in fig.axes[1].get_lines()]
    assert styles == ["-", "--"]
    np.testing.assert_allclose(fig.axes[1].get_lines()[1].get_ydata(), history["val_elbo"])
    with pytest.raises(TypeError, match="Received: history="):
        vz.loss_curves([1.0, 2.0])


def test_save_image_grid_and_bad_input(trained, tmp_path):
    vae = trained[0]
    path = vz.save_image_grid(vae.sample(9, seed=0), str(tmp_path / "s.png"))
    assert Image.open(path).size == (300, 250)  # 3 x 3 tiles: minimum width, 3 * 0.6 + 0.7 in
    with pytest.raises(ValueError, match=r"Received: examples.shape=\(3,\)"):
        vz.save_image_grid(np.zeros(3), str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="Received: out_dir=None"):
        vz.plot_all(vae, trained[1])
    with pytest.raises(ValueError, match="Received: dims=\\(0, 0\\)"):
        vz.manifold_grid(vae, dims=(0, 0))


# ------------------------------------------------------------ atomic PNGs

def _tiles():
    return np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")


def test_a_failing_png_write_keeps_the_old_picture_and_no_temporary(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "grid.png"
    vz.save_image_grid(_tiles(), str(path))
    before = path.read_bytes()

    def broken(self, fname, **kwargs):
        (fname.write(b"\x89PNG half") if hasattr(fname, "write")
         else open(fname, "wb").write(b"\x89PNG half"))
        raise OSError("killed mid-write")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="killed mid-write"):
        vz.save_image_grid(_tiles()[:2], str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_pngs_get_the_mode_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = vz.save_image_grid(_tiles(), str(tmp_path / "grid.png"))
        vz.sample_grid(_tiny_vae(), n=4, path=str(tmp_path / "samples.png"))
    finally:
        os.umask(old)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert oct(os.stat(tmp_path / "samples.png").st_mode & 0o777) == "0o644"


def _tiny_vae():
    keras.utils.set_random_seed(0)
    model = kv.VAE(kv.MLPEncoder(2, hidden=(4,)), kv.MLPDecoder((8, 8, 1), hidden=(4,)))
    model(np.zeros((1, 8, 8, 1), "float32"))
    return model
