"""Run one sweep trial: the pipeline's own ``train`` and ``evaluate`` commands in the trial's folder.

This module runs inside Ray workers, possibly on other machines, so it imports only the
standard library (Ray ships it by value; the worker need not import the project). A
trial spec is a plain dict::

    {"name": "lstm-seed=1", "dir": "/abs/artifacts/sweeps/smoke/trials/lstm-seed=1",
     "variant": "lstm", "key": "<sha256>", "data": "/abs/data", "code_root": "/abs/repo",
     "study": [] (or fixed-length study parts, e.g. ["cells"], run instead of train and evaluate),
     "timeout_s": 3600 or None, "env": {"MLFLOW_TRACKING_URI": ..., "PARITYLAB_PARENT_RUN_ID": ...}}

Outcome files in the trial folder: ``result.json`` (status ok, the cache key, the stage
metrics) or ``failed.json`` (stage, exit status, the end of its log). ``logs/stages.log``
holds the stages' output; ``logs/timing.json`` the wall-clock seconds, host and GPUs (kept
out of result.json, so results stay byte-identical across reruns).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STAGES = ("train", "evaluate")
TAIL_LINES = 15  # lines of a failed stage's log kept in failed.json and the results table


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_outcome(trial_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The trial's result if it finished with this cache key, else None (to run)."""
    path = Path(trial_dir) / "result.json"
    try:
        result = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return result if result.get("key") == key and result.get("status") == "ok" else None


def _die_with_parent() -> None:
    """Linux: SIGTERM the stage when its Ray worker dies, so it never trains on as an orphan.

    The stage turns SIGTERM into KeyboardInterrupt: its MLflow run ends KILLED and its
    checkpoint stays for the resumed sweep.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _env(spec: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    path = [spec["code_root"], *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(spec["env"], PYTHONPATH=os.pathsep.join(path), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return env


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# The pipeline's own commands, `python -m stages train|evaluate VARIANT --params params.yaml`
# (or `fixedlen PART` for a stage given as "fixedlen:PART"), run one after the other in one
# interpreter: starting Python, torch and MLflow twice would double a short trial's time. A
# marker line before each says which stage a failure is in.
RUNNER = """
import sys
from stages.__main__ import cli
for stage in sys.argv[2:]:
    print(f"== stage {stage} ==", flush=True)
    command, _, part = stage.partition(":")
    cli([command, part or sys.argv[1], "--params", "params.yaml"], prog_name="python -m stages",
        standalone_mode=False)
"""


def _failed_stage(log: Path) -> str:
    marks = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("== stage ")]
    return marks[-1].removeprefix("== stage ").removesuffix(" ==") if marks else "start"


def _run_stages(spec: dict[str, Any], deadline: float | None) -> dict[str, Any] | None:
    """Train and evaluate the trial's variant in its folder; None on success, else the failure."""
    trial = Path(spec["dir"])
    log = trial / "logs" / "stages.log"
    stages = [f"fixedlen:{p}" for p in spec.get("study", [])] or list(STAGES)
    cmd = [sys.executable, "-c", RUNNER, spec["variant"], *stages]
    timeout = None if deadline is None else max(deadline - time.monotonic(), 1.0)
    with open(log, "w") as out:
        try:
            proc = subprocess.run(cmd, cwd=trial, env=_env(spec), stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, preexec_fn=_die_with_parent)
        except subprocess.TimeoutExpired:
            return {"stage": _failed_stage(log), "returncode": None,
                    "error": f"timed out after trial_timeout_s={spec['timeout_s']}\n{_tail(log)}"}
    if proc.returncode != 0:
        return {"stage": _failed_stage(log), "returncode": proc.returncode, "error": _tail(log)}
    return None


def _metrics(trial: Path, variant: str, study: list[str] = ()) -> dict[str, Any]:
    """The stage outputs a sweep compares: training summary and evaluation metrics, or the
    study parts' metrics (artifacts/metrics/fixedlen_PART.json)."""
    art = trial / "artifacts"
    if study:
        return {"fixedlen": {p: json.loads((art / "metrics" / f"fixedlen_{p}.json").read_text()) for p in study}}
    return {
        "train": json.loads((art / "train" / f"{variant}.json").read_text()),
        "eval": json.loads((art / "metrics" / f"{variant}.json").read_text()),
    }


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the trial's stages; write and return its outcome (status "ok" or "failed")."""
    trial = Path(spec["dir"])
    (trial / "logs").mkdir(parents=True, exist_ok=True)
    for name in ("result.json", "failed.json"):
        (trial / name).unlink(missing_ok=True)
    data = trial / "data"  # the stages read ./data: link the repository's (a stale link is replaced)
    if data.is_symlink():
        data.unlink()
    data.symlink_to(spec["data"], target_is_directory=True)
    start = time.monotonic()
    deadline = None if spec["timeout_s"] is None else start + spec["timeout_s"]
    failure: dict[str, Any] | None = {"stage": "trial", "returncode": None, "error": "interrupted"}
    try:
        failure = _run_stages(spec, deadline)
        if failure is None:
            try:
                outcome = {"status": "ok", "key": spec["key"], "metrics": _metrics(trial, spec["variant"],
                                                                                spec.get("study", []))}
            except (OSError, ValueError) as e:
                failure = {"stage": "collect", "returncode": None, "error": f"{type(e).__name__}: {e}"}
        if failure is not None:
            outcome = {"status": "failed", "key": spec["key"], **failure}
        _write_json(trial / ("result.json" if failure is None else "failed.json"), outcome)
    finally:
        data.unlink()  # no link to data/ inside results DVC may version
        if failure is None:  # a finished trial needs no resume point; a failed one keeps it
            shutil.rmtree(trial / "artifacts" / "checkpoints", ignore_errors=True)
    _write_json(trial / "logs" / "timing.json", {  # where and how long it ran (not in result.json)
        "seconds": round(time.monotonic() - start, 3), "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # set by Ray per GPU trial
    })
    outcome["seconds"] = time.monotonic() - start
    return outcome


def trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: run the trial (it writes its own outcome file), report its status."""
    from ray import tune

    outcome = execute(config["trial"])
    tune.report({"ok": outcome["status"] == "ok", "seconds": outcome["seconds"],
                 "stage": outcome.get("stage", ""), "error": outcome.get("error", "")[-2000:]})
