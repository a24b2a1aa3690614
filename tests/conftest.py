"""Shared fixtures: a small data configuration and its generated data folder (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import generate_data
from stages.core.params import Data

# Small but shaped like params.yaml: short training data, a disjoint validation set,
# held-out longer buckets, and one 10 x 100,000-bit bucket for the long-sequence paths.
SMALL_BUCKETS = {
    "train": {"count": 3000, "min_len": 1, "max_len": 20},
    "val": {"count": 1000, "min_len": 1, "max_len": 20, "disjoint_from": "train"},
    "len_50_100": {"count": 1000, "min_len": 50, "max_len": 100},
    "len_100000": {"count": 10, "min_len": 100_000, "max_len": 100_000},
}


@pytest.fixture(scope="session")
def small_data() -> Data:
    """The ``data`` section of a tiny params file."""
    return Data(seed=7, buckets=SMALL_BUCKETS)


@pytest.fixture(scope="session")
def data_dir(small_data: Data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data/ folder generated from ``small_data`` once per session; treat it as read-only."""
    out = tmp_path_factory.mktemp("gen") / "data"
    generate_data(small_data, out)
    return out



@pytest.fixture
def one_thread():
    """One torch thread, as the pipeline runs: tiny nets on a busy 2-core machine crawl with more."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
