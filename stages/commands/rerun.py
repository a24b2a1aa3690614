"""`python -m stages rerun RUN_ID`: run an MLflow run's stages again and compare metrics.

RUN_ID is a parity variant's training run (a stage's own run) or its result run (what
`make repro` records: tag ``paritylab.kind = result``).

The rerun needs what the run was made from: the same git commit (clean working tree; a later
commit will do when it differs only in params and DVC's outputs and bookkeeping, as a commit
of `make repro`'s results does),
the same data files (sha256 recorded per bucket) and the same params, which are rebuilt
from the run's ``params.json`` artifact into a temporary params file. It then runs

    python -m stages train VARIANT --params TMP
    python -m stages evaluate VARIANT --params TMP    (if the run was evaluated)

in a temporary git worktree of that commit (its ``data/`` is this one's, checked by sha256),
so the workspace is never changed: the committed models and metrics stay as they are, and
the worktree goes when the rerun ends. The new run (in the same MLflow store) is tagged
``paritylab.rerun_of``; old and new metrics are printed side by side. On CPU they must be
identical; any difference exits with status 1. Only FINISHED runs can be rerun.

A result run's metrics come from the stages' files, rounded to 6 significant digits, and include
the certificate and seeds check, which rerun does not run: only the metrics both runs hold
are compared, the new ones rounded the same way; the others are listed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from stages.core.errors import UserError
from stages.core.files import rounded, sha256_file
from stages.tracking import STAGE_RUNS, P
from stages.tracking.provenance import dirty_files, git_commit, repo_root, source_changes

if TYPE_CHECKING:
    from mlflow.entities import Run

# Wall-clock metrics (train_seconds, eval_seqs_per_s.len_200): never expected to repeat.
TIMING_WORDS = ("seconds", "time", "per_s", "throughput")


def load_run(run_id: str) -> Run:
    """The run with this id, or UserError naming the store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from stages.tracking.store import check_store

    uri = check_store()
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        raise UserError(f"run {run_id!r} is not in the MLflow store {uri}") from None
    tags = run.data.tags
    if P + "variant" not in tags or P + "git.commit" not in tags:
        raise UserError(f"run {run_id} was not made by a paritylab stage (no {P}variant or {P}git.commit tag)")
    if is_result(tags) and (tags.get(P + "problem") != "parity" or P + "model_sha256" not in tags):
        raise UserError(f"run {run_id} is the result of {tags.get(P + 'dvc_stages', '?')}, not of a parity "
                        "train stage; rerun takes parity variants (run `dvc repro` for the rest)")
    if not tags.get(P + "dvc_stage", "train").startswith("train"):
        raise UserError(f"run {run_id} was made by {tags[P + 'dvc_stage']}, not by a train stage; nothing to rerun")
    if run.info.status != "FINISHED":
        raise UserError(f"run {run_id} ended {run.info.status}, so there is no result to reproduce "
                        "(allowed: FINISHED runs)")
    return run


def is_result(tags: Mapping[str, str]) -> bool:
    """Whether the run is a result run (`stages sync`), not a stage's own run."""
    return tags.get(P + "kind") == "result"


def check_commit(run_id: str, tags: Mapping[str, str], cwd: Path) -> None:
    """UserError unless the working tree is clean and its source is the run's commit's (HEAD is
    that commit, or one that differs from it only in params, outputs and DVC's bookkeeping)."""
    commit = tags[P + "git.commit"]
    if commit == "none":
        raise UserError(f"run {run_id} was not made in a git work tree; it cannot be rerun")
    if tags.get(P + "git.dirty") == "true":
        raise UserError(
            f"run {run_id} was trained with uncommitted changes ({tags.get(P + 'git.dirty_files', '?')}); "
            "it cannot be rerun exactly"
        )
    head = git_commit(cwd)
    if head != commit and (moved := source_changes(commit, cwd)) != []:
        differ = f", which differs in {' '.join(moved[:5])}" if moved else ""
        raise UserError(
            f"run {run_id} was trained at commit {commit[:12]} but the working tree is at "
            f"{(head or 'no commit')[:12]}{differ}; run `git checkout {commit}` first"
        )
    if dirty := dirty_files(cwd):
        raise UserError(f"the working tree has uncommitted changes ({' '.join(dirty)}); commit or stash them first")


def _data_file(cwd: Path, name: str) -> Path:
    """The file of dataset ``name``: ``data/<name>.npz``."""
    return cwd / "data" / f"{name}.npz"


def check_data(run_id: str, tags: Mapping[str, str], cwd: Path) -> None:
    """UserError unless every data file the run read is there with the recorded sha256."""
    hint = "run `dvc repro` (or `dvc checkout`) at the run's commit"
    for key, recorded in sorted(tags.items()):
        if not key.startswith("data.sha256."):
            continue
        name = key.removeprefix("data.sha256.")
        path = _data_file(cwd, name)
        if not path.is_file():
            raise UserError(f"data bucket {name!r}: {path} is missing; {hint}")
        if (now := sha256_file(path)) != recorded:
            raise UserError(
                f"data bucket {name!r}: {path} has sha256 {now[:12]}, run {run_id} read {recorded[:12]}; {hint}"
            )


