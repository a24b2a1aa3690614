"""MLflow tracking for the stages: one run per variant per `dvc repro`. Records results, never
decides them: no stage lists tracking code as a dependency, so a change here reruns nothing.

Stage runs can be switched off: with ``PARITYLAB_STAGE_RUNS=0`` (what `make repro` sets) a
stage opens no store and imports no mlflow; ``tracked_run`` yields None and every logging call
inside it does nothing. The record is then the result runs that ``python -m stages sync``
writes from dvc.lock when `make repro` ends (stages/tracking/results.py): one per variant, with
the same settings, metrics, curves, params.json, data hashes and model files, and rerunnable.

Importing this module does not import mlflow (first use does). A train stage::

    tracking.check_store()                           # fail fast, before any training
    with tracking.tracked_run("parity", variant, f"train-{variant}", settings,
                              data_hashes=hashes, params_doc=params.model_dump(mode="json")):
        result = train(..., log=tracking.log_metrics)  # log(metrics, step): train/loss, ...
        tracking.log_summary(result.metrics())
        tracking.set_model_hash(sha256_file(model_file))  # lets evaluate find this run
        tracking.log_torch_model(model, example)      # stages/tracking/models.py

The evaluate stage logs into the training run of the very model it evaluates::

    run_id = tracking.find_run("parity", variant, sha256_file(model_file))  # None: new run
    with tracking.tracked_run("parity", variant, f"evaluate-{variant}", {}, data_hashes=...,
                              resume_run_id=run_id):
        tracking.log_summary(metrics, prefix="eval")

The store is ``sqlite:///<repo root>/mlflow.db`` with artifacts in ``<repo root>/mlartifacts``
unless ``MLFLOW_TRACKING_URI`` says otherwise (stages/tracking/store.py). Writes are retried while
SQLite reports "database is locked", so stages of parallel DVC experiments can share the
file. Git state, versions and the repro id come from stages/tracking/provenance.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.tracking import models, store
from stages.tracking.provenance import params_doc_from_argv, provenance_tags, repo_root
from stages.tracking.store import ensure_store, experiment_id, retry, tracking_uri

P = "paritylab."  # prefix of every tag this project sets
MAX_PARAM = 6000  # MLflow's limit on a param value
STAGE_RUNS = "PARITYLAB_STAGE_RUNS"  # "0": stages log no run of their own (`make repro` sets it)
_muted = False  # True inside a tracked_run while stage runs are off: logging calls do nothing
__all__ = [
    "STAGE_RUNS", "stage_runs", "check_store", "data_tags", "flatten", "tracked_run", "ending_run", "log_params",
    "log_metrics", "log_summary", "log_history",
    "log_seed_table", "log_metrics_json", "log_artifact", "set_model_hash", "find_run",
    "log_torch_model", "log_keras_model", "retry", "tracking_uri", "repo_root",
]


def data_tags(hashes: Mapping[str, str]) -> dict[str, str]:
    """Bucket -> sha256 as the run tags ``data.sha256.<bucket>`` (what `rerun` checks the data by)."""
    return {f"data.sha256.{b}": h for b, h in hashes.items()}


def stage_runs() -> bool:
    """Whether stages log MLflow runs of their own: unless ``PARITYLAB_STAGE_RUNS`` is ``0``."""
    return os.environ.get(STAGE_RUNS, "1") != "0"


def check_store() -> str | None:
    """Refuse a store the stage could not write, before any work (stages/tracking/store.py);
    -> its URI, or None without opening it (or importing mlflow) when stage runs are off."""
    return store.check_store() if stage_runs() else None


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"accuracy": {"len_200": 1.0}} -> {"accuracy.len_200": 1.0}: nested keys dotted, leaves kept
    (the one flattening of metrics and settings: MLflow, the gate and the sweep table use it)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _param_values(params: Mapping[str, Any]) -> dict[str, str]:
    """Nested settings -> MLflow params: dotted keys; non-strings as JSON; ≤ 6,000 characters."""
    flat = flatten(params)
    return {k: (v if isinstance(v, str) else json.dumps(v, default=str))[:MAX_PARAM] for k, v in flat.items()}


@contextmanager
def tracked_run(
    problem: str,
    variant: str,
    stage: str,
    params: Mapping[str, Any],
    *,
    data_hashes: Mapping[str, str],
    resume_run_id: str | None = None,
    params_doc: Mapping[str, Any] | None = None,
    family: str | None = None,
) -> Iterator[str]:
    """Start (or resume) the variant's MLflow run around a stage; yield its run id.

    problem: ``parity`` or ``xor-gate`` (the experiment). stage: ``train``/``evaluate``,
    or the DVC stage name ``train-VARIANT``. params: the resolved settings (nested; logged
    flattened with dots). data_hashes: bucket -> sha256 of every data file read, tagged
    ``data.sha256.<bucket>`` and logged as the run's MLflow datasets with their role
    (stages/tracking/inputs.py; the evaluate stage passes none: its held-out buckets are
    logged). params_doc: the whole params document, saved as
    ``params.json`` for `rerun`; by default the file given to the stage's ``--params``
    (``params.yaml``) as read now; pass ``params.model_dump(mode="json")`` to be exact.
    family: tag ``paritylab.family`` (default: ``model.family``/``variant.family`` in params).

    A new run is named after the variant and tagged with provenance (git, DVC stage and
    experiment, versions, command, repro id). With ``resume_run_id`` the stage logs into
    that run: its provenance goes under ``paritylab.<stage>.``, new params are added, and
    a param whose value changed is recorded as tag ``paritylab.<stage>.param.<key>``.

    End state: FINISHED; KILLED on KeyboardInterrupt (the command line turns SIGTERM into one,
    stages/__main__.py); FAILED on any other exception, which is re-raised.

    With stage runs off (``stage_runs()``) it yields None, touches no store, and every logging
    call in the block does nothing.
    """
    if not stage_runs():
        yield from _muted_block()
        return
    import mlflow

    ensure_store(tracking_uri())
    short, _, _ = stage.partition("-")
    dvc_stage = stage if "-" in stage else f"{stage}-{variant}"
    prov = provenance_tags(dvc_stage)
    tags = data_tags(data_hashes)
    values = _param_values(params)
    doc = params_doc if params_doc is not None else params_doc_from_argv()
    if resume_run_id is None:
        family = family or next((values[k] for k in ("model.family", "variant.family", "family") if k in values), "")
        run_id = _new_run(problem, variant, family, prov | tags, values)
        if doc is not None:
            retry(mlflow.log_dict, dict(doc), "params.json", run_id=run_id)
    else:
        run_id = _resume_run(resume_run_id, short, prov, tags, values)
    with ending_run():
        _log_datasets(run_id, doc, dvc_stage, variant, data_hashes, prov["git.commit"])
        yield run_id


def _muted_block() -> Iterator[None]:
    global _muted
    _muted = True
    try:
        yield None
    finally:
        _muted = False


def _log_datasets(run_id: str, doc: Mapping[str, Any] | None, stage: str, variant: str,
                  data_hashes: Mapping[str, str], rev: str) -> None:
    """The stage's buckets as the run's MLflow dataset inputs (stages/tracking/inputs.py says
    which and in what role); a line on stderr when they cannot be told."""
    from stages.tracking.inputs import stage_refs

    refs = stage_refs(doc, stage, variant, data_hashes)
    if isinstance(refs, str):
        print(f"tracking: {stage}: no datasets logged: {refs}", file=sys.stderr, flush=True)
        return
    from stages.tracking.datasets import log_inputs
    from stages.tracking.provenance import git_remote

    log_inputs(run_id, refs, None if rev == "none" else rev, git_remote() or str(repo_root()))


@contextmanager
def ending_run() -> Iterator[None]:
    """End the active run when the block ends: FINISHED; KILLED on KeyboardInterrupt; FAILED
    on any other exception, which is re-raised."""
    import mlflow

    status = "FINISHED"
    try:
        yield
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        retry(mlflow.end_run, status)


def _new_run(problem: str, variant: str, family: str, tags: dict[str, str], values: dict[str, str]) -> str:
    import mlflow

    tags = {(k if k.startswith("data.") else P + k): v for k, v in tags.items()} | {
        P + "problem": problem, P + "variant": variant, P + "family": family,
        "mlflow.source.git.commit": tags["git.commit"], "mlflow.source.name": tags["command"],
    }
    if os.environ.get("PARITYLAB_RERUN_OF"):
        tags[P + "rerun_of"] = os.environ["PARITYLAB_RERUN_OF"]
    # A sweep trial (stages/sweep.py) runs this stage as a child of the sweep's parent run.
    if parent := os.environ.get("PARITYLAB_PARENT_RUN_ID"):
        tags["mlflow.parentRunId"] = parent
    tags |= json.loads(os.environ.get("PARITYLAB_EXTRA_TAGS") or "{}")
    run = retry(mlflow.start_run, experiment_id=experiment_id(problem), run_name=variant, tags=tags)
    run_id = run.info.run_id
    retry(mlflow.set_tag, P + "rerun", f"python -m stages rerun {run_id}")
    _log_params(run_id, values)
    return run_id


def _resume_run(run_id: str, stage: str, prov: dict[str, str], data_tags: dict[str, str],
                values: dict[str, str]) -> str:
    import mlflow

    old = retry(mlflow.MlflowClient().get_run, run_id).data.params
    changed = {k: v for k, v in values.items() if k in old and old[k] != v}
    retry(mlflow.start_run, run_id=run_id)
    tags = {f"{P}{stage}.{k}": v for k, v in prov.items()} | data_tags
    tags |= {f"{P}{stage}.param.{k}": v for k, v in changed.items()}
    tags |= {f"{P}{k}": prov[k] for k in ("host", "pid", "pid_start")}  # the process that holds it now
    _set_tags(run_id, tags)
    _log_params(run_id, {k: v for k, v in values.items() if k not in old})
    return run_id


def _log_params(run_id: str, values: Mapping[str, str]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in values.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        retry(MlflowClient().log_batch, run_id, params=items[i : i + 100])


def log_params(params: Mapping[str, Any]) -> None:
    """Log nested settings as the active run's params (dotted keys; see ``_param_values``)."""
    _log_params(_active_run_id(), _param_values(params))


