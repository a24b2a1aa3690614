"""Train a torch parity model: seeded mini-batches, periodic evaluation, early stopping,
an optional length curriculum, and checkpoints that resume bit-identically.

Determinism: the mini-batches come from a torch.Generator seeded with ``seed``;
everything else is deterministic on CPU given the initial weights (the caller
seeds the global RNGs before building the model).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from models.common import (
    Checkpoint,
    Log,
    Printer,
    Progress,
    TrainConfig,
    TrainResult,
    contraction_on,
    evaluation_row,
    record,
    to_result,
)
from models.torch_rnn import contraction
from models.torch_rnn.zoo import SeqSetLike, loss_fn, predict_logits

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Sampler:
    """The training set padded once, and seeded mini-batches drawn from it."""

    def __init__(self, seqs: SeqSetLike, device: str, seed: int) -> None:
        bits, lengths = seqs.padded(np.arange(len(seqs)))
        self.bits = torch.as_tensor(bits)  # (n, T) uint8
        self.lengths = torch.as_tensor(lengths, dtype=torch.int64)  # (n,)
        self.labels = torch.as_tensor(np.asarray(seqs.labels), dtype=torch.float32)  # (n,)
        self.max_len = int(self.lengths.max())
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self._eligible: dict[int, torch.Tensor] = {}

    def sample(
        self, batch_size: int, cap: int | None, noise: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> x (B, T) float bits on device, lengths (B,) int64 on CPU, targets (B,) on device.

        noise: std of Gaussian noise added to every bit (drawn from the sampler's own
        generator, so a resumed run draws the same). Padding gets noise too; no model
        reads a sequence past its length.
        """
        cap = self.max_len if cap is None else min(cap, self.max_len)
        if cap not in self._eligible:
            self._eligible[cap] = torch.nonzero(self.lengths <= cap).flatten()
        eligible = self._eligible[cap]
        pick = eligible[torch.randint(len(eligible), (batch_size,), generator=self.generator)]
        lengths = self.lengths[pick]
        x = self.bits[pick, : int(lengths.max())].float()
        if noise:
            x += noise * torch.randn(x.shape, generator=self.generator)
        return x.to(self.device), lengths, self.labels[pick].to(self.device)


def train(
    model: nn.Module,
    family: str,
    cfg: TrainConfig,
    data: dict[str, SeqSetLike | None],
    device: str,
    seed: int,
    *,
    log: Log | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Printer | None = print,
) -> TrainResult:
    """Train ``model`` in place on data["train"]; judge on data["val"] (and data["probe"]).

    checkpoint: where to keep resumable state every ``cfg.checkpoint_every`` steps (None: nowhere).
    """
    model.to(device).train()
    sampler = Sampler(data["train"], device, seed)
    optimizer = _optimizer(model, cfg)
    criterion = loss_fn(family)
    state = Progress(cap=cfg.curriculum_start)
    fingerprint = {"family": family, "cfg": asdict(cfg), "seed": seed, "weights": _digest(model)}
    if checkpoint is not None and checkpoint.path.exists():
        state = _resume(checkpoint, fingerprint, model, optimizer, sampler, state, progress)
    started = time.perf_counter()
    stopped = "max_steps"
    while state.step < cfg.max_steps:
        _step(model, family, criterion, optimizer, sampler, cfg, state)
        if state.step % cfg.eval_every == 0 or state.step == cfg.max_steps:
            row = _evaluate(model, family, data, device, cfg, state, sampler.max_len)
            record(row, state, cfg, log, progress)
            if cfg.patience and state.streak >= cfg.patience:
                stopped = "early_stop"
                break
        at_checkpoint = state.step % cfg.checkpoint_every == 0 and state.step < cfg.max_steps
        if checkpoint is not None and at_checkpoint:
            state.seconds += time.perf_counter() - started
            started = time.perf_counter()
            _save_checkpoint(checkpoint, fingerprint, model, optimizer, sampler, state)
    state.seconds += time.perf_counter() - started
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)  # finished: nothing to resume
    return to_result(state, cfg, stopped)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr)


def _step(
    model: nn.Module, family: str, criterion: Loss, optimizer: torch.optim.Optimizer, sampler: Sampler,
    cfg: TrainConfig, state: Progress,
) -> None:
    """One optimizer step on a fresh mini-batch; in the contraction phase the loss adds the
    penalty of models/torch_rnn/contraction.py."""
    x, lengths, targets = sampler.sample(cfg.batch_size, state.cap, cfg.input_noise)
    if contraction_on(state, cfg):
        logits, reached = contraction.forward_with_state(model, family, x, lengths)
        loss = criterion(logits, targets)
        total = loss + cfg.contraction_weight * contraction.jacobian_penalty(model, family, reached,
                                                                             cfg.contraction_rho)
    else:
        loss = total = criterion(model(x, lengths), targets)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if cfg.clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
    optimizer.step()
    state.step += 1
    state.loss_sum += loss.item()
    state.loss_count += 1


def _scores(model: nn.Module, family: str, seqs: SeqSetLike, device: str) -> tuple[float, float, np.ndarray]:
    """-> (accuracy, mean loss, per-sequence correctness (n,) bool) on every sequence of ``seqs``."""
    logits = predict_logits(model, seqs, device)
    labels = np.asarray(seqs.labels).astype(np.float64)
    loss = loss_fn(family)(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    correct = (logits > 0) == (labels > 0.5)
    return float(correct.mean()), float(loss), correct


def _evaluate(
    model: nn.Module, family: str, data: dict[str, SeqSetLike | None], device: str,
    cfg: TrainConfig, state: Progress, max_len: int,
) -> dict[str, Any]:
    """Validation and probe scores at the current step, as one history row."""
    val_acc, val_loss, correct = _scores(model, family, data["val"], device)
    probe_acc = None
    if data.get("probe") is not None:
        probe_acc = _scores(model, family, data["probe"], device)[0]
    return evaluation_row(state, cfg, (val_acc, val_loss, correct), probe_acc, data["val"].lengths, max_len)


def _digest(model: nn.Module) -> str:
    """sha256 of the initial weights: a checkpoint resumes only the run it was cut from."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(
    checkpoint: Checkpoint, fingerprint: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
    sampler: Sampler, state: Progress,
) -> None:
    """Everything needed to continue exactly: weights, optimizer, trainer state and every RNG."""
    np_state = np.random.get_state()
    blob = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": asdict(state),
        "rng": {
            "sampler": sampler.generator.get_state(),
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate(),
        },
    }
    checkpoint.write(lambda tmp: torch.save(blob, tmp))


def _resume(
    checkpoint: Checkpoint, fingerprint: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
    sampler: Sampler, fresh: Progress, progress: Printer | None,
) -> Progress:
    """Restore a matching checkpoint; ignore (and later overwrite) one from another run.

    One that cannot be read (truncated by a crash, edited) is set aside and training starts fresh.
    """
    path = checkpoint.path
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many kinds on a damaged file)
        checkpoint.set_aside(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return fresh
    if not isinstance(blob, dict) or blob.get("fingerprint") != fingerprint:
        if progress is not None:
            progress(f"{path}: checkpoint is from another config or seed; starting afresh")
        return fresh
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    rng = blob["rng"]
    sampler.generator.set_state(rng["sampler"])
    torch.set_rng_state(rng["torch"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(rng["python"])
    state = Progress(**blob["progress"])
    if progress is not None:
        progress(f"resuming from {path} at step {state.step}")
    return state
