"""PyTorch's own recurrent layers (nn.RNN, nn.LSTM, nn.GRU) as parity classifiers."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

# Sequence positions (batch x timesteps) given to the library per call. The library
# keeps every step's output and gates, so a million-step batch in one call would
# need gigabytes; windows of this size carry the state across instead.
WINDOW_POSITIONS = 1 << 16
Cell = Literal["rnn", "lstm", "gru"]
State = Tensor | tuple[Tensor, Tensor]  # h_n, or (h_n, c_n) for the LSTM; each (layers, B, H)
CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class PackedRecurrent(nn.Module):
    """nn.RNN (tanh) / nn.LSTM / nn.GRU over a PackedSequence; Linear readout of the last layer.

    Packing makes the library stop each sequence at its own length, so the final
    hidden state it returns is the state after that sequence's last bit.
    """

    def __init__(self, cell: Cell = "lstm", hidden_size: int = 8, num_layers: int = 1) -> None:
        super().__init__()
        self.rnn = CELLS[cell](1, hidden_size, num_layers=num_layers, batch_first=True)
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, T) bits as floats, zero-padded; lengths: (B,) int64 on CPU -> logits (B,)."""
        window = max(16, WINDOW_POSITIONS // len(x))
        state = None
        for start in range(0, int(lengths.max()), window):
            state = self._window(x, lengths, start, window, state)
        h_n = state[0] if isinstance(state, tuple) else state
        return self.readout(h_n[-1]).squeeze(-1)

    def _window(self, x: Tensor, lengths: Tensor, start: int, window: int, state: State | None) -> State:
        """Advance the sequences still running at ``start`` by up to ``window`` steps.

        Returns the state of the whole batch, in the batch's own order (the library
        undoes its length sort); finished sequences keep their final state.
        """
        left = (lengths - start).clamp(max=window)
        rows = torch.nonzero(left > 0).flatten()
        everyone = len(rows) == len(lengths)  # always so for short (training) batches
        chunk = x[:, start : start + window] if everyone else x[rows.to(x.device), start : start + window]
        packed = pack_padded_sequence(
            chunk.unsqueeze(-1), left[rows], batch_first=True, enforce_sorted=False
        )
        if everyone:
            return self.rnn(packed, state)[1]
        dev_rows = rows.to(x.device)
        if isinstance(state, tuple):
            _, (h, c) = self.rnn(packed, (state[0][:, dev_rows], state[1][:, dev_rows]))
            return state[0].index_copy(1, dev_rows, h), state[1].index_copy(1, dev_rows, c)
        _, h = self.rnn(packed, state[:, dev_rows])
        return state.index_copy(1, dev_rows, h)


class PerSequenceRNN(PackedRecurrent):
    """The same nn.RNN and readout (same state dict), called on one unpadded sequence at a time.

    This is the notebook's form: simple and slow (one library call per sequence),
    kept as a reference that packing changes nothing.
    """

    def __init__(self, hidden_size: int = 8, num_layers: int = 1) -> None:
        super().__init__("rnn", hidden_size, num_layers)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, T) bits as floats, zero-padded; lengths: (B,) int64 on CPU -> logits (B,)."""
        finals = []
        for row, n in zip(x, lengths.tolist(), strict=True):
            _, h_n = self.rnn(row[:n].view(1, n, 1))  # h_n: (layers, 1, H)
            finals.append(h_n[-1, 0])
        return self.readout(torch.stack(finals)).squeeze(-1)
