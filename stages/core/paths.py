"""Every path the pipeline reads or writes, in one place.

dvc.yaml (written by ``python -m stages dag``), the stages, the report and the commands
all take their paths from here, so an output cannot be written where nothing reads it.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
ARTIFACTS = Path("artifacts")
REPORT = ARTIFACTS / "report"
XOR_GATE = "xor_gate"  # the XOR truth table's file name in data/ (not a parity bucket)


def bucket_file(name: str) -> Path:
    """A dataset: ``data/NAME.npz`` (format: stages/core/data.py)."""
    return DATA / f"{name}.npz"


def bucket_meta(name: str) -> Path:
    """Its manifest entry: sha256, counts, lengths, how it was drawn (``data/NAME.json``)."""
    return DATA / f"{name}.json"


def model_dir(variant: str) -> Path:
    """The trained model: ``model.pt``, ``model.keras`` + ``config.json``, or ``study.npz``."""
    return ARTIFACTS / "models" / variant


def train_metrics(variant: str) -> Path:
    """Deterministic training metrics (DVC metrics)."""
    return ARTIFACTS / "train" / f"{variant}.json"


def train_curve(variant: str) -> Path:
    """The training history (parity) or the per-seed table (XOR study)."""
    return ARTIFACTS / "train" / f"{variant}.csv"


def checkpoint(variant: str) -> Path:
    """Resumable training state; deleted when training finishes (not a DVC output)."""
    return ARTIFACTS / "checkpoints" / f"{variant}.ckpt"


def eval_metrics(variant: str) -> Path:
    """Held-out headline metrics (DVC metrics): accuracy and loss per bucket, or the XOR summary."""
    return ARTIFACTS / "metrics" / f"{variant}.json"


def eval_detail(variant: str) -> Path:
    """Per bucket: n, the 95% interval and the confusion counts (an output, not a DVC metric:
    `dvc exp show` keeps to the headline numbers)."""
    return ARTIFACTS / "detail" / f"{variant}.json"


def eval_plot(variant: str) -> Path:
    """Accuracy by sequence length (parity) or final accuracy and margin by seed (XOR)."""
    return ARTIFACTS / "plots" / f"{variant}.csv"


def seeds_metrics(variant: str) -> Path:
    return ARTIFACTS / "metrics" / f"seeds_{variant}.json"


def seeds_table(variant: str) -> Path:
    return ARTIFACTS / "plots" / f"seeds_{variant}.csv"


def certificate(variant: str) -> Path:
    """The parity certificate of a trained variant, or why there is none (stages/certify/)."""
    return ARTIFACTS / "certify" / f"{variant}.json"


def certify_metrics(variant: str) -> Path:
    """Whether it is certified, and its margins (DVC metrics, so the gate sees a lost proof)."""
    return ARTIFACTS / "metrics" / f"certify_{variant}.json"


FIXEDLEN = ARTIFACTS / "fixedlen"  # the fixed-length study (stages fixedlen-*)


def fixedlen_table(part: str) -> Path:
    """One row per run of study part ``part`` (cells, signal or mixing)."""
    return FIXEDLEN / f"{part}.csv"


def fixedlen_metrics(part: str) -> Path:
    """The part's summary (DVC metrics)."""
    return ARTIFACTS / "metrics" / f"fixedlen_{part}.json"


def fixedlen_signal_training() -> Path:
    """The gradient signal measured along each cell's training (written by fixedlen-cells)."""
    return FIXEDLEN / "signal_training.csv"
