"""What a parity trainer returns; shared by the torch and Keras trainers (imports neither)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainResult:
    """Outcome of one training run. Everything except ``train_seconds`` is deterministic on CPU."""

    steps: int  # optimizer steps taken
    sequences: int  # training sequences seen (steps x batch size)
    steps_to_val_100: int | None  # first evaluated step with validation accuracy 1.0
    seqs_to_val_100: int | None
    steps_to_probe_100: int | None  # same, on the held-out probe subset (long sequences)
    seqs_to_probe_100: int | None
    val_accuracy: float  # at the end of training
    stopped: str  # "early_stop", "max_steps", "solved" (search) or "interrupted"
    # One row per evaluation: step, sequences, train_loss, val_loss, val_accuracy, probe_accuracy
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # wall clock; never written to DVC-tracked files

    def metrics(self) -> dict[str, Any]:
        """The deterministic summary written to artifacts/train/<variant>.json."""
        out = asdict(self)
        del out["history"], out["train_seconds"]
        return out
