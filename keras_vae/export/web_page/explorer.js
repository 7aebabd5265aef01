// The keras-vae web page (written by kv.export.web): decodes latent vectors in the
// browser with LiteRT.js. Everything here runs client-side; the folder is static.
//
// window.kvStatus  {state: "loading" | "ready" | "error", message}
// window.kvDecode(z, y) -> Promise of rows of x_mean pixels (z: one row or rows of
//                          latent_dim numbers; y: a class or one per row, conditional only)
// window.kvManifest the manifest.json of the export

const $ = (id) => document.getElementById(id);
window.kvStatus = {state: "loading", message: ""};
const REEXPORT = "Export the page again: keras-vae export RUN --web --overwrite " +
                 "(or kv.export.web(model, folder, overwrite=True)).";

class PageError extends Error {}

function fail(message) {
  window.kvStatus = {state: "error", message};
  const box = $("error");
  box.textContent = message;
  box.classList.remove("hidden");
  $("status").textContent = "The page could not start.";
  for (const id of ["plane", "decoded", "grid"]) {  // no blank canvas without a reason
    const c = $(id), g = c.getContext("2d");
    g.fillStyle = "#fde8e8"; g.fillRect(0, 0, c.width, c.height);
    g.fillStyle = "#7b1d14"; g.font = "bold 15px sans-serif";
    g.fillText("decoder not loaded", 10, 24);
  }
}

async function fetchOk(url, what) {
  let resp;
  try {
    resp = await fetch(url, {cache: "no-store"});
  } catch (e) {
    throw new PageError(`Could not fetch ${what} (${url}): ${e.message}. Serve this folder ` +
                        "with a static server (python -m http.server), not as a file:// page.");
  }
  if (!resp.ok) {
    throw new PageError(`${what} is missing: ${url} answered HTTP ${resp.status}. ${REEXPORT}`);
  }
  return resp;
}

// ------------------------------------------------------------- numbers

// Inverse of the standard normal CDF (Acklam's rational approximation, |rel err| < 1.2e-9).
function probit(p) {
  const a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00];
  const b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
             6.680131188771972e+01, -1.328068155288572e+01];
  const c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00];
  const d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
             3.754408661907416e+00];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - lo) return -probit(1 - p);
  const q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

// mulberry32: a seeded 32-bit generator; uniform in (0, 1).
function uniforms(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6D2B79F5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
}

// Box-Muller: standard normal draws from the uniform generator.
function normals(uniform) {
  let spare = null;
  return () => {
    if (spare !== null) { const v = spare; spare = null; return v; }
    const r = Math.sqrt(-2 * Math.log(uniform())), t = 2 * Math.PI * uniform();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

// n draws z ~ p(z) (the prior of manifest.json; N(0, I) without one).
function priorDraws(prior, dim, n, seed) {
  const u = uniforms(seed), eps = normals(u), out = [];
  for (let i = 0; i < n; i++) {
    let loc = null, scale = null;
    if (prior && prior.kind === "normal") {
      loc = prior.loc; scale = prior.scale;
    } else if (prior && prior.kind === "mixture") {
      const m = Math.max(...prior.logits), w = prior.logits.map((l) => Math.exp(l - m));
      let pick = u() * w.reduce((x, y) => x + y, 0), k = 0;
      while (k < w.length - 1 && pick >= w[k]) { pick -= w[k]; k++; }
      loc = prior.loc[k]; scale = prior.scale[k];
    }
    const z = [];
    for (let j = 0; j < dim; j++) z.push(loc ? loc[j] + scale[j] * eps() : eps());
    out.push(z);
  }
  return out;
}

// ------------------------------------------------------------- decoding

let lrt = null, decoder = null, manifest = null;
let queue = Promise.resolve();

async function decodeOne(z, y) {
  const inputs = {z: new lrt.Tensor(Float32Array.from(z), [1, manifest.latent_dim])};
  if (manifest.num_classes) inputs.y = new lrt.Tensor(Int32Array.from([y]), [1]);
  let out = null;
  try {
    out = await decoder.run("decode", inputs);
    return Float32Array.from(out.x_mean.toTypedArray());
  } finally {
    for (const t of Object.values(inputs)) t.delete();
    if (out) for (const t of Object.values(out)) t.delete();
  }
}

// One decode at a time (the compiled model is not re-entrant).
function decodeRows(rows, ys) {
  const job = queue.then(async () => {
    const out = [];
    for (let i = 0; i < rows.length; i++) out.push(await decodeOne(rows[i], ys[i]));
    return out;
  });
  queue = job.catch(() => {});
  return job;
}

window.kvDecode = async (z, y) => {
  if (window.kvStatus.state !== "ready") {
    throw new Error(`The decoder is not ready (${window.kvStatus.state}): ` +
                    window.kvStatus.message);
  }
  const rows = Array.isArray(z[0]) ? z : [z];
  for (const r of rows) {
    if (r.length !== manifest.latent_dim) {
      throw new Error(`z rows must have latent_dim=${manifest.latent_dim} numbers; ` +
                      `received ${r.length}`);
    }
  }
  const base = y === undefined ? currentClass() : y;
  const ys = rows.map((_, i) => (Array.isArray(base) ? base[i] : base));
  return (await decodeRows(rows, ys)).map((px) => Array.from(px));
};

// ------------------------------------------------------------- drawing

function imageOf(pixels) {
  const [h, w] = manifest.data_shape, ch = manifest.data_shape[2] || 1;
  const img = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 3; k++) {
      const v = pixels[i * ch + (ch === 3 ? k : 0)];
      img.data[4 * i + k] = Math.round(255 * Math.min(1, Math.max(0, v)));
    }
    img.data[4 * i + 3] = 255;
  }
  const tile = document.createElement("canvas");
  tile.width = w; tile.height = h;
  tile.getContext("2d").putImageData(img, 0, 0);
  return tile;
}

