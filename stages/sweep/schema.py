"""The schema of a sweep file (``sweeps/*.yaml``), validated like params.yaml.

A sweep names groups of variants from params.yaml and, per group, a search space over
params keys. Keys are dotted paths into params.yaml (``seed``, ``training.lr``,
``evaluate.buckets``); ``variant.X`` means ``variants.<the trial's variant>.X``. A space
entry is a list (grid values: every value is tried) or one of ``{choice: [...]}``,
``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}`` (drawn ``num_samples`` times, as in
Ray Tune, where the grid is crossed with the samples). Unknown keys are errors;
``load_sweep`` raises ``SweepError`` with one line naming the key path, value and what is allowed.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stages.core.errors import UserError

NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
PosInt = Annotated[int, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]


class SweepError(UserError):
    """A sweep file that cannot be used; the message is one line for the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(Strict):
    """One searched key: exactly one of the four forms. A bare list is read as ``grid``."""

    grid: list[Any] | None = None  # every value, crossed with the other grid keys
    choice: list[Any] | None = None  # one value drawn uniformly per sample
    uniform: tuple[float, float] | None = None  # a float drawn uniformly in [lo, hi]
    loguniform: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_is_grid(cls, value: Any) -> Any:
        return {"grid": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_form(self) -> Dimension:
        forms = [f for f in type(self).model_fields if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError(
                "give a list of values (grid) or exactly one of {choice: [...]}, "
                "{uniform: [lo, hi]}, {loguniform: [lo, hi]}"
            )
        values = self.grid if self.grid is not None else self.choice
        if values is not None and not values:
            raise ValueError(f"{forms[0]}: needs at least one value")
        bounds = self.uniform or self.loguniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{forms[0]}: [lo, hi] needs lo < hi, got {list(bounds)}")
        return self

    @property
    def is_grid(self) -> bool:
        return self.grid is not None


class Group(Strict):
    """Variants of params.yaml searched over one space (the study is a union of groups)."""

    variants: Annotated[list[str], Field(min_length=1)]  # names under `variants:` in params.yaml
    overrides: dict[str, Any] = {}  # dotted key -> value for this group's trials (after the sweep's)
    space: dict[str, Dimension] = {}  # dotted key -> grid or distribution
    # Parts of the fixed-length study (params.yaml fixed_length, stages fixedlen-PART) each trial
    # runs for its variant, instead of train and evaluate; [] = train and evaluate.
    study: list[Literal["cells", "signal", "mixing"]] = []


class Resources(Strict):
    """What Ray reserves for one trial; a trial runs when its reservation fits."""

    cpu: Annotated[float, Field(gt=0)] = 1.0  # the models are tiny: one core each is fastest
    gpu: NonNeg = 0.0  # 1 = one trial per GPU (set `device: cuda` in overrides too)


class LocalRay(Strict):
    """The Ray instance started when no cluster address is given."""

    cpus: PosInt | None = None  # CPUs it may use; null = every core of this machine
    gpus: Annotated[int, Field(ge=0)] | None = None  # null = every visible GPU
    dashboard: bool = False  # serve Ray's dashboard on 127.0.0.1:8265 during the sweep


class Plot(Strict):
    """One line per value of ``group``: an aggregate of metric ``y`` against key ``x``."""

    x: str  # a searched key (e.g. variant.hidden_size), "seed", or a metric
    y: str  # a metric column of the results table (e.g. eval.accuracy.len_10000)
    group: str = "variant"  # one line per value of this column
    # y becomes the fraction of trials with y >= success_at (e.g. 1.0: "solved"), else agg(y)
    success_at: float | None = None
    agg: Literal["mean", "median", "min", "max"] = "mean"
    logx: bool = False  # log-scaled x axis (learning rates)


class Report(Strict):
    # Metric columns shown in results.md beside each trial's keys (results.csv has them all).
    metrics: list[str] = []
    plots: dict[str, Plot] = {}  # name -> plot, drawn to plots/<name>.png


class Sweep(Strict):
    name: Annotated[str, Field(pattern=NAME.pattern)]  # the parent MLflow run is "sweep-<name>"
    output: str | None = None  # results folder; default artifacts/sweeps/<name>
    overrides: dict[str, Any] = {}  # dotted key -> value for every trial (shrink the base params here)
    groups: Annotated[dict[str, Group], Field(min_length=1)]
    num_samples: PosInt = 1  # draws per group of the random keys (the grid is crossed with them)
    random_seed: Annotated[int, Field(ge=0)] = 0  # seeds the draws, so a rerun finds the same trials
    resources: Resources = Resources()
    max_concurrent: Annotated[int, Field(ge=0)] = 0  # trials at once at most; 0 = as resources allow
    trial_timeout_s: Annotated[float, Field(gt=0)] | None = None  # a trial running longer fails
    local_ray: LocalRay = LocalRay()
    report: Report = Report()

    @model_validator(mode="after")
    def _check(self) -> Sweep:
        for name in self.report.plots:
            if not NAME.match(name):
                raise ValueError(f"report.plots.{name}: name must match [a-z][a-z0-9_-]* (it names a file)")
        for gname, g in self.groups.items():
            if not NAME.match(gname):
                raise ValueError(f"groups.{gname}: name must match [a-z][a-z0-9_-]*")
            for where, keys in (("overrides", g.overrides), ("space", g.space)):
                for key in keys:
                    _check_key(f"groups.{gname}.{where}.{key}", key)
            if self.num_samples > 1 and all(d.is_grid for d in g.space.values()):
                raise ValueError(
                    f"num_samples={self.num_samples} repeats groups.{gname}'s trials unchanged; "
                    "give it a choice/uniform/loguniform key or set num_samples: 1"
                )
        for key in self.overrides:
            _check_key(f"overrides.{key}", key)
        return self

    @property
    def output_dir(self) -> Path:
        return Path(self.output or f"artifacts/sweeps/{self.name}")


def _check_key(path: str, key: str) -> None:
    if not KEY.match(key):
        raise ValueError(f"{path}: not a dotted params key (e.g. training.lr, variant.hidden_size)")
    if key == "data" or key.startswith("data."):
        raise ValueError(f"{path}: data.* cannot be swept (every trial reads the repository's data/)")
    if key in ("variant", "variants"):
        raise ValueError(f"{path}: list variants under groups.<name>.variants")


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    """The schema model a key path points into (for listing allowed keys)."""
    model: type[BaseModel] | None = Sweep
    keys = iter(loc)
    for key in keys:
        field = model.model_fields.get(key) if model else None
        if field is None:
            return None
        ann = field.annotation
        if typing.get_origin(ann) is dict:  # groups, space: the next key is a name, not a field
            ann = typing.get_args(ann)[1]
            if next(keys, None) is None:
                return None
        model = next((a for a in _leaves(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _leaves(ann: Any) -> list[Any]:
    args = typing.get_args(ann)
    return [ann] if not args else [x for a in args for x in _leaves(a)]


def format_error(err: dict[str, Any]) -> str:
    """One line for a pydantic error: key path, value, what is allowed."""
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see sweeps/smoke.yaml"
        return f"{path}: unknown key (allowed: {allowed})"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":
        return f"{path}: {msg}" if loc else msg
    if err["type"] == "missing":
        return f"{path}: missing (required)"
    return f"{path}: {err.get('input')!r} is invalid: {msg}"


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; raise SweepError with a one-line message."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise SweepError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                         "save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SweepError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    try:
        return Sweep.model_validate(raw)
    except ValidationError as e:
        raise SweepError(f"{path}: {format_error(e.errors(include_url=False)[0])}") from None
