"""The regression gate: ``python -m stages check [--baseline REV]``.

Compares every metric in the working tree's ``artifacts/metrics/*.json`` with the same
files committed at git revision REV (like ``dvc metrics diff REV``), under the
tolerances of ``check.tolerances`` in params.yaml. Only the variants in params.yaml are
compared (a removed variant's committed files are left out and counted). Prints the
regressed and improved metrics (``--all``: every metric) and a one-line summary. A metric
that is not a finite number now (NaN, infinity, a string, true/false) is a regression.

Exit status: 0 nothing regressed; 1 some metric regressed; 2 bad input (UserError):
a baseline metric missing now, an unreadable metrics file, a tolerance key that
matches no metric, an unknown revision.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.errors import UserError
from stages.core.params import Tolerance, load_params
from stages.tracking import flatten

MISSING = object()  # a metric absent on one side (distinct from a null value)
EPS = 1e-12  # relative slack so float rounding alone never counts as a change


@dataclass(frozen=True)
class Row:
    variant: str
    metric: str  # dotted path inside the metrics file, e.g. accuracy.len_10000
    baseline: Any  # a number, None (null in the file) or MISSING
    current: Any
    verdict: str  # ok | improved | REGRESSED | new | info


def main(params_path: str = "params.yaml", baseline: str = "HEAD", artifacts: str = "artifacts",
         show_all: bool = False, markdown: bool = False) -> None:
    params = load_params(params_path)
    ours = (set(params.variants) | {f"seeds_{v}" for v in params.seeds.variants}  # metrics file stems
            | {f"certify_{v}" for v, spec in params.variants.items() if spec.family != "xor_mlp"})
    metrics_dir = Path(artifacts) / "metrics"
    current = read_current(metrics_dir)
    root, rel_dir = _repo_paths(metrics_dir)
    commit = _resolve(root, baseline)
    base = read_baseline(root, commit, rel_dir)
    dropped = sorted((set(base) | set(current)) - ours)
    names = {m for metrics in (*base.values(), *current.values()) for m in metrics}  # for the tolerance check
    base = {v: m for v, m in base.items() if v in ours}
    current = {v: m for v, m in current.items() if v in ours}
    rows = compare(base, current, params.check.tolerances, names)
    shown = rows if show_all else [r for r in rows if r.verdict in ("REGRESSED", "improved")]
    if markdown:  # for a pull request or a CI job summary, like `dvc metrics diff --md`
        print(format_markdown(shown, summary_line(rows, baseline, commit, dropped)))
    else:
        if shown:
            print(format_table(shown))
        print(summary_line(rows, baseline, commit, dropped))
    regressed = [r for r in rows if r.verdict == "REGRESSED"]
    if regressed:
        sys.exit(1)


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}; file damaged?); "
                        "rerun its evaluate stage") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}); rerun its evaluate stage") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object of metrics, got {type(obj).__name__}")
    return flatten(obj)


def read_current(metrics_dir: Path) -> dict[str, dict[str, Any]]:
    """variant -> flattened metrics, from the working tree's metrics files."""
    files = sorted(metrics_dir.glob("*.json"))
    if not files:
        raise UserError(f"{metrics_dir}: no metrics files (*.json); run `dvc repro` to produce them")
    return {f.stem: _parse(f.read_bytes(), str(f)) for f in files}


def _git(root: Path | None, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=text, check=False)


