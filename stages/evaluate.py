"""Stage ``evaluate@VARIANT``: judge a trained variant on held-out data.

Parity variants: accuracy, loss, 95% Wilson interval and confusion counts on every
held-out bucket -> ``artifacts/metrics/VARIANT.json`` (DVC metrics: ``accuracy.len_10000``),
and accuracy by sequence length -> ``artifacts/plots/VARIANT_by_length.csv`` (DVC plots).
XOR variants: the study's summary (epochs to 100%, margin) from the saved weights.
Evaluation throughput is wall-clock, so it goes to MLflow only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from stages import datasets, tracking
from stages import io as sio
from stages.schema import KERAS_PARITY, Params, SearchVariant, XorVariant, eval_buckets, load_params
from stages.stats import wilson
from stages.train import get_variant, paths


def metrics_path(variant: str) -> Path:
    return Path("artifacts") / "metrics" / f"{variant}.json"


def by_length_path(variant: str) -> Path:
    """Plot data: accuracy by sequence length (parity) or accuracy and margin by seed (XOR)."""
    return Path("artifacts") / "plots" / f"{variant}.csv"


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    v = get_variant(params, variant)
    if isinstance(v, XorVariant):
        _evaluate_xor(params, variant, v)
    else:
        _evaluate_parity(params, variant, v)


def load_parity_model(params: Params, variant: str, device: str = "cpu"):
    """Load a trained parity model; return a function bits -> logits and the model file."""
    v = get_variant(params, variant)
    model_dir = paths(variant)["model_dir"]
    if isinstance(v, SearchVariant):
        family, expect = "manual_rnn", {"family": "manual_rnn", "hidden_size": v.hidden_size,
                                        "num_layers": 1, "init": "default"}
    else:
        family = v.family
        expect = {"family": v.family, "hidden_size": v.hidden_size, "num_layers": v.num_layers,
                  "init": v.init}
    if family in KERAS_PARITY:
        from models import keras_lstm

        _require(model_dir / "model.keras", variant)
        model, _ = keras_lstm.load(model_dir, expect=expect)
        return (lambda seqs, cap: keras_lstm.predict_logits(model, seqs, max_batch_bits=cap)), \
            model_dir / "model.keras"
    from models import torch_zoo

    _require(model_dir / "model.pt", variant)
    model, _ = torch_zoo.load(model_dir / "model.pt", device=device, expect=expect)
    return (lambda seqs, cap: torch_zoo.predict_logits(model, seqs, device, max_batch_bits=cap)), \
        model_dir / "model.pt"


def _require(path: Path, variant: str) -> None:
    if not path.exists():
        from stages.errors import UserError

        raise UserError(f"{path}: no trained model; run `dvc repro train@{variant}`")


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


def _by_length(logits: np.ndarray, seqs: Any) -> list[dict[str, Any]]:
    correct = (logits > 0) == (seqs.labels == 1)
    rows = []
    for length in np.unique(seqs.lengths):
        sel = seqs.lengths == length
        rows.append({"length": int(length), "accuracy": float(correct[sel].mean()), "count": int(sel.sum())})
    return rows


def _evaluate_parity(params: Params, variant: str, v: Any) -> None:
    keras = getattr(v, "family", None) in KERAS_PARITY
    if keras:
        from stages.device import configure_tensorflow_device

        device = configure_tensorflow_device(params.device)
    else:
        from stages.device import resolve_torch_device

        device = resolve_torch_device(params.device)
    buckets = eval_buckets(params, variant)
    sets = {b: first_bits(datasets.load_bucket(b), getattr(v, "eval_max_bits", None))
            for b in buckets}  # all checked before any work
    tracking.check_store()
    tracking.install_sigterm_handler()
    if not keras:
        import torch  # noqa: F401  (so seed_everything sets torch's threads)
    from stages.seeding import seed_everything

    seed_everything(params.seed, params.threads)
    predict, model_file = load_parity_model(params, variant, device)
    metrics: dict[str, dict[str, Any]] = {k: {} for k in ("accuracy", "loss", "n", "ci95_low", "ci95_high", "confusion")}
    by_length: list[dict[str, Any]] = []
    timing: dict[str, float] = {}
    for name, seqs in sets.items():
        start = time.perf_counter()
        logits = predict(seqs, params.evaluate.max_batch_bits)
        seconds = time.perf_counter() - start
        m = bucket_metrics(logits, seqs)
        for key in metrics:
            metrics[key][name] = m[key]
        by_length += _by_length(logits, seqs)
        timing[f"eval_seconds.{name}"] = seconds
        timing[f"eval_seqs_per_s.{name}"] = len(seqs) / max(seconds, 1e-9)
        print(f"evaluate@{variant}: {name:<12} accuracy {m['accuracy']:.4f} "
              f"[{m['ci95_low']:.4f}, {m['ci95_high']:.4f}] n={m['n']}  ({seconds:.1f} s)", flush=True)
    by_length.sort(key=lambda r: r["length"])
    sio.write_json(metrics_path(variant), metrics)
    sio.write_text(by_length_path(variant), sio.csv_text(by_length))
    _log_evaluation(variant, "parity", model_file, metrics, timing)


def _evaluate_xor(params: Params, variant: str, v: XorVariant) -> None:
    # A NumPy forward of the saved weights: no TensorFlow (seconds of start-up) needed.
    x, y = datasets.load_xor_gate()
    train_metrics = paths(variant)["metrics"]
    _require(paths(variant)["model_dir"] / "study.npz", variant)
    tracking.check_store()
    from models import xor_mlp

    weights, _ = xor_mlp.load_study(paths(variant)["model_dir"])
    out = np.asarray(xor_mlp.predict(weights, v, x), dtype=np.float64)  # (seeds, 4)
    accuracy = ((out > 0.5) == (y > 0.5)).mean(axis=1)
    margin = np.abs(out - 0.5).min(axis=1)
    loss = ((out - y) ** 2).mean(axis=1) if v.loss == "mse" else None
    study = sio.read_json(train_metrics)
    metrics = {
        "epochs_to_100": study["epochs_to_100"],
        "never_solved": study["never_solved"],
        "seeds": int(out.shape[0]),
        "accuracy": {"xor_gate": float(accuracy.mean())},
        "margin": {"min": float(margin.min()), "median": float(np.median(margin))},
        "final_loss": {"median": float(np.median(loss)) if loss is not None else study["final_loss"]["median"]},
    }
    sio.write_json(metrics_path(variant), metrics)
    seeds = [{"seed": params.seed + i, "accuracy": float(a), "margin": float(m)}
             for i, (a, m) in enumerate(zip(accuracy, margin, strict=True))]
    sio.write_text(by_length_path(variant), sio.csv_text(seeds))  # XOR: final accuracy and margin per seed
    print(f"evaluate@{variant}: accuracy {metrics['accuracy']['xor_gate']:.3f}  "
          f"margin min {metrics['margin']['min']:.4f}  epochs to 100% median {study['epochs_to_100']['median']}")
    _log_evaluation(variant, "xor-gate", paths(variant)["model_dir"] / "study.npz", metrics, {})


def _log_evaluation(variant: str, problem: str, model_file: Path, metrics: dict, timing: dict) -> None:
    """Log into the training run of this exact model (found by its sha256), or a new run."""
    run_id = tracking.find_run(problem, variant, sio.sha256_file(model_file))
    with tracking.tracked_run(problem, variant, f"evaluate@{variant}", {}, data_hashes={},
                              resume_run_id=run_id):
        tracking.log_summary(metrics, prefix="eval")
        tracking.log_metrics(timing, 0)
        tracking.log_artifact(metrics_path(variant))
        tracking.log_artifact(by_length_path(variant))
