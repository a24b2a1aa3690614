"""The XOR gate study: a Keras MLP on the 4-row truth table, trained from many seeds at once.

The original trains ``Sequential([Dense(16, relu), Dense(1, sigmoid)])`` with mean-squared
error and Adam, full batch, and reports the epoch at which ``model.fit`` first logs
``binary_accuracy`` 1.0. ``model.fit`` costs ~25 ms per epoch here, so instead every seed of
one shape is trained *together*: seed s's weights sit at index s of stacked variables
(kernel (S, in, out)), the loss is the sum over seeds of each seed's own mean loss (so each
seed's gradient is exactly its own) and one elementwise Adam updates the stack (identical to
S independent Adams). Seed s starts from the weights Keras itself draws for the plain model
under ``keras.utils.set_random_seed(s)``, and the ops mirror Keras' own (same loss functions,
same Adam update), so the per-epoch accuracies match ``model.fit`` (see tests/test_xor_mlp.py).

Saving/loading and the per-seed summary live in ``models/xor_study.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from stages.schema import XorVariant

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)  # the truth table's inputs
XOR_Y = np.array([0, 1, 1, 0], dtype=np.float32)  # and its outputs
PACKET = 64  # floats; a multiple of every SIMD width TensorFlow's CPU kernels use (see lanewise)
LOSSES = {"mse": "mean_squared_error", "bce": "binary_crossentropy"}


def build_plain(cfg: XorVariant, seed: int) -> keras.Model:
    """The original, unbatched Keras model with Keras' own initial weights for ``seed``.

    Layers are constructed right after seeding, as in the original script, because Keras
    initialisers draw their seeds from Python's RNG when they are constructed.
    """
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape=(2,))]
    for units in cfg.hidden_layers:
        layers.append(_dense(units, cfg.activation, cfg))
    layers.append(_dense(1, cfg.output_activation, cfg))
    return keras.Sequential(layers)


def _dense(units: int, activation: str, cfg: XorVariant) -> keras.layers.Dense:
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=cfg.kernel_init,
        bias_initializer=keras.initializers.Constant(cfg.bias_init),
    )


def _optimizer(cfg: XorVariant) -> keras.optimizers.Optimizer:
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=cfg.lr)
    return keras.optimizers.SGD(learning_rate=cfg.lr)


def fit_plain(cfg: XorVariant, x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> list[float]:
    """The reference path: plain ``model.fit``; returns the per-epoch ``binary_accuracy`` log."""
    model = build_plain(cfg, seed)
    model.compile(optimizer=_optimizer(cfg), loss=LOSSES[cfg.loss], metrics=["binary_accuracy"])
    hist = model.fit(
        np.asarray(x, np.float32), _column(y), epochs=epochs, batch_size=len(x), shuffle=False, verbose=0
    )
    return [float(a) for a in hist.history["binary_accuracy"]]


def _column(y: np.ndarray) -> np.ndarray:
    """Targets as a (4, 1) float32 column, the shape of the model's output."""
    return np.asarray(y, np.float32).reshape(-1, 1)


def initial_weights(cfg: XorVariant, seeds: list[int]) -> list[np.ndarray]:
    """Keras' initial weights for each seed, stacked: [kernel (S, in, out), bias (S, out), ...]."""
    per_seed = [build_plain(cfg, s).get_weights() for s in seeds]
    return [np.stack([w[i] for w in per_seed]) for i in range(len(per_seed[0]))]


@dataclass
class Trace:
    """Everything recorded while training a stack of S seeds for E epochs."""

    weights: list[np.ndarray]  # final weights, stacked over seeds (as initial_weights)
    accuracy: np.ndarray  # (E, S) binary_accuracy as model.fit logs it (before the update)
    loss: np.ndarray  # (E, S) loss as model.fit logs it (before the update)
    margin: np.ndarray  # (E, S) min over the 4 cases of |output - 0.5|, before the update
    seconds: float  # wall clock of the training loop