function draw(canvas, pixels, x, y, w, h) {
  const g = canvas.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.drawImage(imageOf(pixels), x, y, w, h);
}

// A grid of decoded images with a thin gap between tiles: images whose ink
// reaches their edges (the 8x8 digits fill their height) would otherwise run
// into one another and read as stripes.
function drawTiles(canvas, images, n) {
  const g = canvas.getContext("2d"), step = canvas.width / n;
  const gap = Math.max(1, Math.round(step / 16));
  g.fillStyle = "#777";
  g.fillRect(0, 0, canvas.width, canvas.height);
  images.forEach((px, k) => draw(canvas, px, (k % n) * step + gap / 2,
                                 Math.floor(k / n) * step + gap / 2, step - gap, step - gap));
}

function currentClass() {
  return manifest && manifest.num_classes ? Number($("class").value) : 0;
}

function dims() {
  const d = manifest.latent_dim;
  return [Number($("dim-x").value || 0), d > 1 ? Number($("dim-y").value || 1) : null];
}

// The latent vector at plane quantiles (p, q) in (0, 1)^2: two chosen dimensions, rest 0.
function planeZ(p, q) {
  const z = new Array(manifest.latent_dim).fill(0), [i, j] = dims();
  z[i] = probit(p);
  if (j !== null) z[j] = probit(q);
  return z;
}

const N_PLANE = 12, N_GRID = 8;
let planeImage = null, pending = null, busy = false;

async function drawPlane() {
  const c = $("plane"), rows = [];
  for (let r = 0; r < N_PLANE; r++) {
    for (let k = 0; k < N_PLANE; k++) rows.push(planeZ((k + 0.5) / N_PLANE, 1 - (r + 0.5) / N_PLANE));
  }
  const ys = rows.map(() => currentClass());
  drawTiles(c, await decodeRows(rows, ys), N_PLANE);
  planeImage = c.getContext("2d").getImageData(0, 0, c.width, c.height);
}

async function pointAt(p, q) {
  pending = [p, q];
  if (busy) return;  // the latest position is decoded when the current decode ends
  busy = true;
  try {
    while (pending) {
      const [pp, qq] = pending;
      pending = null;
      const z = planeZ(pp, qq);
      const [px] = await decodeRows([z], [currentClass()]);
      const d = $("decoded");
      draw(d, px, 0, 0, d.width, d.height);
      const [i, j] = dims();
      $("z-text").textContent = `z${i} = ${z[i].toFixed(2)}` +
        (j !== null ? `, z${j} = ${z[j].toFixed(2)}` : "") +
        (manifest.latent_dim > 2 ? " (other dimensions 0)" : "");
      const c = $("plane"), g = c.getContext("2d");
      if (planeImage) g.putImageData(planeImage, 0, 0);
      g.strokeStyle = "#e74c3c"; g.lineWidth = 2;
      g.strokeRect(pp * c.width - 6, (1 - qq) * c.height - 6, 12, 12);
    }
  } finally {
    busy = false;
  }
}