def _set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), 100):
        retry(MlflowClient().log_batch, run_id, tags=items[i : i + 100])


def _active_run_id() -> str:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no MLflow run is active; call this inside tracking.tracked_run(...)")
    return run.info.run_id


def _log_metric_rows(rows: list[tuple[str, float, int]]) -> None:
    """Log (key, value, step) triples in batches of 1,000 (one short transaction each)."""
    if _muted:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    run_id, now = _active_run_id(), int(time.time() * 1000)
    items = [Metric(k, v, now, s) for k, v, s in rows]
    for i in range(0, len(items), 1000):
        retry(MlflowClient().log_batch, run_id, metrics=items[i : i + 1000])


def _numbers(d: Mapping[str, Any]) -> dict[str, float]:
    """Flattened numeric leaves (bools as 0/1); strings, lists and None are left out."""
    return {k: float(v) for k, v in flatten(d).items() if isinstance(v, int | float)}


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix and not prefix.endswith(("/", ".")) else prefix + key


def log_metrics(metrics: Mapping[str, Any], step: int = 0, prefix: str = "") -> None:
    """Log the numeric leaves of a (nested) dict at ``step`` as ``<prefix>/<dotted.key>``.

    Fits the trainers' ``log(metrics, step)`` callback: ``{"train/loss": 0.3, "val/accuracy": 0.9}``.
    """
    _log_metric_rows([(_join(prefix, k), v, step) for k, v in _numbers(metrics).items()])


