"""The structured held-out buckets: inputs random bits never show a net trained on lengths 1-20.

Random bits almost never hold a run of more than about 20 equal bits, so a random test set
cannot see a hidden state that drifts slowly from "odd" to "even" under a long run of zeros.
These can. Each kind draws from the bucket's own seeded stream (``generate.bucket_rng``) and
returns ``(lengths (n,) int64, stream (sum(lengths),) uint8 0/1)``; the labels are the parity
of each sequence (not balanced: the content decides them).
"""

from __future__ import annotations

import numpy as np

from stages.core.buckets import DensityBucket, ExhaustiveBucket, NeedleBucket, PeriodicBucket, RunsBucket

Drawn = tuple[np.ndarray, np.ndarray]


def _pack(seqs: list[np.ndarray]) -> Drawn:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    stream = np.concatenate(seqs).astype(np.uint8) if seqs else np.zeros(0, np.uint8)
    return lengths, stream


def _log_uniform(rng: np.random.Generator, lo: int, hi: int, count: int) -> np.ndarray:
    """``count`` lengths log-uniform in [lo, hi]: as many short sequences as long ones."""
    return np.minimum(np.exp(rng.uniform(np.log(lo), np.log(hi + 1), count)).astype(np.int64), hi)


def needles(rng: np.random.Generator, b: NeedleBucket) -> Drawn:
    """For each L in b.lengths and L - 1: the plain background sequence, and one needle at the
    first, second, middle, last-but-one, last and two random positions."""
    seqs = []
    for base in b.lengths:
        for n in (base - 1, base):
            plain = np.full(n, b.background, np.uint8)
            seqs.append(plain)
            for pos in sorted({0, min(1, n - 1), n // 2, max(n - 2, 0), n - 1, *rng.integers(0, n, 2).tolist()}):
                s = plain.copy()
                s[pos] = 1 - b.background
                seqs.append(s)
    return _pack(seqs)


def density(rng: np.random.Generator, b: DensityBucket) -> Drawn:
    return _pack([(rng.random(n) < b.p_one).astype(np.uint8) for n in _log_uniform(rng, b.min_len, b.max_len, b.count)])


def runs(rng: np.random.Generator, b: RunsBucket) -> Drawn:
    """Alternating runs of 0s and 1s (the first symbol random), geometric lengths of mean b.mean_run."""
    seqs = []
    for n in _log_uniform(rng, b.min_len, b.max_len, b.count):
        k = rng.geometric(1.0 / b.mean_run, size=int(n // b.mean_run) * 2 + 16)  # enough runs, almost surely
        while k.sum() < n:
            k = np.concatenate([k, rng.geometric(1.0 / b.mean_run, size=len(k))])
        first = int(rng.integers(0, 2))
        symbols = (np.arange(len(k)) + first) % 2
        seqs.append(np.repeat(symbols, k)[:n].astype(np.uint8))
    return _pack(seqs)


def periodic(rng: np.random.Generator, b: PeriodicBucket) -> Drawn:
    """Each pattern repeated and cut to lengths log-uniform in [min_len, max_len] at a random phase."""
    seqs = []
    for pattern in b.patterns:
        unit = np.frombuffer(pattern.encode(), np.uint8) - ord("0")
        for n in _log_uniform(rng, b.min_len, b.max_len, b.per_pattern):
            phase = int(rng.integers(0, len(unit)))
            seqs.append(np.tile(unit, (n + phase) // len(unit) + 1)[phase : phase + n])
    return _pack(seqs)


def exhaustive(b: ExhaustiveBucket) -> Drawn:
    """Every sequence of length 1..b.max_len, by length, then in binary counting order."""
    lengths, parts = [], []
    for n in range(1, b.max_len + 1):
        codes = np.arange(2**n, dtype=np.uint32)
        parts.append(((codes[:, None] >> np.arange(n - 1, -1, -1, dtype=np.uint32)) & 1).astype(np.uint8).ravel())
        lengths.append(np.full(2**n, n, np.int64))
    return np.concatenate(lengths), np.concatenate(parts)


def draw(rng: np.random.Generator, b) -> Drawn:
    """The sequences of a structured bucket."""
    if isinstance(b, ExhaustiveBucket):
        return exhaustive(b)
    return {"needles": needles, "density": density, "runs": runs, "periodic": periodic}[b.kind](rng, b)
