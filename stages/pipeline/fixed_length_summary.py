"""The fixed-length study's metrics from its per-run rows (stages/pipeline/fixed_length.py).

Pure functions of the rows (no torch), so the report and the tests can use them too. A run
has "learned" when its validation accuracy reached 1.0 within the study's step budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.core.fixed_length import FixedLength


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _group(rows: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def summarise_cells(rows: list[dict[str, Any]], study: FixedLength) -> dict[str, Any]:
    """Per length: seeds run and learned, median steps to 100% (of those that learned), mean
    accuracy on held-out length-L strings and on lengths long_min-long_max; the longest length
    every seed learned, and the shortest none did."""
    by_length = {}
    for length, runs in _group(rows, "length").items():
        by_length[f"L{length}"] = {
            "length": length, "seeds": len(runs), "learned": sum(r["learned"] for r in runs),
            "median_steps_to_val_100": _median([r["steps_to_val_100"] for r in runs]),
            "accuracy_len": float(np.mean([r["accuracy_len"] for r in runs])),
            "accuracy_long": float(np.mean([r["accuracy_long"] for r in runs])),
        }
    cells = sorted(by_length.values(), key=lambda c: c["length"])
    return {
        "budget_steps": study.max_steps,
        "runs": len(rows), "learned": sum(r["learned"] for r in rows),
        "cells": by_length,
        "longest_all_learned": max((c["length"] for c in cells if c["learned"] == c["seeds"]), default=None),
        "shortest_none_learned": min((c["length"] for c in cells if c["learned"] == 0), default=None),
    }


def fit_rate(lengths: list[float], snrs: list[float]) -> dict[str, Any] | None:
    """Least squares of log2(snr) on length -> the factor the ratio falls by per added bit; None
    with fewer than two distinct lengths."""
    if len(set(lengths)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(lengths, float), np.log2(np.asarray(snrs, float)), 1)
    return {"factor_per_bit": float(2.0 ** -slope), "log2_slope": float(slope), "log2_intercept": float(intercept),
            "lengths": sorted({int(v) for v in lengths}), "points": len(lengths)}


def summarise_signal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per length: median signal-to-noise ratio over seeds, the median floor under which no
    signal is measured, and how many seeds measured one; the exponential fit over the lengths
    where most seeds measured it (each measured (length, seed) a point)."""
    by_length, fit_l, fit_s = {}, [], []
    for length, runs in _group(rows, "length").items():
        measured = [r for r in runs if r["measured"]]
        by_length[f"L{length}"] = {"length": length, "seeds": len(runs), "measured": len(measured),
                                   "snr": _median([r["snr"] for r in runs]),
                                   "snr_floor": _median([r["snr_floor"] for r in runs])}
        if 2 * len(measured) > len(runs):
            fit_l += [length] * len(measured)
            fit_s += [r["snr"] for r in measured]
    return {"lengths": by_length, "fit": fit_rate(fit_l, fit_s)}


def summarise_mixing(rows: list[dict[str, Any]], study: FixedLength) -> dict[str, Any]:
    """Per fraction: seeds learned and mean accuracies; the smallest fraction at which every seed
    learned, and at which any did."""
    by_fraction = {}
    for fraction, runs in _group(rows, "fraction").items():
        cell = {"fraction": fraction, "seeds": len(runs), "learned": sum(r["learned"] for r in runs),
                "median_steps_to_val_100": _median([r["steps_to_val_100"] for r in runs])}
        cell |= {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k.startswith("accuracy_")}
        by_fraction[f"f{fraction:g}"] = cell
    cells = sorted(by_fraction.values(), key=lambda c: c["fraction"])
    return {
        "budget_steps": study.max_steps, "mix_length": study.mix_length, "short_max": study.mix_short_max,
        "runs": len(rows), "learned": sum(r["learned"] for r in rows),
        "fractions": by_fraction,
        "smallest_all_learned": min((c["fraction"] for c in cells if c["learned"] == c["seeds"]), default=None),
        "smallest_any_learned": min((c["fraction"] for c in cells if c["learned"]), default=None),
    }
