"""The original notebook's training loops, kept as the benchmark's baseline: one sequence at a time.

The notebook trains hidden size 8 with Adam at 1e-2 on batches of 10 random bit strings of
lengths 1-20. Each sequence goes through the model in its own call, the batch's losses are
averaged, and one optimizer step follows, without gradient clipping. The strings are drawn
inside the loop, so drawing them is part of what is timed (as the pipeline's Sampler is).

Two forms are kept: ``nn.RNN(1, 8)`` with a ``Linear(8, 1)`` readout, and a hand-written LSTM
cell with one ``Linear(1 + 8, 8)`` per gate over the concatenated input and hidden state,
stepped by a Python loop over time. They live here, not in models/, because nothing but the
benchmark runs them; models/ holds the batched forms the pipeline trains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

HIDDEN = 8  # hidden units, as in the notebook
BATCH = 10  # sequences per optimizer step
LR = 1e-2  # Adam's learning rate
MIN_LEN, MAX_LEN = 1, 20  # training lengths, uniform


class NotebookRNN(nn.Module):
    """``nn.RNN(1, 8)`` read out by ``Linear(8, 1)`` after the last bit."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(1, HIDDEN)
        self.readout = nn.Linear(HIDDEN, 1)

    def forward(self, bits: Tensor) -> Tensor:
        """bits: (T,) floats of one sequence -> its logit, (1,)."""
        _, h_n = self.rnn(bits.view(-1, 1, 1))  # input (T, batch 1, 1) -> h_n (1, 1, H)
        return self.readout(h_n[-1]).view(1)


class NotebookLSTM(nn.Module):
    """A hand-written LSTM cell, one ``Linear`` per gate, stepped one bit at a time.

    f = sigmoid(W_f [x_t, h])   forget gate      i = sigmoid(W_i [x_t, h])   input gate
    g = tanh(W_g [x_t, h])      candidate cell   o = sigmoid(W_o [x_t, h])   output gate
    c_t = f * c_{t-1} + i * g   h_t = o * tanh(c_t)
    """

    def __init__(self) -> None:
        super().__init__()
        self.forget = nn.Linear(1 + HIDDEN, HIDDEN)
        self.input = nn.Linear(1 + HIDDEN, HIDDEN)
        self.candidate = nn.Linear(1 + HIDDEN, HIDDEN)
        self.output = nn.Linear(1 + HIDDEN, HIDDEN)
        self.readout = nn.Linear(HIDDEN, 1)

    def forward(self, bits: Tensor) -> Tensor:
        """bits: (T,) floats of one sequence -> its logit, (1,)."""
        h = bits.new_zeros(1, HIDDEN)
        c = bits.new_zeros(1, HIDDEN)
        for t in range(len(bits)):
            combined = torch.cat([bits[t].view(1, 1), h], dim=1)  # (1, 1 + H)
            forget_gate = torch.sigmoid(self.forget(combined))
            input_gate = torch.sigmoid(self.input(combined))
            candidate = torch.tanh(self.candidate(combined))
            output_gate = torch.sigmoid(self.output(combined))
            c = forget_gate * c + input_gate * candidate
            h = output_gate * torch.tanh(c)
        return self.readout(h).view(1)


MODELS: dict[str, Callable[[], nn.Module]] = {"rnn": NotebookRNN, "lstm": NotebookLSTM}


def make_step(kind: str, seed: int = 0) -> Callable[[], None]:
    """A fresh model of ``kind`` ("rnn" or "lstm") and its notebook step: BATCH sequences, one update."""
    torch.manual_seed(seed)
    model = MODELS[kind]()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        loss = torch.zeros(())
        for _ in range(BATCH):
            length = int(torch.randint(MIN_LEN, MAX_LEN + 1, (1,), generator=gen))
            bits = torch.randint(0, 2, (length,), generator=gen).float()
            target = (bits.sum() % 2).view(1)
            loss = loss + criterion(model(bits), target)
        loss = loss / BATCH
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the notebook logs each step's loss: the sync is part of its cost

    return step
