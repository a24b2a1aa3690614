"""The report's figures, drawn with matplotlib's object API (Agg canvas, no pyplot state).

PNG bytes depend only on the data: the "Software" stamp (matplotlib's version) is left out
and nothing random or time-dependent is drawn, so equal inputs give equal files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter

from stages.core.params import resolved_training
from stages.report.inputs import Inputs, bucket_label, seed_epochs, xor_label
from stages.report.text import GROUP_ORDER

COLORS = [f"C{i}" for i in range(10)]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
DPI = 110
BINS_PER_DECADE = 10


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version stamp: stable bytes


def _train_range(inputs: Inputs, names: list[str]) -> tuple[int, int]:
    """Shortest and longest training length over these variants' training buckets."""
    buckets = inputs.params.data.buckets
    spans = []
    for name in names:
        train = resolved_training(inputs.params, name)["train_bucket"]
        if train in buckets:
            spans.append((buckets[train].min_len, buckets[train].max_len))
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (1, 1)


def binned(by_length: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Count-weighted accuracy in log-spaced length bins -> (mean length, accuracy), both (bins,).

    Lengths 50-100 hold ~200 sequences each; pooled, their sampling noise no longer hides the line.
    """
    df = by_length[by_length["count"] > 0]
    key = np.floor(np.log10(df["length"].to_numpy(np.float64)) * BINS_PER_DECADE + 1e-9).astype(np.int64)
    sums = pd.DataFrame({"bin": key, "wl": df["length"] * df["count"], "wa": df["accuracy"] * df["count"],
                         "n": df["count"]}).groupby("bin", sort=True)[["wl", "wa", "n"]].sum()
    return (sums["wl"] / sums["n"]).to_numpy(), (sums["wa"] / sums["n"]).to_numpy()


def accuracy_vs_length(inputs: Inputs, path: Path) -> None:
    """Accuracy against sequence length (log x), one panel per variant group, a line per variant."""
    groups = [g for g in GROUP_ORDER if any(r.group == g for r in inputs.parity.values())]
    fig = Figure(figsize=(10, 2.7 * len(groups) + 0.7), layout="constrained")
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    longest = max((int(r.by_length["length"].max()) for r in inputs.parity.values() if len(r.by_length)), default=10)
    for ax, group in zip(axes, groups, strict=True):
        runs = [r for r in inputs.parity.values() if r.group == group]
        lo, hi = _train_range(inputs, [r.name for r in runs])
        ax.axvspan(lo, hi, color="0.9", label=f"training lengths ({lo:,}–{hi:,})")
        ax.axhline(0.5, ls="--", lw=1, color="0.45", label="chance (0.5)")
        for i, run in enumerate(runs):
            x, y = binned(run.by_length)
            # Hollow markers shrinking line by line: variants on the same points stay visible as rings.
            size = 3.5 + 7.0 * (len(runs) - 1 - i) / max(len(runs) - 1, 1)
            ax.plot(x, y, color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)], ms=size,
                    mfc="none", mew=1.2, lw=1.2, label=run.name)
        ax.set_xscale("log")
        ax.set_xlim(0.8, longest * 1.6)
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_title(group.capitalize(), fontsize=10, loc="left")
        ax.grid(True, which="major", color="0.85", lw=0.6)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel(f"sequence length (log scale; lengths pooled in {BINS_PER_DECADE} bins per decade)")
    fig.suptitle("Parity: accuracy on held-out sequence lengths, by length")
    save(fig, path)


def training_curves(inputs: Inputs, path: Path) -> None:
    """Small multiples: validation and probe accuracy against optimizer step, per trained variant."""
    runs = [r for r in inputs.parity.values() if r.history is not None and len(r.history)]
    if not runs:
        return _placeholder(path, "No gradient-trained parity variants")
    ncols = min(4, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig = Figure(figsize=(3.0 * ncols + 0.5, 2.2 * nrows + 1.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    probe = inputs.params.training.probe_bucket
    probe_label = f"held-out probe ({bucket_label(inputs.params, probe)})" if probe else "held-out probe"
    for ax, run in zip(axes, runs, strict=False):
        h = run.history
        ax.axhline(0.5, ls=":", lw=0.8, color="0.5")
        ax.plot(h["step"], h["val_accuracy"], color="C0", lw=1.3, label="validation (lengths it trains on)")
        if "probe_accuracy" in h and h["probe_accuracy"].notna().any():
            ax.plot(h["step"], h["probe_accuracy"], color="C1", lw=1.3, ls="--", label=probe_label)
        ax.set_title(run.name, fontsize=9)
        ax.set_ylim(0.35, 1.04)
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        ax.tick_params(labelsize=7.5)
        ax.grid(True, color="0.9", lw=0.6)
    for ax in axes[len(runs):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=2, fontsize=9, frameon=False)
    fig.supxlabel("optimizer step", fontsize=10)
    fig.supylabel("accuracy", fontsize=10)
    save(fig, path)


def xor_epochs(inputs: Inputs, path: Path) -> None:
    """Epochs to 100% per seed for each XOR shape (log y); unsolved seeds on a 'never' row on top."""
    runs = list(inputs.xor.values())
    if not runs:
        return _placeholder(path, "No XOR variants")
    top = max(max(r.config.max_epochs, r.config.original_epochs or 0) for r in runs)
    never_y = top * 3.0  # the 'never' row sits well above every budget and original figure
    fig = Figure(figsize=(max(6.5, 1.35 * len(runs) + 3.2), 4.8), layout="constrained")
    ax = fig.subplots()
    seen: set[str] = set()

    def once(label: str) -> str:  # each legend entry once
        return "_nolegend_" if label in seen or seen.add(label) else label

    for i, run in enumerate(runs):
        epochs = np.array(seed_epochs(run))
        x = i + (np.linspace(-0.28, 0.28, len(epochs)) if len(epochs) > 1 else np.zeros(len(epochs)))
        ok = np.isfinite(epochs)
        ax.hlines(run.config.max_epochs, i - 0.42, i + 0.42, colors="0.55", linestyles=":", lw=1.2,
                  label=once("training budget (max epochs)"))
        ax.scatter(x[ok], epochs[ok], s=16, color="C0", alpha=0.75, lw=0, zorder=3, label=once("one seed"))
        if (~ok).any():
            ax.scatter(x[~ok], np.full((~ok).sum(), never_y), s=28, marker="x", color="C3",
                       label=once("seed never solved"))
        median = run.metrics.get("epochs_to_100", {}).get("median")
        if median is not None:
            ax.hlines(median, i - 0.36, i + 0.36, colors="black", lw=2.2, zorder=2, label=once("median over seeds"))
        if run.config.original_epochs is not None:
            ax.scatter([i], [run.config.original_epochs], s=170, marker="*", color="C1", edgecolors="black",
                       lw=0.7, zorder=5, label=once("original single run"))
    ax.set_yscale("log")
    ax.set_ylim(0.7, never_y * 2.2)
    decades = [10.0**k for k in range(int(math.log10(top)) + 1)]
    ax.yaxis.set_major_locator(FixedLocator([*decades, never_y]))
    ax.set_yticklabels([f"{d:,.0f}" for d in decades] + ["never"])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(range(len(runs)), [xor_label(r.config) for r in runs], fontsize=9)
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.grid(True, axis="y", which="major", color="0.9", lw=0.6)
    ax.set_ylabel("epochs until all 4 rows are right (log scale)")
    ax.set_title("XOR gate: epochs to 100% accuracy, one point per seed")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
    save(fig, path)


def _placeholder(path: Path, text: str) -> None:
    fig = Figure(figsize=(5, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    save(fig, path)
