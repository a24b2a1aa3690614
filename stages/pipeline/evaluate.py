"""What every parity ``evaluate-VARIANT`` stage does, whatever the engine: judge a trained
model on its held-out buckets and write the results.

Outputs (written atomically):
- ``artifacts/metrics/VARIANT.json`` (DVC metrics): accuracy and loss per bucket
  (``accuracy.len_10000``), the numbers a person compares;
- ``artifacts/detail/VARIANT.json``: n, the 95% Wilson interval and the confusion counts;
- ``artifacts/plots/VARIANT.csv`` (DVC plots): accuracy by sequence length on the random buckets.
The engine's own module (evaluate_torch.py, evaluate_keras.py) loads the model and calls
``evaluate``. Evaluation throughput is wall-clock, so it goes to MLflow only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages import tracking
from stages.core import data, files, paths
from stages.core.errors import UserError
from stages.core.params import Params, eval_buckets
from stages.core.seeding import seed_everything
from stages.core.stats import wilson

Predict = Callable[[Any, int], np.ndarray]  # (sequences, max batch bits) -> logits (n,)


@dataclass(frozen=True)
class Judge:
    """A trained model as the engine's stage module loads it."""

    predict: Predict
    model_file: Path
    # the model as a models.prefix_tree.Stepper, for the exhaustive bucket (None: judge it like the others)
    stepper: Any = None
HEADLINE = ("accuracy", "loss")  # DVC metrics
DETAIL = ("n", "ci95_low", "ci95_high", "confusion")  # artifacts/detail/


def require_model(path: Path, variant: str) -> None:
    if not path.exists():
        raise UserError(f"{path}: no trained model; run `dvc repro train-{variant}`")


def first_bits(seqs: Any, max_bits: int | None) -> Any:
    """The first sequences of ``seqs`` holding at most ``max_bits`` bits (at least one); all if None."""
    if max_bits is None:
        return seqs
    count = max(1, int(np.searchsorted(np.cumsum(seqs.lengths), max_bits, side="right")))
    return seqs if count >= len(seqs) else seqs.subset(np.arange(count))


def bucket_metrics(logits: np.ndarray, seqs: Any) -> dict[str, Any]:
    """Accuracy, mean BCE loss, confusion counts and a 95% Wilson interval on one bucket."""
    y = seqs.labels.astype(np.float64)
    pred = (logits > 0).astype(np.float64)
    loss = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    correct = int((pred == y).sum())
    n = len(y)
    lo, hi = wilson(correct, n)
    return {
        "accuracy": correct / n,
        "loss": float(loss.mean()),
        "n": n,
        "ci95_low": lo,
        "ci95_high": hi,
        "confusion": {
            "tp": int(((pred == 1) & (y == 1)).sum()), "tn": int(((pred == 0) & (y == 0)).sum()),
            "fp": int(((pred == 1) & (y == 0)).sum()), "fn": int(((pred == 0) & (y == 1)).sum()),
        },
    }


def by_length(logits: np.ndarray, seqs: Any) -> list[dict[str, Any]]:
    """Accuracy and count per distinct sequence length."""
    correct = (logits > 0) == (seqs.labels == 1)
    rows = []
    for length in np.unique(seqs.lengths):
        sel = seqs.lengths == length
        rows.append({"length": int(length), "accuracy": float(correct[sel].mean()), "count": int(sel.sum())})
    return rows


def held_out_sets(params: Params, variant: str) -> dict[str, Any]:
    """The variant's held-out buckets, loaded and checked before any work (cut by eval_max_bits)."""
    v = params.variants[variant]
    return {b: first_bits(data.load_bucket(b), getattr(v, "eval_max_bits", None))
            for b in eval_buckets(params, variant)}


def whole_tree(bucket: Any, seqs: Any) -> int | None:
    """max_len when ``seqs`` is the whole exhaustive bucket in its written order (every sequence of
    length 1..max_len, by length, then binary counting), so the prefix tree can judge it; else None."""
    if getattr(bucket, "kind", None) != "exhaustive" or len(seqs) != 2 ** (bucket.max_len + 1) - 2:
        return None
    expected = np.repeat(np.arange(1, bucket.max_len + 1), 2 ** np.arange(1, bucket.max_len + 1))
    return bucket.max_len if np.array_equal(seqs.lengths, expected) else None


def logits_of(judge: Judge, bucket: Any, seqs: Any, max_batch_bits: int) -> tuple[np.ndarray, str]:
    """The model's logits on ``seqs`` and how they were computed (said in the console line)."""
    max_len = whole_tree(bucket, seqs) if judge.stepper is not None else None
    if max_len is None:
        return judge.predict(seqs, max_batch_bits), ""
    from models.prefix_tree import all_sequences_logits

    return all_sequences_logits(judge.stepper, max_len), ", by prefix tree"


def evaluate(params: Params, variant: str, sets: dict[str, Any], judge: Judge) -> None:
    """Judge the model on every set, write the metrics and the by-length plot, log to MLflow."""
    seed_everything(params.seed, params.threads)
    metrics: dict[str, dict[str, Any]] = {k: {} for k in (*HEADLINE, *DETAIL)}
    rows: list[dict[str, Any]] = []
    timing: dict[str, float] = {}
    for name, seqs in sets.items():
        start = time.perf_counter()
        logits, how = logits_of(judge, params.data.buckets[name], seqs, params.evaluate.max_batch_bits)
        seconds = time.perf_counter() - start
        m = bucket_metrics(logits, seqs)
        for key in metrics:
            metrics[key][name] = m[key]
        if params.data.buckets[name].kind == "uniform":  # the plot is accuracy on random bits by length
            rows += by_length(logits, seqs)
        timing[f"eval_seconds.{name}"] = seconds
        timing[f"eval_seqs_per_s.{name}"] = len(seqs) / max(seconds, 1e-9)
        print(f"evaluate-{variant}: {name:<12} accuracy {m['accuracy']:.4f} "
              f"[{m['ci95_low']:.4f}, {m['ci95_high']:.4f}] n={m['n']}  ({seconds:.1f} s{how})", flush=True)
    rows.sort(key=lambda r: r["length"])
    files.write_json(paths.eval_metrics(variant), {k: metrics[k] for k in HEADLINE})
    files.write_json(paths.eval_detail(variant), {k: metrics[k] for k in DETAIL})
    files.write_text(paths.eval_plot(variant), files.csv_text(rows))
    log_evaluation(variant, "parity", judge.model_file, metrics, timing)


def log_evaluation(variant: str, problem: str, model_file: Path, metrics: dict, timing: dict) -> None:
    """Log into the training run of this exact model (found by its sha256), or a new run."""
    run_id = tracking.find_run(problem, variant, files.sha256_file(model_file))
    with tracking.tracked_run(problem, variant, f"evaluate-{variant}", {}, data_hashes={},
                              resume_run_id=run_id):
        tracking.log_summary(metrics, prefix="eval")
        tracking.log_metrics(timing, 0)
        tracking.log_artifact(paths.eval_metrics(variant))
        tracking.log_artifact(paths.eval_plot(variant))
        if paths.eval_detail(variant).exists():
            tracking.log_artifact(paths.eval_detail(variant))