def _repo_paths(metrics_dir: Path) -> tuple[Path, str]:
    """(repository root, the metrics folder relative to it as git spells paths)."""
    top = _git(metrics_dir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UserError(f"{metrics_dir}: not inside a git repository ({top.stderr.strip()})")
    root = Path(top.stdout.strip()).resolve()
    try:
        rel = metrics_dir.resolve().relative_to(root)
    except ValueError:
        raise UserError(f"{metrics_dir}: outside the git repository at {root}") from None
    return root, rel.as_posix()


def _resolve(root: Path, rev: str) -> str:
    out = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if out.returncode != 0 or not out.stdout.strip():
        raise UserError(f"baseline revision {rev!r} is unknown to git (try HEAD, HEAD~1, a branch or a commit)")
    return out.stdout.strip()


def read_baseline(root: Path, commit: str, rel_dir: str) -> dict[str, dict[str, Any]]:
    """variant -> flattened metrics, from the metrics files committed at ``commit``."""
    listing = _git(root, "ls-tree", "--name-only", "--full-name", commit, "--", f"{rel_dir}/")
    if listing.returncode != 0:
        raise UserError(f"git ls-tree {commit[:7]} {rel_dir}: {listing.stderr.strip()}")
    out = {}
    for path in sorted(p for p in listing.stdout.splitlines() if p.endswith(".json")):
        shown = _git(root, "show", f"{commit}:{path}", text=False)  # bytes: the file may not be UTF-8
        if shown.returncode != 0:
            raise UserError(f"git show {commit[:7]}:{path}: {shown.stderr.decode(errors='replace').strip()}")
        out[Path(path).stem] = _parse(shown.stdout, f"{path} at {commit[:7]}")
    return out


def tolerance_for(metric: str, tolerances: dict[str, Tolerance]) -> Tolerance | None:
    """The most specific key covering ``metric``: "accuracy" covers "accuracy.len_200"."""
    keys = [k for k in tolerances if metric == k or metric.startswith(k + ".")]
    return tolerances[max(keys, key=len)] if keys else None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def verdict(base: Any, cur: Any, tol: Tolerance | None) -> str:
    """ok / improved / REGRESSED / new / info for one metric.

    A null counts as the worst value in the metric's direction (epochs to 100% are null
    when seeds never solve), so number -> null is a regression and null -> number a gain.
    A change counts only beyond max(abs, rel * |baseline|), in either direction.
    """
    if cur is not None and not (_number(cur) and math.isfinite(cur)):
        return "REGRESSED"  # NaN, infinity, a string, true/false: no metric can be that
    if base is MISSING:
        return "new"
    if tol is None or not all(v is None or _number(v) for v in (base, cur)):
        return "info"
    if base is None and cur is None:
        return "ok"
    worst = -math.inf if tol.direction == "higher" else math.inf
    b = worst if base is None else float(base)
    c = worst if cur is None else float(cur)
    gain = c - b if tol.direction == "higher" else b - c  # > 0: better
    allowed = max(tol.abs, tol.rel * abs(b) if math.isfinite(b) else 0.0)
    allowed += EPS * max(1.0, abs(b) if math.isfinite(b) else 1.0)
    if gain < -allowed:
        return "REGRESSED"
    return "improved" if gain > allowed else "ok"


def compare(base: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]],
            tolerances: dict[str, Tolerance], names: set[str] | None = None) -> list[Row]:
    """One row per metric of the baseline and the current run; UserError on missing metrics.

    names: every metric name a tolerance may cover (default: those of base and current).
    """
    gone = [f"{v}.{m}" for v in sorted(base) for m in base[v] if m not in current.get(v, {})]
    if gone:
        shown = ", ".join(gone[:5]) + (f", ... ({len(gone)} in all)" if len(gone) > 5 else "")
        missing_files = sorted(set(base) - set(current))
        hint = (f"; variants without a metrics file now: {', '.join(missing_files)} "
                "(run `dvc repro`, or pick a baseline without them: --baseline REV)") if missing_files else ""
        raise UserError(f"metrics in the baseline missing from the current run: {shown}{hint}")
    if names is None:
        names = {m for metrics in (*base.values(), *current.values()) for m in metrics}
    unknown = [k for k in tolerances if not any(m == k or m.startswith(k + ".") for m in names)]
    if unknown:
        roots = ", ".join(sorted({m.split(".")[0] for m in names}))
        raise UserError(f"unknown metric in the tolerances: {', '.join(unknown)} (metrics here: {roots})")
    rows = []
    for variant in sorted(current):
        for metric, cur in current[variant].items():
            b = base.get(variant, {}).get(metric, MISSING)
            rows.append(Row(variant, metric, b, cur, verdict(b, cur, tolerance_for(metric, tolerances))))
    return rows


def _fmt(v: Any) -> str:
    if v is MISSING:
        return "-"
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _delta(row: Row) -> str:
    if _number(row.baseline) and _number(row.current):
        return f"{row.current - row.baseline:+.6g}"
    return ""


def format_table(rows: list[Row]) -> str:
    """Aligned plain-text table: variant, metric, baseline, current, delta, verdict."""
    table = [("variant", "metric", "baseline", "current", "delta", "verdict")]
    table += [(r.variant, r.metric, _fmt(r.baseline), _fmt(r.current), _delta(r), r.verdict) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(6)]
    right = (False, False, True, True, True, False)  # numbers right-aligned
    lines = ["  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right, strict=True)).rstrip()
             for line in table]
    return "\n".join(lines)


def format_markdown(rows: list[Row], summary: str) -> str:
    """The gate as markdown: a verdict line, then metric | committed | new | change | verdict."""
    regressed = sum(r.verdict == "REGRESSED" for r in rows)
    head = "**Regression gate: " + (f"{regressed} metric(s) REGRESSED**" if regressed else "passed**")
    lines = [head, "", summary.replace("\n", "  \n"), ""]
    if rows:
        lines += ["| variant | metric | committed | new | change | verdict |", "|---|---|---:|---:|---:|---|"]
        lines += [f"| {r.variant} | {r.metric} | {_fmt(r.baseline)} | {_fmt(r.current)} | {_delta(r)} | {r.verdict} |"
                  for r in rows]
    return "\n".join(lines)


def summary_line(rows: list[Row], rev: str, commit: str, dropped: list[str] = ()) -> str:
    counts = {v: sum(r.verdict == v for r in rows) for v in ("ok", "improved", "REGRESSED", "new", "info")}
    variants = len({r.variant for r in rows})
    parts = ", ".join(f"{n} {v}" for v, n in counts.items())
    line = f"check against {rev} ({commit[:7]}): {len(rows)} metrics of {variants} variants: {parts}"
    if dropped:
        line += f"; left out (not in params.yaml): {', '.join(dropped)}"
    bad = [f"{r.variant} {r.metric} ({_fmt(r.baseline)} -> {_fmt(r.current)})" for r in rows if r.verdict == "REGRESSED"]
    if bad:
        line += "\nREGRESSED: " + "; ".join(bad)
    return line
