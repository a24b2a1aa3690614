"""A diagonal linear RNN whose transition depends on the input (Grazzi et al., ICLR 2025,
"Unlocking state-tracking in linear RNNs through negative eigenvalues").

    h_t = a(x_t) * h_{t-1} + b(x_t)      (elementwise, H channels; h_0 a learned start state)
    a(x) = sigmoid(w_a x + c_a)          in [0, 1]   (family diag_linear)
    a(x) = 2 sigmoid(w_a x + c_a) - 1    in [-1, 1]  (family diag_linear_neg)
    b(x) = w_b x + c_b,  logit = readout(h_T)

With a(0) near 1 and a(1) near -1 one channel carries (-1)^parity times a positive number, so
the [-1, 1] form represents parity at every length; in [0, 1] no channel can change sign, and
the paper proves such a net cannot represent parity at all lengths.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DiagonalLinearRNN(nn.Module):
    def __init__(self, hidden_size: int = 8, negative: bool = False) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.negative = negative
        self.transition = nn.Linear(1, hidden_size)  # w_a, c_a
        self.input = nn.Linear(1, hidden_size)  # w_b, c_b
        self.start = nn.Parameter(torch.ones(hidden_size))  # h_0: ones, so a sign has something to flip
        self.readout = nn.Linear(hidden_size, 1)

    def step(self, h: Tensor, bits: Tensor) -> Tensor:
        """One step for a batch: h (B, H), bits (B, 1) floats -> (B, H)."""
        gate = torch.sigmoid(self.transition(bits))
        return (2 * gate - 1 if self.negative else gate) * h + self.input(bits)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, T) bits as floats, zero-padded; lengths: (B,) int64 on CPU -> logits (B,).
        A sequence's state stops changing after its own last bit."""
        lengths = lengths.to(x.device)
        h = self.start.expand(len(x), -1)
        for t in range(int(lengths.max()) if len(x) else 0):
            h = torch.where((lengths > t)[:, None], self.step(h, x[:, t : t + 1]), h)
        return self.readout(h).squeeze(-1)
