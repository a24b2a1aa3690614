"""``python -m stages sync``: MLflow mirrors dvc.lock, one result run per variant and result.

`make repro` runs it last, so after any `make repro` (a fresh clone, a `git pull`, a
`dvc exp apply`, a no-op) every variant of the current dvc.lock has an MLflow run holding its
settings, its training, held-out, certificate and seeds-check metrics, its curves, files,
model files and datasets (stages/tracking/results.py), whatever DVC ran or skipped, and the
params document (``params.json``) that `python -m stages rerun` rebuilds it from. A result is identified by
the variant's dvc.lock entries: the deps, params and outs of its stages (train, evaluate,
certify, seeds; of the shared ``xor`` stage only what is the variant's), hashed into tag
``paritylab.sync_key``. A changed result gets a new run and the old one stays; a second sync
records nothing and writes nothing. It reads dvc.lock, params.yaml, the small committed files
and the model files (copied, hashed, never loaded), and DVC never runs it, so it cannot make a
`dvc repro` do work.

A variant is skipped, with a line saying why, while dvc.lock does not hold its result: a stage
missing, a params value that differs from params.yaml, or a file that differs from its hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click
import yaml

from stages.core import paths
from stages.core.errors import UserError
from stages.core.files import sha256_file
from stages.core.params import Params, SearchVariant, XorVariant, eval_buckets, load_params, resolved_training
from stages.tracking.inputs import DataRef, data_refs, data_roles, md5_of
from stages.tracking.results import Result, record_missing

KEY_VERSION = 2  # part of every key: raise it when result runs hold more, to record all anew
REPORT_PNGS = {"parity": ("accuracy_vs_length.png", "training_curves.png"), "xor-gate": ("xor_epochs.png",)}
Entries = dict[str, dict[str, Any]]  # stage -> {"cmd", "deps": {path: md5}, "params", "outs": {path: md5}}


def main(params_path: str = "params.yaml", lock_path: str = "dvc.lock") -> list[str]:
    """Record every variant's result in dvc.lock that MLflow lacks; -> the new runs' ids."""
    params = load_params(params_path)
    raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    lock = read_lock(lock_path)
    results: list[Result] = []
    for name in params.variants:
        entries = variant_entries(lock, params, name)
        if reason := stale(entries, raw, params, name, params_path):
            click.echo(f"sync: {name} skipped: {reason}; run `make repro`")
        else:
            results.append(result(params, name, entries, raw))
    new = record_missing(results)
    held = len(results) - len(new)
    names = f": {', '.join(r.variant for r, _ in new)}" if new else ""
    click.echo(f"sync: {len(new)} new result(s) recorded in MLflow{names}; {held} already there")
    return [run_id for _, run_id in new]


def read_lock(lock_path: str | Path) -> dict[str, Any]:
    """dvc.lock's stages (read with libyaml where installed: the file is ~130 kB)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(Path(lock_path).read_text(encoding="utf-8"), Loader=loader) or {}
    except FileNotFoundError:
        raise UserError(f"{lock_path} not found: run `make repro` first") from None
    return doc.get("stages") or {}


def stage_names(params: Params, name: str) -> list[str]:
    """The DVC stages whose results are the variant's (stages/commands/dag.py names them)."""
    if isinstance(params.variants[name], XorVariant):
        return ["xor"]
    seeds = [f"seeds-{name}"] if name in params.seeds.variants else []
    return [f"train-{name}", f"evaluate-{name}", "certify", *seeds]


SHARED = ("xor", "certify")  # stages that serve every variant: each variant's result is its part


def own_paths(name: str) -> set[str]:
    """Every output path of the variant (to pick its part of a shared stage)."""
    funcs = (paths.model_dir, paths.train_metrics, paths.train_curve, paths.eval_metrics, paths.eval_plot,
             paths.certificate, paths.certify_metrics)
    return {str(f(name)) for f in funcs}


def _own_dep(path: str, mine: set[str]) -> bool:
    """Whether a shared stage's dep is the variant's: code and data are; of the artifacts, its own."""
    return not path.startswith(f"{paths.ARTIFACTS}/") or path in mine


def variant_entries(lock: dict[str, Any], params: Params, name: str) -> Entries:
    """The variant's dvc.lock entries as hashes; of a shared stage only its own deps, params and outs."""
    entries: Entries = {}
    for stage in stage_names(params, name):
        if stage not in lock:
            continue
        e = lock[stage]
        shared = stage in SHARED
        mine = own_paths(name)
        entries[stage] = {
            "cmd": e.get("cmd"),
            "deps": {d["path"]: d.get("md5") for d in e.get("deps") or []
                     if not shared or _own_dep(d["path"], mine)},
            "params": {f: {k: v for k, v in ps.items()
                           if not shared or not k.startswith("variants.") or k.split(".")[1] == name}
                       for f, ps in (e.get("params") or {}).items()},
            "outs": {o["path"]: o.get("md5") for o in e.get("outs") or [] if not shared or o["path"] in mine},
        }
    return entries