async function drawSamples() {
  const seed = Math.max(0, Math.floor(Number($("seed").value) || 0));
  const rows = priorDraws(manifest.prior, manifest.latent_dim, N_GRID * N_GRID, seed);
  drawTiles($("grid"), await decodeRows(rows, rows.map(() => currentClass())), N_GRID);
}

async function redraw() {
  await drawPlane();
  await pointAt(0.5, 0.5);
  await drawSamples();
}

function options(select, values, labels, chosen) {
  select.innerHTML = "";
  values.forEach((v, n) => {
    const o = document.createElement("option");
    o.value = String(v); o.textContent = labels[n]; o.selected = v === chosen;
    select.appendChild(o);
  });
}

function setUpControls() {
  const d = manifest.latent_dim, all = [...Array(d).keys()];
  options($("dim-x"), all, all.map(String), 0);
  options($("dim-y"), all, all.map(String), Math.min(1, d - 1));
  if (d > 2) { $("dims-box").classList.remove("hidden"); $("dims-box-y").classList.remove("hidden"); }
  if (manifest.num_classes) {
    options($("class"), [...Array(manifest.num_classes).keys()], manifest.classes, 0);
    $("class-box").classList.remove("hidden");
  }
  for (const id of ["dim-x", "dim-y", "class"]) $(id).addEventListener("change", () => redraw());
  $("resample").addEventListener("click", () => drawSamples());
  $("seed").addEventListener("change", () => drawSamples());
  const plane = $("plane");
  const move = (e) => {
    const r = plane.getBoundingClientRect();
    const p = Math.min(0.999, Math.max(0.001, (e.clientX - r.left) / r.width));
    const q = Math.min(0.999, Math.max(0.001, 1 - (e.clientY - r.top) / r.height));
    pointAt(p, q);
  };
  plane.addEventListener("pointermove", move);
  plane.addEventListener("pointerdown", move);
  const prior = manifest.prior;
  $("prior-note").textContent = !prior ? "No prior (an autoencoder): z ~ N(0, I)." :
    prior.kind === "mixture" ? `Prior: a mixture of ${prior.logits.length} Gaussians.` :
    "Prior: a diagonal Gaussian.";
  if (d === 1) $("plane-note").textContent = "One latent dimension: only the horizontal position counts.";
  $("about").textContent = `${manifest.model}, latent size ${d}, images ` +
    `${manifest.data_shape.join("x")}, likelihood ${manifest.likelihood}; pixels are the ` +
    `decoder's mean E[x|z]. Decoded by LiteRT.js ${manifest.litertjs_version} (WebAssembly).`;
}

// ------------------------------------------------------------- start

async function start() {
  manifest = await (await fetchOk("manifest.json", "The manifest")).json();
  window.kvManifest = manifest;
  try {
    lrt = await import("./litert/litert.js");
    await lrt.loadLiteRt(new URL(manifest.runtime, document.baseURI).href);
  } catch (e) {
    throw new PageError(`The LiteRT.js runtime (litert/) did not load: ${e.message}. ${REEXPORT}`);
  }
  const name = manifest.decoder;
  const bytes = new Uint8Array(await (await fetchOk(name, `The decoder ${name}`)).arrayBuffer());
  const ident = String.fromCharCode(...bytes.slice(4, 8));
  if (bytes.length < 8 || ident !== "TFL3") {
    throw new PageError(`The decoder ${name} is corrupt: not a TFLite file (${bytes.length} ` +
                        `bytes without the TFL3 identifier). ${REEXPORT}`);
  }
  try {
    decoder = await lrt.loadAndCompile(bytes, {accelerator: "wasm"});
  } catch (e) {
    throw new PageError(`The decoder ${name} is corrupt: LiteRT.js could not load it ` +
                        `(${e.message || e}). ${REEXPORT}`);
  }
  const sig = decoder.signatures.decode;
  const z = sig && sig.getInputDetails().find((t) => t.name === "z");
  if (!z || Number(z.shape[1]) !== manifest.latent_dim) {
    throw new PageError(`The decoder ${name} does not match manifest.json (expected a ` +
                        `"decode" signature taking z [1, ${manifest.latent_dim}]). ${REEXPORT}`);
  }
  setUpControls();
  window.kvStatus = {state: "ready", message: ""};
  $("status").textContent = "Ready: everything below is decoded in this browser.";
  await redraw();
  window.kvStatus = {state: "ready", message: "", drawn: true};
}

start().catch((e) => fail(e instanceof PageError ? e.message :
                          `The page failed: ${e && e.message ? e.message : e}`));
