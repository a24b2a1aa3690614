"""Small builders the test modules share (import as ``from helpers import ...``)."""

from __future__ import annotations

import numpy as np

from stages.datasets import SeqSet


def random_seqs(n: int, lo: int, hi: int, seed: int = 0) -> SeqSet:
    """n random bit sequences with lengths uniform in [lo, hi], in memory."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n)
    return SeqSet.from_stream("toy", lengths, rng.integers(0, 2, int(lengths.sum())))
