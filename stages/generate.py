"""Stage generate: every dataset from params.yaml's ``data`` section alone.

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
    many times. Their repeats are counted in the manifest under ``overlap``.
Outputs: ``<out_dir>/xor_gate.npz``, ``<out_dir>/<bucket>.npz`` (format: stages/datasets.py)
and ``<out_dir>/manifest.json``, all written to a temporary folder renamed into place.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stages.datasets import SeqSet, parity, ranges, write_npz
from stages.errors import UserError
from stages.io import atomic_path, sha256_file, write_json
from stages.schema import Bucket, Data, load_params

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


def _file_entry(path: Path, lengths: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    return {
        "file": path.name,
        "count": len(lengths),
        "total_bits": int(lengths.sum()),
        "lengths": length_histogram(lengths),
        "positive_ratio": round(float(labels.mean()), 6) if len(labels) else 0.0,
        "sha256": sha256_file(path),
    }


def write_xor_gate(out_dir: Path) -> dict[str, Any]:
    """The 4-row XOR truth table: x (4, 2) float32, y (4,) float32."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.float32)
    path = out_dir / "xor_gate.npz"
    write_npz(path, {"x": x, "y": y})
    return _file_entry(path, np.full(4, 2, dtype=np.int64), y)


def generation_order(buckets: dict[str, Bucket]) -> list[str]:
    """Bucket names, each after the bucket it must be disjoint from; UserError on a cycle."""
    order: list[str] = []
    for name in buckets:
        chain = [name]
        while (nxt := buckets[chain[-1]].disjoint_from) is not None and nxt not in order:
            if nxt in chain:
                raise UserError(f"data.buckets: disjoint_from forms a cycle: {' -> '.join([*chain, nxt])}")
            chain.append(nxt)
        order.extend(n for n in reversed(chain) if n not in order)
    return order


def generate_bucket(name: str, data: Data, out_dir: Path, done: dict[str, SeqSet]) -> tuple[SeqSet, dict]:
    """Sample one bucket, write <out_dir>/<name>.npz; return it and its manifest entry."""
    b = data.buckets[name]
    rng = bucket_rng(data.seed, name)
    lengths, stream, labels = sample_bucket(rng, b)
    overlap = None
    if b.disjoint_from is not None:
        overlap = make_disjoint(rng, lengths, stream, labels, done[b.disjoint_from])
    seqs = SeqSet.from_stream(name, lengths, stream, labels=labels)
    path = out_dir / f"{name}.npz"
    write_npz(path, {"lengths": seqs.lengths, "labels": seqs.labels, "packed": seqs.packed})
    entry = _file_entry(path, lengths, labels) | {"min_len": b.min_len, "max_len": b.max_len}
    if overlap is not None:
        entry["overlap"] = overlap
    return seqs, entry


def generate_all(data: Data, out_dir: Path, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write xor_gate.npz, one <bucket>.npz per bucket and manifest.json into out_dir.

    Everything is built in a temporary folder renamed onto out_dir at the end, so an
    interrupted run leaves the previous out_dir intact. Returns the manifest.
    """
    if data.seed < 0:
        raise UserError(f"data.seed: {data.seed} is invalid: must be >= 0")
    order = generation_order(data.buckets)
    needed = {b.disjoint_from for b in data.buckets.values()}  # kept in memory for disjointness
    done: dict[str, SeqSet] = {}
    with atomic_path(out_dir, is_dir=True) as tmp:
        files = {"xor_gate": write_xor_gate(tmp)}
        for name in order:
            start = time.perf_counter()
            seqs, files[name] = generate_bucket(name, data, tmp, done)
            if name in needed:
                done[name] = seqs
            if log:
                log(f"generate: {name:<16} {len(seqs):>7} sequences "
                    f"{files[name]['total_bits']:>10} bits {time.perf_counter() - start:6.2f} s")
        manifest = {
            "seed": data.seed,
            "data": data.model_dump(mode="json"),
            "format": "npz: lengths (n,) int64, labels (n,) uint8 parity, packed = np.packbits "
                      "of all sequences' bits concatenated; see stages/datasets.py",
            "files": files,
        }
        write_json(tmp / "manifest.json", manifest)
        # mkdtemp/mkstemp create owner-only modes; data is meant to be readable like any file.
        (tmp / "manifest.json").chmod(0o644)
        tmp.chmod(0o755)
    return manifest


def main(params_path: str = "params.yaml", out_dir: str = "data") -> None:
    """Validate params (nothing is written on a ParamsError), then generate every dataset.

    No seed_everything here: generation draws only from its own explicit per-bucket streams.
    """
    data = load_params(params_path).data
    start = time.perf_counter()
    manifest = generate_all(data, Path(out_dir), log=lambda line: print(line, file=sys.stderr))
    size = sum(p.stat().st_size for p in Path(out_dir).iterdir())
    print(f"generate: {len(manifest['files'])} files, {size / 1e6:.1f} MB in {out_dir}/ "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)
