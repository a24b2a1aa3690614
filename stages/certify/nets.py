"""The parity nets' step equations, written once against an abstract arithmetic ("ops").

This is the only code that ``certify.py`` (the search) and ``check.py`` (the independent
checker) share. Each supplies its own ``ops``: a point arithmetic (plain float64), or an
interval arithmetic that encloses the exact real result. The equations below are the
exact real-number semantics of the project's cells (models/torch_rnn/cells.py and layers.py,
models/keras_lstm/model.py), with the float32 weights converted exactly to float64.

State layout (one row per state, N rows):
- ``rnn`` (rnn_packed, rnn_per_sequence, manual_rnn, manual_rnn_bce): h, shape (N, H)
- ``lstm`` (lstm, manual_lstm, keras_lstm): [h, c], shape (N, 2H)
- ``gru``: h, shape (N, H)
The initial state is all zeros; a step reads one bit x in {0, 1}; the logit is
``w . h + b0`` on the state after the last bit (logit > 0 means odd parity).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

KIND = {
    "rnn_packed": "rnn", "rnn_per_sequence": "rnn", "manual_rnn": "rnn", "manual_rnn_bce": "rnn",
    "lstm": "lstm", "manual_lstm": "lstm", "keras_lstm": "lstm", "gru": "gru",
}
Weights = dict[str, np.ndarray]


class Ops(Protocol):
    """An arithmetic on batches of values V (arrays, or (lo, hi) pairs of arrays)."""

    def const(self, v: np.ndarray) -> Any: ...  # an exact float64 array as a value
    def add(self, a: Any, b: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def mul(self, a: Any, b: Any) -> Any: ...
    def lin(self, w: np.ndarray, a: Any) -> Any: ...  # a (N, n) times w.T, w (m, n) -> (N, m)
    def tanh(self, a: Any) -> Any: ...
    def sigmoid(self, a: Any) -> Any: ...
    def cols(self, a: Any, start: int, stop: int) -> Any: ...  # a[:, start:stop]
    def cat(self, parts: list[Any]) -> Any: ...  # concatenate along axis 1


@dataclass(frozen=True)
class Net:
    """One net's parameters in float64, exactly equal to its float32 weights.

    kind: "rnn" | "lstm" | "gru"; hidden: H.
    w_h: (G*H, H) recurrent matrix, G = 1 (rnn), 4 (lstm: i, f, g, o), 3 (gru: r, z, n).
    u: (G*H,) input column. b_in: (G*H,) input-side bias. b_rec: (G*H,) recurrent-side bias
    (for the GRU, b_rec's n block sits inside r * (...); otherwise the two biases just add).
    w_out: (H,) readout row; b_out: (1,) readout bias.
    """

    kind: str
    hidden: int
    w_h: np.ndarray
    u: np.ndarray
    b_in: np.ndarray
    b_rec: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray

    @property
    def state_dim(self) -> int:
        """Length of the state vector: H, or 2H for the LSTM's [h, c]."""
        return 2 * self.hidden if self.kind == "lstm" else self.hidden

    def digest(self) -> str:
        """sha256 of every parameter's bytes: binds a certificate to these weights."""
        sha = hashlib.sha256(self.kind.encode())
        for a in (self.w_h, self.u, self.b_in, self.b_rec, self.w_out, self.b_out):
            sha.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return sha.hexdigest()


def _f64(a: Any) -> np.ndarray:
    """float32 (or float64) array -> float64 (exact: every float32 is a float64)."""
    return np.asarray(a, dtype=np.float64)


def net_from_weights(family: str, weights: Weights) -> Net:
    """Build a Net from a family name and its weights (torch state-dict keys, or keras keys).

    torch keys: rnn.weight_ih_l0 (GH,1), rnn.weight_hh_l0 (GH,H), rnn.bias_ih_l0, rnn.bias_hh_l0,
    readout.weight (1,H), readout.bias (1,); manual_rnn: input.*, hidden.*, readout.*;
    manual_lstm: gates.weight (4H, 1+H), gates.bias, readout.*.
    keras_lstm keys: kernel (1,4H), recurrent_kernel (H,4H), bias (4H,), dense_kernel (H,1), dense_bias (1,).
    """
    if family not in KIND:
        raise ValueError(f"unknown family {family!r} (allowed: {', '.join(KIND)})")
    w = {k: _f64(v) for k, v in weights.items()}
    if any(k.endswith("_l1") for k in w):
        raise ValueError(f"{family}: only one recurrent layer is supported")
    if family == "keras_lstm":
        g = w["kernel"].shape[1]
        parts = (w["recurrent_kernel"].T, w["kernel"][0], w["bias"], np.zeros(g))
        return Net("lstm", g // 4, *parts, w["dense_kernel"][:, 0], w["dense_bias"].reshape(1))
    if family in ("manual_rnn", "manual_rnn_bce"):
        parts = (w["hidden.weight"], w["input.weight"][:, 0], w["input.bias"], w["hidden.bias"])
    elif family == "manual_lstm":
        gw = w["gates.weight"]
        parts = (gw[:, 1:], gw[:, 0], w["gates.bias"], np.zeros(gw.shape[0]))
    else:
        parts = (w["rnn.weight_hh_l0"], w["rnn.weight_ih_l0"][:, 0], w["rnn.bias_ih_l0"], w["rnn.bias_hh_l0"])
    hidden = parts[0].shape[1]
    return Net(KIND[family], hidden, *parts, w["readout.weight"][0], w["readout.bias"].reshape(1))


def weights_from_torch_state_dict(family: str, sd: dict[str, Any]) -> Weights:
    """A torch state dict (tensors) -> {key: float32 numpy array}; keys kept as they are."""
    if family == "keras_lstm":
        raise ValueError("keras_lstm has no torch state dict: use weights_from_keras")
    return {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in sd.items()}


def weights_from_keras(weight_list: list[np.ndarray]) -> Weights:
    """keras model.get_weights() of [LSTM, Dense(1)] -> the keras_lstm keys used here."""
    names = ("kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")
    if len(weight_list) != len(names):
        raise ValueError(f"expected {len(names)} arrays (one LSTM layer and Dense(1)), got {len(weight_list)}")
    return {n: np.asarray(a) for n, a in zip(names, weight_list, strict=True)}


# ----------------------------------------------------------------------------- step equations


def _pre(ops: Ops, net: Net, h: Any, x: int) -> Any:
    """Pre-activations W_h h + u x + b_in + b_rec, (N, G*H); u*x is exact for x in {0, 1}."""
    bias = ops.add(ops.add(ops.const(net.u * x), ops.const(net.b_in)), ops.const(net.b_rec))
    return ops.add(ops.lin(net.w_h, h), bias)


def rnn_step(ops: Ops, net: Net, s: Any, x: int) -> Any:
    """h' = tanh(W_hh h + W_ih x + b_ih + b_hh); s = h, (N, H)."""
    return ops.tanh(_pre(ops, net, s, x))


def lstm_step(ops: Ops, net: Net, s: Any, x: int) -> Any:
    """i,f,o = sigmoid, g = tanh of the gate blocks (order i, f, g, o); c' = f c + i g; h' = o tanh(c').

    s = [h, c], (N, 2H) -> (N, 2H).
    """
    hs = net.hidden
    h, c = ops.cols(s, 0, hs), ops.cols(s, hs, 2 * hs)
    pre = _pre(ops, net, h, x)
    i, f = ops.sigmoid(ops.cols(pre, 0, hs)), ops.sigmoid(ops.cols(pre, hs, 2 * hs))
    g, o = ops.tanh(ops.cols(pre, 2 * hs, 3 * hs)), ops.sigmoid(ops.cols(pre, 3 * hs, 4 * hs))
    c_new = ops.add(ops.mul(f, c), ops.mul(i, g))
    return ops.cat([ops.mul(o, ops.tanh(c_new)), c_new])


def gru_step(ops: Ops, net: Net, s: Any, x: int) -> Any:
    """torch GRU (gate order r, z, n): r,z = sigmoid(W_i x + b_i + W_h h + b_h) blocks,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h = n + z (h - n). s = h, (N, H).
    """
    hs = net.hidden
    gi = ops.add(ops.const(net.u * x), ops.const(net.b_in))
    gh = ops.add(ops.lin(net.w_h, s), ops.const(net.b_rec))
    r = ops.sigmoid(ops.add(ops.cols(gi, 0, hs), ops.cols(gh, 0, hs)))
    z = ops.sigmoid(ops.add(ops.cols(gi, hs, 2 * hs), ops.cols(gh, hs, 2 * hs)))
    n = ops.tanh(ops.add(ops.cols(gi, 2 * hs, 3 * hs), ops.mul(r, ops.cols(gh, 2 * hs, 3 * hs))))
    return ops.add(n, ops.mul(z, ops.sub(s, n)))


STEPS = {"rnn": rnn_step, "lstm": lstm_step, "gru": gru_step}


def step(ops: Ops, net: Net, s: Any, x: int) -> Any:
    """One step of ``net`` on a batch of states s (N, state_dim) reading bit x -> (N, state_dim)."""
    return STEPS[net.kind](ops, net, s, x)


def readout(ops: Ops, net: Net, s: Any) -> Any:
    """Logits w_out . h + b_out of a batch of states, (N, 1)."""
    h = ops.cols(s, 0, net.hidden)
    return ops.add(ops.lin(net.w_out[None, :], h), ops.const(net.b_out))


class FloatOps:
    """Plain float64 point arithmetic (values are arrays): for concrete runs, not for proofs."""

    def const(self, v: np.ndarray) -> np.ndarray:
        return v

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b

    def mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    def lin(self, w: np.ndarray, a: np.ndarray) -> np.ndarray:
        return a @ w.T

    def tanh(self, a: np.ndarray) -> np.ndarray:
        return np.tanh(a)

    def sigmoid(self, a: np.ndarray) -> np.ndarray:
        return 0.5 + 0.5 * np.tanh(0.5 * a)

    def cols(self, a: np.ndarray, start: int, stop: int) -> np.ndarray:
        return a[..., start:stop]

    def cat(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=-1)


def run_bits(net: Net, bits: np.ndarray) -> np.ndarray:
    """Float64 logits after every prefix: bits (B, T) 0/1 -> (B, T). Concrete, not rigorous."""
    ops = FloatOps()
    s = np.zeros((bits.shape[0], net.state_dim))
    out = np.empty(bits.shape, dtype=np.float64)
    for t in range(bits.shape[1]):
        s0, s1 = step(ops, net, s, 0), step(ops, net, s, 1)
        s = np.where(bits[:, t : t + 1] == 1, s1, s0)
        out[:, t] = readout(ops, net, s)[:, 0]
    return out
