"""What the report reads: every variant's training and evaluation outputs, checked up front.

For each parity variant: ``artifacts/train/V.json`` (train stage), ``artifacts/metrics/V.json``
and ``artifacts/plots/V.csv`` (evaluate stage) and, for gradient-trained ones, the training
history ``artifacts/train/V.csv``. For each XOR shape: ``artifacts/metrics/V.json`` and the
per-seed table ``artifacts/train/V.csv``. A missing or unreadable file is a UserError that
names it and the stage that writes it. Also: the small naming helpers the tables, text and
plots share (variant groups, settings that differ from the defaults, bucket labels).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stages.core import paths
from stages.core.errors import UserError
from stages.core.params import Params, ParityVariant, SearchVariant, Training, XorVariant, resolved_training

HISTORY_COLUMNS = ("step", "sequences", "val_accuracy")
BY_LENGTH_COLUMNS = ("length", "accuracy", "count")
SEED_COLUMNS = ("seed", "epochs_to_100")
# Group names, in the order the report shows them.
DEFAULTS, NOTEBOOK, OTHER = "default training settings", "the notebook's hyperparameters", "other data or settings"


@dataclass
class ParityRun:
    name: str
    config: ParityVariant | SearchVariant
    train: dict[str, Any]  # artifacts/train/V.json
    metrics: dict[str, Any]  # artifacts/metrics/V.json and detail/V.json: accuracy/loss/n/ci95_low/ci95_high by bucket
    by_length: pd.DataFrame  # length, accuracy, count
    history: pd.DataFrame | None  # step, sequences, ..., val_accuracy, probe_accuracy; None for search
    certificate: dict[str, Any] = field(default_factory=dict)  # artifacts/certify/V.json
    group: str = ""
    settings: str = ""

    @property
    def certified(self) -> bool:
        return bool(self.certificate.get("certified"))


@dataclass
class XorRun:
    name: str
    config: XorVariant
    metrics: dict[str, Any]  # artifacts/metrics/V.json
    seeds: pd.DataFrame  # seed, epochs_to_100 (NaN = never), ...


@dataclass
class Inputs:
    params: Params
    parity: dict[str, ParityRun] = field(default_factory=dict)
    xor: dict[str, XorRun] = field(default_factory=dict)
    buckets: list[str] = field(default_factory=list)  # evaluated buckets, shortest lengths first
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> metrics/seeds_V.json

    def random(self, buckets: list[str] | None = None) -> list[str]:
        """The buckets of random bits (kind uniform) among ``buckets`` (default: all evaluated)."""
        return [b for b in (self.buckets if buckets is None else buckets) if self.kind(b) == "uniform"]

    def structured(self, buckets: list[str] | None = None) -> list[str]:
        """The structured buckets (needles, runs, exhaustive, ...) among ``buckets``."""
        return [b for b in (self.buckets if buckets is None else buckets) if self.kind(b) != "uniform"]

    def kind(self, bucket: str) -> str:
        spec = self.params.data.buckets.get(bucket)
        return spec.kind if spec is not None else "uniform"


def _under(artifacts: Path, path: Path) -> Path:
    """``path`` (under paths.ARTIFACTS) moved under ``artifacts`` (a test's folder, say)."""
    return artifacts / path.relative_to(paths.ARTIFACTS)


def _find(path: Path, writer: str) -> Path:
    """``path`` if it is a file; else a UserError naming it and the stage that writes it."""
    if path.is_file():
        return path
    raise UserError(f"{path}: missing; {writer}")


def _json(path: Path, writer: str) -> dict[str, Any]:
    try:
        obj = json.loads(_find(path, writer).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (file damaged?); {writer}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg}); {writer}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object; {writer}")
    return obj


def _csv(path: Path, columns: tuple[str, ...], writer: str) -> pd.DataFrame:
    _find(path, writer)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # e.g. a history when training stopped before its first evaluation
        return pd.DataFrame(columns=list(columns))
    except pd.errors.ParserError as e:
        raise UserError(f"{path}: unreadable CSV ({str(e).splitlines()[0]}); {writer}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (file damaged?); {writer}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: lacks column(s) {', '.join(missing)}; {writer}")
    return frame


