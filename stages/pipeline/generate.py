"""Stage ``generate``: every dataset from params.yaml's ``data`` section alone.

Each bucket draws from its own stream, ``Generator(PCG64(SeedSequence([data.seed, key])))``
with ``key`` a hash of the bucket's name, so adding or editing a bucket leaves the others'
bytes unchanged. Per bucket:
  * lengths uniform in [min_len, max_len], bits uniform;
  * labels exactly balanced: a shuffled half-ones label vector, and the last bit of each
    sequence set so its parity is that label. Each sequence stays uniform over all 2^L
    strings of its length; only the label counts are fixed (random ones of 1,000 sequences
    would stray more than 3 points from 50% in about 6% of seeds);
  * ``disjoint_from: other``: a sequence also present in ``other`` is redrawn (keeping its
    label) at lengths where ``other`` holds at most a quarter of the 2^L strings. Shorter
    lengths are kept as drawn: forcing them out would leave a handful of strings repeated
    many times. Their repeats are counted in the manifest entry under ``overlap``.
Outputs: ``data/NAME.npz`` (format: stages/core/data.py) and its manifest entry
``data/NAME.json`` (sha256, counts, lengths, the bucket's settings), each written atomically.
``NAME`` is a bucket or ``xor_gate``; a ``disjoint_from`` bucket is written first and read back.
One stage for all of them: together they take about 2 s, and a process per dataset cost DVC
and Python ~5 s each. An edit to one bucket rewrites every file, the others byte-identical, so
DVC reruns only the stages that read the edited one.
Buckets of another ``kind`` (needles, density, runs, periodic, exhaustive) are drawn by
stages/pipeline/structured.py from the same per-bucket stream.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.buckets import Bucket, Data
from stages.core.data import SeqSet, load_bucket, parity, ranges, write_npz
from stages.core.errors import UserError
from stages.core.files import atomic_path, sha256_file, write_json
from stages.core.params import load_params
from stages.core.paths import XOR_GATE
from stages.pipeline import structured

_INT_KEY_MAX_LEN = 62  # sequences up to this length are keyed by an integer, longer by bytes
_MAX_REDRAW_ROUNDS = 100  # each round fails with probability <= 1/4 per sequence


def bucket_rng(seed: int, name: str) -> np.random.Generator:
    """The bucket's own random stream; the key is a stable hash of its name (not hash())."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key])))


