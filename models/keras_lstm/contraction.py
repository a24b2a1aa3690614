"""The contraction phase for the Keras LSTM: the rule of models/torch_rnn/contraction.py.

Once validation first reaches 100%, training adds ``contraction_weight`` x mean over reached
states and inputs b in {0, 1} of relu(||d f(s, b) / ds||_F - rho)^2, with s = (h, c) of the
last LSTM layer after each training sequence's last bit and the Jacobian by forward
differences along each state coordinate.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.keras_lstm.model import PAD

PROBE = 1e-2  # forward-difference step along each state coordinate


def last_cell(model: keras.Model) -> keras.layers.LSTMCell:
    """The cell of the model's last LSTM layer."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)][-1].cell


def final_states(model: keras.Model, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(h, c) of the last LSTM layer after each sequence's last real step; x (B, T, 1), PAD past
    the end. Runs the lower layers as the model does (one layer: x itself)."""
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    seq = x
    for layer in lstms[:-1]:
        seq = layer(seq, mask=tf.not_equal(x[..., 0], PAD))
    cell = lstms[-1].cell
    h = tf.zeros((tf.shape(x)[0], cell.units))
    c = tf.zeros_like(h)
    for t in range(x.shape[1]):
        _, (hn, cn) = cell(seq[:, t], [h, c], training=False)
        keep = x[:, t, :1] != PAD
        h, c = tf.where(keep, hn, h), tf.where(keep, cn, c)
    return h, c


def jacobian_penalty(cell: keras.layers.LSTMCell, h: tf.Tensor, c: tf.Tensor, rho: float) -> tf.Tensor:
    """mean over states and bits of relu(||J_b||_F - rho)^2, J by forward differences in (h, c)."""
    flat = tf.concat([h, c], axis=1)
    n, d = tf.shape(flat)[0], flat.shape[1]
    every = tf.concat([flat, tf.reshape(flat[:, None, :] + PROBE * tf.eye(d), (-1, d))], axis=0)
    units = cell.units
    total = 0.0
    for bit in (0.0, 1.0):
        _, (hn, cn) = cell(tf.fill((tf.shape(every)[0], 1), bit), [every[:, :units], every[:, units:]],
                           training=False)
        out = tf.concat([hn, cn], axis=1)
        jac = (tf.reshape(out[n:], (n, d, d)) - out[:n, None, :]) / PROBE
        total += tf.reduce_mean(tf.nn.relu(tf.sqrt(tf.reduce_sum(jac * jac, axis=[1, 2])) - rho) ** 2)
    return total / 2