def log_summary(summary: Mapping[str, Any], prefix: str = "") -> None:
    """Log a stage's final figures (the dict written to its DVC metrics file), at step 0.

    ``{"accuracy": {"len_1000": 1.0}}`` with prefix ``eval`` -> metric ``eval/accuracy.len_1000``.
    """
    log_metrics(summary, 0, prefix)


def _curve_name(key: str) -> str:
    """``train_loss`` -> ``train/loss``: curves are namespaced by split; other keys stay."""
    head, _, rest = key.partition("_")
    return f"{head}/{rest}" if rest and head in ("train", "val", "probe", "test") else key


def log_history(rows: list[Mapping[str, Any]], prefix: str = "", step_key: str = "step") -> None:
    """Log training curves: one row per evaluation, ``{"step": 50, "train_loss": 0.3, ...}``.

    Every other numeric field becomes metric ``<prefix>/<split>/<name>`` at that step
    (``val_accuracy`` -> ``val/accuracy``); None values (e.g. no probe) are skipped.
    """
    out = []
    for row in rows:
        step = int(row[step_key])
        out += [(_join(prefix, _curve_name(k)), v, step) for k, v in _numbers(row).items() if k != step_key]
    _log_metric_rows(out)


def log_seed_table(rows: list[Mapping[str, Any]], key: str = "seed") -> None:
    """A per-seed table (XOR study): the UI table ``per_seed.json`` and curves ``seed/<column>``.

    Each row's numbers are logged at step = its seed, so the UI plots them against the seed.
    """
    if _muted:
        return
    import mlflow

    columns = list(dict.fromkeys(k for row in rows for k in row))
    retry(mlflow.log_table, {c: [row.get(c) for row in rows] for c in columns}, "per_seed.json")
    out = []
    for row in rows:
        out += [(f"seed/{k}", v, int(row[key])) for k, v in _numbers(row).items() if k != key]
    _log_metric_rows(out)