def load_inputs(params: Params, artifacts: Path) -> Inputs:
    """Read every input of the report (all checked before anything is drawn)."""
    out = Inputs(params)
    for name, v in params.variants.items():
        train_by = f"the train stage writes it (run `dvc repro train-{name}`)"
        eval_by = f"the evaluate stage writes it (run `dvc repro evaluate-{name}`)"
        metrics = _json(_under(artifacts, paths.eval_metrics(name)), eval_by)
        if isinstance(v, XorVariant):
            seeds = _csv(_under(artifacts, paths.train_curve(name)), SEED_COLUMNS, train_by)
            out.xor[name] = XorRun(name, v, metrics, seeds)
            continue
        history = None
        if isinstance(v, ParityVariant):
            history = _csv(_under(artifacts, paths.train_curve(name)), HISTORY_COLUMNS, train_by)
        by_length = _csv(_under(artifacts, paths.eval_plot(name)), BY_LENGTH_COLUMNS, eval_by)
        metrics = metrics | _json(_under(artifacts, paths.eval_detail(name)), eval_by)  # n, interval, confusion
        certificate = _json(_under(artifacts, paths.certificate(name)),
                            "the certify stage writes it (run `dvc repro certify`)")
        run = ParityRun(name, v, _json(_under(artifacts, paths.train_metrics(name)), train_by),
                        metrics, by_length, history, certificate)
        run.group, run.settings = group_of(params, name), settings_diff(params, name)
        out.parity[name] = run
    for name in params.seeds.variants:
        out.seeds[name] = _json(_under(artifacts, paths.seeds_metrics(name)),
                                f"the seeds stage writes it (run `dvc repro seeds-{name}`)")
    evaluated = {b for run in out.parity.values() for b in run.metrics.get("accuracy", {})}
    spec = params.data.buckets
    out.buckets = sorted(evaluated, key=lambda b: (spec[b].min_len, spec[b].max_len, b) if b in spec else (0, 0, b))
    return out


def settings_diff(params: Params, name: str) -> str:
    """Settings of a parity variant that differ from the schema's defaults, e.g.
    "preset=notebook, batch_size=10, clip_grad_norm=None"; "" when there are none."""
    v = params.variants[name]
    base = type(v).model_fields
    parts = [f"{k}={getattr(v, k)}" for k in base
             if k not in ("family", "training", "eval_buckets", "eval_max_bits") and getattr(v, k) != base[k].default]
    if isinstance(v, ParityVariant):
        defaults = Training().model_dump()
        parts += [f"{k}={val}" for k, val in resolved_training(params, name).items() if val != defaults[k]]
    return ", ".join(parts)


def group_of(params: Params, name: str) -> str:
    """DEFAULTS when a gradient-trained variant trains with params.yaml's ``training`` block as it
    is (any model size), NOTEBOOK for the notebook preset, OTHER for the rest (other data, search)."""
    v = params.variants[name]
    if isinstance(v, ParityVariant) and v.preset == "notebook":
        return NOTEBOOK
    if isinstance(v, ParityVariant) and resolved_training(params, name) == params.training.model_dump():
        return DEFAULTS
    return OTHER


def bucket_label(params: Params, bucket: str) -> str:
    """'lengths 50–100' or 'length 1,000,000' (the bucket name when it is not in params)."""
    b = params.data.buckets.get(bucket)
    if b is None:
        return bucket
    if b.min_len == b.max_len:
        return f"length {b.min_len:,}"
    return f"lengths {b.min_len:,}–{b.max_len:,}"


def xor_label(v: XorVariant) -> str:
    """'32x32 relu', '128 linear', '16 relu, lr 0.1' (lr shown when not the default)."""
    label = f"{'x'.join(map(str, v.hidden_layers))} {v.activation}"
    default_lr = XorVariant.model_fields["lr"].default
    return label + (f", lr {v.lr:g}" if v.lr != default_lr else "")


def seed_epochs(run: XorRun) -> list[float]:
    """Per-seed epochs to 100%, +inf for seeds that never got there (an empty CSV cell)."""
    return [math.inf if v != v else float(v) for v in run.seeds["epochs_to_100"].tolist()]


def fmt_int(v: Any) -> str:
    """1234 -> '1,234'; None/NaN -> '—'."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{int(v):,}"


def fmt_num(v: Any) -> str:
    """An epoch count or a quantile of them: '1,234' when whole, '968.5' otherwise; None -> '—'."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{int(v):,}" if float(v).is_integer() else f"{float(v):,.1f}"


def fmt_float(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{float(v):.{digits}f}"
