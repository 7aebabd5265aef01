"""One peer contestant in its own process, run by the peers virtualenv's Python.

`benchmarks/peers.py` starts `<venv>/bin/python benchmarks/peers/worker.py`
and speaks JSON lines with it (one request, one reply):

```none
{"op": "build", "peer": P, "arch": "mlp"|"conv", "batch": B, "latent": d,
 "objective": "elbo"|"iwae", "k": K, "data": "x.npy", "seed": 0, "threads": T|null}
    -> {"ok": true, "flops": F, "versions": "..."}      (or {"ok": false, "error": "..."})
{"op": "run", "steps": N} -> {"ok": true, "loss": L, "seconds": s, "cpu_seconds": c,
                              "peak_mb": m, "growth_mb": g}
{"op": "quit"}
```

Peers P: `torch` (eager), `torch_compile` (`torch.compile` of the loss; the
backward is compiled by AOTAutograd, Adam runs eagerly), `jax` (Flax linen +
optax, the whole step under `jax.jit`) and `pythae` (Pythae's own `VAE` with
our encoder/decoder, trained by its `TrainingPipeline`, one 1-pass pipeline
call of N batches per run). All use the same networks as the plain-TF
reference (`spec.py`), Glorot-uniform weights and zero biases, Adam(1e-3,
epsilon 1e-7), `sigma = softplus(raw + softplus^-1(1)) + 1e-4` (Pythae:
its own `exp(0.5 log_var)`), Bernoulli logits; batches of the same grey
images in a fixed permutation (numpy seed `seed`), dynamically binarized
inside the step (Pythae has no dynamic binarization: its images are
binarized once per run size, outside the timing).

The reply channel is a private copy of stdout: file descriptor 1 is pointed at
stderr so that whatever the libraries print never breaks the protocol.
"""

import json
import math
import os
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spec  # noqa: E402

SOFTPLUS_INV_1 = math.log(math.expm1(1.0))
LOG_2PI = math.log(2.0 * math.pi)
PEERS = ("torch", "torch_compile", "jax", "pythae")


def _status(field):
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) / 1024.0 if match else float("nan")


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Batches:
    """Batch b of the epoch is `x[perm[b*B:(b+1)*B]]`; a new permutation each pass."""

    def __init__(self, x, batch, seed):
        self.x, self.batch = x, batch
        self.rng = np.random.default_rng(seed)
        self.per_epoch = len(x) // batch
        self._new_epoch()

    def _new_epoch(self):
        self.perm, self.pos = self.rng.permutation(len(self.x)), 0

    def next(self):
        if self.pos >= self.per_epoch:
            self._new_epoch()
        idx = self.perm[self.pos * self.batch:(self.pos + 1) * self.batch]
        self.pos += 1
        return self.x[idx]

    def block(self, steps):
        return np.concatenate([self.next() for _ in range(steps)])


# ----------------------------------------------------------------------- PyTorch