def _balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) uint8 with n // 2 ones (plus one random label when n is odd), shuffled."""
    labels = (np.arange(n) < n // 2).astype(np.uint8)
    if n % 2:
        labels[-1] = rng.integers(0, 2)
    return rng.permutation(labels)


def _force_parity(stream: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
    """Flip the last bit of each sequence whose parity differs from its label (in place)."""
    stream[offsets + lengths - 1] ^= parity(stream, offsets, lengths) ^ labels


def sample_bucket(rng: np.random.Generator, b: Bucket) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths (n,) int64, bit stream (sum(lengths),) uint8 and balanced labels (n,) uint8."""
    lengths = rng.integers(b.min_len, b.max_len, size=b.count, endpoint=True, dtype=np.int64)
    total = int(lengths.sum())
    stream = np.unpackbits(np.frombuffer(rng.bytes((total + 7) // 8), dtype=np.uint8), count=total)
    labels = _balanced_labels(rng, b.count)
    _force_parity(stream, np.cumsum(lengths) - lengths, lengths, labels)
    return lengths, stream, labels


def sequence_keys(stream: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, wide: bool) -> list:
    """One hashable key per sequence; equal keys <=> equal (length, bits)."""
    if len(lengths) == 0:
        return []
    if not wide:
        # The bits as an integer plus a sentinel bit 1 << L, so "01" and "1" differ.
        pos = ranges(offsets, lengths)
        shift = (pos - np.repeat(offsets, lengths)).astype(np.uint64)
        starts = np.cumsum(lengths) - lengths
        values = np.add.reduceat(stream[pos].astype(np.uint64) << shift, starts)
        return (values | (np.uint64(1) << lengths.astype(np.uint64))).tolist()
    return [n.to_bytes(8, "little") + np.packbits(stream[s : s + n]).tobytes()
            for s, n in zip(offsets.tolist(), lengths.tolist(), strict=True)]


def make_disjoint(rng: np.random.Generator, lengths: np.ndarray, stream: np.ndarray,
                  labels: np.ndarray, other: SeqSet) -> dict[str, Any]:
    """Redraw, in place in ``stream``, the sequences also in ``other`` where space allows.

    A redrawn sequence keeps its length and label. Returns the manifest's overlap record:
    how many repeats remain (at lengths ``other`` covers densely) and at which lengths.
    """
    offsets = np.cumsum(lengths) - lengths
    wide = max(int(lengths.max()), int(other.lengths.max())) > _INT_KEY_MAX_LEN
    other_keys = dict(zip(sequence_keys(other.stream, other.offsets, other.lengths, wide),
                          other.lengths.tolist(), strict=True))
    distinct = Counter(other_keys.values())  # distinct strings of other, per length
    roomy = {n: n > _INT_KEY_MAX_LEN or 2**n >= 4 * distinct[n] for n in np.unique(lengths).tolist()}
    may_redraw = np.array([roomy[n] for n in lengths.tolist()], dtype=bool)
    redrawn = np.zeros(len(lengths), dtype=bool)
    for _ in range(_MAX_REDRAW_ROUNDS):
        keys = sequence_keys(stream, offsets, lengths, wide)
        hit = np.fromiter((k in other_keys for k in keys), dtype=bool, count=len(keys))
        idx = np.flatnonzero(hit & may_redraw)
        if len(idx) == 0:
            break
        redrawn[idx] = True
        lens = lengths[idx]
        new = rng.integers(0, 2, size=int(lens.sum()), dtype=np.uint8)
        _force_parity(new, np.cumsum(lens) - lens, lens, labels[idx])
        stream[ranges(offsets[idx], lens)] = new
    else:
        raise RuntimeError(f"could not redraw sequences out of bucket {other.name}")
    by_length = Counter(lengths[hit].tolist())
    return {"with": other.name, "count": int(hit.sum()), "redrawn": int(redrawn.sum()),
            "by_length": {str(n): c for n, c in sorted(by_length.items())}}


def length_histogram(lengths: np.ndarray) -> dict[str, Any]:
    """{length: count} for up to 100 distinct lengths, else 20 bins [edges[i], edges[i+1])."""
    values, counts = np.unique(lengths, return_counts=True)
    if len(values) <= 100:
        return {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
    edges = np.unique(np.linspace(values[0], values[-1] + 1, 21).round().astype(np.int64))
    return {"bin_edges": edges.tolist(), "counts": np.histogram(lengths, bins=edges)[0].tolist()}


def _meta(path: Path, lengths: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The manifest entry of a written dataset file (``data/NAME.json``)."""
    return {
        "file": path.name,
        "count": len(lengths),
        "total_bits": int(lengths.sum()),
        "lengths": length_histogram(lengths),
        "positive_ratio": round(float(labels.mean()), 6) if len(labels) else 0.0,
        "sha256": sha256_file(path),
    }


def xor_gate() -> dict[str, np.ndarray]:
    """The 4-row XOR truth table: x (4, 2) float32, y (4,) float32."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.float32)
    return {"x": x, "y": y}


def sample(name: str, data: Data, other: SeqSet | None = None) -> tuple[SeqSet, dict[str, Any]]:
    """Draw bucket ``name`` from its own stream -> (the sequences, extra manifest fields).

    other: the bucket named by its ``disjoint_from`` (loaded by the caller), else None.
    """
    b = data.buckets[name]
    rng = bucket_rng(data.seed, name)
    extra: dict[str, Any] = {"seed": data.seed, "bucket": b.model_dump(mode="json")}
    if b.kind != "uniform":  # structured: the content decides the labels
        lengths, stream = structured.draw(rng, b)
        return SeqSet.from_stream(name, lengths, stream), extra
    lengths, stream, labels = sample_bucket(rng, b)
    if other is not None:
        extra["overlap"] = make_disjoint(rng, lengths, stream, labels, other)
    return SeqSet.from_stream(name, lengths, stream, labels=labels), extra


def write_dataset(out_dir: Path, name: str, arrays: dict[str, np.ndarray], lengths: np.ndarray,
                  labels: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
    """Write ``NAME.npz`` then its manifest entry ``NAME.json``, each atomically; -> the entry."""
    path = out_dir / f"{name}.npz"
    with atomic_path(path) as tmp:
        write_npz(tmp, arrays)
    meta = _meta(path, lengths, labels) | extra
    write_json(out_dir / f"{name}.json", meta)
    return meta


def dataset_names(data: Data) -> list[str]:
    """``xor_gate``, then every bucket after the bucket it is drawn disjoint from."""
    order: list[str] = []
    for name in data.buckets:
        chain = [name]
        while (nxt := data.buckets[chain[-1]].disjoint_from) is not None and nxt not in order:
            chain.append(nxt)  # the schema refuses cycles
        order.extend(n for n in reversed(chain) if n not in order)
    return [XOR_GATE, *order]


def generate(name: str, data: Data, out_dir: Path) -> dict[str, Any]:
    """Write dataset ``name`` (a bucket or ``xor_gate``) into out_dir; -> its manifest entry.

    A ``disjoint_from`` bucket must already be in out_dir (dataset_names gives the order).
    """
    start = time.perf_counter()
    if name == XOR_GATE:
        arrays = xor_gate()
        return write_dataset(out_dir, name, arrays, np.full(4, 2, dtype=np.int64), arrays["y"], {})
    if name not in data.buckets:
        raise UserError(f"unknown dataset {name!r} (allowed: {XOR_GATE}, {', '.join(data.buckets)})")
    b = data.buckets[name]
    other = load_bucket(b.disjoint_from, out_dir) if b.disjoint_from else None
    seqs, extra = sample(name, data, other)
    meta = write_dataset(out_dir, name, {"lengths": seqs.lengths, "labels": seqs.labels, "packed": seqs.packed},
                         seqs.lengths, seqs.labels, extra)
    print(f"generate: {name:<16} {len(seqs):>7} sequences {meta['total_bits']:>10} bits "
          f"{time.perf_counter() - start:6.2f} s", file=sys.stderr)
    return meta


def main(names: tuple[str, ...] = (), params_path: str = "params.yaml", out_dir: str = "data") -> None:
    """Validate params and the names (nothing is written on an error), then write the datasets
    ``names``, or every one (in dataset_names' order) when none are given.

    No seed_everything here: generation draws only from each bucket's own explicit stream.
    """
    data = load_params(params_path).data
    known = dataset_names(data)
    if unknown := [n for n in names if n not in known]:
        raise UserError(f"unknown dataset(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(known)})")
    for name in [n for n in known if n in names] if names else known:
        generate(name, data, Path(out_dir))