def log_metrics_json(path: str | Path, prefix: str = "") -> dict[str, float]:
    """Log a metrics JSON file's numbers (e.g. the file DVC tracks) and the file itself."""
    data = json.loads(Path(path).read_text())
    log_summary(data, prefix)
    log_artifact(path, "metrics")
    return _numbers(data)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file (or folder) into the active run's artifacts."""
    if _muted:
        return
    import mlflow

    retry(mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact, str(path), artifact_path)


def set_model_hash(model_sha256: str) -> None:
    """Tag the active run with its saved model file's sha256 (what `find_run` looks up)."""
    if _muted:
        return
    _set_tags(_active_run_id(), {P + "model_sha256": model_sha256})


def find_run(problem: str, variant: str, model_sha256: str) -> str | None:
    """Id of the latest run of ``variant`` whose model file has this sha256, or None (always
    None, without opening the store, when stage runs are off)."""
    if not stage_runs():
        return None
    from mlflow import MlflowClient

    ensure_store(tracking_uri())
    client = MlflowClient()
    exp = retry(client.get_experiment_by_name, problem)
    if exp is None:
        return None
    runs = retry(
        client.search_runs, [exp.experiment_id],
        filter_string=f"tags.`{P}variant` = '{variant}' and tags.`{P}model_sha256` = '{model_sha256}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_torch_model(module: Any, input_example: Any, **kwargs: Any) -> str | None:
    """Log a torch module to the active run (stages/tracking/models.py); -> its model URI,
    or None when stage runs are off."""
    return None if _muted else models.log_torch_model(module, input_example, **kwargs)


def log_keras_model(model: Any, input_example: Any, **kwargs: Any) -> str | None:
    """Log a Keras model to the active run (stages/tracking/models.py); -> its model URI,
    or None when stage runs are off."""
    return None if _muted else models.log_keras_model(model, input_example, **kwargs)