def _torch_nets(arch, latent, nn):
    if arch == "mlp":
        enc_sizes, dec_sizes = spec.mlp_sizes(latent)

        def mlp(sizes):
            layers = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers.append(nn.Linear(a, b))
                if i < len(sizes) - 2:
                    layers.append(nn.Tanh())
            return nn.Sequential(nn.Flatten(), *layers) if sizes[0] == spec.DATA_DIM else \
                nn.Sequential(*layers)
        return mlp(enc_sizes), mlp(dec_sizes)
    rows = spec.conv_layers(latent)
    (_, _, _, _, c_in, c1, _), (_, _, (h4, w4), _, _, c2, _) = rows[0], rows[1]
    flat, hidden = rows[2][4], rows[2][5]
    enc = nn.Sequential(
        nn.Conv2d(c_in, c1, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
    t1, t2, out = rows[5], rows[6], rows[7]
    dec = nn.Sequential(
        nn.Linear(latent, flat), nn.ReLU(), nn.Unflatten(1, (c2, h4, w4)),
        nn.ConvTranspose2d(t1[4], t1[5], 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(t2[4], t2[5], 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(out[4], out[5], 3, stride=1, padding=1), nn.Flatten())
    return enc, dec


def _glorot_torch(module, nn):
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _torch_loss(torch, enc, dec, x, objective, k):
    """Negative ELBO / IWAE_K of binary `x` (NCHW or flat), as `benchmarks.reference`."""
    F = torch.nn.functional
    mu, raw = enc(x).chunk(2, dim=-1)
    sigma = F.softplus(raw + SOFTPLUS_INV_1) + 1e-4
    flat = x.reshape(x.shape[0], -1)
    if objective == "elbo":
        logits = dec(mu + sigma * torch.randn_like(mu))
        rec = F.binary_cross_entropy_with_logits(logits, flat, reduction="none").sum(-1)
        kl = 0.5 * (mu.square() + sigma.square() - 1.0 - 2.0 * sigma.log()).sum(-1)
        return (rec + kl).mean()
    eps = torch.randn((k,) + tuple(mu.shape), dtype=mu.dtype)
    z = mu + sigma * eps                                              # [K, B, d]
    logits = dec(z.reshape(-1, mu.shape[-1])).reshape(k, mu.shape[0], -1)
    log_px_z = -F.binary_cross_entropy_with_logits(
        logits, flat.expand_as(logits), reduction="none").sum(-1)
    log_pz = -0.5 * (z.square() + LOG_2PI).sum(-1)
    log_qz = -(0.5 * eps.square() + 0.5 * LOG_2PI + sigma.log()).sum(-1)
    return -(torch.logsumexp(log_px_z + log_pz - log_qz, 0) - math.log(k)).mean()


class TorchPeer:
    def __init__(self, req, x, compiled):
        import torch

        torch.manual_seed(req["seed"])
        if req.get("threads"):
            torch.set_num_threads(int(req["threads"]))
        self.torch = torch
        self.arch, self.objective, self.k = req["arch"], req["objective"], req["k"]
        enc, dec = _torch_nets(req["arch"], req["latent"], torch.nn)
        self.model = torch.nn.ModuleDict({"enc": enc, "dec": dec})
        _glorot_torch(self.model, torch.nn)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)

        def loss_fn(x_grey):
            x = (torch.rand_like(x_grey) < x_grey).to(x_grey.dtype)  # dynamic binarization
            return _torch_loss(torch, enc, dec, x, self.objective, self.k)

        self.loss_fn = torch.compile(loss_fn) if compiled else loss_fn
        # NHWC images -> NCHW for the conv net; the MLP flattens either
        layout = (0, 3, 1, 2) if req["arch"] == "conv" else None
        self.batches = Batches(np.ascontiguousarray(x.transpose(layout)) if layout else x,
                               req["batch"], req["seed"])
        self.versions = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"

    def run(self, steps):
        loss = None
        for _ in range(steps):
            xb = self.torch.from_numpy(self.batches.next())
            loss = self.loss_fn(xb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return loss.item()


# ----------------------------------------------------------------------- JAX / Flax


class JaxPeer:
    def __init__(self, req, x):
        import flax
        import flax.linen as fnn
        import jax
        import jax.numpy as jnp
        import optax

        self.jax = jax
        arch, latent, objective, k = req["arch"], req["latent"], req["objective"], req["k"]
        init = {"kernel_init": fnn.initializers.glorot_uniform(),
                "bias_init": fnn.initializers.zeros}

        if arch == "mlp":
            enc_sizes, dec_sizes = spec.mlp_sizes(latent)

            class MLP(fnn.Module):
                sizes: tuple

                @fnn.compact
                def __call__(self, h):
                    h = h.reshape(h.shape[0], -1)
                    for i, n in enumerate(self.sizes[1:]):
                        h = fnn.Dense(n, **init)(h)
                        if i < len(self.sizes) - 2:
                            h = jnp.tanh(h)
                    return h

            enc, dec = MLP(enc_sizes), MLP(dec_sizes)
        else:
            rows = spec.conv_layers(latent)
            h4, w4 = rows[1][2]
            c2 = rows[1][5]

            class Enc(fnn.Module):
                @fnn.compact
                def __call__(self, h):
                    h = fnn.relu(fnn.Conv(rows[0][5], (3, 3), strides=2, padding="SAME",
                                          **init)(h))
                    h = fnn.relu(fnn.Conv(c2, (3, 3), strides=2, padding="SAME", **init)(h))
                    h = fnn.relu(fnn.Dense(rows[2][5], **init)(h.reshape(h.shape[0], -1)))
                    return fnn.Dense(2 * latent, **init)(h)

            class Dec(fnn.Module):
                @fnn.compact
                def __call__(self, z):
                    h = fnn.relu(fnn.Dense(rows[4][5], **init)(z)).reshape(-1, h4, w4, c2)
                    h = fnn.relu(fnn.ConvTranspose(rows[5][5], (3, 3), strides=(2, 2),
                                                   padding="SAME", **init)(h))
                    h = fnn.relu(fnn.ConvTranspose(rows[6][5], (3, 3), strides=(2, 2),
                                                   padding="SAME", **init)(h))
                    h = fnn.ConvTranspose(rows[7][5], (3, 3), strides=(1, 1), padding="SAME",
                                          **init)(h)
                    return h.reshape(h.shape[0], -1)

            enc, dec = Enc(), Dec()

        key = jax.random.PRNGKey(req["seed"])
        shape = (req["batch"],) + x.shape[1:]
        params = {"enc": enc.init(key, jnp.zeros(shape))["params"],
                  "dec": dec.init(jax.random.fold_in(key, 1), jnp.zeros((1, latent)))["params"]}
        tx = optax.adam(1e-3, eps=1e-7)

        def loss_fn(params, x_grey, step_key):
            kb, ke = jax.random.split(step_key)
            x = (jax.random.uniform(kb, x_grey.shape) < x_grey).astype(jnp.float32)
            mu, raw = jnp.split(enc.apply({"params": params["enc"]}, x), 2, axis=-1)
            sigma = jax.nn.softplus(raw + SOFTPLUS_INV_1) + 1e-4
            flat = x.reshape(x.shape[0], -1)

            def bce(logits, labels):
                return optax.sigmoid_binary_cross_entropy(logits, labels).sum(-1)
            if objective == "elbo":
                z = mu + sigma * jax.random.normal(ke, mu.shape)
                logits = dec.apply({"params": params["dec"]}, z)
                kl = 0.5 * (mu ** 2 + sigma ** 2 - 1.0 - 2.0 * jnp.log(sigma)).sum(-1)
                return (bce(logits, flat) + kl).mean()
            eps = jax.random.normal(ke, (k,) + mu.shape)
            z = mu + sigma * eps
            logits = dec.apply({"params": params["dec"]}, z.reshape(-1, latent)).reshape(
                k, mu.shape[0], -1)
            log_w = (-bce(logits, jnp.broadcast_to(flat, logits.shape))
                     - 0.5 * (z ** 2 + LOG_2PI).sum(-1)
                     + (0.5 * eps ** 2 + 0.5 * LOG_2PI + jnp.log(sigma)).sum(-1))
            return -(jax.nn.logsumexp(log_w, 0) - math.log(k)).mean()

        @jax.jit
        def step(params, opt_state, x_grey, i):
            loss, grads = jax.value_and_grad(loss_fn)(params, x_grey,
                                                      jax.random.fold_in(key, i))
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.params, self.opt_state, self.step, self.i = params, tx.init(params), step, 0
        self.batches = Batches(x, req["batch"], req["seed"])
        self.versions = f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}"

    def run(self, steps):
        loss = None
        for _ in range(steps):
            xb = self.jax.device_put(self.batches.next())
            self.params, self.opt_state, loss = self.step(self.params, self.opt_state, xb,
                                                          self.i)
            self.i += 1
        return float(loss)  # waits for the last step (JAX dispatches asynchronously)


# ----------------------------------------------------------------------- Pythae


class PythaePeer:
    def __init__(self, req, x):
        from importlib import metadata

        import torch
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.pipelines import TrainingPipeline
        from pythae.trainers import BaseTrainerConfig
        from pythae.trainers.training_callbacks import TrainingCallback

        if req["objective"] != "elbo":
            raise ValueError("Pythae's VAE trains the ELBO only (its IWAE is another model)")
        torch.manual_seed(req["seed"])
        if req.get("threads"):
            torch.set_num_threads(int(req["threads"]))
        enc_net, dec_net = _torch_nets(req["arch"], req["latent"], torch.nn)
        _glorot_torch(enc_net, torch.nn)
        _glorot_torch(dec_net, torch.nn)
        shape = tuple(x.shape[1:])

        class Encoder(BaseEncoder):
            def __init__(self):
                super().__init__()
                self.net = enc_net

            def forward(self, x):
                mu, log_var = self.net(x).chunk(2, dim=-1)
                return ModelOutput(embedding=mu, log_covariance=log_var)

        class Decoder(BaseDecoder):
            def __init__(self):
                super().__init__()
                self.net = dec_net

            def forward(self, z):
                return ModelOutput(
                    reconstruction=torch.sigmoid(self.net(z)).reshape((-1,) + shape))

        chw = (shape[2], shape[0], shape[1])
        shape = chw  # Pythae's data are channels first
        config = VAEConfig(input_dim=chw, latent_dim=req["latent"], reconstruction_loss="bce")
        self.model = VAE(config, encoder=Encoder(), decoder=Decoder())
        self.TrainingPipeline, self.BaseTrainerConfig = TrainingPipeline, BaseTrainerConfig

        class LastLoss(TrainingCallback):  # the pass's mean train loss, from Pythae's log
            loss = float("nan")

            def on_log(self, training_config, logs, **kwargs):
                self.loss = float(logs.get("train_epoch_loss", float("nan")))

        self.log = LastLoss()
        self.batch = req["batch"]
        self.batches = Batches(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), req["batch"],
                               req["seed"])
        self.rng = np.random.default_rng(req["seed"] + 1)
        self.blocks = {}
        self.out_dir = tempfile.mkdtemp(prefix="kv-pythae-")
        self.versions = f"pythae {metadata.version('pythae')}, torch {torch.__version__}"

    def run(self, steps):
        if steps not in self.blocks:  # static binarization of steps x B images, not timed
            grey = self.batches.block(steps)
            self.blocks[steps] = (self.rng.random(grey.shape) < grey).astype(np.float32)
        config = self.BaseTrainerConfig(
            output_dir=self.out_dir, per_device_train_batch_size=self.batch, num_epochs=1,
            learning_rate=1e-3, optimizer_cls="Adam", optimizer_params={"eps": 1e-7},
            no_cuda=True, steps_saving=None)
        pipeline = self.TrainingPipeline(model=self.model, training_config=config)
        pipeline(train_data=self.blocks[steps], callbacks=[self.log])
        return self.log.loss

def build(req):
    peer = req["peer"]
    if peer not in PEERS:
        raise ValueError(f"`peer` must be one of {PEERS}. Received: peer={peer!r}")
    x = np.load(req["data"]).astype(np.float32)
    if peer in ("torch", "torch_compile"):
        return TorchPeer(req, x, compiled=peer == "torch_compile")
    if peer == "jax":
        return JaxPeer(req, x)
    return PythaePeer(req, x)


def main():
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # library prints go to stderr
    sys.stdout = sys.stderr
    out = os.fdopen(reply_fd, "w", buffering=1)
    peer = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "quit":
                getattr(peer, "close", lambda: None)()
                break
            if req["op"] == "build":
                peer = build(req)
                reply = {"ok": True, "versions": peer.versions,
                         "flops": spec.flops(req["arch"], req["latent"], req["k"])}
            elif req["op"] == "run":
                _reset_peak()
                before = _status("VmRSS")
                start, cpu = time.perf_counter(), time.process_time()
                loss = peer.run(int(req["steps"]))
                reply = {"ok": True, "loss": loss, "seconds": time.perf_counter() - start,
                         "cpu_seconds": time.process_time() - cpu,
                         "peak_mb": _status("VmHWM"), "growth_mb": _status("VmHWM") - before}
            else:
                raise ValueError(f"unknown op {req['op']!r}")
        except Exception as e:  # reported to the parent, which names the peer and the cell
            reply = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                     if str(e) else type(e).__name__}
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
