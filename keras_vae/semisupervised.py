"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed, Welling 2014): a conditional VAE
with a classifier head `q(y|x)`, trained on labelled and unlabelled examples in one `fit`.

Labels `-1` mark unlabelled examples. Labelled ones use the conditional ELBO
plus `alpha` times the classification loss; unlabelled ones marginalise the
label exactly, summing the conditional ELBO over all C classes weighted by
`q(y|x)`, plus the entropy of `q(y|x)`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_vae import objectives, validation
from keras_vae.conditional import ConditionalVAE
from keras_vae.networks import check_activation, hidden_widths

__all__ = ["Classifier", "SemiSupervisedVAE"]


@keras.saving.register_keras_serializable(package="keras_vae")
class Classifier(keras.layers.Layer):
    """MLP classifier `x -> logits of q(y|x)`: flatten, Dense layers, a linear layer of C units.

    Args:
      num_classes: C.
      hidden: widths of the hidden Dense layers, default (200,).
      activation: Keras activation, default "relu".

    Call arguments:
      x: float tensor `[B] + data_shape`.

    Returns:
      float32 logits `[B, C]`.
    """

    def __init__(self, num_classes, hidden=(200,), activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = validation.positive_int("num_classes", num_classes, maximum=65536)
        self.hidden = hidden_widths("hidden", hidden) if hidden else ()
        self.activation = check_activation(activation)
        self.flat_dim = None

    def build(self, input_shape):
        self.flat_dim = int(np.prod(tuple(input_shape)[1:]))
        width = self.flat_dim
        self.dense_layers = []
        for i, units in enumerate(self.hidden):
            layer = keras.layers.Dense(units, activation=self.activation, name=f"dense_{i}")
            layer.build((None, width))
            self.dense_layers.append(layer)
            width = units
        self.logits_layer = keras.layers.Dense(self.num_classes, name="logits")
        self.logits_layer.build((None, width))
        self.built = True

    def call(self, x, training=None):
        h = tf.reshape(tf.cast(x, tf.float32), [-1, self.flat_dim])
        for layer in self.dense_layers:
            h = layer(h)
        return tf.cast(self.logits_layer(h), tf.float32)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "hidden": list(self.hidden), "activation": self.activation}


