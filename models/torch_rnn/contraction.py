"""The contraction phase: a penalty that makes a trained parity net's state map contract.

Nets trained on random bits of lengths 1-20 are right on every such sequence, yet gated ones
(manual_lstm, gru, keras_lstm, some lstm seeds) answer `1` + 200 zeros "even": under a long run
of one symbol the state drifts along a slow direction (a Jacobian eigenvalue near 1) from the
odd region into the even one. Once validation first reaches 100%, training adds

    contraction_weight * mean over reached states s and inputs b in {0, 1} of
        relu(||d f(s, b) / ds||_F - contraction_rho)^2

(f the one-step state map, s the state after each training sequence's last bit, the Jacobian
by forward differences along each state coordinate). ||J||_F bounds the largest singular
value, so where the penalty is 0 either input contracts every direction by at least rho:
fixed points of f(., 0) and 2-cycles of f(., 1) become strongly attracting and no slow
direction is left to drift along. Applied from the first step it stops learning (a map that
contracts from the start passes no gradient back through 20 steps: measured, gru at weight 10
stays at chance for 10,000 steps); after the net has solved the task it costs ~200 steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

State = tuple[Tensor, ...]  # (h,) or (h, c): (B, H) for hand-written cells, (layers, B, H) for library ones
LIBRARY = ("lstm", "gru", "rnn_packed", "rnn_per_sequence")
PROBE = 1e-2  # forward-difference step along each state coordinate


def forward_with_state(model: nn.Module, family: str, x: Tensor, lengths: Tensor) -> tuple[Tensor, State]:
    """Logits (B,) and each sequence's state after its own last bit, for a training batch
    (x (B, T) floats, T within one library window). Same operations as the models' forward."""
    if family in LIBRARY:
        packed = pack_padded_sequence(x.unsqueeze(-1), lengths, batch_first=True, enforce_sorted=False)
        _, state = model.rnn(packed)
        state = state if isinstance(state, tuple) else (state,)
        return model.readout(state[0][-1]).squeeze(-1), state
    batch, hs = x.shape[0], model.hidden_size
    state = (x.new_zeros(batch, hs),) * (2 if family == "manual_lstm" else 1)
    final = tuple(torch.zeros_like(s) for s in state)
    for t in range(int(lengths.max())):
        state = step(model, family, state, x[:, t : t + 1])
        done = (lengths - 1 == t).to(x.device)[:, None]
        final = tuple(torch.where(done, s, f) for s, f in zip(state, final, strict=True))
    return model.readout(final[0]).squeeze(-1), final


def step(model: nn.Module, family: str, state: State, bits: Tensor) -> State:
    """One step of the state map for a batch of states; bits (B, 1) floats."""
    if family in LIBRARY:
        _, out = model.rnn(bits.view(-1, 1, 1), state if len(state) == 2 else state[0])
        return out if isinstance(out, tuple) else (out,)
    if family == "manual_lstm":
        hs = model.hidden_size
        pre = model.gates(torch.cat([bits, state[0]], dim=1))
        i, f, _, o = torch.sigmoid(pre).chunk(4, dim=1)
        c = f * state[1] + i * torch.tanh(pre[:, 2 * hs : 3 * hs])
        return o * torch.tanh(c), c
    return (torch.tanh(model.input(bits) + model.hidden(state[0])),)


def jacobian_penalty(model: nn.Module, family: str, state: State, rho: float) -> Tensor:
    """mean over states and b in {0, 1} of relu(||d f(s, b)/ds||_F - rho)^2 (see the module doc)."""
    flat = _flat(state)
    n, d = flat.shape
    probes = flat[:, None, :] + PROBE * torch.eye(d, device=flat.device, dtype=flat.dtype)
    points = _unflat(torch.cat([flat, probes.reshape(n * d, d)]), state)
    total = flat.new_zeros(())
    for bit in (0.0, 1.0):
        out = _flat(step(model, family, points, flat.new_full((n * (d + 1), 1), bit)))
        jac = (out[n:].reshape(n, d, d) - out[:n, None, :]) / PROBE
        total = total + torch.relu(jac.pow(2).sum((1, 2)).sqrt() - rho).pow(2).mean()
    return total / 2


def _flat(state: State) -> Tensor:
    """(B, D): the units of every state tensor (every layer) side by side."""
    return torch.cat([s.transpose(0, 1).reshape(s.shape[1], -1) if s.dim() == 3 else s for s in state], dim=1)


def _unflat(flat: Tensor, like: State) -> State:
    """Inverse of _flat for any batch size, shaped like ``like``'s tensors."""
    out, at = [], 0
    for s in like:
        if s.dim() == 3:
            layers, hs = s.shape[0], s.shape[2]
            out.append(flat[:, at : at + layers * hs].reshape(-1, layers, hs).transpose(0, 1).contiguous())
            at += layers * hs
        else:
            out.append(flat[:, at : at + s.shape[1]])
            at += s.shape[1]
    return tuple(out)
