"""kv.export.web: the page runs the decoder in a real browser (headless Chromium over CDP).

The exported folder is served on 127.0.0.1 by `http.server` in a thread; Debian's
/usr/bin/chromium is driven through the DevTools protocol with `websocket-client`
(nothing downloads a browser). Without chromium the tests FAIL (CI installs it).
"""

import base64
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pytest

import keras_vae as kv
from keras_vae import runs
from keras_vae.export.web import RUNTIME_FILES, is_web_export

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1280,900")
# float32 TFLite in the browser against Keras's decode(z).mean() (measured: below 1e-6).
TOLERANCE = 1e-5
Z = np.array([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0], [-2.5, 0.3]], "float32")


def _need_browser():
    if not os.path.isfile(CHROMIUM):
        pytest.fail(f"tests/test_web.py needs Debian's Chromium at {CHROMIUM}: run "
                    "`apt-get install -y chromium` (.ci/run does)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.fail("tests/test_web.py needs websocket-client: pip install -e '.[test]'")


class Browser:
    """Headless Chromium with a fresh profile, one page, raw CDP over a websocket."""

    def __init__(self):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="kv-chromium-")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.isfile(port_file) and len(open(port_file).read().split()) >= 2:
                break
            time.sleep(0.05)
        else:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port in 30 s")
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.next_id = 0
        self.call("Page.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("exception", {})
                               .get("description", result["exceptionDetails"]))
        return result["result"].get("value")

    def open(self, url, timeout=60):
        """Loads `url` and waits until the page is ready and drawn, or shows an error."""
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.evaluate("JSON.stringify(window.kvStatus || null)")
            status = json.loads(status) if status else None
            if status and (status["state"] == "error" or status.get("drawn")):
                return status
            time.sleep(0.1)
        raise AssertionError(f"the page did not finish loading in {timeout} s: {status}")

    def screenshot(self):
        from PIL import Image

        data = self.call("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing down
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A static server on 127.0.0.1 over a folder; tests put exports below it."""
    root = tmp_path_factory.mktemp("site")
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    b = Browser()
    yield b
    b.close()


def _train(model, x, y=None, epochs=3):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def vae(digits):
    import keras

    keras.utils.set_random_seed(0)
    x, _ = digits
    return _train(kv.VAE(kv.MLPEncoder(latent_dim=2, hidden=(32,)),
                         kv.MLPDecoder(output_shape=(8, 8, 1), hidden=(32,))), x)


@pytest.fixture(scope="module")
def exported(vae, server):
    root, url = server
    kv.export.web(vae, root / "vae")
    return root / "vae", f"{url}/vae/"


@pytest.fixture(scope="module")
def page(browser, exported):
    """The browser with the exported page open (ready and drawn)."""
    assert browser.open(exported[1])["state"] == "ready"
    return browser


def _max_diff(browser, z, expected, y=None):
    args = json.dumps(z.tolist()) + ("" if y is None else ", " + json.dumps(y))
    got = np.asarray(browser.evaluate(f"window.kvDecode({args})"), "float32")
    return float(np.max(np.abs(got - np.asarray(expected).reshape(len(z), -1))))


def test_page_decodes_like_keras(page, exported, vae):
    folder, _ = exported
    assert sorted(os.listdir(folder)) == ["decoder.tflite", "explorer.js", "index.html",
                                          "litert", "manifest.json"]
    assert sorted(os.listdir(folder / "litert")) == sorted(RUNTIME_FILES)
    diff = _max_diff(page, Z, vae.decode(Z).mean())
    print(f"[web] max |diff| browser vs Keras decode(z).mean(): {diff:.3g}")
    assert diff <= TOLERANCE, f"max |diff| {diff:.3g} between the page and Keras"


def test_screenshot_is_not_blank(page):
    shot = np.asarray(page.screenshot(), "int64")
    # the plane (12x12 decoded digits) and the sample grid: many distinct grey levels
    assert shot.std() > 20, shot.std()
    assert len(np.unique(shot[..., 0] * 65536 + shot[..., 1] * 256 + shot[..., 2])) > 100
    # ... and the canvases are drawn, not blank
    for name in ("plane", "grid", "decoded"):
        levels = page.evaluate(f"(() => {{ const c = document.getElementById('{name}'); "
                               "const d = c.getContext('2d').getImageData(0, 0, c.width, "
                               "c.height).data; return new Set(d.filter((_, i) => i % 4 == 0))"
                               ".size; })()")
        assert levels > 20, (name, levels)
    manifest = json.loads(page.evaluate("JSON.stringify(window.kvManifest)"))
    assert manifest["latent_dim"] == 2 and manifest["data_shape"] == [8, 8, 1]



def test_plane_tiles_show_the_decoded_images_apart(page, vae):
    # The 12x12 plane, read back from its canvas: each tile is Keras's decoder
    # mean at the tile's N(0, 1) quantiles (x: dim 0 left to right, y: dim 1
    # bottom to top), pixel for pixel, and tiles are kept apart by a grey gap
    # (8x8 digits fill their height: edge to edge they read as stripes).
    from scipy.stats import norm
    got = page.evaluate("(() => { const c = document.getElementById('plane'); return "
                        "Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height)"
                        ".data.filter((_, i) => i % 4 == 0)); })()")
    size = int(round(len(got) ** 0.5))
    canvas = np.asarray(got, "int64").reshape(size, size)
    n, step = 12, size / 12
    gap = max(1, round(step / 16))
    inner = step - gap
    for r, k in ((0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1), (3, 6)):
        z = np.array([[norm.ppf((k + 0.5) / n), norm.ppf(1 - (r + 0.5) / n)]], "float32")
        want = np.round(255 * np.clip(vae.decode(z).mean().numpy()[0, ..., 0], 0, 1))
        x0, y0 = k * step + gap / 2, r * step + gap / 2
        rows = (y0 + (np.arange(8) + 0.5) * inner / 8).astype(int)
        cols = (x0 + (np.arange(8) + 0.5) * inner / 8).astype(int)
        tile = canvas[np.ix_(rows, cols)]
        assert np.abs(tile - want).max() <= 2, (r, k, tile, want)
    for k in range(1, n):  # the gap column between tiles k-1 and k, in every row
        assert (canvas[:, int(k * step)] == 0x77).mean() > 0.9, k

def test_prior_samples_follow_the_seed(page):
    browser = page
    grab = "document.getElementById('grid').toDataURL()"
    first = browser.evaluate(grab)
    browser.evaluate("document.getElementById('seed').value = 7;"
                     "document.getElementById('seed').dispatchEvent(new Event('change'));"
                     "new Promise(r => setTimeout(r, 500))")
    seven = browser.evaluate(grab)
    browser.evaluate("document.getElementById('seed').value = 0;"
                     "document.getElementById('seed').dispatchEvent(new Event('change'));"
                     "new Promise(r => setTimeout(r, 500))")
    assert seven != first and browser.evaluate(grab) == first


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_broken_decoder_shows_a_message(browser, exported, server, damage):
    folder, _ = exported
    root, url = server
    broken = root / f"broken-{damage}"
    shutil.copytree(folder, broken)
    target = broken / "decoder.tflite"
    if damage == "missing":
        target.unlink()
    elif damage == "garbage":
        target.write_bytes(b"this is not a flatbuffer" * 10)
    else:
        target.write_bytes(target.read_bytes()[:2000])
    status = browser.open(f"{url}/broken-{damage}/")
    assert status["state"] == "error"
    shown = browser.evaluate("document.getElementById('error').innerText")
    assert "decoder.tflite" in shown
    assert ("missing" if damage == "missing" else "corrupt") in shown
    assert browser.evaluate("getComputedStyle(document.getElementById('error')).display") \
        != "none"


def test_conditional_model_has_a_class_selector(browser, server, digits):
    import keras

    keras.utils.set_random_seed(1)
    x, y = digits
    cvae = _train(kv.ConditionalVAE(kv.MLPEncoder(latent_dim=3, hidden=(32,)),
                                    kv.MLPDecoder(output_shape=(8, 8, 1), hidden=(32,)),
                                    num_classes=10), x, y.astype("int32"), epochs=1)
    root, url = server
    kv.export.web(cvae, root / "cvae", class_names=[f"digit {i}" for i in range(10)])
    assert browser.open(f"{url}/cvae/")["state"] == "ready"
    z = np.array([[0.0, 0.5, -1.0], [1.5, -0.2, 0.3]], "float32")
    for label in (3, 7):
        want = cvae.decode(z, np.full(2, label, "int32")).mean()
        diff = _max_diff(browser, z, want, label)
        print(f"[web] conditional, class {label}: max |diff| {diff:.3g}")
        assert diff <= TOLERANCE
    labels = browser.evaluate("[...document.getElementById('class').options].map(o => o.text)")
    assert labels == [f"digit {i}" for i in range(10)]
    # three latent dimensions: two selectable ones, shown
    assert browser.evaluate("document.getElementById('dim-x').options.length") == 3
    assert browser.evaluate("getComputedStyle(document.getElementById('dims-box')).display") \
        != "none"


# --------------------------------------------------------------- refusals, no browser

def test_decoder_file_has_a_batch_of_one(exported, vae):
    from keras_vae.export import lite

    folder, _ = exported
    runner = lite.signature_runner(str(folder / "decoder.tflite"), "decode")
    assert list(runner.get_input_details()["z"]["shape"]) == [1, 2]
    got = lite.run(str(folder / "decoder.tflite"), "decode", z=Z[:1])["x_mean"]
    assert np.max(np.abs(got - vae.decode(Z[:1]).mean())) <= TOLERANCE
    with pytest.raises(ValueError, match="batch_size"):
        lite.convert(vae, ("float32",), batch_size=0)
    with pytest.raises(ValueError, match="int8_full.*batch_size"):
        lite.convert(vae, ("int8_full",), representative_data=np.zeros((4, 8, 8, 1)),
                     batch_size=1)

def test_table_model_is_refused(tmp_path):
    model = kv.VAE(kv.MLPEncoder(latent_dim=2, hidden=(8,)),
                   kv.MLPDecoder(output_shape=(5,), hidden=(8,), likelihood="gaussian"))
    with pytest.raises(ValueError, match=r"shows images.*Received: data_shape=\(5,\)"):
        kv.export.web(model, tmp_path / "site", allow_untrained=True)
    assert not (tmp_path / "site").exists()


def test_existing_folders_are_not_replaced_silently(vae, exported, tmp_path):
    folder, _ = exported
    with pytest.raises(FileExistsError, match="overwrite"):
        kv.export.web(vae, folder)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a keras-vae web export"):
        kv.export.web(vae, other, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        kv.export.web(vae, tmp_path / "file")
    before = (folder / "decoder.tflite").stat().st_mtime_ns
    kv.export.web(vae, folder, overwrite=True)
    assert is_web_export(folder) and (folder / "decoder.tflite").stat().st_mtime_ns != before
    assert not [n for n in os.listdir(folder.parent) if n.startswith(".tmp-")]


# --------------------------------------------------------------- the run folder and CLI

def test_train_writes_the_page_and_export_web(tmp_path, capsys):
    from keras_vae import cli

    run = tmp_path / "run"
    code = cli.main(["train", str(run), "--epochs", "1", "--hidden", "16", "--eval-samples",
                     "5", "--no-plots", "--no-export", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert is_web_export(run / "web") and (run / "web" / "decoder.tflite").is_file()
    assert f"python -m http.server -d {run / 'web'} 8000" in out
    assert "http://127.0.0.1:8000/" in out
    # `export --web`: into RUN/web (exists: --overwrite), or --out
    assert cli.main(["export", str(run), "--web", "--quiet"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert cli.main(["export", str(run), "--web", "--out", str(tmp_path / "site"),
                     "--quiet"]) == 0
    assert is_web_export(tmp_path / "site")


def test_no_web_flag_and_tables(tmp_path, capsys):
    from keras_vae import cli, config

    assert runs.DEFAULTS["web"] is True
    args = cli.build_parser().parse_args(["train", "--no-web"])
    assert config.overrides(args)["web"] is False
    # a table run: no page (even by default), and `export --web` is one line, exit 2
    rng = np.random.default_rng(0)
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{u:.3f},{v:.3f}\n" for u, v in rng.normal(size=(64, 2))))
    run = tmp_path / "run"
    assert cli.main(["train", str(run), "--data", str(table), "--epochs", "1", "--hidden",
                     "8", "--eval-samples", "5", "--no-export", "--quiet"]) == 0
    assert not (run / "web").exists()
    assert "http.server" not in capsys.readouterr().out
    assert cli.main(["export", str(run), "--web", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "table" in err[0] and "images" in err[0]
    assert cli.main(["export", str(run), "--quiet"]) == 2  # neither --out nor --web
    assert "--out" in capsys.readouterr().err


def _screenshot(folder, out_png):
    """`python tests/test_web.py WEB_FOLDER OUT.png`: the export guide's picture, taken the
    way the tests take theirs (served on 127.0.0.1, headless Chromium over CDP)."""
    folder = os.path.abspath(folder)
    handler = functools.partial(_Quiet, directory=os.path.dirname(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    browser = Browser()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{os.path.basename(folder)}/"
        print(browser.open(url))
        browser.evaluate("document.getElementById('plane').dispatchEvent(new PointerEvent("
                         "'pointermove', {clientX: document.getElementById('plane')"
                         ".getBoundingClientRect().left + 335, clientY: document."
                         "getElementById('plane').getBoundingClientRect().top + 265}));"
                         "new Promise(r => setTimeout(r, 500))")
        shot = browser.screenshot()
        ink = np.argwhere(np.asarray(shot.convert("L")) < 200)  # crop the empty margins
        bottom, right = ink.max(0) + 24
        shot.crop((0, 0, min(right, shot.width), min(bottom, shot.height))).save(out_png)
    finally:
        browser.close()
        httpd.shutdown()


if __name__ == "__main__":
    import sys

    _screenshot(sys.argv[1], sys.argv[2])
