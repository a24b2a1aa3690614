"""Hand-written recurrent cells and a hand-written loss, checked against PyTorch's own.

Both cells run a whole zero-padded batch at once. Finished sequences keep being
stepped over their padding (that costs nothing extra: the batch is computed
together anyway); each sequence's hidden state is read at its own last step.
The input projection of every timestep is one matrix product before the time
loop, so the loop itself does only the operations of the recurrence (3 for the
RNN, about 10 for the LSTM, each ~1 us of dispatch on CPU): a million steps at
batch 10 take about 4 s (RNN) and 12 s (LSTM) on one thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

# Sequence positions (batch x timesteps) whose input projection is computed in one
# product: bounds memory at long lengths (8 MB at hidden size 8) at no cost per step.
CHUNK_POSITIONS = 1 << 16


def stable_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy on logits, written out: max(z,0) - z*y + log1p(exp(-|z|)).

    logits, targets: (B,) -> scalar. Never evaluates exp of a positive number, so the
    value and the gradient stay finite at logits of +-1e4 (a naive
    -y*log(sigmoid(z)) - (1-y)*log(1-sigmoid(z)) gives inf there).
    """
    z, y = logits, targets.to(logits.dtype)
    return (z.clamp(min=0) - z * y + torch.log1p(torch.exp(-z.abs()))).mean()


def _uniform_like_torch(module: nn.Module, hidden_size: int) -> None:
    """PyTorch's nn.RNN/nn.LSTM default: every parameter U(-1/sqrt(H), 1/sqrt(H)).

    Used instead of nn.Linear's fan-in default so a hand-written cell starts from
    the same distribution as the library cell it is compared with.
    """
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


def _last_step_index(lengths: Tensor) -> dict[int, Tensor]:
    """{t: indices of the sequences whose last step is t}, t = length - 1."""
    ends: dict[int, Tensor] = {}
    for t in torch.unique(lengths).tolist():
        ends[int(t) - 1] = torch.nonzero(lengths == t).flatten()
    return ends


