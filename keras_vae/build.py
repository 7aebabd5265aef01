"""From a run config to its data and its model: what `keras-vae train` and its workers build.

`load_data(config)` loads the data set a config names (the test set binarized
once when training binarizes dynamically); `build_model(config, data_shape)`
builds and compiles the model it describes. For a `.csv` table
(`load_table(config)`) the model is an MLP VAE whose encoder standardises its
input and whose decoder has the mixed-type `TableLikelihood`, both with the
per-column statistics of the training split, so it takes and returns values in
the table's units. Both take a validated config
(`keras_vae.config.validate`); `keras_vae.runs` (one process) and
`keras_vae.distributed` (every worker) use them, so both train the same model.
"""

import keras
import numpy as np

__all__ = ["build_model", "load_data", "load_table", "is_table", "num_classes_of",
           "label_subset", "MISSING_AWARE_OBJECTIVES"]

# Objectives that train on rows with missing entries (NaN); with the others a table
# run trains and evaluates on its complete rows.
MISSING_AWARE_OBJECTIVES = ("miwae",)


def is_table(config):
    """Whether the config's data is a .csv table."""
    return config["data"].lower().endswith(".csv")


def load_table(config):
    """The `keras_vae.tables.Table` of a table run's data (None for other data)."""
    if not is_table(config):
        return None
    from keras_vae import data
    return data.read_table(config["data"], categorical=config.get("categorical") or (),
                           numeric=config.get("numeric") or ())


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


def _check_resources(config, data_shape, likelihood_params=None):
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
                             likelihood_params=likelihood_params or 2 * int(np.prod(data_shape)))


def _prior(config):
    """`config["prior"]` as `VAE(prior=...)` takes it: the name, or with
    `prior_components` a prior layer of that many components (the latent size
    is filled in by the model)."""
    if config["prior_components"] is None:
        return config["prior"]
    from keras_vae import priors
    if config["prior"] == "vamp":
        return priors.VampPrior(num_components=config["prior_components"])
    d = config["latent_dims"][-1] if config.get("latent_dims") else config["latent_dim"]
    return priors.MixturePrior(d, num_components=config["prior_components"])


def _posterior(config):
    """`config["posterior"]` as an encoder takes it: the name, or with
    `flow_steps` an IAF head of that many steps."""
    if config["flow_steps"] is None:
        return config["posterior"]
    from keras_vae import distributions
    return distributions.IAFPosterior(config["latent_dim"], flow_steps=config["flow_steps"])


def _table_networks(config, table, x_train):
    """Encoder (standardising its input) and decoder (mixed likelihood) for a table."""
    from keras_vae import likelihoods, networks
    d = len(table.columns)
    shift, scale = table.input_statistics(x_train)
    encoder = networks.MLPEncoder(
        config["latent_dim"], hidden=tuple(config["hidden"]), activation=config["activation"],
        posterior=_posterior(config),
        standardize=networks.Standardization(d, shift=shift, scale=scale))
    shift, scale = table.likelihood_statistics(x_train)
    head = likelihoods.TableLikelihood(
        (d,), kinds=table.kinds, num_categories=table.num_categories, shift=shift, scale=scale,
        table=table.description())
    decoder = networks.MLPDecoder((d,), hidden=tuple(config["hidden"])[::-1],
                                  activation=config["activation"], likelihood=head)
    return encoder, decoder


def _check_table_config(config):
    for key, bad, expected in (("model", config["model"] != "vae", "vae"),
                               ("architecture", config["architecture"] != "mlp", "mlp"),
                               ("conditional", config["conditional"], False),
                               ("labels", config["labels"] is not None, None),
                               ("corruption", config["corruption"] is not None, None),
                               ("latent_dims", config.get("latent_dims") is not None, None)):
        if bad:
            raise ValueError(f"A .csv table trains an MLP VAE with the mixed-type table "
                             f"likelihood: `{key}` must be {expected!r} for it. "
                             f"Received: {key}={config[key]!r}, data={config['data']!r}")