Row = tuple[str, float | None, float | None, bool | None]  # metric, old, new, equal (None: timing)


def compare_metrics(old: Mapping[str, float], new: Mapping[str, float], *, both_only: bool = False) -> list[Row]:
    """Rows (metric, old, new, equal) over both runs' metrics; equal is None for timings.

    both_only: only the metrics both hold, the new values rounded as the stages' files round
    them (the old run is a result run, whose metrics were read from those files).
    """
    rows = []
    keys = set(old) & set(new) if both_only else set(old) | set(new)
    for key in sorted(keys):
        a, b = old.get(key), new.get(key)
        if both_only:
            b = rounded(b)
        timing = any(w in key for w in TIMING_WORDS)
        rows.append((key, a, b, None if timing else a == b))
    return rows


def format_table(rows: list[Row]) -> str:
    """A plain-text table; values printed with repr so equal-looking floats are really equal."""
    cells = [("metric", "old", "new", "equal?")]
    for key, a, b, eq in rows:
        mark = "(timing)" if eq is None else ("yes" if eq else "NO")
        cells.append((key, "-" if a is None else repr(a), "-" if b is None else repr(b), mark))
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _run_stages(variant: str, doc: dict, evaluate: bool, env: dict[str, str], cwd: Path) -> None:
    """Train (and evaluate) in a temporary worktree of HEAD (the run's commit, checked), never here."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="paritylab-rerun-") as tmp:
        work = Path(tmp) / "work"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(work), "HEAD"], cwd=cwd,
                       check=True, capture_output=True)
        try:
            (work / "data").symlink_to(cwd / "data", target_is_directory=True)
            params = Path(tmp) / "params.yaml"
            params.write_text(yaml.safe_dump(doc, sort_keys=False))
            for stage in ("train", "evaluate") if evaluate else ("train",):
                cmd = [sys.executable, "-m", "stages", stage, variant, "--params", str(params)]
                print(f"$ python -m stages {stage} {variant} --params {params}  (in {work})", flush=True)
                rc = subprocess.run(cmd, cwd=work, env=env).returncode
                if rc != 0:
                    raise SystemExit(f"error: the {stage} stage failed (exit status {rc}); no comparison")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(work)], cwd=cwd, capture_output=True)


def _new_run(experiment_id: str, variant: str, repro_id: str) -> Run:
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`{P}repro_id` = '{repro_id}' and tags.`{P}variant` = '{variant}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        raise SystemExit(f"error: the rerun finished but logged no run with {P}repro_id={repro_id}")
    return MlflowClient().get_run(runs[0].info.run_id)


def main(run_id: str) -> None:
    """Rerun ``run_id`` (same commit, data and params), print old vs new metrics, exit 1 if any differ."""
    import mlflow

    cwd = repo_root()
    run = load_run(run_id)
    tags = run.data.tags
    check_commit(run_id, tags, cwd)
    check_data(run_id, tags, cwd)
    result = is_result(tags)
    if tags.get(P + "evaluate.git.commit", tags[P + "git.commit"]) != tags[P + "git.commit"]:
        print(f"note: run {run_id} was evaluated at commit {tags[P + 'evaluate.git.commit'][:12]}, "
              f"trained at {tags[P + 'git.commit'][:12]}; both stages now run at the latter", flush=True)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        doc = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/params.json")
    except Exception:
        raise UserError(f"run {run_id} has no params.json artifact; it cannot be rerun") from None
    variant = tags[P + "variant"]
    repro_id = f"rerun-{os.getpid()}-{int(time.time())}"
    from stages.tracking.store import tracking_uri

    env = os.environ | {"PARITYLAB_REPRO_ID": repro_id, "PARITYLAB_RERUN_OF": run_id, STAGE_RUNS: "1",
                        "MLFLOW_TRACKING_URI": tracking_uri()}  # this store, not one in the worktree
    evaluated = f"evaluate-{variant}" in tags.get(P + "dvc_stages", "").split() if result else (
        P + "evaluate.git.commit" in tags)
    _run_stages(variant, doc, evaluated, env, cwd)
    new = _new_run(run.info.experiment_id, variant, repro_id)
    rows = compare_metrics(run.data.metrics, new.data.metrics, both_only=result)
    print(f"\nrun {run_id} (old) vs {new.info.run_id} (new), variant {variant}")
    print(format_table(rows))
    if result and (left := sorted(set(run.data.metrics) - set(new.data.metrics))):
        print(f"not compared ({len(left)}, from stages rerun does not run or curves it does not log): "
              f"{', '.join(left[:8])}{' ...' if len(left) > 8 else ''}")
    same_model = tags.get(P + "model_sha256") == new.data.tags.get(P + "model_sha256")
    print(f"model file sha256: {'identical' if same_model else 'DIFFERENT'}")
    differ = [r[0] for r in rows if r[3] is False]
    if differ or not same_model:
        raise SystemExit(f"not reproduced: {len(differ)} metric(s) differ" + ("" if same_model else ", model differs"))
    print(f"reproduced: all {sum(r[3] is True for r in rows)} metrics identical")