class StackedMLP:
    """S copies of one MLP shape held as stacked tf.Variables and trained in one graph."""

    def __init__(self, cfg: XorVariant, weights: list[np.ndarray]):
        self.cfg = cfg
        self.params = [tf.Variable(w, dtype=tf.float32) for w in weights]
        self.acts = [keras.activations.get(cfg.activation)] * len(cfg.hidden_layers)
        self.acts.append(keras.activations.get(cfg.output_activation))
        self.loss_fn = keras.losses.get(LOSSES[cfg.loss])
        self.m = [tf.Variable(tf.zeros_like(w)) for w in self.params]  # Adam first moments
        self.v = [tf.Variable(tf.zeros_like(w)) for w in self.params]  # Adam second moments
        self.step = tf.Variable(0, dtype=tf.int64)

    def forward(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """x: (4, 2) -> (pre-activation, output) of the last layer, each (S, 4, 1)."""
        h = x[None]
        for i, act in enumerate(self.acts):
            z = tf.matmul(h, self.params[2 * i]) + self.params[2 * i + 1][:, None, :]
            h = lanewise(act, z)
        return z, h

    def seed_losses(self, y: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        """y: (4, 1), z: (S, 4, 1) last pre-activation -> (S,) each seed's loss, reduced as Keras does.

        The loss is applied to the pre-activation through the output activation so that
        Keras' binary_crossentropy finds the sigmoid's logits, as it does in model.fit.
        """
        act = self.acts[-1]
        values = lanewise(lambda yy, zz: self.loss_fn(yy, act(zz)), tf.broadcast_to(y, tf.shape(z)), z)
        return tf.reduce_sum(values, axis=[1, 2]) / 4.0

    def _update(self, grads: list[tf.Tensor]) -> None:
        """One optimizer step with the exact arithmetic of keras.optimizers.Adam / SGD."""
        lr = tf.constant(self.cfg.lr, tf.float32)
        if self.cfg.optimizer == "sgd":
            for p, g in zip(self.params, grads, strict=True):
                p.assign_sub(g * lr)
            return
        beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7  # keras.optimizers.Adam's defaults
        t = tf.cast(self.step + 1, tf.float32)
        alpha = lr * tf.sqrt(1 - tf.pow(tf.constant(beta_2), t)) / (1 - tf.pow(tf.constant(beta_1), t))
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.assign_add((g - m) * (1 - beta_1))
            v.assign_add((tf.square(g) - v) * (1 - beta_2))
            p.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon))
        self.step.assign_add(1)

    @tf.function(reduce_retracing=True)
    def train(self, x: tf.Tensor, y: tf.Tensor, epochs: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Run ``epochs`` full-batch epochs; returns (accuracy, loss, margin), each (E, S)."""
        accs = tf.TensorArray(tf.float32, size=epochs)
        losses = tf.TensorArray(tf.float32, size=epochs)
        margins = tf.TensorArray(tf.float32, size=epochs)
        for e in tf.range(epochs):
            with tf.GradientTape() as tape:
                z, out = self.forward(x)
                per_seed = self.seed_losses(y, z)
                total = tf.reduce_sum(per_seed)  # d total / d seed s's weights = its own gradient
            self._update(tape.gradient(total, self.params))
            right = tf.cast(tf.equal(tf.cast(out > 0.5, tf.float32), y), tf.float32)  # (S, 4, 1)
            accs = accs.write(e, tf.reduce_sum(right, axis=[1, 2]) / 4.0)
            losses = losses.write(e, per_seed)
            margins = margins.write(e, tf.reduce_min(tf.abs(out - 0.5), axis=[1, 2]))
        return accs.stack(), losses.stack(), margins.stack()

    def weights(self) -> list[np.ndarray]:
        return [p.numpy() for p in self.params]


def lanewise(fn: Callable[..., tf.Tensor], *tensors: tf.Tensor) -> tf.Tensor:
    """Apply an elementwise ``fn`` so that each element's result is independent of the stack size.

    TensorFlow's CPU kernels for sigmoid, exp, log... compute full SIMD packets with a
    vectorised approximation and a short tail with the scalar one; the two can differ in
    the last bit. Padding the flattened tensors to a multiple of ``PACKET`` puts every real
    element on the vectorised path, so a seed trained alone or in a stack of 200 gets
    bit-identical results. The inputs share one shape; ``fn`` maps (n, 1) columns to (n, 1).
    """
    shape = tf.shape(tensors[0])
    n = tf.size(tensors[0])
    pad = (-n) % PACKET
    cols = [tf.pad(tf.reshape(t, [-1]), [[0, pad]])[:, None] for t in tensors]
    return tf.reshape(tf.reshape(fn(*cols), [-1])[:n], shape)


def train_stack(
    cfg: XorVariant, x: np.ndarray, y: np.ndarray, seeds: list[int], epochs: int
) -> Trace:
    """Train one network per seed, all together, for exactly ``epochs`` full-batch epochs."""
    net = StackedMLP(cfg, initial_weights(cfg, seeds))
    start = time.perf_counter()
    acc, loss, margin = net.train(
        tf.constant(x, tf.float32), tf.constant(_column(y)), tf.constant(epochs, tf.int32)
    )
    seconds = time.perf_counter() - start
    return Trace(net.weights(), acc.numpy(), loss.numpy(), margin.numpy(), seconds)


def predict(weights: list[np.ndarray], cfg: XorVariant | dict, x: np.ndarray) -> np.ndarray:
    """NumPy forward of every seed's net: x (n, 2) -> outputs (S, n), float32."""
    cfg = cfg if isinstance(cfg, XorVariant) else XorVariant.model_validate(cfg)
    acts = [cfg.activation] * len(cfg.hidden_layers) + [cfg.output_activation]
    h = np.asarray(x, np.float32)[None]
    for i, act in enumerate(acts):
        h = h @ weights[2 * i] + weights[2 * i + 1][:, None, :]
        h = _NP_ACT[act](h)
    return h[..., 0]


_NP_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0),
    "linear": lambda z: z,
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
}
