"""The report's section on the fixed-length study (stages fixedlen-*): its figure and its answer.

Reads the study's metrics and tables (stages/pipeline/fixed_length.py writes them) and answers
the request's question in a few sentences, each naming numbers from those files and the figure
or table it comes from; the last sentence states the study's limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stages.core import paths
from stages.core.params import Params, resolved_training
from stages.report.inputs import _csv, _json, _under

FIGURE = "fixed_length.png"
QUESTION = "Why does the LSTM learn parity from lengths 1–50 but stay at chance on length 50 alone?"


@dataclass
class Study:
    params: Params
    cells: dict[str, Any]  # artifacts/metrics/fixedlen_cells.json
    signal: dict[str, Any]
    mixing: dict[str, Any]
    cell_rows: pd.DataFrame  # artifacts/fixedlen/cells.csv: one row per (length, seed)
    signal_rows: pd.DataFrame  # at initialisation, one row per (length, seed)
    training_rows: pd.DataFrame  # along training
    mix_rows: pd.DataFrame


def load_study(params: Params, artifacts: Path) -> Study | None:
    """The study's outputs, or None when params.yaml has no fixed_length section."""
    if params.fixed_length is None:
        return None
    part = {p: f"the study writes it (run `dvc repro fixedlen-{p}`)" for p in ("cells", "signal", "mixing")}
    return Study(
        params,
        *(_json(_under(artifacts, paths.fixedlen_metrics(p)), part[p]) for p in ("cells", "signal", "mixing")),
        _csv(_under(artifacts, paths.fixedlen_table("cells")), ("length", "seed", "learned"), part["cells"]),
        _csv(_under(artifacts, paths.fixedlen_table("signal")), ("length", "snr", "measured"), part["signal"]),
        _csv(_under(artifacts, paths.fixedlen_signal_training()), (), part["cells"]),
        _csv(_under(artifacts, paths.fixedlen_table("mixing")), ("fraction", "learned", "accuracy_len"),
             part["mixing"]),
    )


def _cells(study: Study) -> list[dict[str, Any]]:
    return sorted(study.cells["cells"].values(), key=lambda c: c["length"])


