"""`make repro` from an empty cache at two commits, side by side in one run (issue 18's yardstick).

    .venv/bin/python bench/redesign.py OLD_COMMIT NEW_COMMIT [--plain] [--stage-runs] [--new-params FILE]

Each commit is exported (`git archive`) into a temporary folder, made a fresh git + DVC
repository, and rebuilt with `python -m stages repro` (what its `make repro` runs), with its
own MLflow store and this venv. ``--plain`` also times one-at-a-time `dvc repro` at each;
``--stage-runs`` also times the new commit's `make repro` with ``PARITYLAB_STAGE_RUNS=1`` (every
stage logs its own MLflow run, as the old commit's did; `make repro` now sets it to 0).
``--new-params`` replaces the new commit's params.yaml (bench/redesign_params.yaml: the old
commit's computation in the new schema). Prints seconds, the new/old ratio, the stages and
the optimizer steps trained at each (the same steps: the same work); writes bench/redesign.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def export(commit: str, into: Path, params: Path | None = None) -> None:
    """The commit's tree in ``into`` (with ``params`` as its params.yaml), committed once, with
    an empty DVC cache and without dvc.lock and artifacts/, so that every stage runs.

    (With its dvc.lock, a fresh export is a fresh clone: DVC reruns generate and train, finds
    the models hashing as the lock says and skips every later stage, whose small outputs are
    in git. Timing that against a commit whose lock no longer matches compares a part of the
    pipeline with all of it.)
    """
    tar = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    (into / "dvc.lock").unlink(missing_ok=True)
    shutil.rmtree(into / "artifacts", ignore_errors=True)
    if params is not None:  # and dvc.yaml written for it, as `make repro` would (a plain dvc repro does not)
        (into / "params.yaml").write_bytes(params.read_bytes())
        subprocess.run([str(BIN / "python"), "-m", "stages", "dag"], cwd=into, check=True, capture_output=True)
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench"]):
        subprocess.run(args, cwd=into, check=True, capture_output=True)


def work(repo: Path) -> dict[str, int]:
    """What a rebuild did: its stages and the optimizer steps of every trained variant."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    steps = sum(json.loads(f.read_text()).get("steps") or 0 for f in (repo / "artifacts" / "train").glob("*.json"))
    return {"stages": len(lock), "train_steps": steps}


def rev(commit: str) -> str:
    """The commit's short hash (HEAD -> 1a2b3c4), as the JSON should name it."""
    return subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def timed(args: list[str], cwd: Path, extra: dict[str, str] | None = None) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2", **(extra or {})}
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
    ap.add_argument("--stage-runs", action="store_true", help="also the new make repro with PARITYLAB_STAGE_RUNS=1")
    ap.add_argument("--new-params", type=Path, help="params file for the new commit")
    args = ap.parse_args()
    make_repro = [str(BIN / "python"), "-m", "stages", "repro"]
    runs = {"make_repro_s": (make_repro, {})}
    if args.plain:
        runs["plain_dvc_repro_s"] = ([str(BIN / "dvc"), "repro"], {})
    out: dict[str, dict[str, float]] = {}
    did: dict[str, dict[str, int]] = {}
    for label, commit in (("old", args.old), ("new", args.new)):
        todo = dict(runs)
        if label == "new" and args.stage_runs:
            todo["make_repro_stage_runs_s"] = (make_repro, {"PARITYLAB_STAGE_RUNS": "1"})
        for key, (command, extra) in todo.items():
            with tempfile.TemporaryDirectory(prefix=f"paritylab-{label}-") as tmp:
                export(commit, Path(tmp), args.new_params if label == "new" else None)
                seconds = timed(command, Path(tmp), extra)
                did[label] = work(Path(tmp))
            out.setdefault(key, {})[label] = round(seconds, 1)
            print(f"{label} ({commit[:7]}) {key}: {seconds:.1f} s; {did[label]}", flush=True)
    for key, v in out.items():
        if "old" in v:
            print(f"{key}: old {v['old']} s, new {v['new']} s, new/old {v['new'] / v['old']:.2f}")
        else:
            print(f"{key}: new {v['new']} s, new/old make_repro_s {v['new'] / out['make_repro_s']['old']:.2f}")
    (ROOT / "bench" / "redesign.json").write_text(json.dumps(
        {"old": rev(args.old), "new": rev(args.new), "new_params": str(args.new_params or ""), "cpus": os.cpu_count(),
         "work": did, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
