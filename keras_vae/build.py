"""From a run config to its data and its model: what `keras-vae train` and its workers build.

`load_data(config)` loads the data set a config names (the test set binarized
once when training binarizes dynamically); `build_model(config, data_shape)`
builds and compiles the model it describes. Both take a validated config
(`keras_vae.config.validate`); `keras_vae.runs` (one process) and
`keras_vae.distributed` (every worker) use them, so both train the same model.
"""

import keras
import numpy as np

__all__ = ["build_model", "load_data", "num_classes_of", "label_subset"]


def label_subset(y, num_labels, num_classes, seed):
    """The labels of a semi-supervised run: `num_labels` kept, balanced per class, the
    rest -1 (unlabelled); int64 numpy `[N]`, a function of `seed`.

    Each class keeps `num_labels // C` examples, and the first `num_labels % C`
    classes one more, chosen uniformly without replacement.

    Raises:
      ValueError: `num_labels` below C, or more than a class holds.
    """
    y = np.asarray(y)
    if num_labels < num_classes:
        raise ValueError(f"--labels must give every class at least one example "
                         f"(>= {num_classes}). Received: labels={num_labels}")
    rng = np.random.default_rng(seed)
    out = np.full(len(y), -1, dtype="int64")
    for c in range(num_classes):
        want = num_labels // num_classes + (1 if c < num_labels % num_classes else 0)
        members = np.flatnonzero(y == c)
        if want > len(members):
            raise ValueError(f"--labels asks {want} labelled examples of class {c}, which "
                             f"has {len(members)}. Received: labels={num_labels}")
        chosen = rng.choice(members, want, replace=False)
        out[chosen] = c
    return out


def num_classes_of(config, y_train, y_test):
    """Classes C of a conditional run (max label + 1), or None when not conditional.

    Raises:
      ValueError: `conditional` with a model other than "vae", or with a data set
        without integer labels >= 0.
      TypeError: for labels that are not integers.
    """
    from keras_vae import validation
    if not config.get("conditional") and config.get("labels") is None:
        return None
    flag = "--conditional" if config.get("conditional") else "--labels"
    if config["model"] != "vae":
        raise ValueError(f"{flag} trains a conditional VAE: it needs --model vae. "
                         f"Received: model={config['model']!r}")
    if y_train is None or y_test is None:
        raise ValueError(f"{flag} needs a data set with labels (digits, fashion_mnist, "
                         "mnist, an .npz with y_train/y_test). Received: a data set without "
                         "labels")
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    num_classes = int(max(y_train.max(), y_test.max())) + 1 if y_train.size else 0
    validation.labels("y_train", y_train, None, max(num_classes, 1))
    validation.labels("y_test", y_test, None, max(num_classes, 1))
    return num_classes


def _likelihood(config, data_shape):
    from keras_vae import likelihoods
    if config["likelihood"] == "gaussian":
        return likelihoods.GaussianLikelihood(data_shape, scale=config["likelihood_scale"])
    return config["likelihood"]


def _check_resources(config, data_shape):
    """Refuses an MLP model + training step that do not fit in memory (nothing built yet).

    Conservative where the exact count needs a constructed head: the
    likelihood is taken at two numbers per data element (the most any
    registered likelihood uses), the full-covariance posterior at d + d(d+1)/2.
    """
    from keras_vae import resources
    if config["architecture"] == "conv" and config["model"] == "vae":
        return  # the conv networks check their own parameters before building them
    d = config["latent_dim"]
    posterior = d * (d + 3) // 2 if config["posterior"] == "full" else 2 * d
    num_samples = config["num_samples"] if config["model"] == "vae" else 1
    resources.check_training(data_shape, d, config["hidden"], config["batch_size"],
                             num_samples, posterior_params=posterior,
                             likelihood_params=2 * int(np.prod(data_shape)))