def _lengths(values: list[int]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _pow10(v: float) -> str:
    return f"{v:.2g}" if v >= 1e-3 else f"{v / 10 ** math.floor(math.log10(v)):.1f}e{math.floor(math.log10(v))}"


def answer(study: Study) -> list[str]:
    """Three to five sentences, each with its numbers and where they come from."""
    fl, budget = study.params.fixed_length, study.cells["budget_steps"]
    cells = _cells(study)
    learned = [c for c in cells if c["learned"]]
    never = [c["length"] for c in cells if not c["learned"]]
    chance = [c["accuracy_len"] for c in cells if not c["learned"]]
    runs = "; ".join(f"L = {c['length']}: {c['learned']} of {c['seeds']} seeds, median "
                     f"{c['median_steps_to_val_100']:.0f} steps" for c in learned)
    first = f"at L = {_lengths([c['length'] for c in learned])} ({runs})" if learned else "at no length"
    out = [f"Trained on strings all of one length L with the same budget of {budget:,} steps (table below, "
           f"figure left), the LSTM reached 100% validation {first}, and at L = {_lengths(never)} no seed did: "
           + (f"held-out length-L accuracy stayed at {min(chance):.2f}–{max(chance):.2f}." if chance else "")]
    fit, by_l = study.signal["fit"], sorted(study.signal["lengths"].values(), key=lambda c: c["length"])
    every = [c for c in by_l if c["measured"] == c["seeds"]]  # measured from every seed: a fair median
    if fit and every:
        lo, hi = every[0], every[-1]
        unmeasured = [c for c in by_l if not c["measured"]]
        tail = (f"; from L = {unmeasured[0]['length']} on it lies under what {fl.signal_batches} sampled batches "
                f"can resolve ({unmeasured[0]['snr_floor']:.2g}), and the fit, extrapolated, puts it near "
                f"{_pow10(2 ** (fit['log2_intercept'] + fit['log2_slope'] * by_l[-1]['length']))} at "
                f"L = {by_l[-1]['length']}" if unmeasured else "")
        out.append(
            f"The reason is in the gradient (figure middle): at initialisation the part of it that depends on the "
            f"labels, measured exactly over all 2^L strings, stands to the batch-to-batch noise of a step as "
            f"{_pow10(lo['snr'])} at L = {lo['length']} and {_pow10(hi['snr'])} at L = {hi['length']} (median of "
            f"{hi['seeds']} seeds), falling by a factor of about {fit['factor_per_bit']:.0f} per added bit "
            f"(least-squares fit over L = {_lengths(fit['lengths'])}){tail}.")
    out += _training_sentence(study) + _mixing_sentence(study)
    out.append(
        f"Limits: {fl.seeds} seeds per length and {fl.mix_seeds} per mixing fraction, one budget of {budget:,} steps "
        "at the variant's own training settings, so \"never\" means \"not within that budget\" "
        "(sweeps/fixed_length.yaml runs more seeds and a longer budget); the rate is this net's at its default "
        "initialisation, and the signal along training was measured only on cells still training.")
    return out


def _training_sentence(study: Study) -> list[str]:
    """How the signal moved along training, at the longest length measured exactly there."""
    rows = study.training_rows
    if not len(rows) or "exact" not in rows:
        return []
    exact = rows[(rows["exact"] == 1.0) & (rows["measured"] == 1.0)]
    if not len(exact):
        return []
    length = int(exact["length"].max())
    at = exact[exact["length"] == length]
    last = int(at["step"].max())
    seeds = set(at[at["step"] == last]["seed"])  # the same seeds before and after
    init_rows = study.signal_rows[(study.signal_rows["length"] == length) & study.signal_rows["seed"].isin(seeds)]
    init, end = init_rows["snr"].median(), at[at["step"] == last]["snr"].median()
    moved = "rose" if end > 2 * init else "fell" if end < init / 2 else "stayed about the same"
    return [f"Along training it {moved} where it was not learned: at L = {length} the ratio went from "
            f"{_pow10(init)} at initialisation to {_pow10(end)} after {last:,} steps "
            f"({'median of the ' + str(len(seeds)) + ' seeds' if len(seeds) > 1 else 'the one seed'} still above "
            "float64 rounding there; artifacts/fixedlen/signal_training.csv)."]


def _mixing_sentence(study: Study) -> list[str]:
    m = study.mixing
    cells = sorted(m["fractions"].values(), key=lambda c: c["fraction"])
    best = m["smallest_all_learned"]
    if best is None:
        tried = ", ".join(f"{c['fraction']:g}" for c in cells)
        return [f"Mixed with a fraction f of lengths 1–{m['short_max']} (f = {tried}), "
                f"no run learned length {m['mix_length']} within the budget (table below, figure right)."]
    cell = next(c for c in cells if c["fraction"] == best)
    below = [c["fraction"] for c in cells if c["fraction"] < best]
    extra = [f"{k.removeprefix('accuracy_')} {v:.3f}" for k, v in cell.items()
             if k.startswith("accuracy_") and k not in ("accuracy_len", "accuracy_long")]
    return [f"Short strings supply that signal (figure right): with a fraction f of lengths "
            f"1–{m['short_max']} among length-{m['mix_length']} strings, the smallest f at which every seed reached "
            f"100% on length {m['mix_length']} within the budget was {best:g}"
            + (f" (not at f = {', '.join(format(f, 'g') for f in below)})" if below else "")
            + f", and that net scored {cell['accuracy_len']:.3f} on held-out length {m['mix_length']}, "
            f"{cell['accuracy_long']:.3f} on lengths {study.params.fixed_length.long_min}–"
            f"{study.params.fixed_length.long_max}" + (f", {', '.join(extra)}" if extra else "") + "."]


def table(study: Study) -> str:
    from stages.report.tables import md_table

    rows = [[str(c["length"]), f"{c['learned']} of {c['seeds']}",
             "never" if c["median_steps_to_val_100"] is None else f"{c['median_steps_to_val_100']:.0f}",
             f"{c['accuracy_len']:.3f}", f"{c['accuracy_long']:.3f}"] for c in _cells(study)]
    fl = study.params.fixed_length
    cells = md_table(["L", "seeds at 100% val.", "median steps", "acc. length L", f"acc. {fl.long_min}–{fl.long_max}"],
                     rows, right={1, 2, 3, 4})
    mix = sorted(study.mixing["fractions"].values(), key=lambda c: c["fraction"])
    extra = [k for k in mix[0] if k.startswith("accuracy_") and k not in ("accuracy_len", "accuracy_long")]
    rows = [[f"{c['fraction']:g}", f"{c['learned']} of {c['seeds']}",
             "never" if c["median_steps_to_val_100"] is None else f"{c['median_steps_to_val_100']:.0f}",
             f"{c['accuracy_len']:.3f}", f"{c['accuracy_long']:.3f}", *(f"{c[k]:.3f}" for k in extra)] for c in mix]
    mixed = md_table(["f (short share)", "seeds at 100% val.", "median steps", f"acc. length {fl.mix_length}",
                      f"acc. {fl.long_min}–{fl.long_max}", *(k.removeprefix("accuracy_") for k in extra)],
                     rows, right=set(range(1, 5 + len(extra))))
    seen = study.cell_rows.groupby("length")["test_in_train"].max() if "test_in_train" in study.cell_rows else None
    note = ""
    if seen is not None and (seen > 0).any():
        shared = [int(n) for n, v in seen.items() if v > 0]
        note = (f"\nAt L = {_lengths(shared)} some held-out length-L test strings are also training strings (up to "
                f"{seen.max():.0%}): {study.params.fixed_length.train_count:,} draws leave few or no strings unseen.\n")
    return f"{cells}{note}\n{mixed}"


def section(study: Study) -> str:
    """The report's section: the question, its answer, the figure and the two tables."""
    return "\n".join([f"## {QUESTION}\n", " ".join(answer(study)) + "\n",
                      f"![The fixed-length study]({FIGURE})\n", table(study)])


def figure(study: Study, path: Path) -> None:
    """Left: seeds at 100% per length; middle: gradient signal-to-noise (log) with its fit;
    right: accuracy against the share of short strings mixed in."""
    from stages.report.plots import save

    fig = Figure(figsize=(13.5, 3.9), layout="constrained")
    left, mid, right = fig.subplots(1, 3)
    cells = _cells(study)
    x = [c["length"] for c in cells]
    left.bar(x, [c["learned"] / c["seeds"] for c in cells], width=1.2, color="C0", label="share of seeds at 100%")
    left.plot(x, [c["accuracy_long"] for c in cells], "o--", color="C1", ms=4, label="accuracy, lengths 50–100")
    left.set(xlabel="training length L (all strings)", ylabel="share / accuracy", ylim=(0, 1.05),
             title=f"Learned within {study.cells['budget_steps']:,} steps?")
    left.legend(fontsize=8, frameon=False)
    _signal_panel(study, mid)
    mix = sorted(study.mixing["fractions"].values(), key=lambda c: c["fraction"])
    f = [c["fraction"] for c in mix]
    right.plot(f, [c["accuracy_len"] for c in mix], "o-", color="C0", label=f"length {study.mixing['mix_length']}")
    right.plot(f, [c["accuracy_long"] for c in mix], "s--", color="C1", label="lengths 50–100")
    right.set(xscale="log", xlabel=f"share f of lengths 1–{study.mixing['short_max']}", ylabel="held-out accuracy",
              ylim=(0.4, 1.03), title=f"Length-{study.mixing['mix_length']} strings plus a share f of short ones")
    right.legend(fontsize=8, frameon=False)
    for ax in (left, mid, right):
        ax.grid(True, color="0.9", lw=0.6)
    save(fig, path)


def _signal_panel(study: Study, ax: Any) -> None:
    rows = study.signal_rows
    ok = rows[rows["measured"] == 1.0]
    ax.scatter(ok["length"], ok["snr"], s=18, color="C0", zorder=3, label="at initialisation (one seed)")
    floor = rows[rows["measured"] != 1.0].groupby("length")["snr_floor"].median()
    if len(floor):
        ax.scatter(floor.index, floor.values, marker="v", color="0.5", s=24, label="under this floor (sampling or rounding)")
    t = study.training_rows
    if len(t) and "measured" in t:
        t = t[t["measured"] == 1.0]
        ax.scatter(t["length"], t["snr"], marker="x", s=20, color="C3", label="along training")
    fit = study.signal["fit"]
    if fit:

        def line(xs: list[int]) -> np.ndarray:
            return 2.0 ** (fit["log2_intercept"] + fit["log2_slope"] * np.asarray(xs, dtype=float))

        fitted = [min(fit["lengths"]), max(fit["lengths"])]
        ax.plot(fitted, line(fitted), "k-", lw=1.2, label=f"fit: ÷{fit['factor_per_bit']:.0f} per bit")
        beyond = [fitted[1], max(rows["length"])]
        ax.plot(beyond, line(beyond), "k:", lw=1, label="the fit, extrapolated")
    ax.set(yscale="log", xlabel="training length L", ylabel="signal / noise of the gradient",
           title="The gradient's parity signal")
    ax.legend(fontsize=7.5, frameon=False)


LINEAR = {"diag_linear": "[0, 1]", "diag_linear_neg": "[−1, 1]"}  # family -> range of its transition


def linear_rnn_paragraph(inputs: Any) -> str:
    """The stretch: diagonal linear RNNs (models/torch_rnn/linear_rnn.py) trained by gradient
    descent, each described by its own train and evaluate outputs; "" when there are none."""
    runs = [r for r in inputs.parity.values() if getattr(r.config, "family", "") in LINEAR]
    if not runs:
        return ""
    parts = []
    for r in runs:
        t = resolved_training(inputs.params, r.name)
        acc = r.metrics.get("accuracy", {})
        reached = r.train.get("steps_to_val_100")
        scores = ", ".join(f"{b} {acc[b]:.3f}" for b in acc)
        parts.append(f"`{r.name}` (transition in {LINEAR[r.config.family]}, trained on `{t['train_bucket']}`): "
                     + ("never reached 100% validation" if reached is None else f"100% validation at step {reached:,}")
                     + f" in {r.train.get('steps', 0):,} steps; held-out accuracy {scores}")
    return ("### Gradient descent on the fixed-length set alone: a diagonal linear RNN\n\n"
            "A diagonal linear RNN whose transition depends on the input represents parity exactly when "
            "the transition may be negative (Grazzi et al., ICLR 2025; models/torch_rnn/linear_rnn.py). "
            "Trained here by gradient descent on length-50 strings only: " + "; ".join(parts) + ".\n")
