"""Small builders the test modules share (import as ``from helpers import ...``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from stages.core.buckets import Data
from stages.core.data import SeqSet


def random_seqs(n: int, lo: int, hi: int, seed: int = 0) -> SeqSet:
    """n random bit sequences with lengths uniform in [lo, hi], in memory."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n)
    return SeqSet.from_stream("toy", lengths, rng.integers(0, 2, int(lengths.sum())))


def generate_data(data: Data, out: Path) -> None:
    """Every dataset of ``data`` into ``out``, as the generate stage writes them."""
    from stages.pipeline.generate import dataset_names, generate

    out.mkdir(parents=True, exist_ok=True)
    for name in dataset_names(data):
        generate(name, data, out)


def seqset(seqs: list[np.ndarray], name: str = "toy") -> SeqSet:
    """A SeqSet of the given 0/1 arrays (labels: their parity)."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    return SeqSet.from_stream(name, lengths, np.concatenate(seqs) if seqs else np.zeros(0, np.uint8))


def exhaustive_seqs(max_len: int) -> SeqSet:
    """Every sequence of length 1..max_len in the exhaustive bucket's order (as generate writes it)."""
    from types import SimpleNamespace

    from stages.pipeline.structured import exhaustive

    lengths, bits = exhaustive(SimpleNamespace(max_len=max_len))
    return SeqSet.from_stream("exhaustive", lengths, bits)


def tree_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` but the MLflow store's (which a
    refusal may open) and bytecode caches: equal before and after means nothing was touched."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "mlflow" not in p.name and "__pycache__" not in p.parts
    }