def build_model(config, data_shape, num_classes=None, table=None, x_train=None):
    """Builds and compiles the model a config describes, for data of `data_shape`.

    Args:
      config: a validated run config (`keras_vae.config.validate`).
      data_shape: shape of one example.
      num_classes: the number of classes of the data set's labels; needed
        (and only used) with `config["conditional"]`, which builds a
        `keras_vae.ConditionalVAE`, or `config["labels"]`, a
        `keras_vae.SemiSupervisedVAE` with alpha = 0.1 x labels (see `num_classes_of`).
      table: the `keras_vae.tables.Table` of a table run (`load_table`), with
        `x_train` its training split `[N, D]` (user units, NaN = missing), whose
        observed values give the standardisation statistics. The config's
        `likelihood` does not apply to a table (a note says so if it was changed).

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
    if table is not None:
        _check_table_config(config)
        if x_train is None or tuple(data_shape) != (len(table.columns),):
            raise ValueError(f"A table model needs the training split x_train of shape "
                             f"(N, {len(table.columns)}). Received: data_shape={data_shape}")
        if config["likelihood"] != "bernoulli":
            import warnings

            from keras_vae.validation import KerasVAEWarning
            warnings.warn(f"--likelihood {config['likelihood']} does not apply to a .csv "
                          "table: its likelihood is the mixed-type table likelihood "
                          "(Gaussian / Bernoulli / categorical per column)", KerasVAEWarning,
                          stacklevel=2)
        params = sum({"numeric": 2, "binary": 1}.get(k, c)
                     for k, c in zip(table.kinds, table.num_categories))
        _check_resources(config, data_shape, likelihood_params=params)
    else:
        _check_resources(config, data_shape)
    keras.utils.set_random_seed(config["seed"])
    hidden = tuple(config["hidden"])
    if table is not None:
        encoder, decoder = _table_networks(config, table, x_train)
        model = model_lib.VAE(encoder, decoder, prior=_prior(config), beta=config["beta"],
                              num_samples=config["num_samples"], objective=config["objective"],
                              free_bits=config["free_bits"], seed=config["seed"],
                              warmup_steps=config["warmup_steps"],
                              warmup_schedule=config["warmup_schedule"])
    elif config.get("latent_dims"):  # stacked stochastic layers (config checks the rest)
        from keras_vae import config as config_lib
        from keras_vae.hierarchical import HierarchicalVAE
        default = list(config_lib.defaults()["hidden"])
        model = HierarchicalVAE(
            data_shape, latent_dims=tuple(config["latent_dims"]),
            hidden=None if list(hidden) == default else hidden,  # None: the IWAE paper's
            activation=config["activation"], likelihood=_likelihood(config, data_shape),
            prior=_prior(config), objective=config["objective"],
            num_samples=config["num_samples"], beta=config["beta"], seed=config["seed"],
            free_bits=config["free_bits"], warmup_steps=config["warmup_steps"],
            warmup_schedule=config["warmup_schedule"])
        model.binarize = _step_binarize(config, model.decoder.head)
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
            encoder = networks.ConvEncoder(config["latent_dim"], posterior=_posterior(config))
            decoder = networks.ConvDecoder(data_shape, likelihood=_likelihood(config, data_shape))
        else:
            encoder = networks.MLPEncoder(config["latent_dim"], hidden=hidden,
                                    activation=config["activation"],
                                    posterior=_posterior(config))
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
        # Dynamic binarization and KL warm-up inside the compiled step (issue 17):
        # steps_per_execution and XLA stay on, resumes draw the same bits.
        extra.update(binarize=_step_binarize(config, decoder.head),
                     warmup_steps=config["warmup_steps"] if config["model"] == "vae" else 0,
                     warmup_schedule=config["warmup_schedule"])
        model = model_class(encoder, decoder, prior=_prior(config), beta=config["beta"],
                            num_samples=config["num_samples"], objective=config["objective"],
                            free_bits=config["free_bits"], seed=config["seed"], **extra)
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  jit_compile=config["jit_compile"])
    return model


def _step_binarize(config, head):
    """"dynamic" if the model draws the run's dynamic binarization in its compiled step
    (a likelihood on [0, 1]); None otherwise (the pipeline draws it, or none is asked)."""
    support = getattr(head, "support", None)
    in_graph = (config["binarize"] == "dynamic" and support is not None
                and support[0] >= 0.0 and support[1] <= 1.0)
    return "dynamic" if in_graph else None


def load_data(config):
    """`((x_train, y_train), (x_test, y_test))` of a config.

    With `binarize="dynamic"` the training set stays grey (a VAE draws new
    bits in every training step, `VAE(binarize="dynamic")`; other models' pipelines
    every epoch) and the test set is binarized once, so every
    evaluation scores the same bits.
    """
    from keras_vae import data
    if is_table(config):
        return _load_table_data(config)
    (x_train, y_train), (x_test, y_test) = data.load(
        config["data"], binarize=config["binarize"], data_dir=config["data_dir"],
        seed=config["seed"])
    if config["binarize"] == "dynamic":  # evaluate on one fixed binarization
        x_test = data.binarize_static(x_test, seed=config["seed"] + 1)
    return (x_train, y_train), (x_test, y_test)


def _load_table_data(config):
    """The split of a table run: with an objective not in `MISSING_AWARE_OBJECTIVES`, only the
    complete rows (a note gives the counts); refused when no complete row is left."""
    from keras_vae import data
    if config["binarize"] is not None:
        raise ValueError("--binarize applies to [0, 1] images, not to a .csv table. "
                         f"Received: binarize={config['binarize']!r}, data={config['data']!r}")
    (x_train, _), (x_test, _) = data.load(
        config["data"], seed=config["seed"], categorical=config.get("categorical") or (),
        numeric=config.get("numeric") or ())
    if config["objective"] in MISSING_AWARE_OBJECTIVES:
        return (x_train, None), (x_test, None)
    keep = [np.isfinite(x).all(axis=1) for x in (x_train, x_test)]
    dropped = sum(int((~k).sum()) for k in keep)
    if not keep[0].any() or not keep[1].any():
        part = "training" if not keep[0].any() else "test"
        raise ValueError(
            f"{config['data']}: no {part} row is complete, and the objective "
            f"{config['objective']!r} trains on complete rows only; train on the rows with "
            f"missing values with --objective miwae. Received: {dropped} incomplete rows")
    if dropped:
        import warnings

        from keras_vae.validation import KerasVAEWarning
        warnings.warn(f"{config['data']}: {dropped} rows with missing values left out (the "
                      f"objective {config['objective']!r} trains on complete rows; "
                      f"--objective miwae uses them)", KerasVAEWarning, stacklevel=2)
    return (x_train[keep[0]], None), (x_test[keep[1]], None)
