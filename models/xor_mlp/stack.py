"""Many seeds of one XOR MLP trained together in one TensorFlow graph.

``model.fit`` costs ~25 ms per epoch on 4 rows, so the study trains every seed of a shape
*together*: seed s's weights sit at index s of stacked variables (kernel (S, in, out),
bias (S, out)), the loss is the sum over seeds of each seed's own mean loss (so each seed's
gradient is exactly its own) and one elementwise Adam updates the stack (the same as S
independent Adams). Seed s starts from the weights Keras draws for the plain model under
``keras.utils.set_random_seed(s)``, and the arithmetic mirrors Keras' (its loss functions,
its Adam update), so the per-epoch accuracies match ``model.fit`` (tests/test_xor_mlp.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from models.xor_mlp.study import XorConfig


PACKET = 64  # floats; a multiple of every SIMD width of TensorFlow's CPU kernels (see lanewise)
LOSSES = {"mse": "mean_squared_error", "bce": "binary_crossentropy"}  # schema name -> Keras name


def build_plain(cfg: XorConfig, seed: int) -> keras.Model:
    """The original, unbatched Keras model with Keras' own initial weights for ``seed``.

    Layers are constructed right after seeding, as in the original script, because Keras
    initialisers draw their seeds from Python's RNG when they are constructed.
    """
    keras.utils.set_random_seed(seed)
    layers: list = [keras.Input(shape=(2,))]
    for units in cfg.hidden_layers:
        layers.append(_dense(units, cfg.activation, cfg))
    layers.append(_dense(1, cfg.output_activation, cfg))
    return keras.Sequential(layers)


def _dense(units: int, activation: str, cfg: XorConfig) -> keras.layers.Dense:
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=cfg.kernel_init,
        bias_initializer=keras.initializers.Constant(cfg.bias_init),
    )


def compile_plain(model: keras.Model, cfg: XorConfig) -> keras.Model:
    """Compile as the original: the configured loss and optimizer, metric binary_accuracy."""
    opt = keras.optimizers.Adam(cfg.lr) if cfg.optimizer == "adam" else keras.optimizers.SGD(cfg.lr)
    model.compile(optimizer=opt, loss=LOSSES[cfg.loss], metrics=["binary_accuracy"])
    return model


def initial_weights(cfg: XorConfig, seeds: list[int]) -> list[np.ndarray]:
    """Keras' initial weights per seed, stacked: [kernel (S, in, out), bias (S, out), ...]."""
    per_seed = [build_plain(cfg, s).get_weights() for s in seeds]
    return [np.stack([w[i] for w in per_seed]) for i in range(len(per_seed[0]))]


def lanewise(fn: Callable[..., tf.Tensor], *tensors: tf.Tensor) -> tf.Tensor:
    """Apply an elementwise ``fn`` so each element's result is independent of the stack size.

    TensorFlow's CPU kernels for sigmoid, exp, log... run full SIMD packets through a
    vectorised approximation and a short tail through the scalar one; the two can differ
    in the last bit. Padding the flattened inputs to a multiple of PACKET puts every real
    element on the vectorised path, so a seed trained alone or among 200 gets bit-identical
    results. The inputs share one shape; ``fn`` maps (n, 1) columns to n values.
    """
    shape = tf.shape(tensors[0])
    n = tf.size(tensors[0])
    pad = (-n) % PACKET
    cols = [tf.pad(tf.reshape(t, [-1]), [[0, pad]])[:, None] for t in tensors]
    return tf.reshape(tf.reshape(fn(*cols), [-1])[:n], shape)


@dataclass
class Trace:
    """What training a stack of S seeds for E epochs records; per epoch = as model.fit logs it."""

    weights: list[np.ndarray]  # final weights, stacked as initial_weights
    accuracy: np.ndarray  # (E, S) binary_accuracy of each epoch, measured before its update
    loss: np.ndarray  # (E, S) loss of each epoch, before its update
    margin: np.ndarray  # (E, S) min over the rows of |output - 0.5|, before the update
    final: dict[str, np.ndarray]  # accuracy, loss, margin (each (S,)) of the final weights
    seconds: float  # wall clock of the training loop (tracing included)


