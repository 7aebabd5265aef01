"""The peers' architectures as plain numbers, and their FLOP count (pure Python, no imports).

The peer scripts (`worker.py`, run by the peers virtualenv's Python) build
their PyTorch / Flax / Pythae networks from these lists, and count FLOPs from
the same lists, so the count is of the network each peer actually runs;
`tests/test_peers_bench.py` checks that it equals `benchmarks.throughput`'s
count for the same cell (forward + backward = 3x the forward multiply-adds).
"""

HIDDEN = (200, 200)
DATA_DIM = 784
IMAGE = (28, 28, 1)


def mlp_sizes(latent_dim, hidden=HIDDEN, data_dim=DATA_DIM):
    """(encoder sizes, decoder sizes) of the MLP VAE: D-H-H-2d and d-H-H-D."""
    return ((data_dim,) + tuple(hidden) + (2 * latent_dim,),
            (latent_dim,) + tuple(hidden) + (data_dim,))


def conv_layers(latent_dim):
    """The Keras example's conv VAE as (kind, in_hw, out_hw, kernel, c_in, c_out, stride) rows.

    kind is "conv", "convT" (transposed) or "dense" (hw and kernel 1). Encoder
    rows first, then decoder rows; the split is at the row whose c_out is 2d.
    """
    h, w, c = IMAGE
    return [
        ("conv", (h, w), (h // 2, w // 2), 3, c, 32, 2),
        ("conv", (h // 2, w // 2), (h // 4, w // 4), 3, 32, 64, 2),
        ("dense", (1, 1), (1, 1), 1, (h // 4) * (w // 4) * 64, 16, 1),
        ("dense", (1, 1), (1, 1), 1, 16, 2 * latent_dim, 1),
        ("dense", (1, 1), (1, 1), 1, latent_dim, (h // 4) * (w // 4) * 64, 1),
        ("convT", (h // 4, w // 4), (h // 2, w // 2), 3, 64, 64, 2),
        ("convT", (h // 2, w // 2), (h, w), 3, 64, 32, 2),
        ("convT", (h, w), (h, w), 3, 32, c, 1),
    ]


def _dense_flops(sizes):
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _layer_flops(kind, in_hw, out_hw, kernel, c_in, c_out):
    # a conv costs its output positions; a transposed conv costs what the conv it
    # transposes costs, i.e. its input positions
    hw = in_hw if kind == "convT" else out_hw
    return 2 * hw[0] * hw[1] * kernel * kernel * c_in * c_out


def flops(arch, latent_dim, num_samples=1):
    """Forward + backward FLOPs per example: 3 x (encoder + K x decoder) forward multiply-adds."""
    if arch == "mlp":
        enc, dec = mlp_sizes(latent_dim)
        return 3 * (_dense_flops(enc) + num_samples * _dense_flops(dec))
    if arch == "conv":
        rows = conv_layers(latent_dim)
        split = next(i for i, r in enumerate(rows) if r[5] == 2 * latent_dim) + 1
        enc = sum(_layer_flops(*r[:6]) for r in rows[:split])
        dec = sum(_layer_flops(*r[:6]) for r in rows[split:])
        return 3 * (enc + num_samples * dec)
    raise ValueError(f"`arch` must be 'mlp' or 'conv'. Received: arch={arch!r}")
