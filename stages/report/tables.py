"""The report's tables: parity summary and XOR study, as DataFrames (CSV) and Markdown."""

from __future__ import annotations

from typing import Any

import pandas as pd

from stages.report.inputs import Inputs, ParityRun, bucket_label, fmt_float, fmt_int, fmt_num, xor_label

TRAIN_KEYS = ("steps", "sequences", "steps_to_val_100", "seqs_to_val_100", "steps_to_probe_100", "seqs_to_probe_100")
ACCURACY_KEYS = ("accuracy", "ci95_low", "ci95_high", "n")


def md_table(header: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A GitHub Markdown table; columns in ``right`` are right-aligned (numbers)."""
    right = right or set()
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines) + "\n"


def stopped(run: ParityRun) -> str:
    """How training ended: early_stop / max_steps / 'found after 1,234 trials' (search)."""
    t = run.train
    if "trials" in t:
        return f"{'found' if t.get('found') else 'not found'} after {fmt_int(t['trials'])} trials"
    return str(t.get("stopped", "—"))


def summary_frame(inputs: Inputs) -> pd.DataFrame:
    """One row per parity variant: settings, training milestones, accuracy/CI/n per bucket."""
    rows = []
    for run in inputs.parity.values():
        row: dict[str, Any] = {"variant": run.name, "family": run.config.family, "group": run.group,
                               "settings": run.settings, "stopped": stopped(run)}
        row.update({k: run.train.get(k) for k in TRAIN_KEYS})
        row["val_accuracy"] = run.train.get("val_accuracy")
        for bucket in inputs.buckets:
            for key in ACCURACY_KEYS:
                row[f"{key}.{bucket}"] = run.metrics.get(key, {}).get(bucket)
        rows.append(row)
    frame = pd.DataFrame(rows)
    ints = [*TRAIN_KEYS, *(f"n.{b}" for b in inputs.buckets)]
    for col in ints:  # nullable ints: "400" and "" in the CSV, not "400.0" and "nan"
        frame[col] = pd.array([None if v is None or v != v else int(v) for v in frame[col]], dtype="Int64")
    return frame


def accuracy_cell(metrics: dict[str, Any], bucket: str) -> str:
    """'1.0000 [0.9996, 1.0000] n=10,000', or '—' when the bucket was not evaluated."""
    acc = metrics.get("accuracy", {}).get(bucket)
    if acc is None:
        return "—"
    lo, hi = metrics.get("ci95_low", {}).get(bucket), metrics.get("ci95_high", {}).get(bucket)
    return f"{acc:.4f} [{fmt_float(lo)}, {fmt_float(hi)}] n={fmt_int(metrics.get('n', {}).get(bucket))}"


def _milestone(run: ParityRun, steps: str, seqs: str) -> str:
    if run.train.get(steps) is None:
        return "never" if "trials" not in run.train else "—"
    return f"{fmt_int(run.train[steps])} ({fmt_int(run.train.get(seqs))} seqs)"


def summary_markdown(inputs: Inputs) -> str:
    """Two tables: how each variant trained, and its held-out accuracy per bucket."""
    probe = inputs.params.training.probe_bucket
    head = ["variant", "family", "settings (≠ defaults)", "steps to val 100%",
            f"steps to 100% on {probe or 'held-out'} probe", "stopped"]
    rows = [[r.name, r.config.family, r.settings or "defaults", _milestone(r, "steps_to_val_100", "seqs_to_val_100"),
             _milestone(r, "steps_to_probe_100", "seqs_to_probe_100"), stopped(r)]
            for r in inputs.parity.values()]
    train = md_table(head, rows, right={3, 4})
    labels = [bucket_label(inputs.params, b) for b in inputs.buckets]
    acc_rows = [[r.name, *(accuracy_cell(r.metrics, b) for b in inputs.buckets)] for r in inputs.parity.values()]
    accuracy = md_table(["variant", *labels], acc_rows, right=set(range(1, len(labels) + 1)))
    return (
        "### Training\n\nSteps (and training sequences) until validation accuracy first reached 100%, "
        "and until the held-out probe did; 'never' means not within the training budget.\n\n"
        f"{train}\n### Held-out accuracy\n\nAccuracy on sequences never trained on, "
        "with its 95% Wilson interval and the number of sequences; '—' = not evaluated.\n\n"
        f"{accuracy}"
    )


def seeds_markdown(inputs: Inputs) -> str:
    """Per variant of the seeds check: seeds with every sequence right, per bucket, and the worst seed."""
    buckets = inputs.params.seeds.buckets
    labels = [bucket_label(inputs.params, b) for b in buckets]
    head = ["variant", *(f"seeds at 100%, {x}" for x in labels), *(f"worst seed, {x}" for x in labels),
            "median steps to val 100%"]
    head.insert(1, "seeds certified")
    rows = [[name, f"{m.get('certified', 0)} of {m['seeds']}", *(f"{m['solved'][b]} of {m['seeds']}" for b in buckets),
             *(fmt_float(m["min_accuracy"][b]) for b in buckets), fmt_num(m["median_steps_to_val_100"])]
            for name, m in inputs.seeds.items()]
    return md_table(head, rows, right=set(range(1, len(head))))


def xor_frame(inputs: Inputs) -> pd.DataFrame:
    """One row per XOR shape: epochs to 100% over seeds, share never solved, margins, the original."""
    rows = []
    for run in inputs.xor.values():
        m, e = run.metrics, run.metrics.get("epochs_to_100", {})
        rows.append({
            "variant": run.name, "shape": xor_label(run.config), "seeds": m.get("seeds"),
            **{f"epochs_{k}": e.get(k) for k in ("median", "q1", "q3", "min", "max")},
            "never_solved": m.get("never_solved"),
            "margin_min": m.get("margin", {}).get("min"), "margin_median": m.get("margin", {}).get("median"),
            "final_loss_median": m.get("final_loss", {}).get("median"),
            "accuracy_mean": m.get("accuracy", {}).get("xor_gate"),
            "original_epochs": run.config.original_epochs, "max_epochs": run.config.max_epochs,
        })
    frame = pd.DataFrame(rows)
    for col in ("seeds", "original_epochs", "max_epochs"):
        frame[col] = pd.array([None if v is None or v != v else int(v) for v in frame[col]], dtype="Int64")
    return frame


def _epochs(v: Any) -> str:
    return "unknown" if v is None else fmt_num(v)


def _small(v: Any) -> str:
    """3 decimals, or 2 significant digits below 0.001 (the linear net's margins are ~1e-7)."""
    if v is None:
        return "—"
    return f"{v:.1e}" if 0 < abs(v) < 0.001 else f"{v:.3f}"


def _never(v: Any) -> str:
    """min/max epochs: None means some seed (max) or every seed (min) never solved."""
    return "never" if v is None else fmt_num(v)


def xor_markdown(inputs: Inputs) -> str:
    head = ["shape", "seeds", "never solved", "median epochs [q1, q3]", "min – max",
            "original single run", "margin min / median", "final loss median"]
    rows = []
    for run in inputs.xor.values():
        m, e = run.metrics, run.metrics.get("epochs_to_100", {})
        never = m.get("never_solved")
        seeds = m.get("seeds")
        failed = round(never * seeds) if never is not None and seeds else None
        rows.append([
            xor_label(run.config), fmt_int(seeds),
            f"{never:.0%} ({fmt_int(failed)})" if never is not None else "—",
            f"{_epochs(e.get('median'))} [{_epochs(e.get('q1'))}, {_epochs(e.get('q3'))}]",
            f"{_never(e.get('min'))} – {_never(e.get('max'))}",
            fmt_int(run.config.original_epochs),
            f"{_small(m.get('margin', {}).get('min'))} / {_small(m.get('margin', {}).get('median'))}",
            fmt_float(m.get("final_loss", {}).get("median"), 3),
        ])
    note = ("Epochs until all four rows are right, over seeds; a seed that never gets there counts as "
            "slower than every other, so a quartile that lands on one is 'unknown'. Margin: the smallest "
            "distance of an output from 0.5 at the end of training.\n\n")
    return note + md_table(head, rows, right={1, 2, 3, 4, 5, 6, 7})


def correctness_markdown(inputs: Inputs) -> str:
    """Per parity variant: every sequence of length 1-20, the worst structured bucket, the certificate."""
    exhaustive = [b for b in inputs.structured() if inputs.kind(b) == "exhaustive"]
    rows = []
    for r in inputs.parity.values():
        judged = [b for b in inputs.structured() if b not in exhaustive and r.metrics.get("accuracy", {}).get(b) is not None]
        worst = min(judged, key=lambda b: (r.metrics["accuracy"][b], b)) if judged else None
        if worst is None:
            structured = "—"
        elif r.metrics["accuracy"][worst] == 1.0:
            structured = f"none wrong: all {len(judged)} at 1.0000"
        else:
            structured = f"{worst}: {accuracy_cell(r.metrics, worst)}"
        rows.append([
            r.name,
            " ".join(accuracy_cell(r.metrics, b) for b in exhaustive) or "—",
            structured,
            "**yes**, every length" if r.certified else f"no: {_short(r.certificate.get('reason', '—'))}",
        ])
    head = ["variant", f"every sequence, {bucket_label(inputs.params, exhaustive[0]) if exhaustive else '—'}",
            "worst structured bucket (needles, runs, densities, patterns)", "certified"]
    return md_table(head, rows, right={1})


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"
