"""Parity datasets on disk: the compact bucket format, ``SeqSet``, and checked loading.

A bucket file ``data/<name>.npz`` holds three arrays:
  lengths (n,) int64  -- length of each sequence
  labels  (n,) uint8  -- parity (sum of the bits mod 2) of each sequence
  packed  (ceil(sum(lengths) / 8),) uint8 -- np.packbits of all sequences' bits, concatenated
Sequence i is bits ``offsets[i] : offsets[i] + lengths[i]`` of that stream, with
``offsets = cumsum(lengths) - lengths``. ``data/xor_gate.npz`` holds x (4, 2) and y (4,), float32.

``data/<name>.json`` is that file's manifest entry: its sha256, counts and how it was drawn.
Loads check the sha256, so a truncated or edited file fails loudly instead of silently
changing results. ``stages/pipeline/generate.py`` writes both, one dataset per stage.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import UserError
from stages.core.files import sha256_file


def rerun(name: str) -> str:
    """What to run to rebuild dataset ``name``."""
    return f"run `dvc repro generate` (it writes {name})"
# padded(): gather through one vectorized index up to this length; longer rows are copied
# one slice each, which avoids (k, T) index arrays of tens of millions of entries.
_VECTOR_MAX_LEN = 4096


class DataError(UserError):
    """A dataset file that is missing, corrupt or unknown; the message says how to rebuild it."""


def ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + l)`` for each (s, l), vectorized: (sum(lens),) int64."""
    starts = np.asarray(starts, dtype=np.int64)
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    shift = starts - (np.cumsum(lens) - lens)  # where each run starts minus where it lands
    return np.arange(total, dtype=np.int64) + np.repeat(shift, lens)