def build_model(config, data_shape, num_classes=None):
    """Builds and compiles the model a config describes, for data of `data_shape`.

    Args:
      config: a validated run config (`keras_vae.config.validate`).
      data_shape: shape of one example.
      num_classes: the number of classes of the data set's labels; needed
        (and only used) with `config["conditional"]`, which builds a
        `keras_vae.ConditionalVAE`, or `config["labels"]`, a
        `keras_vae.SemiSupervisedVAE` with alpha = 0.1 x labels (see `num_classes_of`).

    Returns:
      the compiled model.

    Raises:
      keras_vae.resources.ResourceLimitError (a ValueError): when the model and
        one training step would not fit in the memory available; checked
        before any layer is built.
      ValueError: for a conv architecture on non-image data.
    """
    from keras_vae import model as model_lib
    from keras_vae import networks

    data_shape = tuple(data_shape)
    _check_resources(config, data_shape)
    keras.utils.set_random_seed(config["seed"])
    hidden = tuple(config["hidden"])
    if config.get("latent_dims"):  # stacked stochastic layers (config checks the rest)
        from keras_vae import config as config_lib
        from keras_vae.hierarchical import HierarchicalVAE
        default = list(config_lib.defaults()["hidden"])
        model = HierarchicalVAE(
            data_shape, latent_dims=tuple(config["latent_dims"]),
            hidden=None if list(hidden) == default else hidden,  # None: the IWAE paper's
            activation=config["activation"], likelihood=_likelihood(config, data_shape),
            prior=config["prior"], objective=config["objective"],
            num_samples=config["num_samples"], beta=config["beta"], seed=config["seed"])
    elif config["model"] in ("ae", "dae"):
        from keras_vae import autoencoders
        model = autoencoders.build_autoencoder(
            config["model"], data_shape, config["latent_dim"], hidden, config["activation"],
            _likelihood(config, data_shape), tied=config["tied"], stacked=config["stacked"],
            corruption=config["corruption"], corruption_rate=config["corruption_rate"],
            seed=config["seed"])
    else:
        if config["architecture"] == "conv":
            if len(data_shape) != 3:
                raise ValueError("The conv architecture needs image data (H, W, C). "
                                 f"Received: data shape {data_shape}")
            encoder = networks.ConvEncoder(config["latent_dim"], posterior=config["posterior"])
            decoder = networks.ConvDecoder(data_shape, likelihood=_likelihood(config, data_shape))
        else:
            encoder = networks.MLPEncoder(config["latent_dim"], hidden=hidden,
                                    activation=config["activation"],
                                    posterior=config["posterior"])
            decoder = networks.MLPDecoder(data_shape, hidden=hidden[::-1],
                                    activation=config["activation"],
                                    likelihood=_likelihood(config, data_shape))
        extra = {}
        if config["corruption"] is not None:
            extra = {"corruption": config["corruption"],
                     "corruption_rate": config["corruption_rate"]}
        if config.get("labels") is not None:
            from keras_vae.semisupervised import SemiSupervisedVAE
            if num_classes is None:
                raise ValueError("A semi-supervised run needs the number of classes of the "
                                 "data set's labels. Received: num_classes=None")
            model_class, extra = SemiSupervisedVAE, {**extra, "num_classes": num_classes,
                                                     "alpha": 0.1 * config["labels"]}
        elif config.get("conditional"):
            from keras_vae.conditional import ConditionalVAE
            if num_classes is None:
                raise ValueError("A conditional run needs the number of classes of the data "
                                 "set's labels. Received: num_classes=None")
            model_class, extra = ConditionalVAE, {**extra, "num_classes": num_classes}
        else:
            model_class = model_lib.VAE
        model = model_class(encoder, decoder, prior=config["prior"], beta=config["beta"],
                            num_samples=config["num_samples"], objective=config["objective"],
                            free_bits=config["free_bits"], seed=config["seed"], **extra)
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  jit_compile=config["jit_compile"])
    return model


def load_data(config):
    """`((x_train, y_train), (x_test, y_test))` of a config.

    With `binarize="dynamic"` the training set stays grey (the pipeline draws
    new bits every epoch) and the test set is binarized once, so every
    evaluation scores the same bits.
    """
    from keras_vae import data
    (x_train, y_train), (x_test, y_test) = data.load(
        config["data"], binarize=config["binarize"], data_dir=config["data_dir"],
        seed=config["seed"])
    if config["binarize"] == "dynamic":  # evaluate on one fixed binarization
        x_test = data.binarize_static(x_test, seed=config["seed"] + 1)
    return (x_train, y_train), (x_test, y_test)
