"""What every section of the params schema is built from: strict models, bounded numbers, limits.

Split from params.py (the schema itself) so that the bucket kinds (buckets.py) and the rest
share one base without importing each other.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from stages.core.errors import UserError

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ParamsError(UserError):
    """A params file that cannot be used; the message is one line for the user."""


class Strict(BaseModel):
    # strict: true/yes/on are not numbers, 1.5 is not an int; NaN and infinity are no number a
    # setting can use (lr: .inf trains to a NaN model and exits 0).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # NumPy, torch and TensorFlow all take 32-bit seeds
# Limits that protect memory and time, each with its reason. None binds the defaults.
MAX_THREADS = 256  # more than any machine here has; torch and TF crash on absurd counts
MAX_HIDDEN = 4096  # an h4096 LSTM step is 16M weights; the parity nets use 8
MAX_BATCH = 65_536  # sequences per step; 10^9 was OOM-killed at 20 GB with its run left RUNNING
MAX_NAME = 64  # variant and bucket names become file names (limit 255) and MLflow run names


def cut(text: str, limit: int = 120) -> str:
    """``text`` cut to about ``limit`` characters for a one-line message (a 10 MB value is not echoed)."""
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text):,} characters)"


def short(value: Any) -> str:
    """repr of a value, cut for a one-line message."""
    return cut(repr(value), 60)


def memory_bytes() -> int:
    """This machine's memory, or 0 where it cannot be read."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


class DuplicateKeyError(yaml.YAMLError):
    """The same key twice in one mapping: YAML would keep the last one silently."""


class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser: 10x faster
    """yaml's safe loader that refuses duplicate keys (``seed: 0`` then ``seed: 5``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(f"key {short(key)} appears twice at line {key_node.start_mark.line + 1} "
                                        "(YAML would keep the last silently); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