def parity(stream: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Parity of each sequence of a 0/1 bit stream: (n,) uint8. Empty sequences have parity 0."""
    # Prefix XOR: parity of bits [a, b) is prefix[b] ^ prefix[a]; one pass, no Python loop.
    prefix = np.concatenate([np.zeros(1, np.uint8), np.bitwise_xor.accumulate(stream, dtype=np.uint8)])
    return prefix[offsets + lengths] ^ prefix[offsets]


def bits_to_str(bits: np.ndarray) -> str:
    """(L,) 0/1 uint8 -> "0110..." (fast: one bytes decode, no per-bit Python)."""
    return (bits.astype(np.uint8) + ord("0")).tobytes().decode("ascii")


@dataclass(frozen=True, eq=False)
class SeqSet:
    """Variable-length bit sequences with their parities, stored as one packed bit stream."""

    name: str
    lengths: np.ndarray  # (n,) int64
    labels: np.ndarray  # (n,) uint8 parity
    offsets: np.ndarray  # (n,) int64 start of each sequence in the bit stream
    packed: np.ndarray  # (ceil(sum(lengths) / 8),) uint8: np.packbits of the bit stream

    @classmethod
    def from_stream(cls, name: str, lengths: np.ndarray, stream: np.ndarray,
                    labels: np.ndarray | None = None) -> SeqSet:
        """Build from lengths (n,) and the unpacked 0/1 stream (sum(lengths),); labels computed if None."""
        lengths = np.asarray(lengths, dtype=np.int64)
        stream = np.asarray(stream, dtype=np.uint8)
        offsets = np.cumsum(lengths) - lengths
        if labels is None:
            labels = parity(stream, offsets, lengths)
        return cls(name, lengths, np.asarray(labels, dtype=np.uint8), offsets, np.packbits(stream))

    @classmethod
    def from_bits(cls, name: str, seqs: Sequence[str | Sequence[int] | np.ndarray]) -> SeqSet:
        """Build from sequences given as "0101" strings or 0/1 arrays (handy in tests)."""
        arrays = [np.frombuffer(s.encode(), np.uint8) - ord("0") if isinstance(s, str)
                  else np.asarray(s, dtype=np.uint8) for s in seqs]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        stream = np.concatenate(arrays) if arrays else np.zeros(0, np.uint8)
        return cls.from_stream(name, lengths, stream)

    def __len__(self) -> int:
        return len(self.lengths)

    @cached_property
    def stream(self) -> np.ndarray:
        """The whole unpacked bit stream (sum(lengths),) uint8, unpacked once and kept."""
        return np.unpackbits(self.packed, count=int(self.lengths.sum()))

    def bits(self, i: int) -> np.ndarray:
        """Bits of sequence i: (lengths[i],) uint8 0/1 (unpacks only its bytes)."""
        start, n = int(self.offsets[i]), int(self.lengths[i])
        first = start // 8
        chunk = np.unpackbits(self.packed[first : (start + n + 7) // 8])
        return chunk[start - 8 * first : start - 8 * first + n]

    def padded(self, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Zero-padded bits (k, T_max) uint8 and lengths (k,) int64 of sequences idx (None = all)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64).reshape(-1)
        lens, starts = self.lengths[idx], self.offsets[idx]
        t_max = int(lens.max()) if len(idx) else 0
        out = np.zeros((len(idx), t_max), dtype=np.uint8)
        if t_max <= _VECTOR_MAX_LEN:
            # Row-major order of the mask's True cells is exactly the order ranges() yields.
            out[np.arange(t_max) < lens[:, None]] = self.stream[ranges(starts, lens)]
        else:
            for row, (s, n) in enumerate(zip(starts.tolist(), lens.tolist(), strict=True)):
                out[row, :n] = self.stream[s : s + n]
        return out, lens.copy()

    def subset(self, idx: np.ndarray) -> SeqSet:
        """A SeqSet of sequences idx (in that order), repacked into its own stream."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        lens, starts = self.lengths[idx], self.offsets[idx]
        if len(idx) and lens.max() > _VECTOR_MAX_LEN:
            stream = np.concatenate([self.stream[s : s + n] for s, n in zip(starts, lens, strict=True)])
        else:
            stream = self.stream[ranges(starts, lens)]
        return SeqSet.from_stream(self.name, lens, stream, labels=self.labels[idx])


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``np.load``-compatible .npz whose bytes depend on the arrays alone.

    The zip metadata np.savez leaves to the platform (creator OS, file modes) is fixed here,
    so equal arrays give equal sha256 on any machine. Stored, not deflated: random bits do
    not compress.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # "unix", also when written on Windows
            info.external_attr = 0o644 << 16
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)


def load_meta(name: str, data_dir: str | Path = "data") -> dict[str, Any]:
    """``data/NAME.json``, the bucket's manifest entry (sha256, counts, how it was drawn)."""
    path = Path(data_dir) / f"{name}.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        here = ", ".join(sorted(p.stem for p in Path(data_dir).glob("*.json"))) or "none"
        raise DataError(f"unknown dataset {name!r}: {path} not found (datasets in {data_dir}: {here}); "
                        f"{rerun(name)}") from None
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON (file truncated or edited?); {rerun(name)}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        raise DataError(f"{path}: has no 'sha256' (file edited?); {rerun(name)}")
    return meta


def hashes_of(names: list[str], data_dir: str | Path = "data") -> dict[str, str]:
    """Dataset name -> sha256 from its manifest entry, for those of ``names`` that exist."""
    return {n: load_meta(n, data_dir)["sha256"] for n in names
            if n and (Path(data_dir) / f"{n}.json").is_file()}


def training_sets(cfg: Any, data_dir: str | Path = "data") -> dict[str, SeqSet | None]:
    """The train, val and probe sets of a training config (``train_bucket``, ``val_bucket``,
    ``probe_bucket``, ``probe_count`` attributes); the probe is a fixed subset (the first
    ``probe_count``) of a held-out bucket, or None without ``probe_bucket``."""
    data: dict[str, SeqSet | None] = {
        "train": load_bucket(cfg.train_bucket, data_dir),
        "val": load_bucket(cfg.val_bucket, data_dir),
        "probe": None,
    }
    if cfg.probe_bucket:
        probe = load_bucket(cfg.probe_bucket, data_dir)
        data["probe"] = probe.subset(np.arange(min(cfg.probe_count, len(probe))))
    return data


