"""Command ``sweep SWEEP.yaml``: a grid or random search over params keys on Ray Tune, tracked in MLflow.

1. Validate the sweep file (stages/sweep/schema.py) and plan its trials: each gets a
   validated params file under ``<output>/trials/<name>/`` (stages/sweep/plan.py).
2. Skip trials whose ``result.json`` matches their cache key (params, code, data): a rerun
   of an interrupted sweep resumes where it stopped.
3. Start the local Ray or reach the cluster (stages/sweep/ray_runner.py). One that cannot
   be reached is refused here, before anything is written or any MLflow run opened.
4. Open (or reopen) one parent MLflow run ``sweep-<name>`` per experiment the trials log
   to; its id is kept in ``<output>/trials/mlflow_parents.json`` (trials/ is all the
   state a resumed sweep needs).
5. Run the other trials on Ray; each runs the pipeline's own ``train`` and ``evaluate``
   commands (stages/sweep/trial.py), whose MLflow runs become children of the parent
   (``PARITYLAB_PARENT_RUN_ID``, ``PARITYLAB_EXTRA_TAGS``).
6. Write the results table and plots (stages/sweep/report.py), log them to the parents.
A failed trial is reported in the table and MLflow and run again next time; it does not
stop the sweep.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core import files as sio
from stages.core.errors import UserError
from stages.sweep.plan import CODE_ROOT, Trial, code_fingerprint, plan, trial_key
from stages.sweep.report import DEFAULT_COLUMNS, numbers
from stages.sweep.schema import Sweep, load_sweep
from stages.sweep.trial import read_outcome
from stages.tracking import STAGE_RUNS, P

PARENTS = "trials/mlflow_parents.json"  # tracking URI -> experiment -> parent run id


def _store_uri() -> str:
    """The tracking URI every trial must share: relative SQLite and file paths made absolute."""
    from stages.tracking.store import check_store

    uri = check_store()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri if "://" in uri else Path(uri).resolve().as_uri()


def _manifest() -> tuple[Path, str]:
    """The data folder the trials read and one sha256 over its manifest entries (part of every
    cache key): any regenerated dataset changes it."""
    entries = sorted(Path("data").glob("*.json"))
    if not entries:
        raise UserError("data/: no datasets; generate them first (`.venv/bin/dvc repro`, or "
                        "`make repro`)")
    h = hashlib.sha256()
    for path in entries:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return Path("data").resolve(), h.hexdigest()


def _open_parents(sweep: Sweep, sweep_file: str, out: Path, uri: str, problems: list[str]) -> dict[str, str]:
    """Parent run id per experiment: reopened from an earlier run of this sweep, or created."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    from stages.tracking.store import experiment_id, retry

    client = MlflowClient(uri)
    path = out / PARENTS
    known = sio.read_json(path) if path.exists() else {}
    ids = dict(known.get(uri, {}))
    for problem in problems:
        run_id = ids.get(problem)
        try:
            alive = run_id is not None and retry(client.get_run, run_id).info.lifecycle_stage == "active"
        except Exception:  # deleted for good, or from another store
            alive = False
        if alive:
            retry(client.update_run, run_id, status="RUNNING")
        else:
            tags = {P + "sweep": sweep.name, P + "sweep.role": "parent", P + "problem": problem}
            run = retry(client.create_run, experiment_id(problem), run_name=f"sweep-{sweep.name}", tags=tags)
            run_id = ids[problem] = run.info.run_id
            values = {"sweep.name": sweep.name, "sweep.output": str(sweep.output_dir)}
            retry(client.log_batch, run_id, params=[Param(k, v) for k, v in values.items()])
        retry(client.log_artifact, run_id, sweep_file, "sweep")  # as run this time (it may have grown)
    sio.write_json(path, {**known, uri: ids})
    return ids


def _close_parents(parents: Mapping[str, str], uri: str, counts: Mapping[str, int],
                   files: Mapping[str, Path], status: str) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from stages.tracking.store import retry

    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    for run_id in parents.values():
        retry(client.log_batch, run_id, metrics=[Metric(f"sweep/{k}", v, now, 0) for k, v in counts.items()])
        for path in files.values():
            retry(client.log_artifact, run_id, str(path), "results/plots" if path.parent.name == "plots" else "results")
        if status != "FINISHED":  # trials stopped with the sweep end with it, not RUNNING forever
            exp = retry(client.get_run, run_id).info.experiment_id
            for child in retry(client.search_runs, [exp], f"tags.`mlflow.parentRunId` = '{run_id}' "
                               "and attributes.status = 'RUNNING'"):
                retry(client.set_terminated, child.info.run_id, "KILLED")
        retry(client.set_terminated, run_id, status)


def _spec(trial: Trial, out: Path, key: str, data: Path, uri: str, parent: str, sweep: Sweep) -> dict[str, Any]:
    tags = {P + "sweep": sweep.name, P + "sweep.trial": trial.name, P + "sweep.group": trial.group}
    return {
        "name": trial.name, "dir": str(out / "trials" / trial.name), "variant": trial.variant, "key": key,
        "study": list(trial.study),
        "data": str(data), "code_root": str(CODE_ROOT), "timeout_s": sweep.trial_timeout_s,
        # Each trial logs its own run, a child of the sweep's (whatever PARITYLAB_STAGE_RUNS says here).
        "env": {"MLFLOW_TRACKING_URI": uri, "PARITYLAB_PARENT_RUN_ID": parent, STAGE_RUNS: "1",
                "PARITYLAB_EXTRA_TAGS": json.dumps(tags, sort_keys=True)},
    }