@keras.saving.register_keras_serializable(package="keras_vae")
class SemiSupervisedVAE(ConditionalVAE):
    """M2: `q(z|x, y)`, `p(x|z, y)`, `p(z) = N(0, I)`, `p(y)` uniform, classifier `q(y|x)`.

    #### Mathematical details

    ```none
    -L(x, y) = E_q(z|x,y)[log p(x|z,y)] + log p(y) - beta * KL(q(z|x,y) || p(z))
    labelled (y >= 0):    loss(x, y) = L(x, y) - alpha * log q(y|x)
    unlabelled (y = -1):  loss(x) = U(x) = sum_c q(c|x) L(x, c) - H(q(y|x))
    loss = mean over the batch of loss(x, y) or U(x)
    ```
    With beta = 1, -L(x, y) <= log p(x, y) and -U(x) <= log p(x). Logged: `loss`,
    `elbo` (-L or -U per example), `reconstruction` and `kl` (at the label, or
    their q(y|x)-weighted sums), `beta`, `classification` (-log q(y|x) on the
    labelled examples of a batch, 0 when it has none) and `labelled` (their fraction).
    The unlabelled objective evaluates the decoder for all C classes: a step
    costs about C times a conditional VAE's.

    Args:
      encoder, decoder: as in `ConditionalVAE`.
      num_classes: C (class labels only; no `condition_dim`).
      alpha: weight of the classification loss (Kingma et al. use 0.1 N for
        N training examples); default 1.0.
      classifier: a layer `x -> logits [B, C]`, or None for
        `Classifier(num_classes, classifier_hidden)`.
      classifier_hidden: widths of the default classifier, default (200,).
      prior, beta, num_samples, analytic_kl, seed...: as in `VAE`
        (objective "elbo" only, no free bits).

    Raises:
      ValueError: `condition_dim`, objective "iwae", free bits, bad `alpha`;
        labels outside [-1, C) in `fit`/`evaluate`.

    Example:
      >>> m = SemiSupervisedVAE(MLPEncoder(8, hidden=(64,)), MLPDecoder((8, 8, 1),
      ...                       hidden=(64,)), num_classes=10)
      >>> m.compile(optimizer="adam")
      >>> history = m.fit(x, y_with_minus_one, epochs=5)
      >>> m.classify(x_test).shape
      (N, 10)
    """

    unlabelled_allowed = True

    def __init__(self, encoder, decoder, num_classes=10, alpha=1.0, classifier=None,
                 classifier_hidden=(200,), **kwargs):
        if kwargs.get("condition_dim") is not None:
            raise ValueError("SemiSupervisedVAE conditions on class labels only. "
                             f"Received: condition_dim={kwargs['condition_dim']!r}")
        kwargs.pop("condition_dim", None)
        if kwargs.get("objective", "elbo") != "elbo" or kwargs.get("free_bits", 0.0):
            raise ValueError("SemiSupervisedVAE trains the ELBO without free bits. Received: "
                             f"objective={kwargs.get('objective')!r}, "
                             f"free_bits={kwargs.get('free_bits')!r}")
        alpha = validation.non_negative_float("alpha", alpha)
        hidden = tuple(classifier_hidden or ())
        if classifier is None:
            classifier = Classifier(num_classes, hidden=hidden, name="classifier")
        if not isinstance(classifier, keras.layers.Layer):
            raise TypeError("`classifier` must be a keras layer mapping x to logits [B, C]. "
                            f"Received: classifier={classifier!r}")
        # Not tracked yet (keras.Model.__init__ has not run): _finish_init adopts it
        # before the model is built.
        object.__setattr__(self, "_pending_classifier", classifier)
        super().__init__(encoder, decoder, num_classes=num_classes, **kwargs)
        self.alpha = alpha
        self.classifier_hidden = hidden

    def _finish_init(self, metric_names):
        self.classifier = self._pending_classifier
        if not self.classifier.built:
            self.classifier.build((None,) + self.data_shape)
        object.__setattr__(self, "_last_classification", tf.constant(0.0))
        object.__setattr__(self, "_last_labelled", tf.constant(0.0))
        super()._finish_init(list(metric_names) + ["classification", "labelled"])

    def _scalar_metrics(self):
        return {"beta": self.beta, "classification": self._last_classification,
                "labelled": self._last_labelled}

    def _data(self, data, row=None):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict):
            y = x.get("label", y) if y is None else y
        x = validation.select_input(x, self.input_key)
        if y is None:
            raise ValueError("A SemiSupervisedVAE trains on pairs (x, y) with y = -1 for "
                             "unlabelled examples. Received: batches without y")
        self._guard(x, row)
        y = tf.convert_to_tensor(y)
        y = tf.argmax(y, -1, output_type=tf.int32) if y.shape.rank == 2 else tf.cast(y, tf.int32)
        tf.debugging.assert_greater_equal(y, -1, message="labels must be in [-1, num_classes)")
        tf.debugging.assert_less(y, self.num_classes,
                                 message="labels must be in [-1, num_classes)")
        return x, y

    def class_terms(self, x, training=False, seed=None, num_samples=None):
        """Per-class ELBO terms: dict of `reconstruction`, `kl` float32 `[C, B]` for
        `y = 0..C-1` (the same noise for every class of an example)."""
        x = tf.cast(x, tf.float32)
        if seed is None and training:
            seed = self.noise_seed(True)
        elif seed is None:
            seed = self.example_seeds(x)
        c = self.num_classes
        batch = tf.shape(x)[0]
        x_all = tf.tile(x, tf.concat([[c], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
        cond = tf.repeat(tf.eye(c), batch, axis=0)                           # [C * B, C]
        seeds = seed if seed.shape.rank == 1 else tf.tile(seed, [c, 1])
        posterior = self.encoder(self.encoder_input(x_all, training, seed), condition=cond,
                                 training=training)
        terms = objectives.elbo(
            x_all, posterior, lambda z: self.decoder(z, condition=cond, training=training),
            self.prior.distribution(), seed=seeds, num_samples=num_samples or self.num_samples,
            analytic_kl=self.analytic_kl, beta=self.beta)
        return {k: tf.reshape(terms[k], [c, batch]) for k in ("reconstruction", "kl")}

    def compute_terms(self, x, training=False, seed=None, num_samples=None, condition=None):
        """The M2 objective on a batch `(x, labels)` (labels int32 `[B]`, -1 = unlabelled).

        Returns the dict of `loss` (scalar) and per-example `elbo`, `reconstruction`,
        `kl` `[B]`, like `VAE.compute_terms`.
        """
        if isinstance(x, (tuple, list)):
            x, labels = x
        else:
            labels = condition
        labels = tf.cast(labels, tf.int32)
        per_class = self.class_terms(x, training, seed, num_samples)
        logits = self.classifier(x, training=training)
        log_q = tf.nn.log_softmax(logits)                                    # [B, C]
        q = tf.exp(log_q)
        log_prior_y = -math.log(self.num_classes)
        neg_l = per_class["reconstruction"] + self.beta * per_class["kl"] - log_prior_y  # [C, B]
        labelled = labels >= 0
        safe = tf.maximum(labels, 0)
        pick = tf.transpose(tf.one_hot(safe, self.num_classes))              # [C, B]
        entropy = -tf.reduce_sum(q * log_q, axis=1)
        unlabelled_loss = tf.reduce_sum(tf.transpose(q) * neg_l, axis=0) - entropy
        cross_entropy = -tf.reduce_sum(tf.one_hot(safe, self.num_classes) * log_q, axis=1)
        labelled_loss = tf.reduce_sum(pick * neg_l, axis=0) + self.alpha * cross_entropy
        per_example = tf.where(labelled, labelled_loss, unlabelled_loss)
        weights = tf.where(labelled[None, :], pick, tf.transpose(q))
        reconstruction = tf.reduce_sum(weights * per_class["reconstruction"], axis=0)
        kl = tf.reduce_sum(weights * per_class["kl"], axis=0)
        neg_bound = reconstruction + kl - log_prior_y - tf.where(labelled, 0.0, entropy)
        count = tf.reduce_sum(tf.cast(labelled, tf.float32))
        object.__setattr__(self, "_last_classification", tf.math.divide_no_nan(
            tf.reduce_sum(tf.where(labelled, cross_entropy, 0.0)), count))
        object.__setattr__(self, "_last_labelled", count / tf.cast(tf.size(labels), tf.float32))
        return {"loss": tf.reduce_mean(per_example), "elbo": -neg_bound,
                "reconstruction": reconstruction, "kl": kl}

    def classify(self, x, batch_size=1000):
        """Class probabilities `q(y|x)`: float32 numpy `[N, C]` (rows sum to 1)."""
        x = validation.data_array(validation.select_input(x, self.input_key), self.data_shape,
                                  self.decoder.head)
        batch_size = validation.batch_size(batch_size)
        return np.concatenate([
            np.asarray(tf.nn.softmax(self.classifier(tf.constant(x[s:s + batch_size]),
                                                     training=False)))
            for s in range(0, len(x), batch_size)]).astype("float32")

    def get_config(self):
        config = super().get_config()
        config.pop("condition_dim", None)
        config.update({"alpha": self.alpha, "classifier_hidden": list(self.classifier_hidden),
                       "classifier": keras.saving.serialize_keras_object(self.classifier)})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return super().from_config(config)