def _checked_path(name: str, data_dir: str | Path, verify: bool) -> Path:
    """Path of dataset ``name``; with verify, its sha256 must match its manifest entry's."""
    path = Path(data_dir) / f"{name}.npz"
    meta = load_meta(name, data_dir) if verify else None
    if not path.is_file():
        raise DataError(f"{path}: missing; {rerun(name)}")
    if meta is not None and sha256_file(path) != meta["sha256"]:
        raise DataError(
            f"{path}: sha256 does not match {Path(data_dir) / f'{name}.json'} "
            f"(file truncated or edited?); {rerun(name)}"
        )
    return path


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}); {rerun(path.stem)}") from None


def load_bucket(name: str, data_dir: str | Path = "data", verify: bool = True) -> SeqSet:
    """Load bucket ``name`` from data_dir; DataError if missing, corrupt or unknown."""
    if name == "xor_gate":
        raise DataError("xor_gate is the XOR truth table, not a parity bucket; use load_xor_gate()")
    path = _checked_path(name, data_dir, verify)
    arr = _read_npz(path, ("lengths", "labels", "packed"))
    lengths, labels, packed = arr["lengths"], arr["labels"], arr["packed"]
    # Cheap structural checks, for verify=False loads and hand-made files.
    ok = (lengths.ndim == labels.ndim == packed.ndim == 1 and lengths.dtype == np.int64
          and labels.dtype == np.uint8 and packed.dtype == np.uint8 and len(labels) == len(lengths)
          and (len(lengths) == 0 or lengths.min() >= 0)
          and (int(lengths.sum()) + 7) // 8 == len(packed))
    if not ok:
        raise DataError(f"{path}: arrays are inconsistent (lengths, labels, packed); {rerun(path.stem)}")
    return SeqSet(name, lengths, labels, np.cumsum(lengths) - lengths, packed)


def load_xor_gate(data_dir: str | Path = "data", verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The XOR truth table: x (4, 2) float32 inputs, y (4,) float32 targets."""
    path = _checked_path("xor_gate", data_dir, verify)
    arr = _read_npz(path, ("x", "y"))
    if arr["x"].shape != (4, 2) or arr["y"].shape != (4,):
        raise DataError(f"{path}: expected x (4, 2) and y (4,); {rerun(path.stem)}")
    return arr["x"].astype(np.float32), arr["y"].astype(np.float32)


def _rows(name: str, data_dir: str | Path) -> Iterator[tuple[int, str, int]]:
    """(length, bits as "0101", parity) per sequence, produced lazily (1M-bit rows stay cheap)."""
    if name == "xor_gate":
        x, y = load_xor_gate(data_dir)
        for xi, yi in zip(x, y, strict=True):
            yield 2, bits_to_str(xi.astype(np.uint8)), int(yi)
        return
    seqs = load_bucket(name, data_dir)
    stream = seqs.stream
    for s, n, label in zip(seqs.offsets.tolist(), seqs.lengths.tolist(), seqs.labels.tolist(), strict=True):
        yield n, bits_to_str(stream[s : s + n]), label


def print_bucket(bucket: str, limit: int | None = None, data_dir: str | Path = "data") -> None:
    """Print a dataset as CSV on stdout (header length,bits,parity), row by row."""
    rows = _rows(bucket, data_dir)
    first = next(rows, None)  # load (and fail with a DataError) before printing anything
    try:
        sys.stdout.write("length,bits,parity\n")
        if first is not None:
            for row in islice(chain([first], rows), limit):
                sys.stdout.write(f"{row[0]},{row[1]},{row[2]}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly. Point stdout at /dev/null so
        # the interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