def _outcome(trial_dir: Path, key: str) -> dict[str, Any] | None:
    """ok (result.json with this key), failed (failed.json from this attempt) or None (not run)."""
    found = read_outcome(trial_dir, key)
    failed = trial_dir / "failed.json"
    if found is None and failed.exists():
        found = sio.read_json(failed)
        found = found if found.get("key") == key else None
    return found


def _describe(out: Path, keys: Mapping[str, str], sweep: Sweep) -> Any:
    """Trial name -> one progress line: status, seconds and the first two report metrics."""
    def describe(name: str) -> str:
        trial_dir = out / "trials" / name
        outcome = _outcome(trial_dir, keys[name]) or {"status": "not_run"}
        timing = trial_dir / "logs" / "timing.json"
        secs = f"({sio.read_json(timing)['seconds']:.1f} s)" if timing.exists() else ""
        if outcome["status"] == "failed":
            last = (outcome.get("error") or "").strip().splitlines()[-1:] or [""]
            return f"failed {name} {secs} in {outcome.get('stage')}: {last[0][:200]}"
        metrics = numbers(outcome.get("metrics", {}))
        wanted = sweep.report.metrics or sorted(k for k in metrics if k.startswith(DEFAULT_COLUMNS))
        shown = [m for m in wanted if m in metrics][:2]
        return f"{outcome['status']:<6} {name} {secs} " + "  ".join(f"{m}={metrics[m]:.4g}" for m in shown)
    return describe


def _keys(trials: list[Trial], manifest_sha: str) -> dict[str, str]:
    """Trial name -> cache key (params, code, data)."""
    code = code_fingerprint()
    return {t.name: trial_key(t, code, manifest_sha) for t in trials}


def _write_trials(trials: list[Trial], out: Path) -> None:
    """Write each trial's params.yaml (if changed)."""
    for t in trials:
        params = out / "trials" / t.name / "params.yaml"
        if not params.exists() or params.read_text() != t.params_text:
            sio.write_text(params, t.params_text)


def main(sweep_file: str, address: str | None = None, params_path: str = "params.yaml") -> None:
    sweep = load_sweep(sweep_file)
    trials = plan(sweep, sweep_file, params_path)
    data, manifest_sha = _manifest()
    out = sweep.output_dir.resolve()
    keys = _keys(trials, manifest_sha)
    pending = [t for t in trials if read_outcome(out / "trials" / t.name, keys[t.name]) is None]

    def say(msg: str) -> None:
        print(f"sweep {sweep.name}: {msg}", flush=True)

    say(f"{len(trials)} trials: {len(trials) - len(pending)} cached, {len(pending)} to run; "
        f"results in {sweep.output_dir}")
    address = address or os.environ.get("RAY_ADDRESS")
    have = None
    if pending:  # a Ray that cannot be reached is refused here: nothing written, no MLflow run
        from stages.sweep.ray_runner import connect

        have = connect(sweep, address, say)
    status, stop = "FAILED", None
    try:
        uri = _store_uri()
        _write_trials(trials, out)
        parents = _open_parents(sweep, sweep_file, out, uri, sorted({t.problem for t in trials}))
        say(f"MLflow {uri}: parent run(s) " + ", ".join(f"{p}={r}" for p, r in parents.items()))
        try:
            if pending:
                from stages.sweep.ray_runner import run_trials

                specs = [_spec(t, out, keys[t.name], data, uri, parents[t.problem], sweep) for t in pending]
                lost = run_trials(specs, sweep, have, say, _describe(out, keys, sweep))
                for name, error in lost.items():  # Ray lost the trial (e.g. its worker died)
                    sio.write_json(out / "trials" / name / "failed.json",
                                   {"status": "failed", "key": keys[name], "stage": "ray", "returncode": None,
                                    "error": error})
            status = "FINISHED"
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (the command line raises it for SIGTERM too)
            status, stop = "KILLED", e
        finally:
            status = _finish(sweep, trials, out, keys, parents, uri, status, say)
    finally:
        if have is not None:
            from stages.sweep.ray_runner import disconnect

            disconnect()
    if status == "KILLED":
        say("interrupted; run the same command again to resume (finished trials are kept)")
        raise stop or KeyboardInterrupt()  # exit 130 (Ctrl-C) or 143 (SIGTERM)


def _finish(sweep: Sweep, trials: list[Trial], out: Path, keys: Mapping[str, str],
            parents: Mapping[str, str], uri: str, status: str, say: Any) -> str:
    """Write the results, close the parent runs; return the parents' final status."""
    from stages.sweep import report as sweep_report

    outcomes = {t.name: _outcome(out / "trials" / t.name, keys[t.name]) for t in trials}
    for t in trials:  # a trial stopped mid-run leaves its data/ link; results must not hold one
        link = out / "trials" / t.name / "data"
        if link.is_symlink():
            link.unlink()
    df = sweep_report.table(trials, outcomes)
    files = sweep_report.write(out, sweep, df)
    counts = sweep_report.summary(df)
    if status == "FINISHED" and counts["not_run"]:
        status = "KILLED"  # Ray Tune stopped early (Ctrl-C): the missing trials run next time
    _close_parents(parents, uri, counts, files, status)
    say(f"{counts['ok']} ok, {counts['failed']} failed, {counts['not_run']} not run -> "
        + ", ".join(str(p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p) for p in files.values()))
    for _, r in df[df["status"] == "failed"].iterrows():
        say(f"  failed {r['trial']} in {r['failed_stage']}: {r['error']}")
    return status
