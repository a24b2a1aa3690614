"""Hand-built nets whose weights are set by hand, as torch-style weight dicts (float32 arrays).

All compute parity with two units A = AND(q, x) and O = OR(q, x) of the previous parity q and
the new bit x, encoded as +-1 (tanh saturated by ``beta``); the parity after the step is
q' = O - A = (h_O - h_A) / 2 (or / (2m) when the state's "on" value is m), and the zero state
reads as q = 0. Readout: gamma * (q - 1/2).
"""

from __future__ import annotations

import numpy as np

Weights = dict[str, np.ndarray]


def _and_or(beta: float, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W_hh (2,2), w_ih (2,), bias (2,)) of the AND/OR pre-activations for states +-scale."""
    w_hh = beta * np.array([[-0.5, 0.5], [-0.5, 0.5]]) / scale
    return w_hh, np.array([beta, beta]), np.array([-1.5 * beta, -0.5 * beta])


def _f32(d: dict[str, np.ndarray]) -> Weights:
    return {k: np.asarray(v, dtype=np.float32) for k, v in d.items()}


def parity_rnn(beta: float = 10.0, gamma: float = 4.0) -> Weights:
    """2-unit tanh RNN (rnn_packed keys) computing parity."""
    w_hh, w_ih, b = _and_or(beta, 1.0)
    return _f32({"rnn.weight_ih_l0": w_ih[:, None], "rnn.weight_hh_l0": w_hh, "rnn.bias_ih_l0": b,
                 "rnn.bias_hh_l0": np.zeros(2), "readout.weight": gamma * np.array([[-0.5, 0.5]]),
                 "readout.bias": [-0.5 * gamma]})


def drifting_rnn(rate: float = 1.02, kick: float = 1e-3, pull: float = 10.0) -> Weights:
    """parity_rnn plus a third unit D: a 1 kicks it by ~kick, under 0s it grows by ``rate`` a step
    (self-weight above 1, linear range of tanh) and the readout subtracts pull * h_D.
    After a 1 and about log(0.1 / kick) / log(rate) zeros (~233) the odd answer turns even."""
    w = parity_rnn()
    w_hh = np.zeros((3, 3), dtype=np.float32)
    w_hh[:2, :2], w_hh[2, 2] = w["rnn.weight_hh_l0"], rate
    out = {"rnn.weight_ih_l0": np.r_[w["rnn.weight_ih_l0"][:, 0], kick][:, None],
           "rnn.weight_hh_l0": w_hh, "rnn.bias_ih_l0": np.r_[w["rnn.bias_ih_l0"], 0.0],
           "rnn.bias_hh_l0": np.zeros(3), "readout.weight": np.c_[w["readout.weight"], [[-pull]]],
           "readout.bias": w["readout.bias"]}
    return _f32(out)


def parity_lstm(beta: float = 10.0, gate: float = 20.0, gamma: float = 4.0) -> Weights:
    """2-unit LSTM (lstm keys): input and output gates open, forget gate shut, candidate = AND/OR."""
    m = np.tanh(1.0)  # h = o * tanh(c) with c = g = +-1
    w_hh, w_ih, b = _and_or(beta, m)
    zeros, open_, shut = np.zeros((2, 2)), np.full(2, gate), np.full(2, -gate)
    weight_hh = np.concatenate([zeros, zeros, w_hh, zeros])
    weight_ih = np.r_[0, 0, 0, 0, w_ih, 0, 0][:, None]
    bias = np.r_[open_, shut, b, open_]
    return _f32({"rnn.weight_ih_l0": weight_ih, "rnn.weight_hh_l0": weight_hh, "rnn.bias_ih_l0": bias,
                 "rnn.bias_hh_l0": np.zeros(8), "readout.weight": gamma * np.array([[-0.5, 0.5]]) / m,
                 "readout.bias": [-0.5 * gamma]})


def parity_gru(beta: float = 10.0, gate: float = 20.0, gamma: float = 4.0) -> Weights:
    """2-unit GRU (gru keys): reset gate open (r = 1), update gate shut (z = 0), n = AND/OR."""
    w_hh, w_ih, b = _and_or(beta, 1.0)
    zeros = np.zeros((2, 2))
    weight_hh = np.concatenate([zeros, zeros, w_hh])
    weight_ih = np.r_[0, 0, 0, 0, w_ih][:, None]
    bias_ih = np.r_[np.full(2, gate), np.full(2, -gate), b]
    return _f32({"rnn.weight_ih_l0": weight_ih, "rnn.weight_hh_l0": weight_hh, "rnn.bias_ih_l0": bias_ih,
                 "rnn.bias_hh_l0": np.zeros(6), "readout.weight": gamma * np.array([[-0.5, 0.5]]),
                 "readout.bias": [-0.5 * gamma]})


def random_rnn(hidden: int = 8, seed: int = 0) -> Weights:
    """A tanh RNN with random weights U(-1/sqrt(H), 1/sqrt(H)) (torch's init): not a parity net."""
    rng = np.random.default_rng(seed)
    b = 1 / np.sqrt(hidden)
    shapes = {"rnn.weight_ih_l0": (hidden, 1), "rnn.weight_hh_l0": (hidden, hidden), "rnn.bias_ih_l0": (hidden,),
              "rnn.bias_hh_l0": (hidden,), "readout.weight": (1, hidden), "readout.bias": (1,)}
    return _f32({k: rng.uniform(-b, b, s) for k, s in shapes.items()})
