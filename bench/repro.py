"""Time `dvc repro` of the whole pipeline in a temporary copy of the repository.

The copy is made as tests/test_pipeline.py makes its own: stages/, models/, .gitignore and a
params file, dvc.yaml written for it (`python -m stages dag`), then `git init`, `dvc init` and
one commit, so DVC's cache is empty and every stage runs. Each copy has its own MLflow store, like a fresh clone.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))  # the venv's dvc, beside the running python


def sh(args: list[str], cwd: Path) -> None:
    """Run ``args`` in ``cwd``: the venv first on PATH (dvc.yaml says `python`), an own MLflow store."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db",
    }
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )


def fresh_repo(repo: Path, params_file: Path) -> None:
    """A committed copy of the project in ``repo`` whose DVC cache is empty."""
    for name in ("stages", "models"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    shutil.copy(params_file, repo / "params.yaml")
    sh([sys.executable, "-m", "stages", "dag"], repo)
    sh(["git", "init", "-q"], repo)
    sh(["git", "config", "user.email", "bench@example.com"], repo)
    sh(["git", "config", "user.name", "bench"], repo)
    sh([DVC, "init", "-q"], repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")  # the plot templates dvc.yaml names
    sh([DVC, "config", "core.autostage", "true"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)


def timed(args: list[str], cwd: Path) -> float:
    """Seconds ``args`` takes to run in ``cwd``."""
    start = time.perf_counter()
    sh(args, cwd)
    return time.perf_counter() - start


def bench_repro(
    params_file: Path, full_repeats: int, noop_repeats: int, say: Callable[[str], None] = print
) -> dict[str, float]:
    """Medians, in seconds, of: `dvc repro` from an empty cache (``repro_full_s``, one stage
    at a time); `python -m stages repro` from an empty cache (``repro_full_parallel_s``, what
    `make repro` runs: CPU-count stages at once); a following no-op `dvc repro` (``repro_noop_s``).

    Each full run gets a fresh copy; the no-op runs follow the last full run in its copy.
    Raises RuntimeError with the failing command's output tail.
    """
    commands = {"repro_full_s": [DVC, "repro"],
                "repro_full_parallel_s": [sys.executable, "-m", "stages", "repro"]}
    full: dict[str, list[float]] = {key: [] for key in commands}
    noop = []
    for i in range(full_repeats):
        for key, command in commands.items():
            with tempfile.TemporaryDirectory(prefix="paritylab-bench-", ignore_cleanup_errors=True) as tmp:
                repo = Path(tmp)
                fresh_repo(repo, params_file)
                say(f"{' '.join(Path(c).name for c in command)} with {params_file.name} from an empty "
                    f"cache ({i + 1}/{full_repeats}) ...")
                full[key].append(timed(command, repo))
                for j in range(noop_repeats if i == full_repeats - 1 and key == "repro_full_s" else 0):
                    say(f"dvc repro, nothing to do ({j + 1}/{noop_repeats}) ...")
                    noop.append(timed([DVC, "repro"], repo))
    return {key: statistics.median(times) for key, times in full.items()} | {
        "repro_noop_s": statistics.median(noop)}
