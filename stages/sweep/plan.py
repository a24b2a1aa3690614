"""A sweep's trials: expand the groups' spaces, apply the overrides, write each trial's params.

Every trial gets ``<output>/trials/<name>/params.yaml``: the base params with the sweep's
overrides, its group's overrides and its own values applied, reduced to its one variant,
and validated with ``stages.core.params.load_params``. Random values are drawn from a generator
seeded by the trial's identity (sweep seed, group, sample, variant, grid point), so a
rerun, or a sweep with more grid values, draws the same values for the trials it shares.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.core.params import ParamsError, XorVariant, load_params
from stages.sweep.schema import Dimension, Sweep, SweepError

CODE_ROOT = Path(__file__).absolute().parents[1]  # the repository whose code the trials run


@dataclass(frozen=True)
class Trial:
    """One point of the sweep: a variant trained and evaluated with one params file."""

    name: str  # unique in the sweep; the folder name under trials/
    group: str
    variant: str
    problem: str  # MLflow experiment of the variant: "parity" or "xor-gate"
    values: dict[str, Any]  # searched key -> value, in the sweep file's order
    params_text: str  # the trial's params.yaml
    study: tuple[str, ...] = ()  # fixed-length study parts it runs instead of train and evaluate


def _draw(dim: Dimension, rng: random.Random) -> Any:
    """One sample; floats keep 6 significant digits so names and params files stay readable."""
    if dim.choice is not None:
        return rng.choice(dim.choice)
    if dim.uniform is not None:
        return float(f"{rng.uniform(*dim.uniform):.6g}")
    lo, hi = dim.loguniform  # type: ignore[misc]
    return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.6g}")


def _rng(*identity: Any) -> random.Random:
    digest = hashlib.sha256(json.dumps(identity, default=str).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _fmt(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value) if isinstance(value, int | str) \
        else json.dumps(value, separators=("_", "-"))
    return re.sub(r"[^A-Za-z0-9._+-]", "", text)


def trial_name(group: str, variant: str, values: dict[str, Any], prefix_group: bool) -> str:
    """``lstm-hidden_size=8-seed=1`` (``<group>-...`` when the sweep has several groups)."""
    parts = [group] if prefix_group else []
    parts.append(variant)
    parts += [f"{key.removeprefix('variant.')}={_fmt(v)}" for key, v in values.items()]
    return "-".join(parts)


def set_dotted(doc: dict[str, Any], key: str, value: Any, variant: str) -> None:
    """Set ``training.lr`` (or ``variant.hidden_size`` = ``variants.<variant>.hidden_size``) in doc."""
    parts = key.split(".")
    if parts[0] == "variant":
        parts = ["variants", variant, *parts[1:]]
    node = doc
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SweepError(f"{key}: {'.'.join(parts[: i + 1])} is {child!r}, not a mapping of keys")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _trial_doc(base: dict[str, Any], sweep: Sweep, group: str, variant: str,
               values: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for layer in (sweep.overrides, sweep.groups[group].overrides, values):
        for key, value in layer.items():
            set_dotted(doc, key, value, variant)
    doc["variants"] = {variant: doc["variants"][variant]}  # a trial trains its variant only
    doc.pop("seeds", None)  # and runs no seeds check: the sweep's own seeds are its trials
    if not sweep.groups[group].study:
        doc.pop("fixed_length", None)  # nor the fixed-length study, unless that is what it runs
    elif not isinstance(doc.get("fixed_length"), dict):
        raise SweepError("its group runs the fixed-length study, but the params file has no fixed_length "
                         "section (add one: see params.yaml)")
    else:
        doc["fixed_length"]["variant"] = variant
    return doc


def _validate(text: str, where: str) -> Any:
    """load_params on the trial's text; its error, minus the temporary file name, names the key."""
    with tempfile.TemporaryDirectory(prefix="paritylab-trial-") as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text)
        try:
            return load_params(path)
        except ParamsError as e:
            raise SweepError(f"{where}: {str(e).removeprefix(f'{path}: ')}") from None


def _points(sweep: Sweep, group: str) -> list[tuple[str, dict[str, Any]]]:
    """(variant, values) for every trial of a group: samples x variants x grid, as Ray Tune does."""
    space = sweep.groups[group].space
    grid = [k for k, d in space.items() if d.is_grid]
    out = []
    for sample, variant in itertools.product(range(sweep.num_samples), sweep.groups[group].variants):
        for combo in itertools.product(*(space[k].grid for k in grid)):  # type: ignore[misc]
            rng = _rng(sweep.random_seed, group, sample, variant, combo)
            drawn = dict(zip(grid, combo, strict=True))
            values = {k: drawn[k] if k in drawn else _draw(d, rng) for k, d in space.items()}
            out.append((variant, values))
    return out


def plan(sweep: Sweep, sweep_file: str | Path, params_file: str | Path) -> list[Trial]:
    """Every trial of the sweep with its validated params text, in the sweep file's order."""
    load_params(params_file)  # the base must be valid on its own
    base = yaml.safe_load(Path(params_file).read_text())
    trials: dict[str, Trial] = {}
    for group, g in sweep.groups.items():
        for v in g.variants:
            if v not in base["variants"]:
                raise SweepError(f"{sweep_file}: groups.{group}.variants: unknown variant {v!r} "
                                 f"(allowed: {', '.join(base['variants'])})")
        for variant, values in _points(sweep, group):
            name = trial_name(group, variant, values, prefix_group=len(sweep.groups) > 1)
            where = f"{sweep_file}: trial {name}"
            try:
                doc = _trial_doc(base, sweep, group, variant, values)
            except SweepError as e:
                raise SweepError(f"{where}: {e}") from None
            runs = f"; it runs fixedlen {', '.join(g.study)}" if g.study else ""
            text = f"# Trial {name} of sweep {sweep.name} ({sweep_file}), from {params_file}{runs}.\n" + \
                yaml.safe_dump(doc, sort_keys=False)
            params = _validate(text, where)
            problem = "xor-gate" if isinstance(params.variants[variant], XorVariant) else "parity"
            trial = Trial(name, group, variant, problem, values, text, tuple(g.study))
            if trials.setdefault(name, trial) != trial:
                raise SweepError(f"{where}: two trials with one name and different params")
    return list(trials.values())


# Code a trial never runs; every other file under stages/ and models/ is in the
# fingerprint, so a new helper the stages import is covered without a list to update.
NOT_TRIAL_CODE = ("stages/sweep/", "stages/report/", "stages/commands/", "stages/tracking/",
                  "stages/pipeline/generate.py", "stages/pipeline/report.py")


def code_fingerprint(root: Path = CODE_ROOT) -> str:
    """sha256 over the code a trial runs: models/ and stages/ minus ``NOT_TRIAL_CODE``."""
    h = hashlib.sha256()
    files = sorted(p for d in ("stages", "models") for p in (root / d).rglob("*.py")
                   if not p.relative_to(root).as_posix().startswith(NOT_TRIAL_CODE))
    for path in files:
        h.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes() + b"\0")
    return h.hexdigest()


def trial_key(trial: Trial, code: str, manifest_sha: str) -> str:
    """What a cached result must match: the trial's params, the code and the data manifest."""
    return hashlib.sha256(f"{trial.params_text}\0{code}\0{manifest_sha}".encode()).hexdigest()
