"""What the torch and Keras parity trainers share (imports neither framework): the training
config, their progress state, the history row of an evaluation, its logging, checkpoints
and the TrainResult. ``models`` never imports ``stages``: stages build these configs from
params.yaml and do the writing of every output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class ModelError(Exception):
    """A model file or config that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class TrainConfig:
    """How a gradient trainer runs (the resolved ``training`` section of params.yaml)."""

    train_bucket: str = "train"  # names only: recorded, the data itself is passed in
    val_bucket: str = "val"
    probe_bucket: str | None = "len_50_100"
    probe_count: int = 500
    batch_size: int = 256  # sequences per optimizer step
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = 0.01
    clip_grad_norm: float | None = 1.0  # None: no clipping
    input_noise: float = 0.1  # std of Gaussian noise on every training bit
    max_steps: int = 10_000
    eval_every: int = 50  # steps between validation passes
    patience: int = 4  # stop after this many 100% validations in a row; 0: never
    curriculum_start: int | None = None  # None: every length from the start
    checkpoint_every: int = 500
    # The contraction phase (models/torch_rnn/contraction.py): from the first 100% validation
    # on, add weight x mean relu(||d state'/d state||_F - rho)^2 at reached states; 0 disables.
    contraction_weight: float = 10.0
    contraction_rho: float = 0.5


class Checkpoint(Protocol):
    """Where a trainer keeps its resumable state; the caller makes writes atomic."""

    path: Path

    def write(self, fill: Callable[[Path], None]) -> None: ...  # fill(tmp) writes the file

    def set_aside(self, reason: str) -> None: ...  # an unreadable one: move it away, say why


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


Log = Callable[[dict[str, float], int], None]  # (metrics, step), e.g. an MLflow logger
Printer = Callable[[str], None]


@dataclass
class Progress:
    """A trainer's own state: what a checkpoint restores besides weights and RNGs."""

    step: int = 0  # optimizer steps done
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per evaluation
    loss_sum: float = 0.0  # training loss summed since the last evaluation
    loss_count: int = 0
    streak: int = 0  # consecutive evaluations with validation accuracy 1.0
    cap: int | None = None  # curriculum: longest training length allowed now
    steps_to_val_100: int | None = None
    steps_to_probe_100: int | None = None
    seconds: float = 0.0  # training time before this process (resumed runs)
    contraction_from: int | None = None  # step the contraction phase began


def evaluation_row(
    state: Progress, cfg: TrainConfig, val: tuple[float, float, np.ndarray], probe_accuracy: float | None,
    val_lengths: np.ndarray, max_len: int,
) -> dict[str, Any]:
    """One history row from the scores at the current step; advances the length curriculum.

    val: (accuracy, mean loss, per-sequence correctness (n,) bool) on the validation set.
    """
    val_acc, val_loss, correct = val
    row: dict[str, Any] = {
        "step": state.step,
        "sequences": state.step * cfg.batch_size,
        "train_loss": state.loss_sum / max(state.loss_count, 1),
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "probe_accuracy": probe_accuracy,
    }
    state.loss_sum, state.loss_count = 0.0, 0
    if state.cap is not None:
        row["curriculum_cap"] = state.cap
        # Lengthen the training sequences once every validation sequence up to the cap is right.
        capped = np.asarray(val_lengths) <= state.cap
        if state.cap < max_len and correct[capped].all():
            state.cap += 1
    return row


def record(
    row: dict[str, Any], state: Progress, cfg: TrainConfig, log: Log | None, progress: Printer | None,
) -> None:
    """Record an evaluation: history, first-100% steps, early-stop streak, log and progress line.

    With a contraction phase, early stopping counts only evaluations made in it.
    """
    state.history.append(row)
    step = row["step"]
    state.streak = state.streak + 1 if row["val_accuracy"] == 1.0 else 0
    if cfg.contraction_weight and state.contraction_from is None:
        state.streak = 0
    if row["val_accuracy"] == 1.0 and state.steps_to_val_100 is None:
        state.steps_to_val_100 = step
    if row["probe_accuracy"] == 1.0 and state.steps_to_probe_100 is None:
        state.steps_to_probe_100 = step
    metrics = {"train/loss": row["train_loss"], "val/loss": row["val_loss"], "val/accuracy": row["val_accuracy"]}
    if row["probe_accuracy"] is not None:
        metrics["probe/accuracy"] = row["probe_accuracy"]
    if log is not None:
        log(metrics, step)
    if progress is not None:
        probe = "" if row["probe_accuracy"] is None else f"  probe {row['probe_accuracy']:.3f}"
        cap = f"  len<={row['curriculum_cap']}" if "curriculum_cap" in row else ""
        progress(
            f"step {step}/{cfg.max_steps}  loss {row['train_loss']:.3f}  "
            f"val {row['val_accuracy']:.3f}{probe}{cap}"
        )


def contraction_on(state: Progress, cfg: TrainConfig) -> bool:
    """Whether this step is in the contraction phase (it begins at the first 100% validation)."""
    if cfg.contraction_weight and state.contraction_from is None and state.steps_to_val_100 is not None:
        state.contraction_from, state.streak = state.step, 0
    return bool(cfg.contraction_weight) and state.contraction_from is not None


def to_result(state: Progress, cfg: TrainConfig, stopped: str) -> TrainResult:
    """The TrainResult of a finished (or stopped) run."""

    def seqs(step: int | None) -> int | None:
        return None if step is None else step * cfg.batch_size

    return TrainResult(
        steps=state.step,
        sequences=state.step * cfg.batch_size,
        steps_to_val_100=state.steps_to_val_100,
        seqs_to_val_100=seqs(state.steps_to_val_100),
        steps_to_probe_100=state.steps_to_probe_100,
        seqs_to_probe_100=seqs(state.steps_to_probe_100),
        val_accuracy=state.history[-1]["val_accuracy"] if state.history else float("nan"),
        stopped=stopped,
        history=state.history,
        train_seconds=state.seconds,
    )


def length_batches(lengths: np.ndarray, max_batch_bits: int) -> Iterator[np.ndarray]:
    """Indices in length order, cut so that batch size x longest length <= max_batch_bits.

    Sorting by length keeps padding small; a sequence longer than the cap gets a batch of its
    own. Used by the torch and the Keras ``predict_logits``.
    """
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1  # sorted ascending: the last member is the longest; grow while it fits
        while stop < len(order) and (stop + 1 - start) * int(lengths[order[stop]]) <= max_batch_bits:
            stop += 1
        yield order[start:stop]
        start = stop