def result_key(entries: Entries) -> str:
    """What identifies a result: the sha256 of its entries (and of KEY_VERSION)."""
    text = json.dumps({"version": KEY_VERSION, "stages": entries}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stale(entries: Entries, raw: dict[str, Any], params: Params, name: str, params_path: str) -> str | None:
    """Why dvc.lock does not hold the variant's current result, or None when it does."""
    if missing := [s for s in stage_names(params, name) if s not in entries]:
        return f"{', '.join(missing)} not in dvc.lock"
    for stage, e in entries.items():
        for key, value in e["params"].get(Path(params_path).name, {}).items():
            if _lookup(raw, key) != value:
                return f"{key} in {params_path} differs from dvc.lock ({stage})"
    hashes = {p: md5 for e in entries.values() for part in ("deps", "outs") for p, md5 in e[part].items()}
    for path in files_read(params, name):
        if str(path) in hashes and md5_of(path) != hashes[str(path)]:
            return f"{path} differs from dvc.lock"
    return None


def _lookup(doc: Any, dotted: str) -> Any:
    """The value at ``a.b.c`` in a nested dict, or a marker that equals nothing in dvc.lock."""
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return KeyError
        doc = doc[part]
    return doc


def files_read(params: Params, name: str) -> list[Path]:
    """The small files sync reads for the variant: metrics, curves, certificate, manifests."""
    summaries, curves, others = parts(params, name)
    return [*(p for p, _ in summaries), *(p for p, _, _ in curves), *others,
            *(paths.bucket_meta(b) for b in data_roles(params, name))]


def parts(params: Params, name: str) -> tuple[list[tuple[Path, str]], list[tuple[Path, str, str]], list[Path]]:
    """(metrics JSON, prefix), (curve CSV, prefix, step column), other files: what the run holds."""
    if isinstance(params.variants[name], XorVariant):
        return ([(paths.train_metrics(name), ""), (paths.eval_metrics(name), "eval")],
                [(paths.train_curve(name), "seed", "seed"), (paths.eval_plot(name), "eval/by_seed", "seed")], [])
    summaries = [(paths.train_metrics(name), ""), (paths.eval_metrics(name), "eval"),
                 (paths.certify_metrics(name), "certify")]
    curves = [(paths.eval_plot(name), "eval/by_length", "length")]
    others = [paths.certificate(name)]
    if isinstance(params.variants[name], SearchVariant):  # its "curve" is one row: the search's tally
        others.append(paths.train_curve(name))
    else:
        curves.append((paths.train_curve(name), "", "step"))
    if name in params.seeds.variants:
        summaries.append((paths.seeds_metrics(name), "seeds"))
        curves.append((paths.seeds_table(name), "seeds/by_seed", "seed"))
    return summaries, curves, others


def datasets(params: Params, name: str, entries: Entries) -> list[DataRef]:
    """The variant's datasets, each with its manifest's sha256 and DVC's md5 from dvc.lock."""
    md5 = {p: h for e in entries.values() for p, h in e["deps"].items()}
    return data_refs(data_roles(params, name), md5)


def settings(params: Params, name: str) -> dict[str, Any]:
    """The resolved settings the result was computed with (the run's params)."""
    v = params.variants[name]
    out: dict[str, Any] = {"variant": name, "seed": params.seed, "device": params.device,
                           "threads": params.threads, "model": v.model_dump(mode="json")}
    if not isinstance(v, XorVariant):
        out["training"] = resolved_training(params, name)
        out["evaluate"] = {"buckets": eval_buckets(params, name), "max_batch_bits": params.evaluate.max_batch_bits}
    if name in params.seeds.variants:
        out["seeds"] = params.seeds.model_dump(mode="json")
    return out


def model_file(params: Params, name: str) -> Path:
    """The file whose sha256 the variant's train (or xor) stage run tags ``paritylab.model_sha256``."""
    from models.xor_mlp.study import STUDY_FILE
    from stages.pipeline import certify

    if isinstance(params.variants[name], XorVariant):
        return paths.model_dir(name) / STUDY_FILE
    return certify.model_file(params, name)


def result(params: Params, name: str, entries: Entries, doc: dict[str, Any]) -> Result:
    """The variant's result as dvc.lock records it (stages/tracking/results.py writes it).

    doc: the params document it was made with (params.yaml as read), saved as ``params.json``.
    """
    v = params.variants[name]
    problem = "xor-gate" if isinstance(v, XorVariant) else "parity"
    summaries, curves, others = parts(params, name)
    pngs = [paths.REPORT / f for f in REPORT_PNGS[problem]]
    model = model_file(params, name)
    folder = sorted(f for f in model.parent.glob("*") if f.is_file()) if model.is_file() else []
    files = [*(p for p, _ in summaries), *(p for p, _, _ in curves), *others, *pngs, *folder]
    return Result(problem, name, v.family, result_key(entries), list(entries), settings(params, name),
                  [s for s in summaries if s[0].exists()], [c for c in curves if c[0].exists()],
                  [f for f in files if f.exists()], datasets(params, name, entries), doc,
                  sha256_file(model) if model.is_file() else None)
