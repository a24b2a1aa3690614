"""Which datasets a run read, and in what role (MLflow's dataset context).

A variant's buckets have one role each, the same in its stages' own runs and in its result
run (stages/tracking/results.py): its train bucket ``training``; the held-out buckets it is
judged on (by evaluate and by the seeds check) ``evaluation``; its validation and probe
buckets ``validation`` unless they are held out too (the default probe, len_50_100, is a
held-out bucket: only a fixed 500 of it are probed during training). A run holds one
context per dataset (MLflow keeps the first one logged), so one role per bucket is also
what lets the evaluate stage add its buckets to the training run it logs into.

stages/tracking/datasets.py turns a DataRef into an MLflow dataset input. Importing this
module does not import mlflow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stages.core import paths
from stages.core.params import Params, XorVariant, eval_buckets, resolved_training


@dataclass(frozen=True)
class DataRef:
    """One dataset a run read, and in what role."""

    name: str  # the bucket: ``len_200``
    path: str  # ``data/len_200.npz``
    sha256: str  # from its manifest entry ``data/len_200.json``
    md5: str | None  # DVC's hash of the file (its cache key in dvc.lock)
    context: str  # ``training``, ``validation`` or ``evaluation``
    profile: dict[str, Any]  # counts and lengths from the manifest entry


def data_roles(params: Params, name: str) -> dict[str, str]:
    """Bucket -> context for every bucket a stage of variant ``name`` reads."""
    if isinstance(params.variants[name], XorVariant):
        return {paths.XOR_GATE: "training"}
    t = resolved_training(params, name)
    held_out = [*eval_buckets(params, name), *(params.seeds.buckets if name in params.seeds.variants else [])]
    roles: dict[str, str] = {}
    for context, buckets in (("training", [t["train_bucket"]]), ("evaluation", held_out),
                             ("validation", [t["val_bucket"], t.get("probe_bucket")])):
        for b in buckets:
            if b:
                roles.setdefault(b, context)
    return roles


def data_refs(roles: Mapping[str, str], md5s: Mapping[str, str | None]) -> list[DataRef]:
    """A DataRef per bucket of ``roles``, its sha256 and profile read from its manifest;
    md5s: data file path -> DVC's md5 (a path left out gets None)."""
    refs = []
    for bucket, context in roles.items():
        meta = json.loads(paths.bucket_meta(bucket).read_text(encoding="utf-8"))
        path = str(paths.bucket_file(bucket))
        profile = {k: meta[k] for k in ("count", "total_bits", "positive_ratio", "bucket") if k in meta}
        refs.append(DataRef(bucket, path, meta["sha256"], md5s.get(path), context, profile))
    return refs


def stage_refs(doc: Mapping[str, Any] | None, stage: str, variant: str, read: Iterable[str]) -> list[DataRef] | str:
    """The datasets a stage's own run read, or why they cannot be told.

    doc: the params document the stage ran with. stage: its DVC name (``train-lstm``,
    ``seeds-lstm``, ``xor-xor_mlp_16_relu``); the variant follows the first dash (else
    ``variant``). read: the buckets the stage names (the keys of its ``data_hashes``); the
    evaluate stage names none, so its buckets are the variant's held-out ones, which is what
    it reads. md5 is hashed from the file the stage read (the DVC cache entry's bytes).
    """
    kind, _, name = stage.partition("-")
    name = name or variant
    read = [b for b in read if b]
    if not read and kind != "evaluate":
        return []
    if doc is None:
        return "no params file to read the buckets' roles from"
    try:
        params = Params.model_validate(doc)
    except ValidationError as e:
        return f"the params document does not validate ({e.error_count()} error(s))"
    if name not in params.variants:
        return f"{name!r} is not a variant of the params document"
    roles = data_roles(params, name)
    # A bucket that params give no role (none today) is one the variant is not trained on.
    mine = {b: roles.get(b, "evaluation") for b in read or eval_buckets(params, name)}
    if missing := [str(paths.bucket_meta(b)) for b in mine if not paths.bucket_meta(b).is_file()]:
        return f"{missing[0]} not found"
    return data_refs(mine, {str(paths.bucket_file(b)): md5_of(paths.bucket_file(b)) for b in mine})


def md5_of(path: Path) -> str | None:
    """A file's md5 as DVC records it in dvc.lock; None when the file is missing."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "md5").hexdigest()
    except FileNotFoundError:
        return None
