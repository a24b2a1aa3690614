"""A sweep's results: one table row per trial (pandas -> CSV and Markdown), a summary and a plot.

Outputs in the sweep folder: ``results.csv`` (every trial: its keys, status, every numeric
metric), ``results.md`` (the same rows, the columns of ``report.metrics``), ``summary.json``
(trial counts) and ``plots/<name>.png`` (``report.plots``). All are deterministic: wall-clock times
stay in each trial's ``logs/timing.json`` and in MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core import files as sio
from stages.sweep.plan import Trial
from stages.sweep.schema import Plot, Sweep
from stages.tracking import flatten

if TYPE_CHECKING:
    import pandas

SKIP = ("eval.confusion.",)  # per-bucket counts: in the metrics files, too wide for the table
DEFAULT_COLUMNS = ("eval.accuracy.", "eval.epochs_to_100.median", "eval.never_solved", "eval.margin.min")


def numbers(d: Mapping[str, Any]) -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b.c`` -> float (bools as 0/1; None, text and SKIP dropped)."""
    return {k: float(v) for k, v in flatten(d).items() if isinstance(v, int | float) and not k.startswith(SKIP)}


def _cell(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value)


def row(trial: Trial, outcome: Mapping[str, Any] | None) -> dict[str, Any]:
    """The table row of one trial; outcome None means it has not run (an interrupted sweep)."""
    out: dict[str, Any] = {"trial": trial.name, "group": trial.group, "variant": trial.variant}
    out |= {key: _cell(value) for key, value in trial.values.items()}
    outcome = outcome or {"status": "not_run"}
    out |= {"status": outcome["status"], "failed_stage": "", "error": ""}
    if outcome["status"] == "failed":
        lines = [ln.strip() for ln in str(outcome.get("error", "")).splitlines() if ln.strip()]
        out |= {"failed_stage": outcome.get("stage", ""), "error": " | ".join(lines[-3:])[-500:]}
    elif outcome["status"] == "ok":
        out |= numbers(outcome["metrics"])
    return out


def table(trials: list[Trial], outcomes: Mapping[str, Mapping[str, Any] | None]) -> pandas.DataFrame:
    import pandas as pd

    return pd.DataFrame([row(t, outcomes.get(t.name)) for t in trials])


def markdown_columns(df: pandas.DataFrame, sweep: Sweep) -> list[str]:
    """Trial, status, the searched keys, then report.metrics (or the headline metrics found)."""
    keys = list(dict.fromkeys(k for g in sweep.groups.values() for k in g.space))
    wanted = sweep.report.metrics or [c for c in df.columns if c.startswith(DEFAULT_COLUMNS)]
    cols = ["trial", "status", *keys, *wanted]
    if (df["status"] == "failed").any():
        cols += ["failed_stage", "error"]
    return [c for c in dict.fromkeys(cols) if c in df.columns]


def summary(df: pandas.DataFrame) -> dict[str, int]:
    counts = df["status"].value_counts()
    return {"trials": len(df), **{s: int(counts.get(s, 0)) for s in ("ok", "failed", "not_run")}}


def plot(df: pandas.DataFrame, spec: Plot, title: str, path: Path) -> str | None:
    """Draw one of report.plots into path; return why not (a missing column, ...) or None."""
    missing = [c for c in (spec.x, spec.y, spec.group) if c not in df.columns]
    if missing:
        return f"no column {', '.join(missing)} in results.csv"
    # Trials of other groups (e.g. XOR rows in a parity plot) lack x or y: left out.
    ok = df[(df["status"] == "ok") & df[spec.x].notna() & df[spec.y].notna()]
    if ok.empty:
        return "no finished trial has both columns"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        y = ok[spec.y].astype(float)
    except (TypeError, ValueError):
        return f"column {spec.y} is not numeric"
    if spec.success_at is not None:
        y = (y >= spec.success_at).astype(float)
        ylabel = f"fraction of trials with {spec.y} >= {spec.success_at:g}"
    else:
        ylabel = f"{spec.agg} of {spec.y}"
    points = y.groupby([ok[spec.group], ok[spec.x]]).agg("mean" if spec.success_at is not None else spec.agg)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, series in points.groupby(level=0):
        ax.plot(series.index.get_level_values(1), series.to_numpy(), marker="o", label=str(name))
    if spec.logx:
        ax.set_xscale("log")
    ax.set(xlabel=spec.x, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(title=spec.group, fontsize="small")
    fig.tight_layout()
    with sio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
    plt.close(fig)
    return None


def write(out_dir: Path, sweep: Sweep, df: pandas.DataFrame) -> dict[str, Path]:
    """Write results.csv, results.md, summary.json and plots/*.png; return their paths."""
    paths = {"csv": out_dir / "results.csv", "md": out_dir / "results.md", "summary": out_dir / "summary.json"}
    sio.write_text(paths["csv"], df.to_csv(index=False, lineterminator="\n"))
    counts = summary(df)
    head = (f"# Sweep {sweep.name}\n\n{counts['trials']} trials: {counts['ok']} ok, {counts['failed']} failed, "
            f"{counts['not_run']} not run. Every metric of every trial: results.csv.\n\n")
    shown = df[markdown_columns(df, sweep)].astype(object)
    body = shown.where(shown.notna(), None).to_markdown(index=False, floatfmt=".4g", missingval="")
    sio.write_text(paths["md"], head + body + "\n")
    sio.write_json(paths["summary"], counts)
    for name, spec in sweep.report.plots.items():
        path = out_dir / "plots" / f"{name}.png"
        why = plot(df, spec, f"sweep {sweep.name}: {name}", path)
        if why:
            print(f"sweep {sweep.name}: plot {name} skipped: {why}")
        else:
            paths[f"plot {name}"] = path
    return paths
