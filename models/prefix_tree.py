"""The logits of every bit sequence of length 1..N, one recurrent step per node of the prefix tree.

The 2^n sequences of length n are the 2^(n-1) of length n-1, each followed by a 0 and by a 1.
So stepping the states of all length-(n-1) sequences once with bit 0 and once with bit 1 gives
the states of all length-n ones: 2^(N+1) steps in all, where running each sequence on its own
takes about N x 2^(N+1) (20 times more for N = 20, the exhaustive bucket). Each length's states
are kept in binary counting order, first bit most significant: the order of the exhaustive
bucket (stages/pipeline/structured.py), so the result lines up with it.

A model takes part through three functions over its state, a tuple of arrays whose first axis
is the sequence (models/torch_rnn/zoo.py ``stepper``, models/keras_lstm/model.py ``stepper``).
NumPy only: no framework is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

State = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Stepper:
    """A recurrent model as three functions on batches of states (first axis: the sequence)."""

    start: Callable[[], State]  # the state before any bit, batch of one
    step: Callable[[State, float], State]  # every state advanced by one bit (0.0 or 1.0)
    readout: Callable[[State], np.ndarray]  # logits (n,) of n states


def all_sequences_logits(model: Stepper, max_len: int) -> np.ndarray:
    """Logits (2^(max_len+1) - 2,) float64 of every sequence of length 1..max_len, by length, then
    in binary counting order."""
    state, out = model.start(), []
    for _ in range(max_len):
        zero, one = model.step(state, 0.0), model.step(state, 1.0)
        # child 2k + b of state k: interleave, so the order stays binary counting order
        state = tuple(np.stack([a, b], axis=1).reshape(-1, *a.shape[1:]) for a, b in zip(zero, one, strict=True))
        out.append(np.asarray(model.readout(state), dtype=np.float64))
    return np.concatenate(out)