class StackedMLP:
    """S copies of one MLP shape held as stacked tf.Variables."""

    def __init__(self, cfg: XorConfig, weights: list[np.ndarray]):
        self.cfg = cfg
        self.params = [tf.Variable(w, dtype=tf.float32) for w in weights]
        self.acts = [keras.activations.get(cfg.activation)] * len(cfg.hidden_layers)
        self.acts.append(keras.activations.get(cfg.output_activation))
        self.loss_fn = keras.losses.get(LOSSES[cfg.loss])
        self.m = [tf.Variable(tf.zeros_like(w)) for w in self.params]  # Adam first moments
        self.v = [tf.Variable(tf.zeros_like(w)) for w in self.params]  # Adam second moments
        self.step = tf.Variable(0, dtype=tf.int64)  # Adam's iteration count
        # One graph per instance (each stack has its own shapes). Wrapping a partial, not the
        # method, keys TensorFlow's "frequent retracing" warning per instance, so studying
        # six shapes in one process does not warn about the expected six traces.
        self.train = tf.function(functools.partial(StackedMLP._train, self))
        self.evaluate = tf.function(functools.partial(StackedMLP._evaluate, self))

    def forward(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """x: (n, 2) -> (pre-activation, output) of the last layer, each (S, n, 1)."""
        h = x[None]
        for i, act in enumerate(self.acts):
            z = tf.matmul(h, self.params[2 * i]) + self.params[2 * i + 1][:, None, :]
            h = lanewise(act, z)
        return z, h

    def seed_losses(self, y: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        """y: (n, 1), z: (S, n, 1) last pre-activation -> (S,) each seed's mean loss.

        The loss takes the pre-activation through the output activation itself so that
        Keras' binary_crossentropy finds the sigmoid's logits, as it does inside model.fit.
        """
        act = self.acts[-1]
        values = lanewise(lambda yy, zz: self.loss_fn(yy, act(zz)), tf.broadcast_to(y, tf.shape(z)), z)
        return tf.reduce_sum(values, axis=[1, 2]) / tf.cast(tf.shape(y)[0], tf.float32)

    def _update(self, grads: list[tf.Tensor]) -> None:
        """One optimizer step with the arithmetic of keras.optimizers.Adam / SGD, op for op."""
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

    @staticmethod
    def _measure(y: tf.Tensor, out: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(accuracy, margin), each (S,): binary_accuracy at 0.5 and min |output - 0.5|."""
        right = tf.cast(tf.equal(tf.cast(out > 0.5, tf.float32), y), tf.float32)  # (S, n, 1)
        return tf.reduce_mean(right, axis=[1, 2]), tf.reduce_min(tf.abs(out - 0.5), axis=[1, 2])

    def _train(self, x: tf.Tensor, y: tf.Tensor, epochs: tf.Tensor) -> tuple[tf.Tensor, ...]:
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
            acc, margin = self._measure(y, out)
            accs, losses = accs.write(e, acc), losses.write(e, per_seed)
            margins = margins.write(e, margin)
        return accs.stack(), losses.stack(), margins.stack()

    def _evaluate(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """(accuracy, loss, margin) of the current weights, each (S,)."""
        z, out = self.forward(x)
        acc, margin = self._measure(y, out)
        return acc, self.seed_losses(y, z), margin

    def weights(self) -> list[np.ndarray]:
        return [p.numpy() for p in self.params]


def train_stack(cfg: XorConfig, x: np.ndarray, y: np.ndarray, seeds: list[int], epochs: int) -> Trace:
    """Train one network per seed, all together, for exactly ``epochs`` full-batch epochs.

    x: (n, 2) inputs, y: (n,) or (n, 1) 0/1 targets.
    """
    net = StackedMLP(cfg, initial_weights(cfg, seeds))
    tx = tf.constant(x, tf.float32)
    ty = tf.constant(np.asarray(y, np.float32).reshape(-1, 1))
    start = time.perf_counter()
    acc, loss, margin = net.train(tx, ty, tf.constant(epochs, tf.int32))
    final = dict(zip(("accuracy", "loss", "margin"), (t.numpy() for t in net.evaluate(tx, ty)), strict=True))
    seconds = time.perf_counter() - start
    return Trace(net.weights(), acc.numpy(), loss.numpy(), margin.numpy(), final, seconds)
