"""Output writing: atomic files and folders, the umask's permissions, metric rounding, and
commands stopped by a signal (no temporaries left, exit 143)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.core import files

ROOT = Path(__file__).resolve().parents[1]


def test_folder_swap_never_leaves_the_target_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model"
    with files.atomic_path(target, is_dir=True) as tmp:
        (tmp / "old").write_text("1")
    seen = []
    real = files._swap_dirs

    def watch(a: Path, b: Path) -> None:
        real(a, b)
        seen.append(sorted(p.name for p in b.iterdir()))  # right after the one-step exchange

    monkeypatch.setattr(files, "_swap_dirs", watch)
    with files.atomic_path(target, is_dir=True) as tmp:
        (tmp / "new").write_text("2")
    assert seen == [["new"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old folder is gone too


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    files.write_json(tmp_path / "m.json", {"a": 1})
    with files.atomic_path(tmp_path / "d", is_dir=True) as tmp:
        (tmp / "x").write_text("")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_metrics_are_rounded_so_other_cpus_write_the_same_bytes(tmp_path: Path) -> None:
    """Two reruns whose floats differ past the 6th significant digit (another CPU's summation
    order) write identical files."""
    a = {"loss": 0.012345678901, "accuracy": {"len_200": 0.9997}, "n": 10000, "curve": [1 / 3]}
    b = {"loss": 0.012345678912, "accuracy": {"len_200": 0.99970000001}, "n": 10000, "curve": [1 / 3 + 1e-12]}
    files.write_json(tmp_path / "a.json", a)
    files.write_json(tmp_path / "b.json", b)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert '"loss": 0.0123457' in (tmp_path / "a.json").read_text()
    assert files.csv_text([{"x": 0.1 + 0.2}]) == files.csv_text([{"x": 0.3}]) == "x\n0.3\n"


def test_sigterm_to_generate_leaves_no_temporary_and_exits_143(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "tests" / "params_small.yaml").read_text())
    params["data"]["buckets"]["big"] = {"count": 400, "min_len": 1_000_000, "max_len": 1_000_000}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "stages", "generate", "big"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("data/.big.npz.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.001)  # until it is writing its output (a 50 MB temporary file)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped (SIGTERM)" in err and "Traceback" not in err
    leftovers = [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert leftovers == [] and not (tmp_path / "data" / "big.npz").exists()
