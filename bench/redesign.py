"""`make repro` from an empty cache at two commits, side by side in one run (issue 18's yardstick).

    .venv/bin/python bench/redesign.py OLD_COMMIT NEW_COMMIT [--plain]

Each commit is exported (`git archive`) into a temporary folder, made a fresh git + DVC
repository, and rebuilt with `python -m stages repro` (what its `make repro` runs), with its
own MLflow store and this venv. ``--plain`` also times one-at-a-time `dvc repro` at each.
Prints seconds and the new/old ratio; writes bench/redesign.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def export(commit: str, into: Path) -> None:
    """The commit's tree in ``into``, committed once, with DVC initialised and an empty cache."""
    tar = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench"]):
        subprocess.run(args, cwd=into, check=True, capture_output=True)


def timed(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} in {cwd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--plain", action="store_true", help="also one-at-a-time `dvc repro`")
    args = ap.parse_args()
    runs = {"make_repro_s": [str(BIN / "python"), "-m", "stages", "repro"]}
    if args.plain:
        runs["plain_dvc_repro_s"] = [str(BIN / "dvc"), "repro"]
    out: dict[str, dict[str, float]] = {}
    for label, commit in (("old", args.old), ("new", args.new)):
        for key, command in runs.items():
            with tempfile.TemporaryDirectory(prefix=f"paritylab-{label}-") as tmp:
                export(commit, Path(tmp))
                seconds = timed(command, Path(tmp))
            out.setdefault(key, {})[label] = round(seconds, 1)
            print(f"{label} ({commit[:7]}) {key}: {seconds:.1f} s", flush=True)
    for key, v in out.items():
        print(f"{key}: old {v['old']} s, new {v['new']} s, new/old {v['new'] / v['old']:.2f}")
    (ROOT / "bench" / "redesign.json").write_text(json.dumps(
        {"old": args.old, "new": args.new, "cpus": os.cpu_count(), **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
