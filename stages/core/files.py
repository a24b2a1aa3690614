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
    try:
        yield tmp
        if is_dir:
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old)
            else:
                tmp.rename(target)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as CSV text: a header from the first row, "\\n" line ends."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def write_json(target: str | Path, obj: Any) -> None:
    """Write JSON with sorted keys and a trailing newline (stable bytes for DVC hashes)."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
