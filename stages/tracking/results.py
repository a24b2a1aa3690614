"""Result runs: each variant's result in dvc.lock as one MLflow run (`python -m stages sync`).

A stage's own run records how that stage ran, and only when DVC ran it. A result run records
what dvc.lock holds, whatever DVC ran or skipped: one run per variant and result, found by
tag ``paritylab.sync_key`` (a hash of the variant's dvc.lock entries, computed by
stages/commands/sync.py) and tagged ``paritylab.kind = result``. It holds the variant's
settings as params; its metrics files as metrics under the names the stages log
(``eval/accuracy.len_200``, ``steps``); its curves against their own step
(``eval/by_length/accuracy`` at step = sequence length, ``val/accuracy`` at step = optimizer
step); the files themselves (the model folder's too) as artifacts, at their paths in the
repository; its datasets as MLflow dataset inputs (stages/tracking/datasets.py) and tags
``data.sha256.<bucket>``; the model file's sha256 as tag ``paritylab.model_sha256``; and the
params document as ``params.json``, so `python -m stages rerun` can remake it. A result already recorded is never
written again; a result that changed gets a new run and the old one stays.

Importing this module does not import mlflow; finding that there is nothing to record does
not either, for the default SQLite store (stages/tracking/store.py: finished_tag_values).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.tracking import P, data_tags, ending_run, log_artifact, log_history, log_params, log_summary
from stages.tracking.inputs import DataRef
from stages.tracking.provenance import git_commit, git_remote, provenance_tags, repo_root
from stages.tracking.store import (
    PROBLEMS,
    check_store,
    experiment_id,
    finished_tag_values,
    retry,
    store_lock,
)

KEY_TAG = P + "sync_key"  # what identifies the result (stages/commands/sync.py: result_key)
KIND_TAG = (P + "kind", "result")  # filter the runs table with tags.paritylab.kind = 'result'


@dataclass
class Result:
    """One variant's result as dvc.lock records it: everything its run will hold."""

    problem: str  # the experiment: ``parity`` or ``xor-gate``
    variant: str
    family: str
    key: str  # tag ``paritylab.sync_key``
    stages: list[str]  # the DVC stages whose lock entries make up the result
    params: Mapping[str, Any]  # the resolved settings (nested; logged with dotted keys)
    summaries: list[tuple[Path, str]] = field(default_factory=list)  # metrics JSON, metric prefix
    curves: list[tuple[Path, str, str]] = field(default_factory=list)  # CSV, metric prefix, step column
    artifacts: list[Path] = field(default_factory=list)  # logged under their folder's path
    data: list[DataRef] = field(default_factory=list)
    params_doc: Mapping[str, Any] | None = None  # the params document, artifact params.json (for `rerun`)
    model_sha256: str | None = None  # of the model file: tag paritylab.model_sha256 (for `rerun`)


def recorded(keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` that a FINISHED result run already holds."""
    keys = set(keys)
    if (values := finished_tag_values(KEY_TAG)) is not None:
        return keys & values
    from mlflow import MlflowClient

    check_store()  # a server that does not answer: a UserError in seconds, not minutes of retries
    client = MlflowClient()
    ids = [e.experiment_id for e in retry(client.search_experiments) if e.name in PROBLEMS]
    query = "tags.`{}` = '{}' and attributes.status = 'FINISHED'"
    return {k for k in keys if ids and retry(client.search_runs, ids, query.format(KEY_TAG, k), max_results=1)}


def record_missing(results: list[Result]) -> list[tuple[Result, str]]:
    """Record every result that no finished run holds yet; -> each recorded one with its run id."""
    held = recorded(r.key for r in results)
    todo = [r for r in results if r.key not in held]
    if not todo:
        return []
    check_store()
    with store_lock("sync"):  # two syncs at once would record a result twice
        done = recorded(r.key for r in todo)  # another sync may have recorded some meanwhile
        rev, repo = git_commit(), git_remote() or str(repo_root())
        prov = provenance_tags("sync")  # host and pid: a run whose process died is marked FAILED later
        common = {f"{P}{k}": prov[k] for k in ("host", "pid", "pid_start", "git.dirty", "repro_id")}
        return [(r, record(r, rev, repo, common)) for r in todo if r.key not in done]


def record(result: Result, rev: str | None, repo: str | None, tags: dict[str, str]) -> str:
    """Write ``result`` as a new finished run (FAILED if interrupted); -> its run id.

    rev, repo: the git commit and repository the datasets' sources name; tags: added to the run's.
    """
    import mlflow

    from stages.tracking.datasets import log_inputs

    run = retry(mlflow.start_run, experiment_id=experiment_id(result.problem), run_name=result.variant,
                tags=tags | _tags(result, rev))
    run_id = run.info.run_id
    with ending_run():
        log_params(result.params)
        if result.params_doc is not None:
            retry(mlflow.log_dict, dict(result.params_doc), "params.json", run_id=run_id)
        for path, prefix in result.summaries:
            log_summary(json.loads(path.read_text()), prefix)
        for path, prefix, step in result.curves:
            log_history(read_csv(path), prefix, step)
        for path in result.artifacts:
            log_artifact(path, path.parent.as_posix())
        log_inputs(run_id, result.data, rev, repo)
    return run_id


def _tags(result: Result, rev: str | None) -> dict[str, str]:
    stages = " ".join(result.stages)
    model = {P + "model_sha256": result.model_sha256} if result.model_sha256 else {}
    return data_tags({d.name: d.sha256 for d in result.data}) | model | {
        P + "problem": result.problem, P + "variant": result.variant, P + "family": result.family,
        KEY_TAG: result.key, KIND_TAG[0]: KIND_TAG[1], P + "dvc_stages": stages,
        P + "git.commit": rev or "none", "mlflow.source.git.commit": rev or "none",
        "mlflow.source.name": "python -m stages sync",
        "mlflow.note.content": f"The result of `{stages}` as dvc.lock records it (written by "
                               "`python -m stages sync`; the stages' own runs say how they ran).",
    }


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """A CSV file's rows with numbers as numbers and empty cells as None."""
    with open(path, newline="") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _value(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