def _chunks(batch: int, steps: int) -> Iterator[tuple[int, int]]:
    """(start, stop) windows of the time axis holding about CHUNK_POSITIONS positions each."""
    size = max(1, CHUNK_POSITIONS // batch)
    for start in range(0, steps, size):
        yield start, min(start + size, steps)


def _collect(finals: list[Tensor], rows: list[Tensor]) -> Tensor:
    """Put states read at different steps back in batch order: -> (B, H)."""
    return torch.cat(finals)[torch.argsort(torch.cat(rows))]


class ManualRNN(nn.Module):
    """Elman RNN cell by hand: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    Same parameters as a one-layer nn.RNN (input.weight = weight_ih_l0, and so on),
    plus a readout Linear(H, 1) on the state after each sequence's last bit.
    """

    def __init__(self, hidden_size: int = 8) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.input = nn.Linear(1, hidden_size)  # W_ih x_t + b_ih
        self.hidden = nn.Linear(hidden_size, hidden_size)  # W_hh h_{t-1} + b_hh
        self.readout = nn.Linear(hidden_size, 1)
        _uniform_like_torch(self, hidden_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, T) bits as floats, zero-padded; lengths: (B,) int64 on CPU -> logits (B,)."""
        batch, steps = x.shape[0], int(lengths.max())
        ends = _last_step_index(lengths)
        h = x.new_zeros(batch, self.hidden_size)
        w_hh = self.hidden.weight.t()
        finals, rows = [], []
        for start, stop in _chunks(batch, steps):
            # W_ih x_t + b_ih + b_hh for every step of the chunk, time-major: (chunk, B, H).
            x_proj = self.input(x[:, start:stop].t().unsqueeze(-1)) + self.hidden.bias
            for t, x_t in enumerate(x_proj.unbind(0), start):
                h = self.step(x_t, h, w_hh)
                if t in ends:
                    finals.append(h[ends[t]])
                    rows.append(ends[t])
        return self.readout(_collect(finals, rows)).squeeze(-1)

    def project(self, bit: float) -> Tensor:
        """The input part of a step for one bit value: W_ih x + b_ih + b_hh, (1, H)."""
        return self.input(self.hidden.bias.new_full((1, 1), bit)) + self.hidden.bias

    def step(self, x_proj: Tensor, h: Tensor, w_hh: Tensor | None = None) -> Tensor:
        """One step of the recurrence: x_proj (B or 1, H) from ``project``, h (B, H) -> (B, H).

        w_hh: ``self.hidden.weight.t()``, passed by a caller that steps many times."""
        return torch.tanh(torch.addmm(x_proj, h, self.hidden.weight.t() if w_hh is None else w_hh))


class ManualLSTM(nn.Module):
    """LSTM cell by hand (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al.).

    All four gates come from one Linear over concat([x_t, h_{t-1}]), rows in the
    order input, forget, candidate, output (nn.LSTM's order, so weights copy across):
        i = sigmoid(.)  input gate       f = sigmoid(.)  forget gate
        g = tanh(.)     candidate cell   o = sigmoid(.)  output gate
        c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)
    """

    def __init__(self, hidden_size: int = 8) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gates = nn.Linear(1 + hidden_size, 4 * hidden_size)  # over [x_t, h_{t-1}]
        self.readout = nn.Linear(hidden_size, 1)
        _uniform_like_torch(self, hidden_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, T) bits as floats, zero-padded; lengths: (B,) int64 on CPU -> logits (B,)."""
        batch, steps = x.shape[0], int(lengths.max())
        hs = self.hidden_size
        ends = _last_step_index(lengths)
        h = x.new_zeros(batch, hs)
        c = x.new_zeros(batch, hs)
        # Split the one Linear over [x_t, h] into its x column and its h block, so the
        # x part of every step is a single product before the loop.
        # contiguous() once here, so the product in the loop reads a plain (H, 4H) matrix.
        w_x, w_h = self.gates.weight[:, :1], self.gates.weight[:, 1:].t().contiguous()
        finals, rows = [], []
        for start, stop in _chunks(batch, steps):
            # The x part of the gates for every step of the chunk, time-major: (chunk, B, 4H).
            x_proj = torch.addmm(self.gates.bias, x[:, start:stop].t().reshape(-1, 1), w_x.t())
            for t, x_t in enumerate(x_proj.view(stop - start, batch, 4 * hs).unbind(0), start):
                h, c = self.step(x_t, (h, c), w_h)
                if t in ends:
                    finals.append(h[ends[t]])
                    rows.append(ends[t])
        return self.readout(_collect(finals, rows)).squeeze(-1)

    def project(self, bit: float) -> Tensor:
        """The input part of the gates for one bit value: W_x x + b, (1, 4H)."""
        return self.gates(torch.cat([self.gates.bias.new_full((1, 1), bit),
                                     self.gates.bias.new_zeros(1, self.hidden_size)], dim=1))

    def step(self, x_proj: Tensor, state: tuple[Tensor, Tensor],
             w_h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: x_proj (B or 1, 4H) from ``project``, state (h, c) each (B, H) -> (h, c).

        w_h: the gates' h block transposed and contiguous, passed by a caller that steps many times."""
        h, c = state
        hs = self.hidden_size
        if w_h is None:
            w_h = self.gates.weight[:, 1:].t().contiguous()
        pre = torch.addmm(x_proj, h, w_h)  # (B, 4H), pre-activations in gate order
        # One sigmoid over all four blocks (the candidate's is unused): fewer ops per step.
        input_gate, forget_gate, _, output_gate = torch.sigmoid(pre).chunk(4, dim=1)
        candidate = torch.tanh(pre[:, 2 * hs : 3 * hs])
        c = torch.addcmul(forget_gate * c, input_gate, candidate)
        return output_gate * torch.tanh(c), c
