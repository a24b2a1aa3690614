"""Atomic output writing and file hashing.

Every output is written to a temporary name beside its target and renamed into
place, so an interrupted stage never leaves a half-written file where a good one
(or none) was.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On an exception (KeyboardInterrupt included) the temporary is removed and the
    old ``target``, if any, is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent, suffix=target.suffix)
        os.close(fd)
        tmp = Path(name)
    tmp.chmod((0o777 if is_dir else 0o666) & ~_umask())  # mkstemp's 0600 is not what the user asked for
    try:
        yield tmp
        if is_dir and target.exists():
            _swap_dirs(tmp, target)  # now tmp holds the old folder
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_RENAME_EXCHANGE = 2  # linux/fs.h


def _swap_dirs(a: Path, b: Path) -> None:
    """Exchange two folders in one step (Linux renameat2 RENAME_EXCHANGE): no moment without
    ``b``, and no window for a second writer. Elsewhere, two renames."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_cwd = -100  # AT_FDCWD
    if renameat2 is not None and renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return
    old = b.with_name(f".{b.name}.old-{os.getpid()}")
    b.rename(old)
    a.rename(b)
    old.rename(a)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


# Floats in every JSON and CSV output keep this many significant digits: reruns on another CPU
# (other SIMD paths, other summation orders) differ from the 7th digit on, and a committed
# metric must not change its bytes for that. A value at a rounding edge can still flip.
SIGNIFICANT = 6


def rounded(obj: Any) -> Any:
    """``obj`` with every float rounded to SIGNIFICANT digits (ints, strings, None kept)."""
    if isinstance(obj, float):
        return float(f"{obj:.{SIGNIFICANT}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v) for v in obj]
    return obj


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as CSV text: a header from the first row, "\\n" line ends,
    floats rounded to SIGNIFICANT digits."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rounded(list(rows)))
    return buf.getvalue()


def write_json(target: str | Path, obj: Any) -> None:
    """Write JSON with sorted keys, floats rounded to SIGNIFICANT digits and a trailing newline
    (stable bytes for DVC hashes)."""
    write_text(target, json.dumps(rounded(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileCheckpoint:
    """A trainer's resumable state in one file (models.common.Checkpoint): atomic writes,
    and a damaged file set aside (``NAME.unreadable``) with a warning instead of blocking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, fill: Callable[[Path], None]) -> None:
        with atomic_path(self.path) as tmp:
            fill(tmp)

    def set_aside(self, reason: str) -> None:
        bad = self.path.with_name(self.path.name + ".unreadable")
        os.replace(self.path, bad)
        print(f"warning: {self.path}: unreadable checkpoint ({reason}); moved to {bad}, "
              "training starts afresh", file=sys.stderr)
